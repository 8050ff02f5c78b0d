"""
The SQLite store's writer (gateway/store/sqlite/writer.py) on its own: how it
groups requests into transactions, which durability each group gets, and
what a failure undoes.  Requests write to a one-table database, so every
outcome is read back from SQLite itself.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import threading
import time

import pytest

from gateway.durable import read_slot_file
from gateway.store.interfaces import NoSuchMailbox, StoreFull, TemporaryFailure
from gateway.store.sqlite import unsynced as unsynced_module
from gateway.store.sqlite import writer as writer_module
from gateway.store.sqlite.store import SQLiteStore
from gateway.store.sqlite.unsynced import UnsyncedRecord
from gateway.store.sqlite.requests import store_error
from gateway.store.sqlite.writer import Writer
from tests.deferreds import failure_of, result_of
from tests.store.contract import MESSAGE, inbox


class SignallingRecord(UnsyncedRecord):
    def __init__(self, root):
        super().__init__(root)
        self.emptied = threading.Event()

    def release(self):
        had = self.mailboxes
        super().release()
        if had:
            self.emptied.set()


class Database:
    """A WAL database, its writer, and a log of what ran on the write connection."""

    def __init__(self, path, reactor=None, flag_durability="batched", lock=None):
        self.path = path
        setup = sqlite3.connect(path / "index.sqlite", isolation_level=None)
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute("CREATE TABLE items (name TEXT PRIMARY KEY)")
        setup.close()
        self.db = sqlite3.connect(path / "index.sqlite", isolation_level=None, check_same_thread=False)
        self.statements: list[str] = []
        self.commit_times: list[float] = []
        self.sync_times: list[float] = []
        self.db.set_trace_callback(self.trace)
        self.synced = threading.Event()
        self.groups: list[list[object]] = []
        self.record = SignallingRecord(path)
        self.writer = Writer(self.db, self.sync_wal, self.record, self.done, reactor, flag_durability, lock=lock)

    def trace(self, statement):
        self.statements.append(statement)
        if statement == "COMMIT":
            self.commit_times.append(time.monotonic())

    def sync_wal(self):
        self.sync_times.append(time.monotonic())
        self.synced.set()

    def done(self, requests, changed):
        self.groups.append([request.outcome for request in requests])

    def names(self):
        reader = sqlite3.connect(self.path / "index.sqlite")
        try:
            return sorted(row[0] for row in reader.execute("SELECT name FROM items"))
        finally:
            reader.close()

    def commits(self):
        return [s for s in self.statements if s in ("COMMIT", "ROLLBACK") or s.startswith("PRAGMA synchronous")]


def insert(name, notify=None, undo=None, directory=None):
    def run(step):
        step.db.execute("INSERT INTO items (name) VALUES (?)", (name,))
        if undo is not None:
            step.on_rollback(undo)
        if directory is not None:
            step.sync_directory(directory)
        if notify is not None:
            step.notify(notify, 1)
        return name

    return run


def delete(name):
    def run(step):
        step.db.execute("DELETE FROM items WHERE name = ?", (name,))
        return name

    return run


def refuse(step):
    step.db.execute("INSERT INTO items (name) VALUES ('refused')")
    raise NoSuchMailbox("9")


@pytest.fixture
def database(tmp_path):
    database = Database(tmp_path)
    yield database
    database.db.close()


def test_without_threads_each_request_is_its_own_full_commit(database):
    assert result_of(database.writer.submit(insert("a"), durable=False)) == "a"
    assert result_of(database.writer.submit(insert("b"))) == "b"
    assert database.names() == ["a", "b"]
    # Nothing would sync a NORMAL commit later, so every commit is FULL.
    assert database.commits() == ["PRAGMA synchronous=FULL", "COMMIT", "COMMIT"]


def test_a_refusal_undoes_only_its_request(database):
    undone = []
    outcomes = database.writer.submit_together([
        (insert("a"), True, False),
        (lambda step: (step.on_rollback(lambda: undone.append("refused")), refuse(step)), True, False),
        (insert("c"), True, False),
    ])
    assert result_of(outcomes[0]) == "a"
    failure_of(outcomes[1], NoSuchMailbox)
    assert result_of(outcomes[2]) == "c"
    assert database.names() == ["a", "c"]
    assert undone == ["refused"]
    # One transaction for the three.
    assert database.statements.count("COMMIT") == 1


def test_a_failing_request_fails_alone_and_the_others_run_again(database):
    undone = []

    def full(step):
        step.db.execute("INSERT INTO items (name) VALUES ('half')")
        raise OSError(errno.ENOSPC, "No space left on device")

    outcomes = database.writer.submit_together([
        (insert("a", undo=lambda: undone.append("a")), True, False),
        (full, True, False),
        (insert("c"), True, False),
    ])
    error = failure_of(outcomes[1], StoreFull)
    assert error.__cause__.errno == errno.ENOSPC
    assert [result_of(outcomes[0]), result_of(outcomes[2])] == ["a", "c"]
    # "a" ran, was undone with the failed group, and ran again.
    assert undone == ["a"]
    assert database.names() == ["a", "c"]
    assert database.statements.count("ROLLBACK") == 1 and database.statements.count("COMMIT") == 1


def test_a_failed_commit_fails_the_group_and_lets_space_freeing_requests_through(database, monkeypatch, tmp_path):
    result_of(database.writer.submit(insert("old")))
    undone = []

    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device")

    # The directory fsync before the COMMIT fails, as on a full disk.
    monkeypatch.setattr(writer_module, "fsync_dir", full)
    outcomes = database.writer.submit_together([
        (insert("new", undo=lambda: undone.append("new"), directory=tmp_path), True, False),
        (delete("old"), True, True),
        (insert("other", undo=lambda: undone.append("other")), True, False),
    ])
    for failed in (outcomes[0], outcomes[2]):
        assert isinstance(failure_of(failed, StoreFull), TemporaryFailure)
    # Nothing half-done: both inserts and their files undone; the delete,
    # which frees space, ran again alone and went through.
    assert sorted(undone) == ["new", "other"]
    assert result_of(outcomes[1]) == "old"
    assert database.names() == []


def test_a_full_index_is_store_full():
    error = sqlite3.OperationalError("database or disk is full")
    error.sqlite_errorname = "SQLITE_FULL"
    assert isinstance(store_error(error), StoreFull)
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorname = "SQLITE_BUSY"
    assert type(store_error(busy)) is TemporaryFailure
    assert type(store_error(OSError(errno.EIO, "I/O error"))) is TemporaryFailure
    assert isinstance(store_error(OSError(errno.EDQUOT, "Disk quota exceeded")), StoreFull)


def test_a_full_index_refuses_deliveries_and_still_expunges(tmp_path):
    # SQLite's own limit makes the index full for real (SQLITE_FULL).
    store = SQLiteStore(tmp_path / "store")
    box = inbox(store)
    first = result_of(store.append(box.id, MESSAGE))
    pages = store._write_db.execute("PRAGMA page_count").fetchone()[0]
    store._write_db.execute(f"PRAGMA max_page_count = {pages}")
    # The header goes into the index (FETCH answers from it): no room for it.
    big = b"".join(b"X-Filler-%05d: a header the index has no room for\r\n" % n for n in range(2000)) + MESSAGE
    error = failure_of(store.append(box.id, big), StoreFull)
    assert "full" in str(error)
    assert list((tmp_path / "store" / "tmp").iterdir()) == []
    assert result_of(store.expunge(box.id, [first.uid])) == [first.uid]
    assert result_of(store.list_messages(box.id)) == []
    store.close()


def test_a_busy_index_fails_the_group_as_temporary(tmp_path):
    database = Database(tmp_path)
    database.db.execute("PRAGMA busy_timeout = 0")
    other = sqlite3.connect(tmp_path / "index.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        failure_of(database.writer.submit(insert("a")), TemporaryFailure)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert result_of(database.writer.submit(insert("b"))) == "b"
    database.db.close()


# -- on its own thread ---------------------------------------------------------


@pytest.fixture
def threaded(tmp_path, reactor_thread):
    database = Database(tmp_path, reactor_thread.reactor)
    yield database
    reactor_thread.call(database.writer.close)


def test_what_queues_while_a_group_commits_is_the_next_group(threaded, reactor_thread):
    release = threading.Event()
    running = threading.Event()

    def slow(step):
        running.set()
        assert release.wait(10)
        return insert("first")(step)

    def ask():
        first = threaded.writer.submit(slow)
        assert running.wait(10)
        # The writer thread is busy with the first group: these queue.
        later = [threaded.writer.submit(insert(name)) for name in "bcd"]
        release.set()
        return defer_list([first, *later])

    assert reactor_thread.call(ask) == ["first", "b", "c", "d"]
    assert [len(group) for group in threaded.groups] == [1, 3]
    assert threaded.statements.count("COMMIT") == 2
    assert threaded.names() == ["b", "c", "d", "first"]


def test_a_group_waits_for_the_requests_of_bodies_being_spooled(tmp_path, reactor_thread, monkeypatch):
    # As PostgreSQL's commit_delay: two deliveries spooled at once share
    # one transaction and one flush, though the second's request comes
    # after the writer took the first.
    monkeypatch.setattr(writer_module, "GATHER_SECONDS", 30.0)
    spooling = [1]
    asked = threading.Event()

    def arriving():
        asked.set()
        return spooling[0]

    database = Database(tmp_path, reactor_thread.reactor)
    database.writer._arriving = arriving
    try:
        first = []
        reactor_thread.call(lambda: first.append(database.writer.submit(insert("a"))))
        assert asked.wait(10), "the writer never asked what is on its way"

        def second():
            spooling[0] = 0
            return defer_list([first[0], database.writer.submit(insert("b"))])

        assert reactor_thread.call(second) == ["a", "b"]
        assert [len(group) for group in database.groups] == [2]
        assert database.statements.count("COMMIT") == 1
    finally:
        reactor_thread.call(database.writer.close)


def test_a_lone_request_waits_for_nothing(threaded, reactor_thread, monkeypatch):
    monkeypatch.setattr(writer_module, "GATHER_SECONDS", 30.0)
    started = time.monotonic()
    assert reactor_thread.call(lambda: threaded.writer.submit(insert("a"))) == "a"
    assert time.monotonic() - started < 10


def test_answers_arrive_on_the_reactor_thread(threaded, reactor_thread):
    def ask():
        d = threaded.writer.submit(insert("a"))
        assert not d.called
        return d.addCallback(lambda result: (result, threading.get_ident()))

    assert reactor_thread.call(ask) == ("a", reactor_thread.ident)
    assert threaded.names() == ["a"]


def test_flag_groups_commit_normal_record_their_mailboxes_and_sync_soon(threaded, reactor_thread, tmp_path,
                                                                        monkeypatch):
    monkeypatch.setattr(writer_module, "RELEASE_RECORD_AFTER", 600)
    fsyncs = []
    real_fsync = os.fsync
    monkeypatch.setattr(unsynced_module.os, "fsync", lambda fd: fsyncs.append(fd) or real_fsync(fd))
    reactor_thread.call(lambda: threaded.writer.submit(insert("flag", notify=7), durable=False))
    assert threaded.commits()[:2] == ["PRAGMA synchronous=NORMAL", "COMMIT"]
    # Recorded before the commit, for a recovery should the sync never come.
    assert fsyncs
    recorded = len(fsyncs)
    assert threaded.synced.wait(10), "the WAL was never synced"
    # DESIGN.md: durable within a second of the change.
    assert 0 < threaded.sync_times[0] - threaded.commit_times[0] <= 1.0
    # Synced, the record keeps mailbox 7 while the writer is busy: its next
    # flag change costs no fsync of the record.
    assert threaded.record.mailboxes == frozenset({7})
    reactor_thread.call(lambda: threaded.writer.submit(insert("again", notify=7), durable=False))
    assert len(fsyncs) == recorded
    # Once idle a while, the writer empties it.
    monkeypatch.setattr(writer_module, "RELEASE_RECORD_AFTER", 0.05)
    reactor_thread.call(lambda: threaded.writer.submit(insert("delivery")))
    assert threaded.record.emptied.wait(10), "the record was never emptied"
    assert threaded.record.mailboxes == frozenset()
    records = list(tmp_path.glob("unsynced.*"))
    assert len(records) == 1 and records[0].read_bytes() == b""
    # The durable group was synced before its answer.
    assert threaded.sync_times[-1] >= threaded.commit_times[-1]
    reactor_thread.call(threaded.writer.close)
    assert list(tmp_path.glob("unsynced.*")) == []


def test_immediate_flag_durability_makes_every_group_full(tmp_path, reactor_thread):
    database = Database(tmp_path, reactor_thread.reactor, flag_durability="immediate")
    reactor_thread.call(lambda: database.writer.submit(insert("flag", notify=7), durable=False))
    reactor_thread.call(database.writer.close)
    assert "PRAGMA synchronous=NORMAL" not in database.statements
    assert not database.synced.is_set()
    assert list(tmp_path.glob("unsynced.*")) == []


def test_close_answers_what_was_queued_then_refuses(threaded, reactor_thread):
    def ask():
        queued = [threaded.writer.submit(insert(name)) for name in "ab"]
        closed = threaded.writer.close()
        late = threaded.writer.submit(insert("late"))
        return defer_list(queued).addCallback(lambda names: closed.addCallback(lambda _: (names, late)))

    names, late = reactor_thread.call(ask)
    assert names == ["a", "b"]
    failure_of(late, TemporaryFailure)
    assert threaded.names() == ["a", "b"]


def test_directories_are_fsynced_beside_the_commit_and_before_the_answer(threaded, reactor_thread, monkeypatch,
                                                                          tmp_path):
    # The fsync waits until the COMMIT has started: were the two in turn, it
    # would wait in vain.  The answer comes only after the fsync is done.
    committing = threading.Event()
    order = []
    threaded.db.set_trace_callback(lambda statement: statement == "COMMIT" and committing.set())

    def fsync_dir(path):
        order.append(("fsync started beside the commit", committing.wait(10)))
        order.append("fsync done")

    monkeypatch.setattr(writer_module, "fsync_dir", fsync_dir)
    answer = reactor_thread.call(
        lambda: threaded.writer.submit(insert("a", directory=tmp_path)).addCallback(order.append))
    assert answer is None
    assert order == [("fsync started beside the commit", True), "fsync done", "a"]


def test_a_directory_fsync_failing_after_the_commit_fails_the_request(threaded, reactor_thread, monkeypatch, tmp_path):
    # Committed, but its name may not survive a power cut: not acknowledged
    # (the sender tries again; the start-up sweep expunges a row whose body
    # file a crash took).
    def fsync_dir(path):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(writer_module, "fsync_dir", fsync_dir)
    refused = reactor_thread.call(lambda: threaded.writer.submit(insert("a", directory=tmp_path)).addCallbacks(
        lambda result: None, lambda failure: (failure.type, str(failure.value))))
    assert refused == (TemporaryFailure, "cannot write to the store: Input/output error")
    assert threaded.names() == ["a"]


def test_actions_beside_the_commit_run_beside_it_once_a_key_and_before_what_follows_it(threaded, reactor_thread):
    # As a directory fsync: beside the COMMIT, answered after.  Two requests
    # of a group asking for one key get one run, the last one asked for.
    committing = threading.Event()
    order = []
    threaded.db.set_trace_callback(lambda statement: statement == "COMMIT" and committing.set())

    def recording(name, key):
        def run(step):
            step.beside_commit(key, lambda: order.append((name, committing.wait(10))))
            step.after_commit(lambda: order.append(f"after {name}"))
            return insert(name)(step)
        return run

    def ask():
        return defer_list([threaded.writer.submit(recording(name, key))
                           for name, key in (("a", "slot 1"), ("b", "slot 1"), ("c", "slot 2"))])

    release = threading.Event()

    def hold(step):
        assert release.wait(10)

    def queued():
        first = threaded.writer.submit(hold)
        rest = ask()
        release.set()
        return defer_list([first, rest])

    reactor_thread.call(queued)
    assert sorted(order[:2]) == [("b", True), ("c", True)]
    assert order[2:] == ["after a", "after b", "after c"]


def test_an_action_beside_the_commit_failing_fails_the_request_and_skips_what_follows(threaded, reactor_thread):
    after = []

    def broken():
        raise OSError(errno.EIO, "Input/output error")

    def run(step):
        step.beside_commit("slot", broken)
        step.after_commit(lambda: after.append("unlinked"))
        return insert("a")(step)

    refused = reactor_thread.call(lambda: threaded.writer.submit(run).addCallbacks(
        lambda result: None, lambda failure: (failure.type, str(failure.value))))
    assert refused == (TemporaryFailure, "cannot write to the store: Input/output error")
    assert after == [] and threaded.names() == ["a"]


class RecordingLock:
    """A write lock that only notes when it is taken and let go."""

    def __init__(self, events):
        self.events = events

    def acquire(self):
        self.events.append("lock")

    def release(self):
        self.events.append("unlock")

    def close(self):
        pass


@pytest.fixture
def locked(tmp_path, reactor_thread):
    events = []
    database = Database(tmp_path, reactor_thread.reactor, lock=RecordingLock(events))
    real_sync = database.sync_wal

    def sync_wal():
        events.append("sync")
        real_sync()

    database.writer._sync_wal = sync_wal
    def trace(statement):
        database.trace(statement)
        if statement in ("COMMIT", "ROLLBACK"):
            events.append((statement, sorted(database.record.mailboxes)))

    database.db.set_trace_callback(trace)
    database.events = events
    yield database
    reactor_thread.call(database.writer.close)


def test_a_durable_group_lets_the_write_lock_go_before_its_sync_and_is_answered_after(locked, reactor_thread):
    # The lock is held for the statements, not for the disk flush: another
    # process's writer goes on while this one syncs.  The mailbox is in the
    # record before the commit anyone can see.
    reactor_thread.call(lambda: locked.writer.submit(insert("a", notify=7)).addCallback(locked.events.append))
    assert locked.events == ["lock", ("COMMIT", [7]), "unlock", "sync", "a"]
    assert "PRAGMA synchronous=FULL" not in locked.statements
    assert locked.names() == ["a"]


def test_a_group_changing_a_mailbox_list_is_synced_before_anyone_sees_it(locked, reactor_thread):
    # A mailbox made, renamed or deleted is outside what the record covers:
    # the group runs again, FULL, and the lock is let go after the flush.
    def create(step):
        step.notify_mailboxes("alice")
        return insert("Drafts")(step)

    reactor_thread.call(lambda: locked.writer.submit(create).addCallback(locked.events.append))
    assert locked.events == ["lock", ("ROLLBACK", []), ("COMMIT", []), "unlock", "Drafts"]
    assert locked.commits()[-2:] == ["PRAGMA synchronous=FULL", "COMMIT"]
    assert locked.names() == ["Drafts"]


def test_a_group_of_more_rows_than_the_uid_margin_is_synced_before_anyone_sees_it(locked, reactor_thread,
                                                                                     monkeypatch):
    # A crash recovery steps UIDNEXT over UID_MARGIN lost UIDs at most.
    monkeypatch.setattr(writer_module, "UID_MARGIN", 2)

    def copy(step):
        for name in "abc":
            insert(name, notify=7)(step)
        return "copied"

    reactor_thread.call(lambda: locked.writer.submit(copy).addCallback(locked.events.append))
    assert locked.events == ["lock", ("ROLLBACK", []), ("COMMIT", []), "unlock", "copied"]
    assert locked.names() == ["a", "b", "c"]


def test_a_wal_sync_failing_after_the_lock_fails_the_group_and_skips_what_follows(locked, reactor_thread):
    after = []

    def broken():
        locked.events.append("sync")
        raise OSError(errno.EIO, "Input/output error")

    locked.writer._sync_wal = broken

    def run(step):
        step.after_commit(lambda: after.append("unlinked"))
        return insert("a", notify=7)(step)

    refused = reactor_thread.call(lambda: locked.writer.submit(run).addCallbacks(
        lambda result: None, lambda failure: (failure.type, str(failure.value))))
    assert refused == (TemporaryFailure, "cannot write to the store: Input/output error")
    assert after == []
    # Not acknowledged; the mailbox stays recorded until a sync succeeds.
    assert locked.record.mailboxes == frozenset({7})


def defer_list(deferreds):
    from twisted.internet import defer

    return defer.gatherResults(deferreds, consumeErrors=True)


def test_a_synced_record_keeps_a_few_mailboxes_not_many(tmp_path):
    record = UnsyncedRecord(tmp_path)
    record.mark([1, 2, 3])
    record.synced()
    assert record.mailboxes == {1, 2, 3}
    assert json.loads(next(tmp_path.glob("unsynced.*")).read_text())["mailboxes"] == [1, 2, 3]
    record.mark(range(unsynced_module.KEPT_MAILBOXES + 1))
    record.synced()
    assert record.mailboxes == frozenset()
    assert next(tmp_path.glob("unsynced.*")).read_bytes() == b""
    record.close()


def test_store_records_survive_a_crash_and_raise_modseqs(tmp_path):
    # A process that committed flag changes with synchronous=NORMAL and died
    # before the WAL sync leaves its record: the next start raises the
    # mod-sequences of those mailboxes above any the lost changes took.
    store = SQLiteStore(tmp_path / "store")
    box = inbox(store)
    other = result_of(store.create_mailbox("alice", "Other"))
    record = result_of(store.append(box.id, MESSAGE))
    untouched = result_of(store.append(other.id, MESSAGE))
    store.close()
    (tmp_path / "store" / "unsynced.999999.0").write_text(f"[{box.id}]")
    reopened = SQLiteStore(tmp_path / "store")
    after = result_of(reopened.get_records(box.id, [record.uid]))[0]
    assert after.modseq > record.modseq + 1_000_000
    assert result_of(reopened.get_mailbox("alice", "INBOX")).highestmodseq == after.modseq
    assert result_of(reopened.changes_since(box.id, record.modseq + 500)).updated == (after,)
    assert result_of(reopened.get_records(other.id, [untouched.uid])) == [untouched]
    assert not (tmp_path / "store" / "unsynced.999999.0").exists()
    # No UID a lost message can have had is given again, by the index or by
    # a rebuild from the files.
    assert result_of(reopened.append(box.id, MESSAGE)).uid >= record.uid + 1 + unsynced_module.UID_MARGIN
    slot = read_slot_file(tmp_path / "store" / "mail" / str(box.id) / "uidnext")
    assert int(slot) >= record.uid + 1 + unsynced_module.UID_MARGIN
    assert result_of(reopened.append(other.id, MESSAGE)).uid == untouched.uid + 1
    reopened.close()


def test_a_record_of_a_process_that_died_while_the_machine_ran_on_is_only_removed(tmp_path):
    # Its writes are in the page cache, which outlives the process: nothing
    # was lost, so no mod-sequence or UIDNEXT is raised.
    store = SQLiteStore(tmp_path / "store")
    box = inbox(store)
    record = result_of(store.append(box.id, MESSAGE))
    store.close()
    left = tmp_path / "store" / "unsynced.999999.0"
    left.write_text(json.dumps({"boot": unsynced_module.BOOT, "mailboxes": [box.id]}))
    reopened = SQLiteStore(tmp_path / "store")
    assert result_of(reopened.get_records(box.id, [record.uid])) == [record]
    assert result_of(reopened.append(box.id, MESSAGE)).uid == record.uid + 1
    assert not left.exists()
    reopened.close()


def power_cut(crashed, synced):
    """
    Make the copy of a store ``crashed`` what a power cut leaves: the index
    files as ``synced`` holds them, and its records written before the
    machine started again.
    """
    for name, data in synced.items():
        (crashed / name).write_bytes(data)
    (crashed / "index.sqlite-shm").unlink(missing_ok=True)
    records = list(crashed.glob("unsynced.*"))
    assert len(records) == 1
    left = json.loads(records[0].read_text())
    assert left["boot"] == unsynced_module.BOOT
    records[0].write_text(json.dumps({**left, "boot": "an earlier boot"}))


def test_a_live_process_record_is_left_alone(tmp_path, reactor_thread):
    store = reactor_thread.call(SQLiteStore, tmp_path / "store", reactor=reactor_thread.reactor)
    box = reactor_thread.call(lambda: store.ensure_user("alice").addCallback(lambda _: store.get_mailbox("alice", "INBOX")))
    record = reactor_thread.call(store.append, box.id, MESSAGE)
    reactor_thread.call(store.store_flags, box.id, [record.uid], {"\\Seen"}, "add")
    records = list((tmp_path / "store").glob("unsynced.*"))
    assert len(records) == 1
    # Another process opening the store meanwhile (a CLI tool) recovers nothing.
    other = SQLiteStore(tmp_path / "store")
    assert result_of(other.get_records(box.id, [record.uid]))[0].modseq == record.modseq + 1
    other.close()
    assert records[0].exists()
    reactor_thread.call(store.close)
    assert not records[0].exists()


def test_a_flag_change_a_power_cut_loses_never_takes_a_modseq_down(tmp_path, reactor_thread, monkeypatch):
    # What a power cut leaves, made by hand: the index files as the last
    # FULL commit synced them, and the record the writer made (durably)
    # before its NORMAL commit of a flag change that never reached the disk.
    monkeypatch.setattr(writer_module, "FLAG_SYNC_DELAY", 60.0)
    root = tmp_path / "store"
    store = reactor_thread.call(SQLiteStore, root, reactor=reactor_thread.reactor)
    try:
        box = reactor_thread.call(lambda: store.ensure_user("alice").addCallback(
            lambda _: store.get_mailbox("alice", "INBOX")))
        record = reactor_thread.call(store.append, box.id, MESSAGE)
        synced = {name: (root / name).read_bytes() for name in ("index.sqlite", "index.sqlite-wal")}
        told = reactor_thread.call(store.store_flags, box.id, [record.uid], {"\\Seen"}, "add")[0].modseq
        crashed = tmp_path / "crashed"
        shutil.copytree(root, crashed)
    finally:
        reactor_thread.call(store.close)
    power_cut(crashed, synced)

    reopened = SQLiteStore(crashed)
    try:
        after = result_of(reopened.get_records(box.id, [record.uid]))[0]
        assert after.flags == frozenset()  # the change is lost...
        # ...but no mod-sequence went down: a client that saw the change
        # hears of the message again, with its flags as they are now.
        assert after.modseq > told
        assert result_of(reopened.get_mailbox("alice", "INBOX")).highestmodseq >= after.modseq
        assert result_of(reopened.changes_since(box.id, told)).updated == (after,)
        assert list(crashed.glob("unsynced.*")) == []
    finally:
        reopened.close()


def test_a_delivery_seen_before_a_power_cut_lost_it_never_gives_its_uid_again(tmp_path, reactor_thread, monkeypatch):
    # What a power cut leaves, made by hand: the index files as the last
    # sync left them, and the record the writer made before the commit of
    # an APPEND that other sessions saw (the write lock let go) but that
    # never reached the disk, so was never acknowledged.
    root = tmp_path / "store"
    store = reactor_thread.call(SQLiteStore, root, reactor=reactor_thread.reactor)
    crashed = tmp_path / "crashed"
    try:
        box = reactor_thread.call(lambda: store.ensure_user("alice").addCallback(
            lambda _: store.get_mailbox("alice", "INBOX")))
        first = reactor_thread.call(store.append, box.id, MESSAGE)
        synced = {name: (root / name).read_bytes() for name in ("index.sqlite", "index.sqlite-wal")}
        writer = store._writer
        real_sync, syncing, go = writer._sync_wal, threading.Event(), threading.Event()

        def held_sync():
            syncing.set()
            assert go.wait(10)
            real_sync()

        monkeypatch.setattr(writer, "_sync_wal", held_sync)
        pending = []
        reactor_thread.call(lambda: pending.append(store.append(box.id, MESSAGE)))
        assert syncing.wait(10)
        # Committed and seen by another reader before the sync: what an
        # IMAP session of another process would tell its client.
        seen = sqlite3.connect(root / "index.sqlite")
        try:
            seen_uid, seen_modseq = seen.execute(
                "SELECT uid, modseq FROM messages WHERE mailbox_id = ? ORDER BY uid DESC", (box.id,)).fetchone()
        finally:
            seen.close()
        assert seen_uid == first.uid + 1
        shutil.copytree(root, crashed)
        go.set()
        reactor_thread.call(lambda: pending[0])
    finally:
        go.set()
        reactor_thread.call(store.close)
    power_cut(crashed, synced)

    reopened = SQLiteStore(crashed)
    try:
        assert [r.uid for r in result_of(reopened.get_records(box.id, [first.uid, seen_uid]))] == [first.uid]
        after = result_of(reopened.append(box.id, MESSAGE))
        assert after.uid > seen_uid
        assert after.modseq > seen_modseq
    finally:
        reopened.close()
