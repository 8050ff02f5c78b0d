"""
Debian's offlineimap3 reads the real server into a Maildir, in one-shot
batch mode.  `.ci/run` installs the ``offlineimap3`` package.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import imapclient
import pytest

from tests.serverproc import GatewayProcess, run_gateway

OFFLINEIMAP = shutil.which("offlineimap")

pytestmark = pytest.mark.skipif(
    OFFLINEIMAP is None and os.environ.get("CI") != "true", reason="offlineimap3 is not installed"
)

NESTED = (
    b"From: =?UTF-8?B?SsO8cmdlbg==?= <j@example.org>\r\nSubject: nested\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
    b"--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner\r\n--b--\r\n"
)


def test_offlineimap_reads_every_folder(tmp_path):
    data = tmp_path / "data"
    run_gateway(data, "user", "add", "reader", input=b"pw\n")
    with GatewayProcess(data, pop3=None, lmtp=None) as server:
        c = imapclient.IMAPClient("127.0.0.1", port=server.port("imap"), ssl=False, timeout=30)
        c.login("reader", "pw")
        c.create_folder("Caf\u00e9")
        c.append("INBOX", NESTED, flags=[imapclient.SEEN])
        c.append("Caf\u00e9", b"Subject: two\r\n\r\nsecond\r\n")
        c.logout()
        local = tmp_path / "mail"
        config = tmp_path / "offlineimaprc"
        config.write_text(
            f"[general]\naccounts = gw\nmetadata = {tmp_path / 'meta'}\n\n"
            "[Account gw]\nlocalrepository = local\nremoterepository = remote\n\n"
            f"[Repository local]\ntype = Maildir\nlocalfolders = {local}\n\n"
            f"[Repository remote]\ntype = IMAP\nremotehost = 127.0.0.1\nremoteport = {server.port('imap')}\n"
            "remoteuser = reader\nremotepass = pw\nssl = no\nstarttls = no\nreadonly = True\n"
        )
        result = subprocess.run(
            [OFFLINEIMAP or "offlineimap", "-c", str(config), "-o", "-u", "basic"],
            capture_output=True, timeout=120,
        )
        assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()
    inbox = [p for sub in ("cur", "new") for p in (local / "INBOX" / sub).iterdir()]
    assert len(inbox) == 1
    assert inbox[0].read_bytes().replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n") == NESTED
    assert inbox[0].name.endswith(":2,S")
    folders = {p.name for p in local.iterdir()}
    assert {"INBOX", "Sent", "Trash", "Drafts", "Junk"} <= folders
    cafe = [f for f in folders if f.startswith("Caf")]
    assert len(cafe) == 1
    assert len([p for sub in ("cur", "new") for p in (local / cafe[0] / sub).iterdir()]) == 1
