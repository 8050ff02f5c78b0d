"""
The SQLite store after a crash: an interrupted expunge is finished at the
next open (all or nothing), the serving process's sweep removes what no
commit took, the UIDNEXT a rebuild needs is kept in place, and the disk
reserve lets the index grow on a full disk while deliveries wait.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import time

import pytest

from gateway.durable import read_slot_file
from gateway.store.interfaces import TemporaryFailure
from gateway.store.sqlite.reserve import DiskFull, Reserve
from gateway.store.sqlite.store import SQLiteStore
from tests.deferreds import failure_of, result_of
from tests.store.contract import MESSAGE, inbox


@pytest.fixture
def root(tmp_path):
    return tmp_path / "store"


def filled(root, count: int = 5):
    """A store with ``count`` messages in alice's INBOX; (store, INBOX info, its directory)."""
    store = SQLiteStore(root)
    box = inbox(store)
    for _ in range(count):
        result_of(store.append(box.id, MESSAGE))
    return store, box, root / "mail" / str(box.id)


def uids(store, mailbox_id):
    return [record.uid for record in result_of(store.list_messages(mailbox_id))]


def bodies(directory):
    return sorted(int(path.name) for path in directory.iterdir() if path.name.isdigit())


def sql(root, statement, *args):
    db = sqlite3.connect(root / "index.sqlite")
    with db:
        db.execute(statement, args)
    db.close()


def lose_index(root):
    for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
        (root / name).unlink(missing_ok=True)


# -- expunge: all or nothing, whatever the crash ---------------------------------


def test_expunge_interrupted_after_some_unlinks_is_finished_at_the_next_open(root):
    store, box, directory = filled(root)
    # A crash in the middle of an expunge of 2, 3 and 5: the UIDs were
    # committed as taken, one body was unlinked, then the process died.
    with store._write() as step:
        store._mark_expunging(step, box.id, [2, 3, 5])
    (directory / "3").unlink()
    store.close()

    # Any process opening the store (here not the server) finishes it.
    reopened = SQLiteStore(root)
    try:
        assert uids(reopened, box.id) == [1, 4]
        assert bodies(directory) == [1, 4]
        changes = result_of(reopened.changes_since(box.id, 0))
        assert sorted(changes.expunged) == [2, 3, 5]
    finally:
        reopened.close()


def test_expunge_returns_only_the_uids_asked_for(root):
    store, box, _ = filled(root)
    try:
        with store._write() as step:
            store._mark_expunging(step, box.id, [4])  # what a crashed process left
        assert result_of(store.expunge(box.id, [1, 2, 9])) == [1, 2]
        assert uids(store, box.id) == [3, 5]
    finally:
        store.close()


def test_an_expunge_commits_once_and_unlinks_the_bodies_after(root, monkeypatch):
    store, box, directory = filled(root)
    commits = []
    real_commit = store._writer._commit

    def commit(directories, beside):
        # What is on disk when the index commits: every body still.
        commits.append(bodies(directory))
        return real_commit(directories, beside)

    monkeypatch.setattr(store._writer, "_commit", commit)
    assert result_of(store.expunge(box.id, [2, 5])) == [2, 5]
    assert commits == [[1, 2, 3, 4, 5]]
    assert uids(store, box.id) == [1, 3, 4] and bodies(directory) == [1, 3, 4]
    assert read_slot_file(directory / "uidnext") == b"6"
    store.close()


def test_an_expunge_that_cannot_write_is_a_temporary_failure_and_changes_nothing(root, monkeypatch):
    store, box, directory = filled(root)

    def broken(mailbox_id, uidnext):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(store, "_record_uidnext", broken)
    failure_of(store.expunge(box.id, [5]), TemporaryFailure)
    assert uids(store, box.id) == [1, 2, 3, 4, 5] and bodies(directory) == [1, 2, 3, 4, 5]
    store.close()


def test_an_expunge_on_a_full_disk_goes_in_two_steps(root, monkeypatch):
    store, box, directory = filled(root)
    real_record, real_mark = store._record_uidnext, store._mark_expunging
    full, marked = [True], []

    def record(mailbox_id, uidnext):
        # The disk is full for the one commit that needs room first.
        if full.pop() if full else False:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_record(mailbox_id, uidnext)

    def mark(step, mailbox_id, uids):
        marked.append(list(uids))
        real_mark(step, mailbox_id, uids)

    monkeypatch.setattr(store, "_record_uidnext", record)
    monkeypatch.setattr(store, "_mark_expunging", mark)
    assert result_of(store.expunge(box.id, [4, 5])) == [4, 5]
    assert marked == [[4, 5]]
    assert uids(store, box.id) == [1, 2, 3] and bodies(directory) == [1, 2, 3]
    assert read_slot_file(directory / "uidnext") == b"6"
    store.close()


def test_a_second_step_that_cannot_commit_is_a_temporary_failure_and_is_finished_later(root, monkeypatch):
    store, box, directory = filled(root)
    real_record, real_finish = store._record_uidnext, store._finish_expunging
    full = [True]

    def record(mailbox_id, uidnext):
        if full.pop() if full else False:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_record(mailbox_id, uidnext)

    def dies_before_the_rows_go(step, mailbox_id):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(store, "_record_uidnext", record)
    monkeypatch.setattr(store, "_finish_expunging", dies_before_the_rows_go)
    failure_of(store.expunge(box.id, [5]), TemporaryFailure)
    monkeypatch.setattr(store, "_finish_expunging", real_finish)
    # The next expunge in the mailbox finishes the first one too.
    assert result_of(store.expunge(box.id, [2])) == [2]
    assert uids(store, box.id) == [1, 3, 4] and bodies(directory) == [1, 3, 4]
    store.close()


def test_bodies_an_expunge_left_are_swept_and_uidnext_recorded_first(root, monkeypatch):
    # A commit whose beside-it record of UIDNEXT then failed leaves the
    # expunged bodies (the requests are failed, nothing is unlinked).
    store, box, directory = filled(root)
    monkeypatch.setattr(store, "_record_uidnext", lambda mailbox_id, uidnext: None)
    monkeypatch.setattr(store, "_unlink_bodies", lambda mailbox_id, uids: None)
    result_of(store.expunge(box.id, [4, 5]))
    store.close()
    assert bodies(directory) == [1, 2, 3, 4, 5] and read_slot_file(directory / "uidnext") == b"1"
    SQLiteStore(root, serving=True).close()
    assert bodies(directory) == [1, 2, 3]
    assert read_slot_file(directory / "uidnext") == b"6"
    lose_index(root)
    rebuilt = SQLiteStore(root)
    try:
        assert result_of(rebuilt.append(box.id, MESSAGE)).uid == 6
    finally:
        rebuilt.close()


# -- the UIDNEXT a rebuild keeps --------------------------------------------------


def test_expunging_the_highest_uid_records_uidnext_in_place(root):
    store, box, directory = filled(root)
    slot = directory / "uidnext"
    before = os.stat(slot)
    result_of(store.expunge(box.id, [1, 2]))
    assert read_slot_file(slot) == b"1"  # the highest body (5) stays: nothing to record
    result_of(store.expunge(box.id, [5]))
    assert read_slot_file(slot) == b"6"
    after = os.stat(slot)
    assert (after.st_ino, after.st_blocks) == (before.st_ino, before.st_blocks)
    store.close()
    lose_index(root)
    rebuilt = SQLiteStore(root)
    try:
        assert uids(rebuilt, box.id) == [3, 4]
        assert result_of(rebuilt.append(box.id, MESSAGE)).uid == 6
    finally:
        rebuilt.close()


def test_moving_the_highest_uid_away_records_uidnext(root):
    store, box, directory = filled(root, 3)
    archive = result_of(store.create_mailbox("alice", "Archive"))
    assert result_of(store.move(box.id, [3], archive.id)) == [(3, 1)]
    store.close()
    lose_index(root)
    rebuilt = SQLiteStore(root)
    try:
        assert uids(rebuilt, box.id) == [1, 2]
        assert result_of(rebuilt.get_mailbox("alice", "INBOX")).uidnext == 4
        assert uids(rebuilt, archive.id) == [1]
    finally:
        rebuilt.close()


def test_a_store_from_before_the_slot_file_keeps_its_uid_floor(root):
    store, box, directory = filled(root, 3)
    store.close()
    # What an older version left: no uidnext file, the floor in mailbox.json.
    (directory / "uidnext").unlink()
    meta = json.loads((directory / "mailbox.json").read_text())
    (directory / "mailbox.json").write_text(json.dumps(dict(meta, uid_floor=7)))
    lose_index(root)
    rebuilt = SQLiteStore(root)
    try:
        assert result_of(rebuilt.get_mailbox("alice", "INBOX")).uidnext == 8
    finally:
        rebuilt.close()
    # The server's sweep gives it its slot file, with no UID lost.
    serving = SQLiteStore(root, serving=True)
    try:
        assert read_slot_file(directory / "uidnext") == b"8"
        result_of(serving.expunge(box.id, [3]))
        assert read_slot_file(directory / "uidnext") == b"8"
    finally:
        serving.close()


# -- the sweep at the server's start ------------------------------------------------


def test_the_servers_start_sweeps_what_crashes_left(root):
    store, box, directory = filled(root)
    archive = result_of(store.create_mailbox("alice", "Archive"))
    doomed = result_of(store.create_mailbox("alice", "Doomed"))
    result_of(store.move(box.id, [2], archive.id))
    store.close()
    # A move whose source was not unlinked yet...
    shutil.copy(root / "mail" / str(archive.id) / "1", directory / "2")
    # ...a body renamed in for an append that never committed...
    shutil.copy(directory / "1", directory / "6")
    # ...a mailbox deleted but not yet removed from the disk...
    sql(root, "DELETE FROM mailboxes WHERE id = ?", doomed.id)
    # ...and an old temporary file.
    stale = root / "tmp" / "msg.crashed"
    stale.write_bytes(b"half")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))

    plain = SQLiteStore(root)  # gateway deliver, the tools: no sweep
    plain.close()
    assert bodies(directory) == [1, 2, 3, 4, 5, 6]

    serving = SQLiteStore(root, serving=True)
    try:
        assert bodies(directory) == [1, 3, 4, 5]
        assert uids(serving, box.id) == [1, 3, 4, 5]
        assert not (root / "mail" / str(doomed.id)).exists()
        assert not stale.exists()
        assert result_of(serving.append(box.id, MESSAGE)).uid == 6
        assert serving.sweep() == []
    finally:
        serving.close()
    lose_index(root)
    rebuilt = SQLiteStore(root)
    try:
        assert [m.name for m in result_of(rebuilt.list_mailboxes("alice"))] == [
            "Archive", "Drafts", "INBOX", "Junk", "Sent", "Trash"]
        assert uids(rebuilt, box.id) == [1, 3, 4, 5, 6]
        assert uids(rebuilt, archive.id) == [1]
    finally:
        rebuilt.close()


def test_the_sweep_leaves_what_it_cannot_account_for(root):
    store, box, directory = filled(root, 3)
    result_of(store.expunge(box.id, [3]))
    store.close()
    sql(root, "DELETE FROM messages WHERE uid = 2")
    serving = SQLiteStore(root, serving=True)
    try:
        # UID 2 has a body, no row, is below UIDNEXT and was never expunged
        # as far as this index knows: left for a human (gateway check).
        assert bodies(directory) == [1, 2]
    finally:
        serving.close()


def test_a_mailbox_without_its_files_is_left_alone(root):
    store, box, directory = filled(root, 2)
    store.close()
    (directory / "mailbox.json").unlink()
    for uid in (1, 2):
        (directory / str(uid)).unlink()
    serving = SQLiteStore(root, serving=True)
    try:
        # A file system not mounted, a directory damaged: never a reason to
        # empty the index.
        assert uids(serving, box.id) == [1, 2]
    finally:
        serving.close()


# -- the disk reserve ---------------------------------------------------------------


class FakeDisk(Reserve):
    """A reserve whose file system reports what the test says is free."""

    free = 0

    def _free(self):
        return self.free


def test_reserve_is_made_only_with_room_for_it(tmp_path):
    reserve = FakeDisk(tmp_path / "reserve", size=4096, slice_size=1024)
    reserve.free = 4096
    reserve.keep()
    assert not reserve.path.exists()
    reserve.free = 8192
    reserve.keep()
    assert reserve.path.stat().st_size == 4096


def test_index_grows_into_the_reserve_a_slice_at_a_time_and_deliveries_wait(tmp_path):
    reserve = FakeDisk(tmp_path / "reserve", size=4096, slice_size=1024)
    reserve.free = 8192
    reserve.keep()
    reserve.free = 2048
    reserve.before_index_write()
    reserve.before_delivery()  # room enough: nothing lent yet
    assert reserve.path.stat().st_size == 4096
    reserve.free = 100
    for held in (3072, 2048, 1024, 0, 0):
        reserve.before_index_write()
        assert reserve.path.stat().st_size == held
    with pytest.raises(DiskFull):
        reserve.before_delivery()
    reserve.free = 6000  # deleting freed some, not twice the reserve
    with pytest.raises(DiskFull):
        reserve.before_delivery()
    reserve.free = 8192
    reserve.before_delivery()
    assert reserve.path.stat().st_size == 4096


def test_a_reserve_that_cannot_be_kept_stops_nothing(tmp_path):
    reserve = FakeDisk(tmp_path / "no-such-dir" / "reserve", size=4096, slice_size=1024)
    reserve.free = 100
    reserve.keep()
    reserve.before_index_write()
    reserve.before_delivery()
    (tmp_path / "reserve").mkdir()
    short = FakeDisk(tmp_path / "reserve", size=4096, slice_size=1024)  # a directory: cannot be opened
    short.before_index_write()
    short.before_delivery()


def test_store_refuses_deliveries_while_the_reserve_is_lent(root):
    store, box, _ = filled(root, 1)
    try:
        store._reserve = FakeDisk(root / "reserve", size=4096, slice_size=1024)
        store._reserve.free = 8192
        store._reserve.keep()
        store._reserve.free = 100
        result_of(store.store_flags(box.id, [1], {"\\Deleted"}, "add"))  # lends a slice
        failure = failure_of(store.append(box.id, MESSAGE), TemporaryFailure)
        assert str(failure) == "the disk is full; the space left is kept for deleting mail"
        assert result_of(store.expunge(box.id, [1])) == [1]
        assert list((root / "tmp").iterdir()) == []
        store._reserve.free = 8192
        assert result_of(store.append(box.id, MESSAGE)).uid == 2
    finally:
        store.close()
