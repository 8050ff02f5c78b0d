"""
IMAP extensions end to end over a real socket, with imaplib: BINARY
(RFC 3516), MULTIAPPEND (RFC 3502), UTF8=ACCEPT (RFC 6855).
"""

from __future__ import annotations

import imaplib

import pytest

from tests.imap.test_binary_fetch import BIG, message
from tests.serverproc import GatewayProcess, run_gateway


@pytest.fixture
def server(tmp_path):
    data = tmp_path / "data"
    run_gateway(data, "user", "add", "alice", input=b"pw\n")
    with GatewayProcess(data, pop3=None, lmtp=None) as process:
        yield process


def test_binary_with_imaplib(server):
    client = imaplib.IMAP4("127.0.0.1", server.port("imap"))
    client.login("alice", "pw")
    assert b"BINARY" in client.capability()[1][0].split()
    client.append("INBOX", None, None, message(BIG))
    client.select("INBOX")
    typ, data = client.fetch("1", "(BINARY.SIZE[2] BINARY.PEEK[2])")
    assert typ == "OK"
    assert data[0][1] == BIG
    assert b"BINARY.SIZE[2] %d" % len(BIG) in data[0][0]
    client.logout()
