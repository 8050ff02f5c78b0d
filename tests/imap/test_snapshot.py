"""Shared mailbox snapshots (gateway/imap/snapshot.py) against a list model."""

import gc
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.imap import snapshot as snapshot_module
from gateway.imap.snapshot import FlagTable, Snapshot, SnapshotRegistry, UidRuns

SEEN = frozenset({"\\Seen"})
FLAGGED = frozenset({"\\Flagged", "\\Seen"})


def picture(snapshot):
    return [(snapshot.uid_at(index), snapshot.flags_at(index)) for index in range(len(snapshot))]


def test_build_reads_by_position_and_by_uid():
    snapshot = Snapshot.build([(2, SEEN), (5, frozenset()), (9, FLAGGED)])
    assert len(snapshot) == 3 and snapshot.largest_uid == 9
    assert list(snapshot.uids) == [2, 5, 9] and snapshot.uids[-1] == 9 and snapshot.uids[1:] == [5, 9]
    assert [snapshot.index_of(uid) for uid in (1, 2, 5, 6, 9, 10)] == [None, 0, 1, None, 2, None]
    assert [snapshot.bisect_left(uid) for uid in (1, 2, 3, 9, 10)] == [0, 0, 1, 2, 3]
    assert snapshot.flags_at(2) is FLAGGED
    assert snapshot.keywords == frozenset()
    assert snapshot.matching([flags == SEEN for flags in snapshot.table.sets]) == b"\x01\x00\x00"
    empty = Snapshot.build([])
    assert len(empty) == 0 and empty.largest_uid == 0 and empty.bisect_left(5) == 0 and list(empty.uids) == []


def test_keywords_are_those_messages_carry_now():
    table = FlagTable()
    snapshot = Snapshot.build([(1, frozenset({"$Work", "\\Seen"})), (2, frozenset({"later"}))], table)
    assert snapshot.keywords == {"$Work", "later"}
    after = snapshot.successor(changed={2: SEEN})
    # The table remembers "later"; the snapshot no longer carries it.
    assert after.keywords == {"$Work"} and frozenset({"later"}) in table.sets


def test_the_same_move_from_the_same_snapshot_is_one_successor():
    snapshot = Snapshot.build([(uid, SEEN) for uid in range(1, 10)])
    first = snapshot.successor(removed=[3], appended=[(10, frozenset())], changed={4: FLAGGED})
    again = snapshot.successor(removed=[3], appended=[(10, frozenset())], changed={4: FLAGGED})
    assert first is again
    assert snapshot.successor(removed=[3]) is not first
    # Nothing of the original changed.
    assert picture(snapshot) == [(uid, SEEN) for uid in range(1, 10)]


def test_a_move_shares_the_blocks_it_does_not_touch():
    with mock.patch.object(snapshot_module, "BLOCK", 4):
        snapshot = Snapshot.build([(uid, SEEN) for uid in range(1, 13)])
        after = snapshot.successor(changed={6: FLAGGED})
        assert after._blocks[0] is snapshot._blocks[0] and after._blocks[2] is snapshot._blocks[2]
        assert after._blocks[1] is not snapshot._blocks[1]
        grown = snapshot.successor(appended=[(13, SEEN)])
        assert grown._blocks[:3] == snapshot._blocks and grown._blocks[0] is snapshot._blocks[0]
        assert [len(uids) for uids, _ in grown._blocks] == [4, 4, 4, 1]
        emptied = snapshot.successor(removed=[5, 6, 7, 8])
        assert [list(uids) for uids, _ in emptied._blocks] == [[1, 2, 3, 4], [9, 10, 11, 12]]


def test_more_than_256_flag_lists_widen_the_numbers():
    lists = [frozenset({f"k{n}"}) for n in range(300)]
    small = Snapshot.build([(1, SEEN), (2, frozenset())])
    assert isinstance(small._blocks[0][1], bytes)
    table = small.table
    for flags in lists:
        table.number(flags)
    wide = small.successor(appended=[(3, lists[-1])], changed={1: lists[0]})
    assert picture(wide) == [(1, lists[0]), (2, frozenset()), (3, lists[-1])]
    assert wide._blocks[0][1].typecode == "H"
    built = Snapshot.build([(uid, flags) for uid, flags in enumerate(lists, 1)])
    assert picture(built) == list(enumerate(lists, 1))
    wanted = [flags in (lists[0], lists[299]) for flags in built.table.sets]
    assert built.matching(wanted) == b"\x01" + bytes(298) + b"\x01"


def test_same_as_compares_content_not_history():
    snapshot = Snapshot.build([(uid, SEEN) for uid in range(1, 6)])
    one_way = snapshot.successor(removed=[2]).successor(appended=[(6, SEEN)])
    other_way = snapshot.successor(removed=[2], appended=[(6, SEEN)])
    assert one_way is not other_way and one_way.same_as(other_way)
    assert not one_way.same_as(other_way.successor(changed={6: FLAGGED}))
    # Numbers of another table mean other flags: never the same.
    assert not one_way.same_as(Snapshot.build(picture(one_way)))


def test_registry_keeps_the_newest_while_someone_holds_it():
    registry = SnapshotRegistry()
    old = Snapshot.build([(1, SEEN)])
    assert registry.offer(1, 7, old, 10) is old
    assert registry.latest(1, 7) == (old, 10) and registry.latest(1, 8) is None
    newer = old.successor(appended=[(2, SEEN)])
    assert registry.offer(1, 7, newer, 12) is newer
    # An older picture does not replace a newer one.
    assert registry.offer(1, 7, old, 11) is old and registry.latest(1, 7) == (newer, 12)
    # The same content reached another way is handed back as the known one.
    same = old.successor(appended=[(2, SEEN)], changed={1: SEEN})
    assert same is not newer and registry.offer(1, 7, same, 12) is newer
    del newer, same
    gc.collect()
    assert registry.latest(1, 7) is None


messages = st.lists(st.tuples(st.integers(1, 3), st.sampled_from([frozenset(), SEEN, FLAGGED])), max_size=30)


@settings(max_examples=300, deadline=None)
@given(messages, st.lists(st.tuples(st.sets(st.integers(0, 40)), st.lists(st.sampled_from([SEEN, FLAGGED]),
                                                                            max_size=5),
                                    st.dictionaries(st.integers(0, 40), st.sampled_from([frozenset(), FLAGGED]))),
                          max_size=8))
@pytest.mark.parametrize("delete_at_most", [0, 2])
def test_successors_match_a_list(delete_at_most, gaps, moves):
    """
    Blocks of 3: every move crosses block edges; the result reads as the
    list model says, whether a block's messages go one by one or by a copy
    of those that stay.
    """
    with mock.patch.object(snapshot_module, "BLOCK", 3), \
            mock.patch.object(snapshot_module, "_DELETE_AT_MOST", delete_at_most):
        model, uid = [], 0
        for gap, flags in gaps:
            uid += gap
            model.append((uid, flags))
        snapshot = Snapshot.build(model)
        assert picture(snapshot) == model
        for picks, new_flags, changes in moves:
            present = [u for u, _ in model]
            removed = [present[i % len(present)] for i in picks] if present else []
            changed = {present[i % len(present)]: flags for i, flags in changes.items()} if present else {}
            top = max(present, default=0)
            appended = [(top + n + 1, flags) for n, flags in enumerate(new_flags)]
            snapshot = snapshot.successor(removed, appended, changed)
            model = [(u, changed.get(u, flags)) for u, flags in model if u not in set(removed)] + appended
            assert picture(snapshot) == model
            assert list(snapshot.uids) == [u for u, _ in model] and len(snapshot) == len(model)
            for index, (u, _) in enumerate(model):
                assert snapshot.index_of(u) == index and snapshot.bisect_left(u) == index
            assert all(len(uids) for uids, _ in snapshot._blocks)
            everything = [(first, list(uids)) for first, uids, _ in snapshot.spans(0, len(snapshot))]
            assert [u for _, uids in everything for u in uids] == [u for u, _ in model]
            if len(model) > 2:
                assert [u for _, uids, _ in snapshot.spans(1, len(model) - 1) for u in uids] == \
                    [u for u, _ in model[1:-1]]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.just("add"), st.sets(st.integers(1, 40))),
                          st.tuples(st.just("discard"), st.integers(0, 42))), max_size=20))
def test_uid_runs_are_a_set(steps):
    runs, model = UidRuns(), set()
    for op, value in steps:
        if op == "add":
            runs.update(value)
            model |= value
        else:
            runs.discard(value)
            model.discard(value)
        assert list(runs) == sorted(model) and len(runs) == len(model) and bool(runs) == bool(model)
        assert all((uid in runs) == (uid in model) for uid in range(0, 43))
        pairs = list(runs.runs())
        assert all(high + 1 < low for (_, high), (low, _) in zip(pairs, pairs[1:]))


def test_twenty_thousand_recent_messages_are_one_run():
    runs = UidRuns(range(1, 20_001))
    assert list(runs.runs()) == [(1, 20_000)] and len(runs) == 20_000


def test_a_table_of_flag_lists_long_gone_starts_again():
    """A client inventing a keyword per STORE does not grow the table for ever."""
    snapshot = Snapshot.build([(1, SEEN), (2, SEEN)])
    for n in range(3_000):
        snapshot = snapshot.successor(changed={2: frozenset({f"k{n}"})})
        assert picture(snapshot) == [(1, SEEN), (2, frozenset({f"k{n}"}))]
        assert len(snapshot.table) <= 2 * 1024 + 2
    # Lists still in use keep the table as it is.
    lists = [frozenset({f"m{n}"}) for n in range(2_100)]
    many = Snapshot.build(list(enumerate(lists, 1)))
    after = many.successor(changed={1: frozenset({"x"})}).successor(changed={2: frozenset({"y"})})
    assert after.table is many.table and many.table.checked >= 2_100
    assert picture(after)[2:] == list(enumerate(lists, 1))[2:]
