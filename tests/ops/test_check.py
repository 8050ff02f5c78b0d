"""
gateway check [--repair]: the index against the body files, UIDNEXT,
mailbox.json and leftover temporary files; only safe repairs.
"""

import io
import json
import os
import sqlite3
import time

import pytest

from gateway.durable import read_slot_file, write_slot_file
from gateway.store.sqlite.check import TMP_GRACE_SECONDS, find_problems
from gateway.cli import main
from gateway.store.sqlite.store import SQLiteStore
from tests.deferreds import result_of

MESSAGE = b"From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n"


@pytest.fixture
def data(tmp_path):
    data = tmp_path / "data"
    store = SQLiteStore(data / "store")
    result_of(store.ensure_user("alice"))
    inbox = result_of(store.get_mailbox("alice", "INBOX"))
    for _ in range(3):
        result_of(store.append(inbox.id, MESSAGE, {"\\Seen"}))
    store.close()
    return data


def inbox_dir(data):
    store = SQLiteStore(data / "store")
    try:
        return data / "store" / "mail" / str(result_of(store.get_mailbox("alice", "INBOX")).id)
    finally:
        store.close()


def inbox_state(data):
    store = SQLiteStore(data / "store")
    try:
        info = result_of(store.get_mailbox("alice", "INBOX"))
        return info.uidnext, [(r.uid, r.flags) for r in result_of(store.list_messages(info.id))]
    finally:
        store.close()


def sql(data, statement, *args):
    db = sqlite3.connect(data / "store" / "index.sqlite")
    with db:
        db.execute(statement, args)
    db.close()


def check(data, *args):
    out = io.StringIO()
    code = main(["--data", str(data), "check", *args], stdout=out)
    return code, out.getvalue().splitlines()


def test_consistent_store(data):
    assert check(data) == (0, ["store is consistent"])


def test_row_without_body_file_is_expunged_on_repair(data):
    (inbox_dir(data) / "2").unlink()
    code, lines = check(data)
    assert code == 1
    assert lines == [f"alice/INBOX (mail/{inbox_dir(data).name}): UID 2 has no body file"]
    code, lines = check(data, "--repair")
    assert (code, lines) == (0, [f"repaired: expunged UID 2 of mail/{inbox_dir(data).name}, whose body files are gone",
                                 "store is consistent"])
    assert inbox_state(data) == (4, [(1, {"\\Seen"}), (3, {"\\Seen"})])


def test_body_file_no_commit_took_is_removed_not_indexed_on_repair(data):
    # A crash after the rename into mail/, before the index commit: the
    # message was never acknowledged, so indexing it would deliver it twice
    # once the sender retries (or duplicate a move that never committed).
    (inbox_dir(data) / "4").write_bytes(MESSAGE + b"fourth\r\n")
    code, lines = check(data)
    label = f"alice/INBOX (mail/{inbox_dir(data).name})"
    assert code == 1
    assert lines == [f"{label}: body file 4 has no index row and was never committed"]
    code, lines = check(data, "--repair")
    assert code == 0, lines
    assert lines == [f"repaired: removed mail/{inbox_dir(data).name}/4, a body no commit took", "store is consistent"]
    assert inbox_state(data) == (4, [(1, {"\\Seen"}), (2, {"\\Seen"}), (3, {"\\Seen"})])
    assert not (inbox_dir(data) / "4").exists()


def test_the_sweep_never_touches_a_committed_body(data):
    store = SQLiteStore(data / "store")
    try:
        assert store.sweep() == []
        info = result_of(store.get_mailbox("alice", "INBOX"))
        # What another process commits between two sweeps is committed too.
        result_of(store.append(info.id, MESSAGE))
        assert store.sweep() == []
    finally:
        store.close()
    assert sorted(p.name for p in inbox_dir(data).iterdir() if p.name.isdigit()) == ["1", "2", "3", "4"]
    assert check(data) == (0, ["store is consistent"])


def test_body_file_of_an_expunged_message_is_removed_on_repair(data):
    store = SQLiteStore(data / "store")
    info = result_of(store.get_mailbox("alice", "INBOX"))
    result_of(store.expunge(info.id, [2]))
    store.close()
    # A crash after the expunge commit, before the unlink.
    (inbox_dir(data) / "2").write_bytes(MESSAGE)
    code, lines = check(data)
    assert code == 1 and lines[0].endswith("body file 2 of an expunged message is left")
    code, lines = check(data, "--repair")
    assert (code, lines[-1]) == (0, "store is consistent")
    assert not (inbox_dir(data) / "2").exists()
    assert inbox_state(data)[1] == [(1, {"\\Seen"}), (3, {"\\Seen"})]


def test_unsafe_problems_are_only_reported(data):
    sql(data, "DELETE FROM messages WHERE uid = 1")
    with open(inbox_dir(data) / "3", "ab") as f:
        f.write(b"more\r\n")
    meta_path = inbox_dir(data) / "mailbox.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(dict(meta, name="Inbox2")))
    label = f"alice/INBOX (mail/{inbox_dir(data).name})"
    expected = [
        f"{label}: mailbox.json has name 'Inbox2', the index 'INBOX'",
        f"{label}: body file 1 has no index row and its UID is below UIDNEXT 4; not repaired automatically",
        f"{label}: UID 3 is {len(MESSAGE)} bytes in the index, {len(MESSAGE) + 6} on disk",
    ]
    assert check(data) == (1, expected)
    assert check(data, "--repair") == (1, expected)
    meta_path.unlink()
    assert check(data)[1][0] == f"{label}: mailbox.json missing"


def test_uidnext_below_a_uid_is_raised_on_repair(data):
    sql(data, "UPDATE mailboxes SET uidnext = 2 WHERE name = 'INBOX'")
    label = f"alice/INBOX (mail/{inbox_dir(data).name})"
    assert check(data) == (1, [f"{label}: UIDNEXT 2 is not above UID 3"])
    assert check(data, "--repair") == (
        0, [f"repaired: raised UIDNEXT of mail/{inbox_dir(data).name} to 4", "store is consistent"])
    assert inbox_state(data)[0] == 4


def test_uid_floor_above_uidnext_is_a_problem(data):
    meta_path = inbox_dir(data) / "mailbox.json"
    meta_path.write_text(json.dumps(dict(json.loads(meta_path.read_text()), uid_floor=9)))
    assert check(data)[1] == [f"alice/INBOX (mail/{inbox_dir(data).name}): UIDNEXT 4 is not above UID 9"]
    assert check(data, "--repair")[0] == 0
    assert inbox_state(data)[0] == 10


def test_only_old_temporary_files_are_orphans(data):
    old = data / "store" / "tmp" / "msg.crashed"
    old.write_bytes(b"half a message")
    stamp = time.time() - TMP_GRACE_SECONDS - 60
    os.utime(old, (stamp, stamp))
    stale_meta = inbox_dir(data) / "mailbox.json.tmp"
    stale_meta.write_text("{}")
    os.utime(stale_meta, (stamp, stamp))
    (data / "store" / "tmp" / "msg.in-progress").write_bytes(b"being written now")
    assert check(data) == (1, [f"orphaned temporary file {old}", f"orphaned temporary file {stale_meta}"])
    assert check(data, "--repair") == (0, [
        f"repaired: removed {old}, a temporary file a crash left",
        f"repaired: removed {stale_meta}, a temporary file a crash left",
        "store is consistent",
    ])
    assert (data / "store" / "tmp" / "msg.in-progress").exists()


def test_mailbox_directory_unknown_to_the_index(data):
    stray = data / "store" / "mail" / "99"
    stray.mkdir()
    (stray / "mailbox.json").write_text(json.dumps({"user": "bob", "name": "INBOX"}))
    assert check(data) == (1, ["mail/99 is a mailbox directory the index does not know (a deleted mailbox, or one"
                               " never committed)"])
    # A rebuild would bring it back: the repair (the sweep) removes it.
    assert check(data, "--repair") == (
        0, ["repaired: removed mail/99, a mailbox directory the index does not know", "store is consistent"])
    assert not stray.exists()


def test_missing_index_and_missing_store(data, tmp_path, capsys):
    for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
        (data / "store" / name).unlink(missing_ok=True)
    problems = find_problems(data / "store")
    assert [p.text for p in problems] == [
        f"{data / 'store' / 'index.sqlite'} is missing; the server rebuilds it from the files when it starts"]
    assert main(["--data", str(tmp_path / "nothing"), "check"]) == 66
    assert "no store here" in capsys.readouterr().err


def test_uidnext_file_missing_or_unreadable_is_made_again_on_repair(data):
    label = f"alice/INBOX (mail/{inbox_dir(data).name})"
    slot = inbox_dir(data) / "uidnext"
    slot.unlink()
    assert check(data) == (1, [f"{label}: uidnext file missing, so a rebuild could give out an expunged UID again"])
    assert check(data, "--repair") == (
        0, [f"repaired: made mail/{inbox_dir(data).name}/uidnext", "store is consistent"])
    slot.write_bytes(b"\0" * 1024)
    assert check(data) == (1, [f"{label}: uidnext file unreadable (no valid slot)"])
    assert check(data, "--repair")[0] == 0
    assert read_slot_file(slot) == b"4"


def test_recorded_uidnext_above_the_index_is_raised_on_repair(data):
    write_slot_file(inbox_dir(data) / "uidnext", b"9")
    label = f"alice/INBOX (mail/{inbox_dir(data).name})"
    assert check(data) == (1, [f"{label}: UIDNEXT 4 is not above UID 8"])
    assert check(data, "--repair") == (
        0, [f"repaired: raised UIDNEXT of mail/{inbox_dir(data).name} to 9", "store is consistent"])
    assert inbox_state(data)[0] == 9


def test_interrupted_expunge_is_reported_and_finished(data):
    # (Reached before the crash: opening the store would finish it.)
    directory = inbox_dir(data)
    store = SQLiteStore(data / "store")
    with store._write() as step:
        store._mark_expunging(step, int(directory.name), [1, 3])
    store.close()
    (directory / "1").unlink()
    label = f"alice/INBOX (mail/{directory.name})"
    assert check(data) == (1, [
        f"{label}: the expunge of UID 1 3 is under way or was interrupted (opening the store finishes it)",
        f"{label}: UID 1 has no body file",
    ])
    assert check(data, "--repair") == (0, [
        f"repaired: finished the expunge of UID 1 3 of mail/{directory.name}, which a crash interrupted",
        "store is consistent",
    ])
    assert inbox_state(data)[1] == [(2, {"\\Seen"})]


def test_the_check_is_the_backends_maintenance_interface(data):
    from twisted.internet.task import Clock
    from zope.interface.verify import verifyObject

    from gateway.config import Config
    from gateway.store.interfaces import IStoreMaintenance, NoStore
    from gateway.store.model import CheckReport
    from gateway.store.opening import open_maintenance
    from tests.deferreds import failure_of

    maintenance = open_maintenance(Config(), data, Clock())
    assert verifyObject(IStoreMaintenance, maintenance)
    assert result_of(maintenance.check(False)) == CheckReport()
    (inbox_dir(data) / "2").unlink()
    report = result_of(maintenance.check(True))
    assert report.problems == ()
    assert report.repairs == (f"expunged UID 2 of mail/{inbox_dir(data).name}, whose body files are gone",)
    failure_of(open_maintenance(Config(), data.parent / "elsewhere", Clock()).check(False), NoStore)


def test_quota_usage_that_drifted_is_counted_again_on_repair(data):
    size = len(MESSAGE)
    sql(data, "UPDATE quota_usage SET messages = 7, storage = 1 WHERE user = 'alice'")
    code, lines = check(data)
    assert (code, lines) == (1, [f"the quota usage of alice is recorded as 7 messages, 1 octets; the mailboxes"
                                 f" hold 3 messages, {3 * size} octets"])
    code, lines = check(data, "--repair")
    assert (code, lines) == (0, [f"repaired: counted the quota usage of alice again: 3 messages, {3 * size} octets",
                                 "store is consistent"])
