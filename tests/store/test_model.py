"""
The store's pure rules, the same for every backend: what a flag change makes
of index rows (``gateway.store.encoding.flag_changes``).
"""

import datetime

from hypothesis import given, strategies as st

from gateway.store.encoding import flag_changes, flags_text
from gateway.store.model import MessageRecord

WHEN = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=-7)))
FLAGS = st.frozensets(st.sampled_from(["\\Seen", "\\Flagged", "\\Deleted", "$Label1"]))


def row(uid, flags, modseq=5):
    return (uid, flags_text(flags), int(WHEN.timestamp()), -7 * 60, 100, modseq)


def record(uid, flags, modseq):
    return MessageRecord(uid, frozenset(flags), WHEN, 100, modseq)


def test_each_mode():
    rows = [row(1, {"\\Seen"}), row(2, {"\\Flagged"})]
    assert flag_changes(rows, frozenset({"\\Seen"}), "add", None, 9) == (
        [record(2, {"\\Flagged", "\\Seen"}, 9)], [], {"\\Flagged \\Seen": [2]})
    assert flag_changes(rows, frozenset({"\\Seen"}), "remove", None, 9) == ([record(1, set(), 9)], [], {"": [1]})
    assert flag_changes(rows, frozenset({"\\Seen"}), "set", None, 9) == (
        [record(2, {"\\Seen"}, 9)], [], {"\\Seen": [2]})


def test_unchangedsince_leaves_later_changes_alone():
    # RFC 7162 3.1.3: a message changed after UNCHANGEDSINCE is refused, even
    # where the STORE would not change it.
    rows = [row(1, set(), modseq=4), row(2, {"\\Seen"}, modseq=6), row(3, set(), modseq=5)]
    assert flag_changes(rows, frozenset({"\\Seen"}), "add", 5, 7) == (
        [record(1, {"\\Seen"}, 7), record(3, {"\\Seen"}, 7)], [2], {"\\Seen": [1, 3]})


@given(st.lists(FLAGS, max_size=6), FLAGS, st.sampled_from(["set", "add", "remove"]))
def test_a_message_is_changed_exactly_when_its_flags_change(flag_sets, flags, mode):
    rows = [row(uid, current) for uid, current in enumerate(flag_sets, 1)]
    changed, refused, written = flag_changes(rows, flags, mode, None, 6)
    assert refused == []
    expected = {"set": lambda old: flags, "add": lambda old: old | flags, "remove": lambda old: old - flags}[mode]
    wanted = {uid: expected(old) for uid, old in enumerate(flag_sets, 1) if expected(old) != old}
    assert {r.uid: r.flags for r in changed} == wanted
    assert all(r.modseq == 6 and r.internaldate == WHEN for r in changed)
    assert {uid: text for text, uids in written.items() for uid in uids} == {
        uid: flags_text(new) for uid, new in wanted.items()}
