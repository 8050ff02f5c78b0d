"""SEARCH over a whole view (gateway/imap/view_search.py) against the per-message evaluation."""

import datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.imap import search, view_search
from gateway.imap.search_keys import All, And, Flag, InternalDate, Not, Or, Recent, SequenceNumbers, Uids
from gateway.imap.sequence import parse_sequence_set
from gateway.imap.view import SelectedView
from gateway.store.model import ChangeSet, MessageRecord

DATE = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
NAMES = ["\\Seen", "\\Deleted", "\\Flagged", "$Work"]

sequence_sets = st.lists(
    st.tuples(st.one_of(st.none(), st.integers(1, 25)), st.one_of(st.none(), st.integers(1, 25))),
    min_size=1, max_size=3,
).map(lambda ranges: parse_sequence_set(",".join(
    ("*" if a is None else str(a)) + ("" if a == b else ":" + ("*" if b is None else str(b))) for a, b in ranges)))
leaves = st.one_of(
    st.just(All()), st.just(Recent()), st.sampled_from(NAMES + ["$work", "absent"]).map(Flag),
    sequence_sets.map(SequenceNumbers), sequence_sets.map(Uids),
)
keys = st.recursive(leaves, lambda inner: st.one_of(
    inner.map(Not),
    st.lists(inner, min_size=2, max_size=3).map(lambda parts: And(tuple(parts))),
    st.tuples(inner, inner).map(lambda pair: Or(pair)),
), max_leaves=8)


def record(uid, flags, modseq):
    return MessageRecord(uid, frozenset(flags), DATE, 10, modseq)


@st.composite
def views(draw):
    """A view with a history: gaps in the UIDs, flags changed, \\Recent, an expunge not yet told."""
    uids = sorted(draw(st.sets(st.integers(1, 24), max_size=14)))
    flag_lists = st.frozensets(st.sampled_from(NAMES), max_size=2)
    messages = [(uid, draw(flag_lists)) for uid in uids]
    view = SelectedView(1, 7, messages, 5)
    view.add_recent(draw(st.sets(st.sampled_from(uids))) if uids else ())
    if uids:
        changed = draw(st.sets(st.sampled_from(uids), max_size=4))
        gone = draw(st.sets(st.sampled_from(uids), max_size=2))
        view.apply(ChangeSet(1, 6, 30, tuple(record(uid, draw(flag_lists), 6) for uid in sorted(changed)),
                             tuple(sorted(gone))))
        view.flush(allow_expunge=False)
    return view


def per_message(view, key, by_uid):
    messages = [
        search.SearchMessage(seq=seq, uid=uid, flags=view.stored_flags(uid), internaldate=None, size=None,
                             recent=view.is_recent(uid))
        for seq, uid in enumerate(view.uids, 1) if not view.is_expunged(uid)
    ]
    found = search.evaluate(key, messages, view.exists, view.largest_uid)
    return [view.uid_of(seq) for seq in found] if by_uid else found


@settings(max_examples=400, deadline=None)
@given(views(), keys, st.booleans())
def test_whole_view_search_matches_each_message_evaluated(view, key, by_uid):
    assert view_search.answerable(key)
    assert view_search.search(view, key, uids=by_uid) == per_message(view, key, by_uid)


def test_keys_on_dates_sizes_or_text_are_not_the_views():
    assert not view_search.answerable(And((Flag("\\Seen"), InternalDate("before", DATE.date()))))
    assert view_search.answerable(Not(Or((Uids(parse_sequence_set("5:*")), Recent()))))


def test_deep_nesting_is_walked_without_recursion():
    key = And((Uids(parse_sequence_set("1:*")), Flag("\\Seen")))
    for _ in range(5_000):
        key = Not(key)
    view = SelectedView(1, 7, [(1, frozenset({"\\Seen"})), (2, frozenset())], 5)
    assert view_search.answerable(key)
    assert view_search.search(view, key) == [1]
