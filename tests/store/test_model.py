"""
The store's pure values and rules, the same for every backend.
"""

import datetime

from hypothesis import given, strategies as st

from gateway.store.model import MessageRecord, flag_changes

WHEN = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
FLAGS = st.frozensets(st.sampled_from(["\\Seen", "\\Flagged", "\\Deleted", "$Label1"]))


def record(uid, flags, modseq=5):
    return MessageRecord(uid, frozenset(flags), WHEN, 100, modseq)


def test_each_mode():
    records = [record(1, {"\\Seen"}), record(2, {"\\Flagged"})]
    assert flag_changes(records, frozenset({"\\Seen"}), "add", None, 9) == (
        [record(2, {"\\Flagged", "\\Seen"}, 9)], [])
    assert flag_changes(records, frozenset({"\\Seen"}), "remove", None, 9) == ([record(1, set(), 9)], [])
    assert flag_changes(records, frozenset({"\\Seen"}), "set", None, 9) == ([record(2, {"\\Seen"}, 9)], [])


def test_unchangedsince_leaves_later_changes_alone():
    # RFC 7162 3.1.3: a message changed after UNCHANGEDSINCE is refused, even
    # where the STORE would not change it.
    records = [record(1, set(), modseq=4), record(2, {"\\Seen"}, modseq=6), record(3, set(), modseq=5)]
    assert flag_changes(records, frozenset({"\\Seen"}), "add", 5, 7) == (
        [record(1, {"\\Seen"}, 7), record(3, {"\\Seen"}, 7)], [2])


@given(st.lists(FLAGS, max_size=6), FLAGS, st.sampled_from(["set", "add", "remove"]))
def test_a_record_is_changed_exactly_when_its_flags_change(flag_sets, flags, mode):
    records = [record(uid, current) for uid, current in enumerate(flag_sets, 1)]
    changed, modified = flag_changes(records, flags, mode, None, 6)
    assert modified == []
    expected = {"set": lambda old: flags, "add": lambda old: old | flags, "remove": lambda old: old - flags}[mode]
    assert {r.uid: r.flags for r in changed} == {
        r.uid: expected(r.flags) for r in records if expected(r.flags) != r.flags}
    assert all(r.modseq == 6 for r in changed)
