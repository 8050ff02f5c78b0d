"""The per-session view of a selected mailbox (gateway/imap/view.py)."""

import datetime
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.imap.view import SelectedView, format_flags
from gateway.store.model import ChangeSet, MessageRecord

DATE = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


class ModelStore:
    """A one-mailbox store that can answer changes_since like the real one."""

    def __init__(self):
        self.modseq = 1
        self.uidnext = 1
        self.messages = {}  # uid -> (flags, modseq)
        self.expunge_log = []  # (modseq, uid)

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
    assert view.uids == [uids[0], uids[2], 4]


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
        b"OK [PERMANENTFLAGS (\\* \\Answered \\Deleted \\Draft \\Flagged \\Seen known)] Flags permitted",
    ]
    store.set_flags(uid, frozenset({"known", "$New"}))
    view.apply(store.changes_since(view.modseq))
    assert view.flush(allow_expunge=False, condstore=True) == [
        b"FLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen $New known)",
        b"OK [PERMANENTFLAGS (\\* \\Answered \\Deleted \\Draft \\Flagged \\Seen $New known)] Flags permitted",
        b"1 FETCH (UID 1 FLAGS ($New known) MODSEQ (3))",
    ]
    assert view.announce_keywords([uid]) == []


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
                assert view.uids[: len(before)] == before
            assert len(client.uids) == view.exists
            for seq, uid in enumerate(client.uids, 1):
                assert uid in (None, view.uid_of(seq))
    view.apply(store.changes_since(view.modseq))
    client.take(view.flush(allow_expunge=True))
    assert view.uids == sorted(store.messages)
    assert len(client.uids) == view.exists
    for uid in view.uids:
        assert view.flags_of(uid) - {"\\Recent"} == store.messages[uid][0]
        if uid in client.flags:
            assert client.flags[uid] == store.messages[uid][0]
