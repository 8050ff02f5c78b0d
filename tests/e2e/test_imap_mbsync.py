"""
Debian's mbsync (isync) against the real server: a mailbox with several
folders synced down to a Maildir, then local changes (a new message, a flag)
synced back up.  `.ci/run` installs the ``isync`` package.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import imapclient
import pytest

from tests.serverproc import GatewayProcess, run_gateway

MBSYNC = shutil.which("mbsync")

pytestmark = pytest.mark.skipif(
    MBSYNC is None and os.environ.get("CI") != "true", reason="mbsync (Debian isync) is not installed"
)


def message(n: int) -> bytes:
    return b"From: s@example.org\r\nSubject: sync %d\r\nMessage-ID: <%d@example.org>\r\n\r\nbody %d\r\n" % (n, n, n)


def mbsync(config, tmp_path):
    result = subprocess.run(
        [MBSYNC or "mbsync", "-c", str(config), "-a"], capture_output=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()


def maildir_messages(folder):
    return [p for sub in ("cur", "new") for p in sorted((folder / sub).iterdir())]


def test_mbsync_syncs_folders_both_ways(tmp_path):
    data = tmp_path / "data"
    run_gateway(data, "user", "add", "sync", input=b"pw\n")
    with GatewayProcess(data, pop3=None, lmtp=None) as server:
        c = imapclient.IMAPClient("127.0.0.1", port=server.port("imap"), ssl=False, timeout=30)
        c.login("sync", "pw")
        c.create_folder("Lists/Debian")
        c.append("INBOX", message(1))
        c.append("INBOX", message(2), flags=[imapclient.SEEN])
        c.append("Lists/Debian", message(3))
        local = tmp_path / "mail"
        local.mkdir()
        config = tmp_path / "mbsyncrc"
        config.write_text(
            f"IMAPAccount gateway\nHost 127.0.0.1\nPort {server.port('imap')}\nUser sync\nPass pw\n"
            "SSLType None\nAuthMechs LOGIN\n\n"
            "IMAPStore remote\nAccount gateway\n\n"
            f"MaildirStore local\nPath {local}/\nInbox {local}/INBOX\nSubFolders Verbatim\n\n"
            "Channel all\nFar :remote:\nNear :local:\nPatterns *\nCreate Both\nExpunge Both\n"
            "SyncState *\n"
        )
        mbsync(config, tmp_path)
        assert len(maildir_messages(local / "INBOX")) == 2
        assert len(maildir_messages(local / "Lists" / "Debian")) == 1
        assert (local / "Sent").is_dir() and (local / "Trash").is_dir()
        seen = [p for p in maildir_messages(local / "INBOX") if p.name.endswith(",S")]
        assert len(seen) == 1 and b"sync 2" in seen[0].read_bytes()

        # Local changes go up: a new message in a folder, \Seen on another.
        (local / "Lists" / "Debian" / "new" / "1.local.host").write_bytes(message(4).replace(b"\r\n", b"\n"))
        unseen = [p for p in maildir_messages(local / "INBOX") if not p.name.endswith(",S")][0]
        unseen.rename(unseen.parent.parent / "cur" / (unseen.name.split(":")[0] + ":2,S"))
        mbsync(config, tmp_path)
        c.select_folder("Lists/Debian")
        fetched = c.fetch(c.search(), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
        subjects = sorted(v[b"BODY[HEADER.FIELDS (SUBJECT)]"] for v in fetched.values())
        assert subjects == [b"Subject: sync 3\r\n\r\n", b"Subject: sync 4\r\n\r\n"]
        c.select_folder("INBOX")
        assert all(b"\\Seen" in flags for flags in c.get_flags(c.search()).values())
        c.logout()


def test_mbsync_compresses_the_session(tmp_path):
    # isync 1.4 asks for COMPRESS=DEFLATE (RFC 4978) when the server offers
    # it: many messages both ways, literals and commands in one compressed
    # stream.
    data = tmp_path / "data"
    run_gateway(data, "user", "add", "sync", input=b"pw\n")
    with GatewayProcess(data, pop3=None, lmtp=None) as server:
        c = imapclient.IMAPClient("127.0.0.1", port=server.port("imap"), ssl=False, timeout=30)
        c.login("sync", "pw")
        for n in range(40):
            c.append("INBOX", message(n) + b"line of text\r\n" * 200)
        local = tmp_path / "mail"
        local.mkdir()
        config = tmp_path / "mbsyncrc"
        config.write_text(
            f"IMAPAccount gateway\nHost 127.0.0.1\nPort {server.port('imap')}\nUser sync\nPass pw\n"
            "SSLType None\nAuthMechs LOGIN\n\n"
            "IMAPStore remote\nAccount gateway\n\n"
            f"MaildirStore local\nPath {local}/\nInbox {local}/INBOX\nSubFolders Verbatim\n\n"
            "Channel all\nFar :remote:\nNear :local:\nPatterns INBOX\nCreate Both\nSyncState *\n"
        )
        result = subprocess.run([MBSYNC or "mbsync", "-Dn", "-c", str(config), "-a"],
                                capture_output=True, timeout=60, cwd=tmp_path)
        assert result.returncode == 0, result.stderr.decode()[-2000:]
        assert b"COMPRESS DEFLATE" in result.stdout
        assert len(maildir_messages(local / "INBOX")) == 40
        for n in range(40, 60):
            (local / "INBOX" / "new" / f"{n}.local.host").write_bytes(
                (message(n) + b"line of text\r\n" * 200).replace(b"\r\n", b"\n"))
        mbsync(config, tmp_path)
        c.select_folder("INBOX")
        assert len(c.search()) == 60
        c.logout()
