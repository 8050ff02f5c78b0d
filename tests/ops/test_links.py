"""
Import never follows a link and reads only regular files; export never
writes through a link (DESIGN.md security rules).  Through the real
``gateway`` command, as an administrator runs it on a user's Maildir: the
user controls that tree, so a link in it must not disclose another file or
another user's mail.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3

import pytest

from gateway.auth import hash_password
from gateway.mail import maildir, nofollow
from gateway.store.sqlite.store import SQLiteStore
from tests.deferreds import result_of
from tests.serverproc import run_gateway

SECRET = b"root:*:19000:0:99999:7:::\n"


def msg(subject: str) -> bytes:
    return f"From: a@example.org\nSubject: {subject}\n\nbody of {subject}\n".encode()


@pytest.fixture(scope="module")
def users_line():
    return f"alice:{hash_password('secret')}\n"


@pytest.fixture
def data(tmp_path, users_line):
    data = tmp_path / "data"
    data.mkdir()
    (data / "users").write_text(users_line)
    return data


def make_maildir(root):
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
    return root


def stored(data):
    """name -> [body] of alice's mailboxes, read from the store."""
    store = SQLiteStore(data / "store")
    try:
        boxes = {}
        for info in result_of(store.list_mailboxes("alice")):
            bodies = []
            for record in result_of(store.list_messages(info.id)):
                with result_of(store.open_message(info.id, record.uid)) as f:
                    bodies.append(f.read())
            boxes[info.name] = bodies
        return boxes
    finally:
        store.close()


def lines(completed) -> tuple[int, list[str], list[str]]:
    return completed.returncode, completed.stdout.decode().splitlines(), completed.stderr.decode().splitlines()


@pytest.fixture
def hostile(tmp_path):
    """
    Alice's Maildir with her own message, and links to a secret file and
    into Bob's Maildir: a message, a folder, a folder's cur/, her keywords.
    """
    secret = tmp_path / "shadow"
    secret.write_bytes(SECRET)
    bob = make_maildir(tmp_path / "bob")
    (bob / "cur" / "1700000009.bob:2,S").write_bytes(msg("bob's private mail"))
    (bob / "dovecot-uidlist").write_text("3 V1234 N2\n1 :1700000009.bob\n")
    root = make_maildir(tmp_path / "alice")
    (root / "cur" / "1700000000.good:2,S").write_bytes(msg("alice's own"))
    (root / "cur" / "1700000001.x:2,S").symlink_to(secret)
    (root / "new" / "1700000002.y").symlink_to("/etc/passwd")
    (root / ".Stolen").symlink_to(bob)
    work = root / ".Work"
    work.mkdir()
    (work / "cur").symlink_to(bob / "cur")
    (work / "new").mkdir()
    (root / "dovecot-keywords").symlink_to(secret)
    return root


def assert_only_alices_own_mail(data):
    boxes = stored(data)
    assert set(boxes) == {"INBOX", "Drafts", "Sent", "Trash", "Junk"}
    assert boxes["INBOX"] == [msg("alice's own").replace(b"\n", b"\r\n")]
    everything = b"".join(body for bodies in boxes.values() for body in bodies)
    assert b"root:" not in everything and b"bob's private mail" not in everything


def test_import_refuses_links_one_line_each(data, hostile):
    code, out, err = lines(run_gateway(data, "import", "maildir", "alice", str(hostile), check=False))
    # Exit status 1: something was skipped, and the summary says what.
    assert (code, err) == (1, [])
    assert out[0] == "user alice: 1 folders, 1 messages imported (66 bytes), 0 already imported, 5 skipped"
    assert sorted(line for line in out if line.startswith("  skipped: ")) == sorted([
        "  skipped: .Stolen: a symbolic link, not followed; folder skipped",
        "  skipped: .Work: cur/ is a symbolic link, not followed; folder skipped",
        "  skipped: INBOX: dovecot-keywords: a symbolic link, not followed; keywords not read",
        "  skipped: INBOX: new/1700000002.y: a symbolic link, not followed; message skipped",
        "  skipped: INBOX: cur/1700000001.x:2,S: a symbolic link, not followed; message skipped",
    ])
    assert_only_alices_own_mail(data)


def test_import_reads_only_regular_files_and_never_waits_on_a_fifo(data, hostile):
    os.mkfifo(hostile / "cur" / "1700000003.fifo:2,")
    sock = socket.socket(socket.AF_UNIX)
    # A relative name: the temporary directory's path may be longer than a socket's may be.
    with contextlib.chdir(hostile / "new"):
        sock.bind("1700000004.sock")
    sock.close()
    (hostile / "cur" / "1700000005.dir:2,").mkdir()
    (hostile / "dovecot-uidlist").symlink_to(hostile / "cur" / "1700000003.fifo:2,")
    code, out, err = lines(run_gateway(data, "import", "maildir", "alice", str(hostile), check=False))
    assert (code, err) == (1, [])
    assert out[0] == "user alice: 1 folders, 1 messages imported (66 bytes), 0 already imported, 9 skipped"
    assert {
        "  skipped: INBOX: new/1700000004.sock: a socket, not a regular file; message skipped",
        "  skipped: INBOX: cur/1700000003.fifo:2,: a named pipe, not a regular file; message skipped",
        "  skipped: INBOX: cur/1700000005.dir:2,: a directory; message skipped",
        "  skipped: INBOX: dovecot-uidlist: a symbolic link, not followed; UIDs assigned in delivery order",
    } <= set(out)
    assert_only_alices_own_mail(data)


def test_a_maildir_root_that_is_a_link_is_refused(data, hostile, tmp_path):
    (tmp_path / "link").symlink_to(hostile)
    code, out, err = lines(run_gateway(data, "import", "maildir", "alice", str(tmp_path / "link"), check=False))
    assert (code, out, err) == (65, [], [f"gateway: {tmp_path / 'link'}: a symbolic link, not followed"])


def test_a_message_swapped_for_a_link_after_listing_is_refused(hostile, tmp_path):
    folders, _ = maildir.list_folders(hostile)
    inbox = folders[0]
    messages, _ = maildir.list_messages(inbox, {})
    good = next(m for m in messages if m.base == "1700000000.good")
    # The file becomes a link...
    good.path.unlink()
    good.path.symlink_to(tmp_path / "shadow")
    with pytest.raises(nofollow.Refused, match="a symbolic link"):
        maildir.open_message(inbox, good)
    # ...or a fifo (opened without waiting, refused by fstat)...
    good.path.unlink()
    os.mkfifo(good.path)
    with pytest.raises(nofollow.Refused, match="a named pipe"):
        maildir.open_message(inbox, good)
    # ...or its cur/ becomes a link to a directory holding that name.
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / good.path.name).write_bytes(SECRET)
    (hostile / "cur").rename(hostile / "cur.old")
    (hostile / "cur").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(nofollow.Refused, match="a symbolic link"):
        maildir.open_message(inbox, good)


@pytest.fixture
def mbox_file(tmp_path):
    path = tmp_path / "saved.mbox"
    path.write_bytes(b"From a@example.org Wed Jan  3 01:05:34 2024\n" + msg("in the mbox") + b"\n")
    return path


def test_mbox_that_is_a_link_or_a_fifo_is_refused(data, mbox_file, tmp_path):
    (tmp_path / "link.mbox").symlink_to(mbox_file)
    os.mkfifo(tmp_path / "fifo.mbox")
    for name, reason in (("link.mbox", "a symbolic link, not followed"), ("fifo.mbox", "a named pipe, not a regular file")):
        code, out, err = lines(run_gateway(data, "import", "mbox", "alice", str(tmp_path / name), check=False))
        assert (code, out, err) == (65, [], [f"gateway: {tmp_path / name}: {reason}"])
    code, out, err = lines(run_gateway(data, "import", "mbox", "alice", str(mbox_file), check=False))
    assert code == 0 and out[0].startswith("user alice: 1 folders, 1 messages imported"), out


@pytest.mark.parametrize("name", ["a//b", "bad\x01name", "*"])
def test_mbox_mailbox_name_is_checked_first(data, mbox_file, name):
    code, out, err = lines(run_gateway(data, "import", "mbox", "alice", str(mbox_file), "--mailbox", name, check=False))
    assert (code, out, len(err)) == (64, [], 1)
    assert err[0].startswith(f"gateway: --mailbox {name!r}: Mailbox name ")
    assert not (data / "store").exists() or "a" not in stored(data)


def export_source(data):
    store = SQLiteStore(data / "store")
    try:
        result_of(store.ensure_user("alice"))
        inbox = result_of(store.get_mailbox("alice", "INBOX"))
        result_of(store.append(inbox.id, msg("to export")))
    finally:
        store.close()


def test_export_refuses_a_target_that_is_a_link(data, tmp_path):
    export_source(data)
    (tmp_path / "victim").mkdir()
    (tmp_path / "to-dir").symlink_to(tmp_path / "victim")
    (tmp_path / "dangling").symlink_to(tmp_path / "not-yet")
    for name in ("to-dir", "dangling"):
        code, out, err = lines(run_gateway(data, "export", "alice", str(tmp_path / name), check=False))
        assert (code, out, err) == (73, [], [f"gateway: {tmp_path / name}: a symbolic link, not followed; not written through"])
    assert os.listdir(tmp_path / "victim") == [] and not os.path.lexists(tmp_path / "not-yet")


@pytest.mark.parametrize("planted", ["cur", "dovecot-uidlist"])
def test_export_never_writes_through_what_is_planted_after_the_check(data, tmp_path, monkeypatch, planted):
    from gateway.cli import main
    from gateway.ops import export

    export_source(data)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "file").write_bytes(b"precious\n")
    target = tmp_path / "export"
    target.mkdir()
    checked = export._open_target

    def plant_after_the_check(root):
        fd = checked(root)
        # What a user who can write to the target does between our check
        # and our writes.
        os.symlink(victim if planted == "cur" else victim / "file", planted, dir_fd=fd)
        return fd

    monkeypatch.setattr(export, "_open_target", plant_after_the_check)
    assert main(["--data", str(data), "export", "alice", str(target)]) == 73
    assert sorted(os.listdir(victim)) == ["file"]
    assert (victim / "file").read_bytes() == b"precious\n"


def test_export_files_are_private(data, tmp_path):
    export_source(data)
    code, *_ = lines(run_gateway(data, "export", "alice", str(tmp_path / "export"), check=False))
    assert code == 0
    for path in (tmp_path / "export").rglob("*"):
        assert path.stat().st_mode & 0o077 == 0, path
