"""
The SQLite backend: the IMailStore contract (tests/store_contract.py), plus
what only it does: files on disk, index rebuild, cross-process polling.
"""

import datetime
import errno
import os
import shutil
import sqlite3

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from gateway.store.interfaces import (
    IGroupCommitStore,
    IImportableStore,
    IChangeFeed,
    IMailStore,
    TemporaryFailure,
)
from gateway.imap import wire
from gateway.store.encoding import date_text, record_from_row
from gateway.store.sqlite.store import SQLiteStore
from gateway.store.sqlite.summaries import DATE_TEXT
from tests.deferreds import failure_of, result_of
from tests.reactorthread import OnReactorThread
from tests.store.contract import (
    MESSAGE,
    GroupCommitContract,
    ImportableStoreContract,
    MailStoreContract,
    StoreDumpContract,
    deliver,
    inbox,
)


def test_provides_contracts(store):
    assert verifyObject(IMailStore, store)
    assert verifyObject(IChangeFeed, store.changes)
    assert verifyObject(IGroupCommitStore, store)
    assert verifyObject(IImportableStore, store)


def test_changes_since_asked_again_sees_later_commits(store, tmp_path):
    # Sessions share one answer per (mailbox, modseq) until something commits.
    box = inbox(store)
    a = result_of(store.append(box.id, MESSAGE))
    mark = result_of(store.get_mailbox("alice", "INBOX")).highestmodseq
    assert result_of(store.changes_since(box.id, mark)).updated == ()
    assert result_of(store.changes_since(box.id, mark)).updated == ()
    result_of(store.store_flags(box.id, [a.uid], {"\\Seen"}, "add"))
    assert [r.flags for r in result_of(store.changes_since(box.id, mark)).updated] == [{"\\Seen"}]
    other_process = SQLiteStore(tmp_path / "store")
    try:
        result_of(other_process.expunge(box.id, [a.uid]))
    finally:
        other_process.close()
    changes = result_of(store.changes_since(box.id, mark))
    assert (changes.updated, changes.expunged) == ((), (a.uid,))
    assert changes.highestmodseq == mark + 2


def test_a_claim_that_cannot_be_written_leaves_this_sessions_appends_to_the_next(store, monkeypatch):
    # RFC 3501 2.3.2: the session that APPENDed a message is the one that
    # sees it \Recent.  A claim whose write fails claims nothing, and the
    # next one still returns what the APPEND claimed with its message.
    box = inbox(store)
    appended = result_of(store.append(box.id, MESSAGE, recent=True))
    delivered = result_of(store.append(box.id, MESSAGE))

    def broken(mailbox_id):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(store, "_claim", broken)
    assert isinstance(failure_of(store.claim_recent(box.id)), TemporaryFailure)
    monkeypatch.undo()
    assert result_of(store.claim_recent(box.id)) == {appended.uid, delivered.uid}
    assert result_of(store.claim_recent(box.id)) == frozenset()


def test_claim_recent_sees_deliveries_by_another_process(store, tmp_path):
    box = inbox(store)
    a = result_of(store.append(box.id, MESSAGE))
    assert result_of(store.claim_recent(box.id)) == {a.uid}
    assert result_of(store.claim_recent(box.id)) == frozenset()
    other_process = SQLiteStore(tmp_path / "store")
    try:
        b = result_of(other_process.append(box.id, MESSAGE))
    finally:
        other_process.close()
    assert result_of(store.claim_recent(box.id)) == {b.uid}
    assert result_of(store.claim_recent(box.id)) == frozenset()


def test_with_a_reactor_another_process_is_heard_from_the_next_turn(tmp_path):
    # data_version is read once per reactor turn, not once per session.
    clock = Clock()
    store = SQLiteStore(tmp_path / "store", reactor=clock)
    try:
        box = inbox(store)
        mark = result_of(store.get_mailbox("alice", "INBOX")).highestmodseq
        assert result_of(store.changes_since(box.id, mark)).updated == ()
        other_process = SQLiteStore(tmp_path / "store")
        try:
            b = result_of(other_process.append(box.id, MESSAGE))
        finally:
            other_process.close()
        clock.advance(0)
        assert [r.uid for r in result_of(store.changes_since(box.id, mark)).updated] == [b.uid]
        assert result_of(store.claim_recent(box.id)) == {b.uid}
    finally:
        store.close()


def test_full_disk_is_a_temporary_failure_and_leaves_nothing(store, monkeypatch):
    box = inbox(store)

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    failure_of(store.append(box.id, MESSAGE), TemporaryFailure)
    monkeypatch.undo()
    assert result_of(store.list_messages(box.id)) == []
    assert list((store.root / "tmp").iterdir()) == []
    assert result_of(store.append(box.id, MESSAGE)).uid == 1


def test_a_body_moved_in_by_a_group_that_fails_is_moved_back_and_stored_again(store):
    # Each body here goes to one mailbox, so it is moved in, not linked.
    # Bob's mailbox directory is gone: his request fails with an I/O error,
    # which undoes the whole group, alice's move included; hers runs again
    # alone and must find her body where it was.
    alice, bob = inbox(store, "alice"), inbox(store, "bob")
    shutil.rmtree(store.root / "mail" / str(bob.id))
    messages = [b"Subject: a\r\n\r\nfor alice\r\n", b"Subject: b\r\n\r\nfor bob\r\n"]
    stored, refused = result_of(store.append_many([(alice.id, messages[0]), (bob.id, messages[1])]))
    assert stored.uid == 1
    assert isinstance(refused, TemporaryFailure)
    with result_of(store.open_message(alice.id, 1)) as f:
        assert f.read() == messages[0]
    assert result_of(store.list_messages(bob.id)) == []
    assert list((store.root / "tmp").iterdir()) == []


def test_rebuilt_index_keeps_uids_uidvalidity_and_names(tmp_path):
    store = SQLiteStore(tmp_path / "store")
    box = inbox(store)
    for _ in range(4):
        result_of(store.append(box.id, MESSAGE))
    result_of(store.expunge(box.id, [4]))
    before = result_of(store.list_mailboxes("alice"))
    store.close()
    os.unlink(tmp_path / "store" / "index.sqlite")
    rebuilt = SQLiteStore(tmp_path / "store")
    after = result_of(rebuilt.list_mailboxes("alice"))
    assert [(m.id, m.name, m.uidvalidity) for m in after] == [(m.id, m.name, m.uidvalidity) for m in before]
    assert [r.uid for r in result_of(rebuilt.list_messages(box.id))] == [1, 2, 3]
    # RFC 7162 3.1.1: mod-sequences never go down, even across a rebuild.
    highest_before = {m.id: m.highestmodseq for m in before}
    for m in after:
        assert m.highestmodseq > highest_before[m.id]
    assert all(r.modseq > highest_before[box.id] for r in result_of(rebuilt.list_messages(box.id)))
    # UID 4 was expunged before the index was lost: it is never handed out again.
    assert result_of(rebuilt.append(box.id, MESSAGE)).uid == 5
    assert result_of(rebuilt.create_mailbox("alice", "New")).uidvalidity not in {m.uidvalidity for m in before}
    rebuilt.close()


def test_quota_usage_survives_a_rebuild(tmp_path):
    store = SQLiteStore(tmp_path / "store")
    box = inbox(store)
    for _ in range(3):
        result_of(store.append(box.id, MESSAGE))
    result_of(store.expunge(box.id, [2]))
    before = result_of(store.quota_usage("alice"))
    store.close()
    os.unlink(tmp_path / "store" / "index.sqlite")
    rebuilt = SQLiteStore(tmp_path / "store")
    assert result_of(rebuilt.quota_usage("alice")) == before
    assert before.messages == 2
    rebuilt.close()


def test_a_store_from_before_quotas_is_counted_once(tmp_path):
    store = SQLiteStore(tmp_path / "store")
    box = inbox(store)
    for _ in range(3):
        result_of(store.append(box.id, MESSAGE))
    before = result_of(store.quota_usage("alice"))
    store.close()
    # The index as an older version left it: no usage table, no triggers.
    db = sqlite3.connect(tmp_path / "store" / "index.sqlite")
    db.executescript("DROP TRIGGER quota_usage_insert; DROP TRIGGER quota_usage_delete; DROP TABLE quota_usage;")
    db.close()
    reopened = SQLiteStore(tmp_path / "store")
    assert result_of(reopened.quota_usage("alice")) == before
    result_of(reopened.append(box.id, MESSAGE))
    assert result_of(reopened.quota_usage("alice")).messages == 4
    reopened.close()
    # Opening again counts nothing twice.
    again = SQLiteStore(tmp_path / "store")
    assert result_of(again.quota_usage("alice")).messages == 4
    again.close()


def test_local_changes_are_announced_on_the_next_reactor_turn(tmp_path):
    clock = Clock()
    store = SQLiteStore(tmp_path / "store", reactor=clock)
    box = inbox(store)
    seen = []
    unsubscribe = store.changes.subscribe(box.id, lambda mailbox_id, modseq: seen.append((mailbox_id, modseq)))
    record = result_of(store.append(box.id, MESSAGE))
    result_of(store.store_flags(box.id, [record.uid], {"\\Seen"}, "add"))
    assert seen == []
    clock.advance(0)
    assert seen == [(box.id, record.modseq + 1)]
    unsubscribe()
    result_of(store.append(box.id, MESSAGE))
    clock.advance(0)
    assert len(seen) == 1
    store.close()


def test_changes_by_another_process_are_noticed_by_polling(tmp_path):
    clock = Clock()
    server_side = SQLiteStore(tmp_path / "store", reactor=clock, poll_interval=0.5)
    box = inbox(server_side)
    seen = []
    server_side.changes.subscribe(box.id, lambda mailbox_id, modseq: seen.append(modseq))
    server_side.changes.start_polling()
    clock.advance(0.5)
    clock.advance(0)
    seen.clear()
    other_process = SQLiteStore(tmp_path / "store")
    record = result_of(other_process.append(box.id, MESSAGE))
    other_process.close()
    clock.advance(0.5)
    clock.advance(0)
    assert seen == [record.modseq]
    clock.advance(0.5)
    clock.advance(0)
    assert seen == [record.modseq]
    server_side.close()


def test_changes_to_a_users_mailboxes_are_announced(tmp_path):
    clock = Clock()
    store = SQLiteStore(tmp_path / "store", reactor=clock, poll_interval=0.5)
    inbox(store)
    seen = []
    unsubscribe = store.changes.subscribe_mailboxes("alice", seen.append)
    store.changes.subscribe_mailboxes("bob", lambda user: seen.append("bob?"))
    result_of(store.create_mailbox("alice", "Work"))
    result_of(store.rename_mailbox("alice", "Work", "Play"))
    assert seen == []
    clock.advance(0)
    assert seen == ["alice"]
    result_of(store.delete_mailbox("alice", "Play"))
    clock.advance(0)
    assert seen == ["alice", "alice"]
    # Another process: noticed by polling, once.
    store.changes.start_polling()
    clock.advance(0.5)
    clock.advance(0)
    seen.clear()
    other_process = SQLiteStore(tmp_path / "store")
    result_of(other_process.create_mailbox("alice", "Elsewhere"))
    other_process.close()
    clock.advance(0.5)
    clock.advance(0)
    clock.advance(0.5)
    clock.advance(0)
    assert seen == ["alice"]
    unsubscribe()
    result_of(store.create_mailbox("alice", "Quiet"))
    clock.advance(0)
    assert seen == ["alice"]
    store.close()


class TestSQLiteStore(MailStoreContract, ImportableStoreContract, GroupCommitContract, StoreDumpContract):
    """The contract, against the SQLite backend (the ``store`` fixture above)."""


class TestSQLiteStoreWithItsWriterThread(MailStoreContract):
    """
    The contract again as the server runs the store: on a real reactor,
    writes committed by the writer thread and answered on a later turn.
    """

    @pytest.fixture
    def store(self, tmp_path, reactor_thread):
        store = reactor_thread.call(SQLiteStore, tmp_path / "store", reactor=reactor_thread.reactor)
        yield OnReactorThread(store, reactor_thread)
        reactor_thread.call(store.close)

    def test_writes_answer_on_a_later_turn_and_reads_at_once(self, store, reactor_thread):
        box = inbox(store)

        def ask():
            write = store.target.append(box.id, MESSAGE)
            read = store.target.list_mailboxes("alice")
            return write.called, read.called, write

        write_fired, read_fired, write = reactor_thread.call(ask)
        assert (write_fired, read_fired) == (False, True)
        assert reactor_thread.call(lambda: write).uid == 1

    def test_sessions_claiming_recent_at_once_share_one_write(self, store, reactor_thread):
        # A delivery wakes every session idling on the mailbox in one turn:
        # one claim goes to the writer and takes the message; the others
        # answer at once that nothing is left for them (RFC 3501 2.3.2).
        box = inbox(store)
        result_of(store.append(box.id, MESSAGE))

        def claim_together():
            claims = [store.target.claim_recent(box.id) for _ in range(5)]
            at_once = [claim.called for claim in claims]
            return defer.gatherResults(claims).addCallback(lambda sets: (at_once, sets))

        at_once, sets = reactor_thread.call(claim_together)
        assert at_once == [False, True, True, True, True]
        assert sets == [{1}, set(), set(), set(), set()]
        assert result_of(store.claim_recent(box.id)) == frozenset()


# The messages table of a store made before the structures had a table of
# their own: every flag change rewrote the message's parsed structure.
_COMBINED = """
CREATE TABLE messages_combined (
    mailbox_id INTEGER NOT NULL, uid INTEGER NOT NULL, flags TEXT NOT NULL, internaldate INTEGER NOT NULL,
    tzoffset INTEGER NOT NULL, size INTEGER NOT NULL, modseq INTEGER NOT NULL, envelope BLOB NOT NULL,
    body BLOB NOT NULL, bodystructure BLOB NOT NULL, header BLOB NOT NULL, parts TEXT NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
) WITHOUT ROWID;
INSERT INTO messages_combined SELECT * FROM messages JOIN message_structures USING (mailbox_id, uid);
DROP TABLE messages;
DROP TABLE message_structures;
ALTER TABLE messages_combined RENAME TO messages;
CREATE INDEX messages_modseq ON messages (mailbox_id, modseq);
CREATE INDEX messages_records ON messages (mailbox_id, uid, flags, internaldate, tzoffset, size, modseq);
"""


def test_a_store_with_structures_in_the_messages_table_is_split_at_open(tmp_path):
    old = SQLiteStore(tmp_path)
    box = inbox(old)
    uids = deliver(old, box, 3)
    result_of(old.store_flags(box.id, [2], {"\\Seen"}, "add"))
    records = result_of(old.list_messages(box.id))
    structures = result_of(old.get_structures(box.id, uids))
    usage = result_of(old.quota_usage("alice"))
    old.close()
    db = sqlite3.connect(tmp_path / "index.sqlite")
    db.executescript(_COMBINED)
    db.close()

    store = SQLiteStore(tmp_path)
    try:
        assert result_of(store.list_messages(box.id)) == records
        assert result_of(store.get_structures(box.id, uids)) == structures
        # Moving the rows is no delivery and no expunge; the quota triggers follow the new table.
        assert result_of(store.quota_usage("alice")) == usage
        result_of(store.expunge(box.id, [1]))
        after = result_of(store.quota_usage("alice"))
        assert (after.storage, after.messages) == (usage.storage - records[0].size, 2)
        # A flag change now touches the records alone, and the next open has nothing to do.
        result_of(store.store_flags(box.id, [3], {"\\Flagged"}, "add"))
        assert "\\Flagged" in result_of(store.get_records(box.id, [3]))[0].flags
    finally:
        store.close()
    db = sqlite3.connect(tmp_path / "index.sqlite")
    columns = [row[1] for row in db.execute("PRAGMA table_info(messages)")]
    indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_schema WHERE type = 'index'")}
    db.close()
    assert columns == ["mailbox_id", "uid", "flags", "internaldate", "tzoffset", "size", "modseq"]
    assert "messages_records" not in indexes and "messages_modseq" in indexes
    again = SQLiteStore(tmp_path)
    try:
        assert [r.uid for r in result_of(again.list_messages(box.id))] == uids[1:]
    finally:
        again.close()


def test_a_store_from_before_summaries_gets_them_at_open(tmp_path):
    old = SQLiteStore(tmp_path)
    box = inbox(old)
    uids = deliver(old, box, 3)
    result_of(old.expunge(box.id, [2]))
    columns = ("internaldate", "envelope", "body", "bodystructure", "size")
    rows = result_of(old.fetch_rows(box.id, uids, columns))
    old.close()
    # The index as an older version left it: no summaries, no triggers.
    db = sqlite3.connect(tmp_path / "index.sqlite")
    db.executescript(
        "DROP TRIGGER message_summaries_insert; DROP TRIGGER message_summaries_delete; DROP TABLE message_summaries;"
    )
    db.close()
    store = SQLiteStore(tmp_path)
    try:
        assert [row[0] for row in rows] == [1, 3]
        assert result_of(store.fetch_rows(box.id, uids, columns)) == rows
        # The triggers follow deliveries and expunges from now on.
        uid = result_of(store.append(box.id, MESSAGE)).uid
        result_of(store.expunge(box.id, [1]))
        assert [row[0] for row in result_of(store.fetch_rows(box.id, [1, 3, uid], columns))] == [3, uid]
    finally:
        store.close()
    db = sqlite3.connect(tmp_path / "index.sqlite")
    kept = db.execute("SELECT mailbox_id, uid FROM message_summaries ORDER BY uid").fetchall()
    db.close()
    assert kept == [(box.id, 3), (box.id, uid)]


def test_a_rebuilt_index_has_the_summaries_fetch_reads(tmp_path):
    store = SQLiteStore(tmp_path / "store")
    box = inbox(store)
    uids = [result_of(store.append(box.id, MESSAGE, internaldate=WHEN)).uid for _ in range(3)]
    columns = ("size", "internaldate", "envelope", "body", "bodystructure")
    rows = result_of(store.fetch_rows(box.id, uids, columns))
    store.close()
    os.unlink(tmp_path / "store" / "index.sqlite")
    rebuilt = SQLiteStore(tmp_path / "store")
    try:
        found = result_of(rebuilt.fetch_rows(box.id, uids, columns))
        # A rebuild takes INTERNALDATE from the file's time, not the one APPEND gave.
        assert [row[:2] + row[3:] for row in found] == [row[:2] + row[3:] for row in rows]
        records = result_of(rebuilt.get_records(box.id, uids))
        assert [row[2] for row in found] == [wire.format_datetime(record.internaldate) for record in records]
    finally:
        rebuilt.close()


def test_a_message_without_its_summary_is_read_from_its_record_and_structure(tmp_path):
    store = SQLiteStore(tmp_path)
    box = inbox(store)
    uids = [result_of(store.append(box.id, MESSAGE, internaldate=WHEN)).uid for _ in range(4)]
    result_of(store.expunge(box.id, [uids[3]]))
    columns = ("size", "internaldate", "envelope", "body", "bodystructure", "modseq", "header")
    rows = result_of(store.fetch_rows(box.id, uids, columns))
    db = sqlite3.connect(tmp_path / "index.sqlite")
    db.execute("DELETE FROM message_summaries WHERE uid = ?", (uids[1],))
    db.commit()
    db.close()
    try:
        assert [row[0] for row in rows] == uids[:3]
        assert result_of(store.fetch_rows(box.id, uids, columns)) == rows
        assert result_of(store.fetch_rows(box.id, uids[1:], columns[:1])) == [row[:2] for row in rows[1:]]
    finally:
        store.close()


def test_a_record_written_after_its_structure_completes_the_summary(tmp_path):
    store = SQLiteStore(tmp_path)
    box = inbox(store)
    uid = result_of(store.append(box.id, MESSAGE, internaldate=WHEN)).uid
    columns = ("size", "internaldate", "envelope", "body", "bodystructure", "modseq")
    rows = result_of(store.fetch_rows(box.id, [uid], columns))
    # Written the other way round, as no path of the store does yet.
    db = sqlite3.connect(tmp_path / "index.sqlite")
    record = db.execute("SELECT * FROM messages").fetchone()
    structure = db.execute("SELECT * FROM message_structures").fetchone()
    db.execute("DELETE FROM messages")
    db.execute("DELETE FROM message_structures")
    db.execute("INSERT INTO message_structures VALUES (?, ?, ?, ?, ?, ?, ?)", structure)
    assert db.execute("SELECT internaldate, size FROM message_summaries").fetchall() == [(None, None)]
    db.execute("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?)", record)
    db.commit()
    db.close()
    try:
        assert result_of(store.fetch_rows(box.id, [uid], columns)) == rows
        assert rows[0][2] == b'"17-Jul-1996 02:44:25 -0700"'
    finally:
        store.close()


WHEN = datetime.datetime(1996, 7, 17, 2, 44, 25, tzinfo=datetime.timezone(-datetime.timedelta(hours=7)))


@given(
    st.integers(min_value=-62135596800 + 86400, max_value=253402300799 - 86400),
    st.integers(min_value=-24 * 60 + 1, max_value=24 * 60 - 1),
)
def test_the_stored_date_is_the_records_date_time(timestamp, tzoffset):
    """RFC 3501 9 date-time, as wire.format_datetime gives it, from the index's columns in SQL and in Python."""
    when = record_from_row((1, "", timestamp, tzoffset, 0, 0)).internaldate
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE m (internaldate INTEGER, tzoffset INTEGER)")
    db.execute("INSERT INTO m VALUES (?, ?)", (timestamp, tzoffset))
    stored = db.execute(f"SELECT {DATE_TEXT.format(m='m')} FROM m").fetchone()[0]
    db.close()
    assert stored == date_text(timestamp, tzoffset) == wire.format_datetime(when)
