"""
The POP3 avatar over a real SQLiteStore: what QUIT does with DELE'd
messages under each ``pop3.delete_policy`` (issue 6), and that the hide
policy's flag keeps a message out of every later snapshot.
"""

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from gateway.config import Config, Pop3Config
from gateway.pop3.maildrop import avatar_factory
from gateway.pop3.session import build_snapshot, find_trash
from gateway.store.model import MailboxInfo, MessageRecord
from gateway.store.sqlite.store import SQLiteStore
from tests.deferreds import result_of

MESSAGES = [b"Subject: %d\r\n\r\nbody %d\r\n" % (n, n) for n in range(1, 4)]


@pytest.fixture
def store(tmp_path):
    store = SQLiteStore(tmp_path / "store")
    result_of(store.ensure_user("alice"))
    inbox = result_of(store.get_mailbox("alice", "INBOX"))
    for message in MESSAGES:
        result_of(store.append(inbox.id, message))
    yield store
    store.close()


def session(store, **pop3_options):
    config = Config(pop3=Pop3Config(**pop3_options))
    return result_of(avatar_factory(store, config, Clock())("alice"))


def records(store, name):
    mailbox = result_of(store.get_mailbox("alice", name))
    return result_of(store.list_messages(mailbox.id))


def quit_after_deleting(store, numbers, **pop3_options):
    maildrop, logout = session(store, **pop3_options)
    uidls = [entry.uidl for entry in maildrop.view.entries]
    for number in numbers:
        result_of(Deferred.fromCoroutine(maildrop.delete(number)))
    removed = result_of(Deferred.fromCoroutine(maildrop.apply_deletions()))
    logout()
    return uidls, removed


def next_uidls(store, **pop3_options):
    maildrop, logout = session(store, **pop3_options)
    logout()
    return [entry.uidl for entry in maildrop.view.entries]


def test_expunge_removes_the_message(store):
    uidls, removed = quit_after_deleting(store, [2])
    assert removed == 1
    assert [r.uid for r in records(store, "INBOX")] == [1, 3]
    assert records(store, "Trash") == []
    assert next_uidls(store) == [uidls[0], uidls[2]]


def test_trash_moves_the_message_to_the_special_use_trash(store):
    uidls, removed = quit_after_deleting(store, [1, 3], delete_policy="trash")
    assert removed == 2
    assert [r.uid for r in records(store, "INBOX")] == [2]
    trash = result_of(store.get_mailbox("alice", "Trash"))
    moved = records(store, "Trash")
    assert [result_of(store.open_message(trash.id, r.uid)).read() for r in moved] == [MESSAGES[0], MESSAGES[2]]
    assert next_uidls(store, delete_policy="trash") == [uidls[1]]


def test_trash_prefers_the_special_use_folder_and_creates_one_if_missing(store):
    result_of(store.delete_mailbox("alice", "Trash"))
    result_of(store.create_mailbox("alice", "Deleted Items", special_use="\\Trash"))
    quit_after_deleting(store, [1], delete_policy="trash")
    assert len(records(store, "Deleted Items")) == 1
    result_of(store.delete_mailbox("alice", "Deleted Items"))
    quit_after_deleting(store, [1], delete_policy="trash")
    trash = result_of(store.get_mailbox("alice", "Trash"))
    assert trash.special_use == "\\Trash"
    assert len(records(store, "Trash")) == 1
    assert len(records(store, "INBOX")) == 1


def test_hide_flags_the_message_and_later_snapshots_leave_it_out(store):
    uidls, removed = quit_after_deleting(store, [2], delete_policy="hide")
    assert removed == 1
    inbox = records(store, "INBOX")
    assert [r.uid for r in inbox] == [1, 2, 3]
    assert [r.flags for r in inbox] == [frozenset(), frozenset({"$POP3Deleted"}), frozenset()]
    assert next_uidls(store, delete_policy="hide") == [uidls[0], uidls[2]]
    # Leaving the hide policy does not bring it back to POP3.
    assert next_uidls(store) == [uidls[0], uidls[2]]


def test_a_per_user_policy_overrides_the_default(store):
    uidls, removed = quit_after_deleting(
        store, [2], delete_policy="expunge", delete_policy_users=(("alice", "hide"),)
    )
    assert removed == 1
    assert [r.uid for r in records(store, "INBOX")] == [1, 2, 3]
    assert records(store, "INBOX")[1].flags == frozenset({"$POP3Deleted"})
    assert next_uidls(store) == [uidls[0], uidls[2]]


def test_hide_with_a_configured_flag(store):
    quit_after_deleting(store, [1], delete_policy="hide", hidden_flag="$Gone")
    assert records(store, "INBOX")[0].flags == frozenset({"$Gone"})
    assert len(next_uidls(store, hidden_flag="$Gone")) == 2
    assert len(next_uidls(store)) == 3


def test_rset_leaves_nothing_to_apply(store):
    for policy in ("expunge", "trash", "hide"):
        maildrop, logout = session(store, delete_policy=policy)
        result_of(Deferred.fromCoroutine(maildrop.delete(1)))
        maildrop.view.reset()
        assert result_of(Deferred.fromCoroutine(maildrop.apply_deletions())) == 0
        logout()
    assert [(r.uid, r.flags) for r in records(store, "INBOX")] == [(1, frozenset()), (2, frozenset()), (3, frozenset())]
    assert records(store, "Trash") == []


def record(uid, *flags):
    return MessageRecord(uid=uid, flags=frozenset(flags), internaldate=None, size=10 * uid, modseq=1)


def test_build_snapshot_compares_the_keyword_case_insensitively():
    view = build_snapshot(
        [record(1, "\\Seen"), record(2, "$pop3deleted"), record(3, "$POP3Deleted", "\\Seen"), record(4)],
        lambda uid: b"u%d" % uid,
        "$POP3Deleted",
    )
    assert [(e.uid, e.size, e.uidl, e.seen) for e in view.entries] == [(1, 10, b"u1", True), (4, 40, b"u4", False)]


def mailbox(name, special_use=None):
    return MailboxInfo(id=1, user="alice", name=name, uidvalidity=1, uidnext=1, highestmodseq=1,
                       special_use=special_use)


def test_find_trash():
    assert find_trash([mailbox("INBOX"), mailbox("Trash"), mailbox("Bin", "\\Trash")]).name == "Bin"
    assert find_trash([mailbox("INBOX"), mailbox("Trash")]).name == "Trash"
    assert find_trash([mailbox("INBOX"), mailbox("trash")]) is None


def test_retr_again_writes_no_flags(store):
    maildrop, logout = session(store)
    calls = []
    store_flags = store.store_flags
    store.store_flags = lambda *args: calls.append(args) or store_flags(*args)
    for _ in range(3):
        maildrop.mark_seen(1)
        result_of(Deferred.fromCoroutine(maildrop.save_seen()))
    logout()
    assert len(calls) == 1
    assert "\\Seen" in records(store, "INBOX")[0].flags


def test_seen_flags_are_saved_in_one_store_call(store):
    maildrop, logout = session(store)
    calls = []
    store_flags = store.store_flags
    store.store_flags = lambda *args: calls.append(args) or store_flags(*args)
    maildrop.mark_seen(1)
    maildrop.mark_seen(3)
    assert not any("\\Seen" in record.flags for record in records(store, "INBOX"))
    result_of(Deferred.fromCoroutine(maildrop.save_seen()))
    result_of(Deferred.fromCoroutine(maildrop.save_seen()))
    logout()
    assert [sorted(call[1]) for call in calls] == [[1, 3]]
    assert ["\\Seen" in record.flags for record in records(store, "INBOX")] == [True, False, True]


def test_deleted_after_retr_goes_to_trash_seen(store):
    maildrop, logout = session(store, delete_policy="trash")
    maildrop.mark_seen(2)
    result_of(Deferred.fromCoroutine(maildrop.delete(2)))
    result_of(Deferred.fromCoroutine(maildrop.apply_deletions()))
    logout()
    assert [("\\Seen" in record.flags) for record in records(store, "Trash")] == [True]
