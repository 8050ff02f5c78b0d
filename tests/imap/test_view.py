"""The per-session view of a selected mailbox (gateway/imap/view.py)."""

import datetime
import gc
import re
import tracemalloc
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.imap import snapshot as snapshot_module
from gateway.imap.sequence import parse_sequence_set
from gateway.imap.snapshot import Snapshot, SnapshotRegistry
from gateway.imap.view import SelectedView, format_flags
from gateway.store.model import ChangeSet, MessageRecord
from tests.imap.view_model import ModelView

DATE = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


class ModelStore:
    """A one-mailbox store that can answer changes_since like the real one."""

    def __init__(self):
        self.modseq = 1
        self.uidnext = 1
        self.messages = {}  # uid -> (flags, modseq)
        self.expunge_log = []  # (modseq, uid)
        self.first_recent = 1

    def deliver(self, flags=frozenset()):
        self.modseq += 1
        uid = self.uidnext
        self.uidnext += 1
        self.messages[uid] = (frozenset(flags), self.modseq)
        return uid

    def set_flags(self, uid, flags):
        if uid in self.messages and self.messages[uid][0] != flags:
            self.modseq += 1
            self.messages[uid] = (frozenset(flags), self.modseq)

    def expunge(self, uid):
        if uid in self.messages:
            self.modseq += 1
            del self.messages[uid]
            self.expunge_log.append((self.modseq, uid))

    def claim_recent(self):
        """RFC 3501 2.3.2: the messages no session has claimed yet."""
        claimed = frozenset(uid for uid in self.messages if uid >= self.first_recent)
        self.first_recent = self.uidnext
        return claimed

    def record(self, uid):
        flags, modseq = self.messages[uid]
        return MessageRecord(uid, flags, DATE, 10, modseq)

    def flag_pairs(self):
        return [(uid, self.messages[uid][0]) for uid in sorted(self.messages)]

    def changes_since(self, modseq):
        updated = tuple(
            self.record(uid) for uid in sorted(self.messages) if self.messages[uid][1] > modseq
        )
        expunged = tuple(uid for m, uid in self.expunge_log if m > modseq)
        return ChangeSet(1, self.modseq, self.uidnext, updated, expunged)


class Client:
    """What a client knows, built only from the untagged responses it got."""

    def __init__(self, uids, flags):
        self.uids = list(uids)
        self.flags = dict(flags)
        self.keywords = {flag for value in self.flags.values() for flag in value if not flag.startswith("\\")}

    def take(self, lines):
        for line in lines:
            if m := re.fullmatch(rb"(\d+) EXPUNGE", line):
                seq = int(m[1])
                assert 1 <= seq <= len(self.uids)
                del self.uids[seq - 1]
            elif m := re.fullmatch(rb"(\d+) EXISTS", line):
                count = int(m[1])
                assert count >= len(self.uids), "EXISTS may not shrink the mailbox"
                self.uids.extend([None] * (count - len(self.uids)))
            elif m := re.fullmatch(rb"(\d+) FETCH \(UID (\d+) FLAGS \((.*)\)\)", line):
                seq, uid = int(m[1]), int(m[2])
                assert self.uids[seq - 1] in (None, uid)
                self.uids[seq - 1] = uid
                self.flags[uid] = frozenset(m[3].decode().split())
                # RFC 3501 7.2.6: FLAGS named every keyword first.
                assert {f for f in self.flags[uid] if not f.startswith("\\")} <= self.keywords
            elif m := re.fullmatch(rb"FLAGS \((.*)\)", line):
                self.keywords = {f for f in m[1].decode().split() if not f.startswith("\\")}
            elif line.startswith(b"OK [PERMANENTFLAGS "):
                pass
            elif not re.fullmatch(rb"\d+ RECENT", line):
                raise AssertionError(line)


def test_format_flags_puts_system_flags_first():
    assert format_flags({"work", "\\Seen", "$Junk", "\\Answered"}) == (
        b"(\\Answered \\Seen $Junk work)"
    )
    assert format_flags(()) == b"()"


def test_new_message_gives_exists_and_recent():
    store = ModelStore()
    store.deliver()
    view = SelectedView(1, 7, store.flag_pairs(), store.modseq)
    uid = store.deliver({"\\Seen"})
    view.apply(store.changes_since(view.modseq))
    view.add_recent([uid])
    assert view.flush(allow_expunge=False) == [b"2 EXISTS", b"1 RECENT"]
    assert view.uid_of(2) == uid
    assert view.flags_of(uid) == {"\\Seen", "\\Recent"}


def test_expunge_waits_for_an_allowed_moment():
    store = ModelStore()
    uids = [store.deliver() for _ in range(3)]
    view = SelectedView(1, 7, store.flag_pairs(), store.modseq)
    store.expunge(uids[1])
    store.deliver()
    view.apply(store.changes_since(view.modseq))
    # RFC 3501 7.4.1: during FETCH the client keeps its numbers; EXISTS
    # counts the expunged message still.
    assert view.flush(allow_expunge=False) == [b"4 EXISTS", b"0 RECENT"]
    assert view.is_expunged(uids[1]) and view.uid_of(2) == uids[1]
    assert view.flush(allow_expunge=True) == [b"2 EXPUNGE"]
    assert list(view.uids) == [uids[0], uids[2], 4]


def test_several_expunges_are_sent_highest_first():
    store = ModelStore()
    uids = [store.deliver() for _ in range(5)]
    view = SelectedView(1, 7, store.flag_pairs(), store.modseq)
    for uid in (uids[0], uids[2], uids[4]):
        store.expunge(uid)
    view.apply(store.changes_since(view.modseq))
    assert view.flush(allow_expunge=True) == [b"5 EXPUNGE", b"3 EXPUNGE", b"1 EXPUNGE"]


def test_flag_change_by_others_is_reported_with_uid():
    store = ModelStore()
    uid = store.deliver()
    view = SelectedView(1, 7, store.flag_pairs(), store.modseq)
    store.set_flags(uid, frozenset({"\\Flagged"}))
    view.apply(store.changes_since(view.modseq))
    assert view.flush(allow_expunge=False) == [b"1 FETCH (UID 1 FLAGS (\\Flagged))"]
    # Telling twice is noise.
    view.apply(store.changes_since(view.modseq))
    assert view.flush(allow_expunge=True) == []


def test_unknown_keyword_is_announced_before_the_fetch_with_modseq():
    store = ModelStore()
    uid = store.deliver({"known"})
    view = SelectedView(1, 7, store.flag_pairs(), store.modseq)
    assert view.flags_lines() == [
        b"FLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen known)",
        b"OK [PERMANENTFLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen known \\*)] Flags permitted",
    ]
    store.set_flags(uid, frozenset({"known", "$New"}))
    view.apply(store.changes_since(view.modseq))
    assert view.flush(allow_expunge=False, condstore=True) == [
        b"FLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen $New known)",
        b"OK [PERMANENTFLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen $New known \\*)] Flags permitted",
        b"1 FETCH (UID 1 FLAGS ($New known) MODSEQ (3))",
    ]
    assert view.announce_keywords() == []


def test_own_flag_change_is_not_repeated():
    store = ModelStore()
    uid = store.deliver()
    view = SelectedView(1, 7, store.flag_pairs(), store.modseq)
    store.set_flags(uid, frozenset({"\\Seen"}))
    view.note_flags(uid, frozenset({"\\Seen"}))
    view.apply(store.changes_since(view.modseq))
    assert view.flush(allow_expunge=True) == []


def test_message_delivered_and_expunged_unseen_is_never_announced():
    store = ModelStore()
    view = SelectedView(1, 7, store.flag_pairs(), store.modseq)
    uid = store.deliver()
    view.apply(store.changes_since(view.modseq))
    store.expunge(uid)
    view.apply(store.changes_since(view.modseq))
    assert view.flush(allow_expunge=True) == []
    assert view.exists == 0


operation = st.one_of(
    st.tuples(st.just("deliver"), st.sets(st.sampled_from(["\\Seen", "\\Flagged", "x"]))),
    st.tuples(st.just("expunge"), st.integers(0, 30)),
    st.tuples(st.just("flags"), st.integers(0, 30), st.sets(st.sampled_from(["\\Seen", "y"]))),
    st.tuples(st.just("sync"), st.booleans()),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 3), max_size=4), st.lists(operation, max_size=40))
def test_random_interleavings_keep_the_map_consistent(initial, operations):
    store = ModelStore()
    for _ in initial:
        store.deliver()
    view = SelectedView(1, 7, store.flag_pairs(), store.modseq)
    client = Client(view.uids, dict(store.flag_pairs()))
    for op in operations:
        if op[0] == "deliver":
            store.deliver(op[1])
        elif op[0] == "expunge":
            live = sorted(store.messages)
            if live:
                store.expunge(live[op[1] % len(live)])
        elif op[0] == "flags":
            live = sorted(store.messages)
            if live:
                store.set_flags(live[op[1] % len(live)], frozenset(op[2]))
        else:
            view.apply(store.changes_since(view.modseq))
            before = list(view.uids)
            client.take(view.flush(allow_expunge=op[1]))
            if not op[1]:
                # Nothing the client numbered may move.
                assert list(view.uids)[: len(before)] == before
            assert len(client.uids) == view.exists
            for seq, uid in enumerate(client.uids, 1):
                assert uid in (None, view.uid_of(seq))
    view.apply(store.changes_since(view.modseq))
    client.take(view.flush(allow_expunge=True))
    assert list(view.uids) == sorted(store.messages)
    assert len(client.uids) == view.exists
    for uid in view.uids:
        assert view.flags_of(uid) - {"\\Recent"} == store.messages[uid][0]
        if uid in client.flags:
            assert client.flags[uid] == store.messages[uid][0]


# -- the compact view against a simple model ------------------------------------

FLAG_NAMES = ["\\Seen", "\\Flagged", "\\Deleted", "$Work", "later"]
flag_sets = st.frozensets(st.sampled_from(FLAG_NAMES), max_size=3)
session_number = st.integers(0, 3)
step = st.one_of(
    st.tuples(st.just("deliver"), flag_sets),
    st.tuples(st.just("expunge"), st.integers(0, 40)),
    st.tuples(st.just("flags"), st.integers(0, 40), flag_sets),
    st.tuples(st.just("store"), session_number, st.integers(0, 40), flag_sets),
    st.tuples(st.just("sync"), session_number, st.booleans(), st.booleans(), st.booleans()),
    st.tuples(st.just("select"), st.booleans()),
    st.tuples(st.just("close"), session_number),
)

QUESTIONS = [
    lambda flags, recent: "\\Seen" not in flags,
    lambda flags, recent: "\\Flagged" in flags or recent,
    lambda flags, recent: "\\Deleted" in flags and "$Work" not in flags,
    lambda flags, recent: True,
]


def same_picture(view, model):
    """Everything a client can learn from the view, asked of both."""
    assert list(view.uids) == model.uids and view.exists == model.exists
    assert view.largest_uid == (model.uids[-1] if model.uids else 0)
    for seq, uid in enumerate(model.uids, 1):
        assert view.uid_of(seq) == uid and view.seq_of(uid) == seq
        assert view.flags_of(uid) == model.flags_of(uid)
        assert view.flags_of_pair(seq, uid) == model.flags_of(uid)
        assert view.is_expunged(uid) == (uid in model.expunged)
    assert view.pending_new() == model.new
    assert view.recent_count == len(model.recent)
    assert view.first_unseen() == model.first_unseen()
    for question in QUESTIONS:
        found = model.search_flags(question)
        assert view.search_flags(question) == found
        assert view.search_flags(question, uids=True) == [model.uids[seq - 1] for seq in found]
    everything = parse_sequence_set(b"1:*")
    for items in (("UID", "FLAGS"), ("FLAGS",), ("FLAGS", "UID")):
        lines = [line for piece in view.fetch_lines(view.index_ranges(everything, True), items) for line in piece]
        assert lines == model.fetch_lines(range(1, model.exists + 1), items)
    assert view.flags_lines() == model.flags_lines()
    pairs = list(enumerate(model.uids, 1))
    for chosen in (pairs, pairs[1:-1], pairs[::2]):
        assert view.flags_texts(chosen) == [format_flags(model.flags_of(uid)) for _, uid in chosen]


@settings(max_examples=300, deadline=None)
@given(st.lists(flag_sets, max_size=12), st.lists(step, max_size=50))
def test_compact_views_answer_as_the_simple_model(initial, steps):
    """
    Several sessions on one mailbox, sharing snapshots through a registry
    (blocks of 3 messages, so that moves cross block edges), each beside a
    simple model fed the same store changes: every answer is the same.
    """
    with mock.patch.object(snapshot_module, "BLOCK", 3):
        store = ModelStore()
        for flags in initial:
            store.deliver(flags)
        registry = SnapshotRegistry()
        sessions = []

        def select(shared):
            known = registry.latest(1, 7) if shared else None
            if known is None:
                known = Snapshot.build(store.flag_pairs()), store.modseq
            view = SelectedView(1, 7, known[0], known[1], registry=registry)
            view.apply(store.changes_since(view.modseq))
            view.catch_up()
            model = ModelView(store.flag_pairs(), store.modseq)
            sessions.append((view, model))

        select(False)
        for op in steps:
            live = sorted(store.messages)
            if op[0] == "deliver":
                store.deliver(op[1])
            elif op[0] == "expunge" and live:
                store.expunge(live[op[1] % len(live)])
            elif op[0] == "flags" and live:
                store.set_flags(live[op[1] % len(live)], op[2])
            elif op[0] == "store" and sessions and live:
                view, model = sessions[op[1] % len(sessions)]
                uid = live[op[2] % len(live)]
                before = store.messages[uid][0]
                store.set_flags(uid, op[3])
                # The server reports what it changed, for messages the client numbers.
                if before != op[3] and view.seq_of(uid) is not None and not view.is_expunged(uid):
                    view.note_flags(uid, op[3])
                    model.note_flags(uid, op[3])
            elif op[0] == "sync" and sessions:
                view, model = sessions[op[1] % len(sessions)]
                _, _, allow_expunge, condstore, vanished = op
                changes = store.changes_since(view.modseq)
                assert view.modseq == model.modseq
                view.apply(changes)
                model.apply(changes)
                if view.pending_new():
                    claimed = store.claim_recent()
                    view.add_recent(claimed)
                    model.add_recent(claimed)
                assert view.has_pending == bool(model.new or model.expunged or model.flag_changed)
                assert view.flush(allow_expunge, condstore, vanished) == model.flush(allow_expunge, condstore, vanished)
            elif op[0] == "select":
                select(op[1])
            elif op[0] == "close" and sessions:
                del sessions[op[1] % len(sessions)]
            for view, model in sessions:
                same_picture(view, model)


# -- memory ----------------------------------------------------------------------

BUDGET_BASE = 16 * 1024
BUDGET_PER_MESSAGE = 5


def allocated(work):
    """Bytes that stay allocated after ``work()`` (its result kept), and the result."""
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    kept = work()
    gc.collect()
    return tracemalloc.get_traced_memory()[0] - before, kept


def read_inbox(count):
    """(UID, flags) of an INBOX of ``count`` messages as a reader leaves it."""
    lists = [frozenset({"\\Seen"}), frozenset({"\\Seen", "\\Answered"}), frozenset({"\\Seen", "NonJunk"}),
             frozenset({"\\Seen", "\\Flagged", "$Forwarded"}), frozenset()]
    return [(uid, lists[0 if uid % 5 else uid // 5 % len(lists)]) for uid in range(1, count + 1)]


def test_idle_sessions_on_20000_messages_share_one_snapshot_within_budget():
    """
    Counted with tracemalloc: the first session selecting a 20,000-message
    mailbox stays within 16 KB + 5 bytes a message; a second shares its
    snapshot; one that diverges pays for what it changed, not for a copy,
    and leaves the other's snapshot as it was.
    """
    store = ModelStore()
    for uid, flags in read_inbox(20_000):
        store.deliver(flags)
    pairs = store.flag_pairs()
    registry = SnapshotRegistry()

    def select():
        known = registry.latest(1, 7) or (Snapshot.build(pairs), store.modseq)
        view = SelectedView(1, 7, known[0], known[1], registry=registry)
        view.apply(store.changes_since(view.modseq))
        view.catch_up()
        return view

    tracemalloc.start()
    try:
        first_cost, first = allocated(select)
        second_cost, second = allocated(select)
        assert first_cost <= BUDGET_BASE + BUDGET_PER_MESSAGE * 20_000
        assert second.snapshot is first.snapshot
        assert second_cost <= 1024
        # The first to select a mailbox filled meanwhile gets all of it \\Recent.
        recent_cost, _ = allocated(lambda: first.add_recent(range(1, 20_001)))
        assert recent_cost <= 1024 and first.recent_count == 20_000
        shared = first.snapshot
        shared_uids = list(shared.uids)

        # Another client flags a message: the second session hears of it first.
        store.set_flags(5_000, frozenset({"\\Seen", "\\Flagged"}))
        flagged_cost, lines = allocated(lambda: (second.apply(store.changes_since(second.modseq)),
                                                 second.flush(allow_expunge=True))[1])
        assert lines == [b"5000 FETCH (UID 5000 FLAGS (\\Flagged \\Seen))"]
        assert flagged_cost <= 1024 and second.snapshot is shared

        # A delivery and an expunge change its numbering: a block or two.
        store.deliver()
        store.expunge(10_000)
        moved_cost, lines = allocated(lambda: (second.apply(store.changes_since(second.modseq)),
                                               second.flush(allow_expunge=True))[1])
        assert lines == [b"10000 EXPUNGE", b"20000 EXISTS", b"0 RECENT"]
        assert second.snapshot is not shared
        assert moved_cost <= 3 * (5 * snapshot_module.BLOCK) + 4096
        assert first.snapshot is shared and list(shared.uids) == shared_uids
        assert first.exists == 20_000 and second.exists == 20_000

        # The first session, catching up, makes the same move: same snapshot.
        caught_up_cost, lines = allocated(lambda: (first.apply(store.changes_since(first.modseq)),
                                                   first.flush(allow_expunge=True))[1])
        assert lines == [b"10000 EXPUNGE", b"20000 EXISTS", b"19999 RECENT",
                         b"5000 FETCH (UID 5000 FLAGS (\\Flagged \\Recent \\Seen))"]
        assert first.snapshot is second.snapshot
        assert caught_up_cost <= 1024
    finally:
        tracemalloc.stop()
