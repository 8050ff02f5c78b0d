"""
The store contracts: what every store backend must do, whatever it keeps
its data in (STYLE.md: one test mixin per interface, run against every
backend).  A backend's test module subclasses ``MailStoreContract`` (and
``ImportableStoreContract``, ``GroupCommitContract`` for what it offers)
and provides a ``store`` fixture: a fresh, empty store.  A store whose
Deferreds fire on a later reactor turn is given as
``tests.reactorthread.OnReactorThread`` over it: each call runs on a real
reactor's thread and is waited for.
"""

import datetime
import io

import pytest
from twisted.internet.defer import maybeDeferred
from zope.interface.verify import verifyObject

from gateway.store.interfaces import (
    IChangeFeed,
    IGroupCommitStore,
    IImportableStore,
    IMailStore,
    IStoreDump,
    InvalidMailboxName,
    MailboxExists,
    MessageExpunged,
    NoSuchMailbox,
    NoSuchUser,
    TooManyDevices,
    UidNotAvailable,
)
from gateway.imap import wire
from gateway.store.model import DeviceState, Inbox, MailboxState, QuotaUsage
from tests.deferreds import failure_of, result_of
from tests.reactorthread import unwrapped

MESSAGE = b"From: a@example.org\nTo: b@example.org\nSubject: hello\n\nline one\nline two\n"


def inbox(store, user="alice"):
    result_of(store.ensure_user(user))
    return result_of(store.get_mailbox(user, "INBOX"))


def deliver(store, box, count):
    return [result_of(store.append(box.id, MESSAGE)).uid for _ in range(count)]


class MailStoreContract:
    def test_provides_the_contracts(self, store):
        assert verifyObject(IMailStore, unwrapped(store))
        assert verifyObject(IChangeFeed, store.changes)

    def test_new_user_gets_inbox_and_special_use_folders(self, store):
        result_of(store.ensure_user("alice"))
        result_of(store.ensure_user("alice"))
        boxes = {m.name: m.special_use for m in result_of(store.list_mailboxes("alice"))}
        assert boxes == {"INBOX": None, "Drafts": "\\Drafts", "Sent": "\\Sent", "Trash": "\\Trash", "Junk": "\\Junk"}
        assert result_of(store.list_subscriptions("alice")) == sorted(boxes)
        failure_of(store.list_mailboxes("nobody"), NoSuchUser)

    def test_inbox_is_case_insensitive(self, store):
        box = inbox(store)
        assert result_of(store.get_mailbox("alice", "iNbOx")).id == box.id
        failure_of(store.get_mailbox("alice", "drafts"), NoSuchMailbox)

    def test_append_normalises_line_endings_and_assigns_ascending_uids(self, store):
        box = inbox(store)
        first = result_of(store.append(box.id, MESSAGE))
        second = result_of(store.append(box.id, MESSAGE.replace(b"\n", b"\r\n"), flags={"\\Seen"}))
        assert (first.uid, second.uid) == (1, 2)
        assert second.flags == {"\\Seen"}
        expected = MESSAGE.replace(b"\n", b"\r\n")
        for record in (first, second):
            with result_of(store.open_message(box.id, record.uid)) as f:
                assert f.read() == expected
            assert record.size == len(expected)
        assert [r.uid for r in result_of(store.list_messages(box.id))] == [1, 2]
        assert result_of(store.get_mailbox("alice", "INBOX")).uidnext == 3

    def test_structure_is_parsed_at_delivery(self, store):
        box = inbox(store)
        record = result_of(store.append(box.id, MESSAGE))
        structure = result_of(store.get_structures(box.id, [record.uid, 99]))[record.uid]
        assert b'"hello"' in structure.envelope
        assert structure.header.startswith(b"From: a@example.org\r\n")
        assert structure.root.end == record.size

    def test_open_message_now_is_open_message_without_a_wait(self, store):
        box = inbox(store)
        record = result_of(store.append(box.id, MESSAGE))

        def now(uid):
            # Called where the store runs (a wrapper answers with a Deferred).
            return result_of(maybeDeferred(store.open_message_now, box.id, uid))

        for _ in range(2):  # a store may have a body at hand once it was read
            opened = now(record.uid)
            if opened is not None:
                with opened as f:
                    assert f.read() == MESSAGE.replace(b"\n", b"\r\n")
            result_of(store.open_message(box.id, record.uid)).close()
        result_of(store.expunge(box.id, [record.uid]))
        with pytest.raises(MessageExpunged):
            # Or None, and open_message says so.
            if now(record.uid) is None:
                failure_of(store.open_message(box.id, record.uid), MessageExpunged)
                raise MessageExpunged(record.uid)

    def test_uids_are_never_reused_after_expunge(self, store):
        box = inbox(store)
        for _ in range(3):
            result_of(store.append(box.id, MESSAGE))
        assert result_of(store.expunge(box.id, [3, 2, 42])) == [2, 3]
        failure_of(store.open_message(box.id, 3), MessageExpunged)
        assert result_of(store.append(box.id, MESSAGE)).uid == 4

    def test_flags_change_and_bump_modseq_only_when_changed(self, store):
        box = inbox(store)
        record = result_of(store.append(box.id, MESSAGE))
        changed = result_of(store.store_flags(box.id, [record.uid], {"\\Seen", "$Label1"}, "add"))
        assert [r.flags for r in changed] == [{"\\Seen", "$Label1"}]
        assert changed[0].modseq > record.modseq
        assert result_of(store.store_flags(box.id, [record.uid], {"\\Seen"}, "add")) == []
        changed = result_of(store.store_flags(box.id, [record.uid], {"\\Seen"}, "remove"))
        assert changed[0].flags == {"$Label1"}
        changed = result_of(store.store_flags(box.id, [record.uid], {"\\Flagged"}, "set"))
        assert changed[0].flags == {"\\Flagged"}

    def test_changes_since_reports_new_changed_and_expunged(self, store):
        box = inbox(store)
        a = result_of(store.append(box.id, MESSAGE))
        b = result_of(store.append(box.id, MESSAGE))
        mark = result_of(store.get_mailbox("alice", "INBOX")).highestmodseq
        result_of(store.store_flags(box.id, [a.uid], {"\\Seen"}, "add"))
        result_of(store.expunge(box.id, [b.uid]))
        c = result_of(store.append(box.id, MESSAGE))
        changes = result_of(store.changes_since(box.id, mark))
        assert [r.uid for r in changes.updated] == [a.uid, c.uid]
        assert changes.expunged == (b.uid,)
        assert changes.uidnext == c.uid + 1
        assert changes.highestmodseq > mark

    def test_a_gap_in_the_uids_asked_for_never_takes_in_a_message_between(self, store):
        box = inbox(store)
        a, b, c = (result_of(store.append(box.id, MESSAGE)) for _ in range(3))
        result_of(store.expunge(box.id, [c.uid]))
        # Two UIDs asked for, two messages in the range a..c: still only a.
        assert [r.uid for r in result_of(store.store_flags(box.id, [a.uid, c.uid], {"\\Deleted"}, "add"))] == [a.uid]
        assert list(result_of(store.get_structures(box.id, [a.uid, c.uid]))) == [a.uid]
        assert result_of(store.expunge(box.id, [a.uid, c.uid])) == [a.uid]
        assert [r.uid for r in result_of(store.list_messages(box.id))] == [b.uid]

    def test_get_messages_gives_records_with_structures(self, store):
        box = inbox(store)
        a, b = (result_of(store.append(box.id, MESSAGE)) for _ in range(2))
        structures = result_of(store.get_structures(box.id, [a.uid, b.uid]))
        assert result_of(store.get_messages(box.id, [b.uid, a.uid, b.uid + 1])) == [
            (a, structures[a.uid]), (b, structures[b.uid])
        ]

    def test_fetch_rows_give_what_records_and_structures_say(self, store):
        box = inbox(store)
        when = datetime.datetime(1996, 7, 17, 2, 44, 25, tzinfo=datetime.timezone(-datetime.timedelta(hours=7)))
        a = result_of(store.append(box.id, MESSAGE, internaldate=when))
        b = result_of(store.append(box.id, MESSAGE.replace(b"hello", b"second")))
        c = result_of(store.append(box.id, MESSAGE))
        result_of(store.expunge(box.id, [c.uid]))
        copied = result_of(store.copy(box.id, [a.uid], box.id))
        d = result_of(store.get_records(box.id, [copied[0][1]]))[0]
        columns = ("bodystructure", "header", "size", "envelope", "internaldate", "modseq", "body")
        rows = result_of(store.fetch_rows(box.id, [d.uid, c.uid, b.uid, a.uid, 42], columns))
        expected = []
        for record, structure in result_of(store.get_messages(box.id, [a.uid, b.uid, d.uid])):
            expected.append((
                record.uid, structure.bodystructure, structure.header, record.size, structure.envelope,
                wire.format_datetime(record.internaldate), record.modseq, structure.body,
            ))
        assert rows == expected
        assert rows[0][5] == b'"17-Jul-1996 02:44:25 -0700"'
        assert rows[2][5] == rows[0][5]  # COPY keeps INTERNALDATE (RFC 3501 6.4.7)
        assert result_of(store.fetch_rows(box.id, [b.uid], ("size",))) == [(b.uid, b.size)]
        assert result_of(store.fetch_rows(box.id, [], ("size",))) == []
        assert result_of(store.fetch_rows(box.id, [c.uid], ("envelope",))) == []

    def test_fetch_rows_of_a_mailbox_deleted_or_moved_from(self, store):
        box = inbox(store)
        result_of(store.create_mailbox("alice", "Other"))
        other = result_of(store.get_mailbox("alice", "Other"))
        a, b = (result_of(store.append(box.id, MESSAGE)) for _ in range(2))
        moved = result_of(store.move(box.id, [a.uid], other.id))
        assert result_of(store.fetch_rows(box.id, [a.uid, b.uid], ("size",))) == [(b.uid, b.size)]
        assert [row[0] for row in result_of(store.fetch_rows(other.id, [moved[0][1]], ("envelope",)))] == [
            moved[0][1]]
        result_of(store.delete_mailbox("alice", "Other"))
        result_of(store.create_mailbox("alice", "Other"))
        again = result_of(store.get_mailbox("alice", "Other"))
        assert result_of(store.fetch_rows(again.id, [1, 2], ("envelope", "header"))) == []

    def test_count_messages_between_two_uids(self, store):
        box = inbox(store)
        uids = [result_of(store.append(box.id, MESSAGE)).uid for _ in range(5)]
        result_of(store.expunge(box.id, [uids[1], uids[4]]))
        assert result_of(store.count_messages(box.id, uids[0], uids[4])) == 3
        assert result_of(store.count_messages(box.id, uids[1], uids[1])) == 0
        assert result_of(store.count_messages(box.id, uids[2], uids[3])) == 2
        assert result_of(store.count_messages(box.id, uids[4] + 1, uids[4] + 10)) == 0
        result_of(store.create_mailbox("alice", "Other"))
        other = result_of(store.get_mailbox("alice", "Other"))
        assert result_of(store.count_messages(other.id, 1, 2**32 - 1)) == 0

    def test_list_flags_and_get_records(self, store):
        box = inbox(store)
        a = result_of(store.append(box.id, MESSAGE, flags={"\\Seen", "$Label1"}))
        b = result_of(store.append(box.id, MESSAGE))
        c = result_of(store.append(box.id, MESSAGE, flags={"\\Seen", "$Label1"}))
        result_of(store.expunge(box.id, [b.uid]))
        assert result_of(store.list_flags(box.id)) == [(a.uid, {"\\Seen", "$Label1"}), (c.uid, {"\\Seen", "$Label1"})]
        assert result_of(store.get_records(box.id, [c.uid, b.uid, a.uid])) == [a, c]
        assert result_of(store.get_records(box.id, [])) == []
        assert result_of(store.list_messages(box.id)) == [a, c]

    def test_uidvalidity_differs_when_a_mailbox_is_recreated(self, store):
        result_of(store.ensure_user("alice"))
        first = result_of(store.create_mailbox("alice", "Projects"))
        failure_of(store.create_mailbox("alice", "Projects"), MailboxExists)
        result_of(store.delete_mailbox("alice", "Projects"))
        second = result_of(store.create_mailbox("alice", "Projects"))
        assert first.uidvalidity != second.uidvalidity
        assert second.id != first.id
        assert 0 < first.uidvalidity < 2**32

    @pytest.mark.parametrize("name", ["", "a//b", "/a", "a/", "a\x00b", "a\x07", "a*", "b%"])
    def test_bad_mailbox_names_are_refused(self, store, name):
        result_of(store.ensure_user("alice"))
        failure_of(store.create_mailbox("alice", name), InvalidMailboxName)

    def test_inbox_cannot_be_deleted(self, store):
        inbox(store)
        failure_of(store.delete_mailbox("alice", "inbox"), InvalidMailboxName)

    def test_rename_moves_children_and_keeps_uidvalidity(self, store):
        result_of(store.ensure_user("alice"))
        parent = result_of(store.create_mailbox("alice", "Work"))
        child = result_of(store.create_mailbox("alice", "Work/2026"))
        result_of(store.create_mailbox("alice", "Workshop"))
        result_of(store.rename_mailbox("alice", "Work", "Job"))
        names = [m.name for m in result_of(store.list_mailboxes("alice"))]
        assert "Job" in names and "Job/2026" in names and "Workshop" in names and "Work" not in names
        assert result_of(store.get_mailbox("alice", "Job/2026")).uidvalidity == child.uidvalidity
        assert result_of(store.get_mailbox("alice", "Job")).uidvalidity == parent.uidvalidity
        failure_of(store.rename_mailbox("alice", "Job", "Workshop"), MailboxExists)

    def test_rename_inbox_moves_messages_and_leaves_an_empty_inbox(self, store):
        box = inbox(store)
        result_of(store.append(box.id, MESSAGE))
        result_of(store.rename_mailbox("alice", "INBOX", "Old"))
        old = result_of(store.get_mailbox("alice", "Old"))
        new_inbox = result_of(store.get_mailbox("alice", "INBOX"))
        assert [r.uid for r in result_of(store.list_messages(old.id))] == [1]
        assert result_of(store.list_messages(new_inbox.id)) == []
        assert new_inbox.uidvalidity != box.uidvalidity

    def test_copy_and_move_keep_flags_and_dates(self, store):
        box = inbox(store)
        trash = result_of(store.get_mailbox("alice", "Trash"))
        a = result_of(store.append(box.id, MESSAGE, flags={"\\Flagged"}))
        b = result_of(store.append(box.id, MESSAGE))
        assert result_of(store.copy(box.id, [a.uid], trash.id)) == [(a.uid, 1)]
        assert result_of(store.move(box.id, [a.uid, b.uid], trash.id)) == [(a.uid, 2), (b.uid, 3)]
        assert result_of(store.list_messages(box.id)) == []
        moved = result_of(store.list_messages(trash.id))
        assert [(r.uid, r.flags, r.internaldate) for r in moved] == [
            (1, {"\\Flagged"}, a.internaldate),
            (2, {"\\Flagged"}, a.internaldate),
            (3, frozenset(), b.internaldate),
        ]
        with result_of(store.open_message(trash.id, 3)) as f:
            assert f.read() == MESSAGE.replace(b"\n", b"\r\n")

    def test_recent_is_claimed_by_one_session_only(self, store):
        box = inbox(store)
        result_of(store.append(box.id, MESSAGE))
        result_of(store.append(box.id, MESSAGE))
        assert result_of(store.claim_recent(box.id)) == {1, 2}
        assert result_of(store.claim_recent(box.id)) == frozenset()
        result_of(store.append(box.id, MESSAGE))
        assert result_of(store.claim_recent(box.id)) == {3}

    def test_an_append_for_a_session_reporting_recent_leaves_it_to_that_sessions_claim(self, store):
        # Claimed with the message or by the claim after it: either way the
        # next claim here returns it and the others already there, once.
        box = inbox(store)
        result_of(store.append(box.id, MESSAGE))
        record = result_of(store.append(box.id, MESSAGE, recent=True))
        assert result_of(store.claim_recent(box.id)) == {1, record.uid}
        assert result_of(store.claim_recent(box.id)) == frozenset()
        result_of(store.append(box.id, MESSAGE))
        assert result_of(store.claim_recent(box.id)) == {3}

    def test_inbox_level_of_children_is_case_insensitive(self, store):
        inbox(store)
        child = result_of(store.create_mailbox("alice", "inbox/Work"))
        assert child.name == "INBOX/Work"
        assert result_of(store.get_mailbox("alice", "Inbox/Work")).id == child.id
        failure_of(store.get_mailbox("alice", "INBOX/work"), NoSuchMailbox)

    def test_an_answered_write_is_seen_by_every_read_after_it(self, store):
        box = inbox(store)
        record = result_of(store.append(box.id, MESSAGE))
        assert [r.uid for r in result_of(store.list_messages(box.id))] == [record.uid]
        changed = result_of(store.store_flags(box.id, [record.uid], {"\\Seen"}, "add"))
        assert result_of(store.get_records(box.id, [record.uid])) == changed
        changes = result_of(store.changes_since(box.id, record.modseq))
        assert [r.flags for r in changes.updated] == [{"\\Seen"}]
        assert result_of(store.expunge(box.id, [record.uid])) == [record.uid]
        assert result_of(store.list_flags(box.id)) == []
        failure_of(store.open_message(box.id, record.uid), MessageExpunged)

    def test_close_finishes_and_is_answered(self, store):
        box = inbox(store)
        result_of(store.append(box.id, MESSAGE))
        assert result_of(store.close()) is None

    def test_count_recent_counts_unclaimed_and_claims_nothing(self, store):
        box = inbox(store)
        result_of(store.append(box.id, MESSAGE))
        result_of(store.append(box.id, MESSAGE))
        assert result_of(store.count_recent(box.id)) == 2
        assert result_of(store.count_recent(box.id)) == 2
        assert result_of(store.claim_recent(box.id)) == {1, 2}
        assert result_of(store.count_recent(box.id)) == 0
        result_of(store.append(box.id, MESSAGE))
        assert result_of(store.count_recent(box.id)) == 1
        failure_of(store.count_recent(box.id + 100), NoSuchMailbox)

    def test_store_flags_unchanged_since_leaves_newer_messages_alone(self, store):
        # RFC 7162 3.1.3
        box = inbox(store)
        for _ in range(3):
            result_of(store.append(box.id, MESSAGE))  # modseqs 2, 3, 4
        result_of(store.store_flags(box.id, [2], {"\\Answered"}, "add"))  # modseq 5
        changed, modified = result_of(store.store_flags_unchanged_since(box.id, [3, 1, 2, 9], {"\\Deleted"}, "add", 4))
        assert modified == [2]
        assert [(r.uid, r.flags, r.modseq) for r in changed] == [(1, {"\\Deleted"}, 6), (3, {"\\Deleted"}, 6)]
        records = {r.uid: r for r in result_of(store.get_records(box.id, [1, 2, 3]))}
        assert records[2].flags == {"\\Answered"} and records[2].modseq == 5
        assert result_of(store.get_mailbox("alice", "INBOX")).highestmodseq == 6
        # Passing the test without changing anything takes no new modseq.
        assert result_of(store.store_flags_unchanged_since(box.id, [1], {"\\Deleted"}, "add", 6)) == ([], [])
        assert result_of(store.store_flags_unchanged_since(box.id, [1, 3], set(), "set", 0)) == ([], [1, 3])
        assert result_of(store.get_mailbox("alice", "INBOX")).highestmodseq == 6

    def test_a_maildrop_and_each_device_view_are_held_by_one_session(self, store):
        # RFC 1939 8: one session per maildrop; a device's view is one of
        # its own, and the plain login another.
        plain = result_of(store.lock_maildrop("alice"))
        phone = result_of(store.lock_maildrop("alice", "phone"))
        desktop = result_of(store.lock_maildrop("alice", "desktop"))
        bob_phone = result_of(store.lock_maildrop("bob", "phone"))
        assert all(callable(release) for release in (plain, phone, desktop, bob_phone))
        assert result_of(store.lock_maildrop("alice")) is None
        assert result_of(store.lock_maildrop("alice", "phone")) is None
        phone()
        phone()  # twice is once
        # Free at once: a client that QUITs and logs in again is let in.
        again = result_of(store.lock_maildrop("alice", "phone"))
        assert callable(again)
        assert result_of(store.lock_maildrop("alice", "phone")) is None
        assert result_of(store.lock_maildrop("alice", "desktop")) is None
        for release in (plain, again, desktop, bob_phone):
            release()

    # POP3 views per device: the marks each device's deletions leave
    # (gateway/pop3/devices.py).

    def test_a_device_sees_its_own_deletions_only(self, store):
        box = inbox(store)
        deliver(store, box, 3)
        assert result_of(store.open_device(box.id, "phone", 1000.0, 10, 0.0)) == frozenset()
        assert result_of(store.open_device(box.id, "desktop", 1000.0, 10, 0.0)) == frozenset()
        assert result_of(store.delete_for_device(box.id, "phone", [1, 3])) == []
        assert result_of(store.open_device(box.id, "phone", 1001.0, 10, 0.0)) == {1, 3}
        assert result_of(store.open_device(box.id, "desktop", 1001.0, 10, 0.0)) == frozenset()
        # The messages are all still there.
        assert [r.uid for r in result_of(store.list_messages(box.id))] == [1, 2, 3]

    def test_what_every_device_deleted_is_answered_until_forgotten(self, store):
        box = inbox(store)
        deliver(store, box, 3)
        for device in ("phone", "desktop"):
            result_of(store.open_device(box.id, device, 1000.0, 10, 0.0))
        assert result_of(store.delete_for_device(box.id, "phone", [1, 2])) == []
        assert result_of(store.delete_for_device(box.id, "desktop", [2, 3])) == [2]
        assert result_of(store.delete_for_device(box.id, "desktop", [1])) == [1, 2]
        result_of(store.forget_device_deletions(box.id, [1, 2]))
        assert result_of(store.open_device(box.id, "phone", 1001.0, 10, 0.0)) == frozenset()
        assert result_of(store.open_device(box.id, "desktop", 1001.0, 10, 0.0)) == {3}
        assert result_of(store.delete_for_device(box.id, "phone", [])) == []

    def test_a_new_device_is_counted_in_from_its_first_login(self, store):
        box = inbox(store)
        deliver(store, box, 2)
        result_of(store.open_device(box.id, "phone", 1000.0, 10, 0.0))
        assert result_of(store.delete_for_device(box.id, "phone", [1])) == [1]
        # Before the policy took 1, a tablet logs in: from now on its
        # deletions count too, and it sees 1.
        assert result_of(store.open_device(box.id, "tablet", 1000.0, 10, 0.0)) == frozenset()
        assert result_of(store.delete_for_device(box.id, "phone", [2])) == []
        assert result_of(store.delete_for_device(box.id, "tablet", [1, 2])) == [1, 2]

    def test_marks_of_messages_gone_go_too(self, store):
        box = inbox(store)
        deliver(store, box, 3)
        for device in ("phone", "desktop"):
            result_of(store.open_device(box.id, device, 1000.0, 10, 0.0))
        result_of(store.delete_for_device(box.id, "phone", [1, 2]))
        assert result_of(store.expunge(box.id, [1])) == [1]
        # Marks for gone and never-present UIDs are not kept.
        assert result_of(store.delete_for_device(box.id, "desktop", [1, 2, 99])) == [2]
        assert result_of(store.open_device(box.id, "phone", 1001.0, 10, 0.0)) == {2}
        assert result_of(store.open_device(box.id, "desktop", 1001.0, 10, 0.0)) == {2}

    def test_devices_are_bounded_and_the_unused_forgotten(self, store):
        box = inbox(store)
        deliver(store, box, 2)
        for n in range(3):
            result_of(store.open_device(box.id, f"d{n}", 1000.0 + n, 3, 0.0))
        failure_of(store.open_device(box.id, "d3", 2000.0, 3, 0.0), TooManyDevices)
        # A known device still logs in.
        assert result_of(store.open_device(box.id, "d2", 2000.0, 3, 0.0)) == frozenset()
        result_of(store.delete_for_device(box.id, "d0", [1]))
        # d0 and d1 last logged in before 1500: forgotten, d0's marks too,
        # and the place is d3's.
        assert result_of(store.open_device(box.id, "d3", 2000.0, 3, 1500.0)) == frozenset()
        assert result_of(store.delete_for_device(box.id, "d2", [2])) == []
        assert result_of(store.delete_for_device(box.id, "d3", [2])) == [2]
        # d0 comes back as new: what it deleted before is back in its view.
        assert result_of(store.open_device(box.id, "d0", 2001.0, 3, 1500.0)) == frozenset()

    def test_a_refused_new_device_changes_nothing(self, store):
        box = inbox(store)
        result_of(store.open_device(box.id, "old", 1000.0, 1, 0.0))
        failure_of(store.open_device(box.id, "new", 2000.0, 1, 0.0), TooManyDevices)
        # "old" was not forgotten by the refused step, nor "new" registered.
        failure_of(store.open_device(box.id, "new", 2000.0, 1, 0.0), TooManyDevices)
        assert result_of(store.open_device(box.id, "old", 2000.0, 1, 0.0)) == frozenset()
        failure_of(store.open_device(999999, "phone", 1000.0, 10, 0.0), NoSuchMailbox)

    def test_devices_belong_to_their_mailbox_and_go_with_their_user(self, store):
        box, other = inbox(store), inbox(store, "bob")
        deliver(store, box, 1)
        deliver(store, other, 1)
        for mailbox in (box, other):
            result_of(store.open_device(mailbox.id, "phone", 1000.0, 1, 0.0))
        assert result_of(store.delete_for_device(box.id, "phone", [1])) == [1]
        assert result_of(store.open_device(other.id, "phone", 1000.0, 1, 0.0)) == frozenset()
        result_of(store.delete_user("alice"))
        box = inbox(store)
        deliver(store, box, 1)
        assert result_of(store.open_device(box.id, "desktop", 1000.0, 1, 0.0)) == frozenset()

    # -- QUOTA usage (RFC 9208) ------------------------------------------------

    def test_quota_usage_follows_every_change(self, store):
        size = len(MESSAGE.replace(b"\n", b"\r\n"))
        assert result_of(store.quota_usage("alice")) == QuotaUsage(0, 0)
        box = inbox(store)
        uids = deliver(store, box, 3)
        assert result_of(store.quota_usage("alice")) == QuotaUsage(3 * size, 3)
        other = result_of(store.create_mailbox("alice", "Archive"))
        result_of(store.copy(box.id, uids[:2], other.id))
        assert result_of(store.quota_usage("alice")) == QuotaUsage(5 * size, 5)
        result_of(store.move(box.id, uids[2:], other.id))
        assert result_of(store.quota_usage("alice")) == QuotaUsage(5 * size, 5)
        result_of(store.expunge(box.id, uids[:1]))
        assert result_of(store.quota_usage("alice")) == QuotaUsage(4 * size, 4)
        result_of(store.rename_mailbox("alice", "INBOX", "Old"))
        assert result_of(store.quota_usage("alice")) == QuotaUsage(4 * size, 4)
        result_of(store.delete_mailbox("alice", "Archive"))
        assert result_of(store.quota_usage("alice")) == QuotaUsage(size, 1)

    def test_quota_usage_is_per_user(self, store):
        deliver(store, inbox(store, "alice"), 2)
        deliver(store, inbox(store, "bob"), 1)
        alice, bob = result_of(store.quota_usage("alice")), result_of(store.quota_usage("bob"))
        assert (alice.messages, bob.messages) == (2, 1)
        assert alice.storage == 2 * bob.storage
        result_of(store.delete_user("alice"))
        assert result_of(store.quota_usage("alice")) == QuotaUsage(0, 0)
        assert result_of(store.quota_usage("bob")) == bob


def crlf(data: bytes) -> bytes:
    return data.replace(b"\n", b"\r\n")


class ImportableStoreContract:
    """IImportableStore: migration keeps a source server's UIDVALIDITY and UIDs."""

    V = 1795715069

    def test_provides_importable(self, store):
        assert verifyObject(IImportableStore, store)

    def test_create_with_uidvalidity_new_and_empty_existing(self, store):
        result_of(store.ensure_user("alice"))
        box = result_of(store.create_mailbox_with_uidvalidity("alice", "INBOX", self.V))
        assert box.uidvalidity == self.V
        assert result_of(store.get_mailbox("alice", "INBOX")).uidvalidity == self.V
        work = result_of(store.create_mailbox_with_uidvalidity("alice", "Work/2026", 7))
        assert (work.name, work.uidvalidity, work.uidnext) == ("Work/2026", 7, 1)

    def test_create_with_uidvalidity_refused_once_messages_were_held(self, store):
        box = inbox(store)
        record = result_of(store.append(box.id, MESSAGE))
        result_of(store.expunge(box.id, [record.uid]))
        failure_of(store.create_mailbox_with_uidvalidity("alice", "INBOX", self.V), MailboxExists)
        assert result_of(store.get_mailbox("alice", "INBOX")).uidvalidity == box.uidvalidity

    def test_imported_uidvalidity_is_never_issued_afresh(self, store):
        result_of(store.create_mailbox_with_uidvalidity("alice", "INBOX", 0xFFFFFFF0))
        assert result_of(store.create_mailbox("alice", "Other")).uidvalidity > 0xFFFFFFF0

    def test_append_with_uid_keeps_uid_flags_and_date(self, store):
        box = result_of(store.create_mailbox_with_uidvalidity("alice", "INBOX", self.V))
        when = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.timezone.utc)
        record = result_of(store.append_with_uid(box.id, 5, MESSAGE, {"\\Seen"}, when))
        assert (record.uid, record.flags, record.internaldate) == (5, {"\\Seen"}, when)
        assert result_of(store.get_mailbox("alice", "INBOX")).uidnext == 6
        with result_of(store.open_message(box.id, 5)) as f:
            assert f.read() == crlf(MESSAGE)
        failure_of(store.append_with_uid(box.id, 5, MESSAGE, (), when), UidNotAvailable)
        failure_of(store.append_with_uid(box.id, 2, MESSAGE, (), when), UidNotAvailable)
        failure_of(store.append_with_uid(box.id, 2**32, MESSAGE, (), when), UidNotAvailable)
        assert result_of(store.append(box.id, MESSAGE)).uid == 6

    def test_raise_uidnext_only_raises(self, store):
        box = result_of(store.create_mailbox_with_uidvalidity("alice", "INBOX", self.V))
        result_of(store.append_with_uid(box.id, 3, MESSAGE, (), None))
        assert result_of(store.raise_uidnext(box.id, 43)) == 43
        assert result_of(store.raise_uidnext(box.id, 10)) == 43
        assert result_of(store.append(box.id, MESSAGE)).uid == 43


class GroupCommitContract:
    """IGroupCommitStore: several deliveries, one commit, each outcome its own."""

    def test_provides_group_commit(self, store):
        assert verifyObject(IGroupCommitStore, store)

    def test_append_many_stores_each_in_order(self, store):
        alice, bob = inbox(store, "alice"), inbox(store, "bob")
        result_of(store.append(alice.id, MESSAGE))
        messages = [b"Subject: %d\r\n\r\nbody %d\r\n" % (n, n) for n in range(3)]
        records = result_of(store.append_many(
            [(alice.id, messages[0]), (bob.id, io.BytesIO(messages[1])), (alice.id, messages[2])]
        ))
        assert [record.uid for record in records] == [2, 1, 3]
        for box, uid, expected in ((alice, 2, messages[0]), (bob, 1, messages[1]), (alice, 3, messages[2])):
            with result_of(store.open_message(box.id, uid)) as f:
                assert f.read() == expected
        assert result_of(store.list_messages(alice.id))[1:] == [records[0], records[2]]

    def test_append_many_refuses_one_and_stores_the_others(self, store):
        box = inbox(store)
        outcomes = result_of(store.append_many([(box.id, MESSAGE), (box.id + 9999, MESSAGE)]))
        assert outcomes[0].uid == 1
        assert isinstance(outcomes[1], NoSuchMailbox)
        assert [r.uid for r in result_of(store.list_messages(box.id))] == [1]

    def test_append_many_finds_a_users_inbox_in_its_transaction(self, store):
        alice = inbox(store, "alice")
        result_of(store.append(alice.id, MESSAGE))
        inbox(store, "bob")
        outcomes = result_of(store.append_many(
            [(Inbox("alice"), MESSAGE), (Inbox("nobody"), MESSAGE), (Inbox("bob"), MESSAGE)]
        ))
        assert outcomes[0].uid == 2 and outcomes[2].uid == 1
        assert isinstance(outcomes[1], NoSuchMailbox)
        # RFC 3501 6.3.5: renaming INBOX moves its messages and leaves a
        # new, empty INBOX, which is the one mail goes to from then on.
        result_of(store.rename_mailbox("alice", "INBOX", "Old"))
        assert result_of(store.append_many([(Inbox("alice"), MESSAGE)]))[0].uid == 1
        assert [r.uid for r in result_of(store.list_messages(inbox(store, "alice").id))] == [1]
        assert [r.uid for r in result_of(store.list_messages(alice.id))] == [1, 2]

    def test_the_same_body_to_many_mailboxes(self, store):
        boxes = [inbox(store, f"user{n}") for n in range(5)]
        outcomes = result_of(store.append_many([(box.id, MESSAGE) for box in boxes]))
        assert [record.uid for record in outcomes] == [1] * 5
        for box in boxes:
            with result_of(store.open_message(box.id, 1)) as f:
                assert f.read() == crlf(MESSAGE)


class StoreDumpContract:
    """IStoreDump: what copying a whole store reads beside IMailStore."""

    def test_provides_dump(self, store):
        assert verifyObject(IStoreDump, store)

    def test_users_are_those_with_mailboxes_or_subscriptions(self, store):
        assert result_of(store.list_users()) == []
        inbox(store, "bob")
        inbox(store, "alice")
        result_of(store.set_subscribed("carol", "Lists", True))
        assert result_of(store.list_users()) == ["alice", "bob", "carol"]

    def test_mailbox_state_has_recent_and_the_expunged_history(self, store):
        box = inbox(store)
        deliver(store, box, 4)  # modseqs 2..5
        assert result_of(store.mailbox_state(box.id)) == MailboxState(1, ())
        assert result_of(store.claim_recent(box.id)) == {1, 2, 3, 4}
        result_of(store.expunge(box.id, [3, 1]))  # modseq 6
        result_of(store.expunge(box.id, [4]))  # modseq 7
        assert result_of(store.mailbox_state(box.id)) == MailboxState(5, ((1, 6), (3, 6), (4, 7)))
        failure_of(store.mailbox_state(box.id + 100), NoSuchMailbox)

    def test_devices_with_their_logins_and_deletions(self, store):
        box = inbox(store)
        deliver(store, box, 3)
        assert result_of(store.list_devices(box.id)) == ()
        result_of(store.open_device(box.id, "phone", 1000.5, 10, 0.0))
        result_of(store.open_device(box.id, "desktop", 1001.0, 10, 0.0))
        result_of(store.delete_for_device(box.id, "phone", [1, 3]))
        assert result_of(store.list_devices(box.id)) == (
            DeviceState("desktop", 1001.0, frozenset()),
            DeviceState("phone", 1000.5, frozenset({1, 3})),
        )

