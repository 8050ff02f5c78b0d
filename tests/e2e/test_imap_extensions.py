"""
IMAP extensions end to end over a real socket, with imaplib: BINARY
(RFC 3516), MULTIAPPEND (RFC 3502), UTF8=ACCEPT (RFC 6855).
"""

from __future__ import annotations

import imaplib

import pytest

from tests.imap.test_binary_fetch import BIG, message
from tests.serverproc import imap_gateway


@pytest.fixture
def server(tmp_path):
    with imap_gateway(tmp_path / "data") as process:
        yield process


def test_binary_with_imaplib(server):
    client = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=30)
    client.login("alice", "pw")
    assert b"BINARY" in client.capability()[1][0].split()
    client.append("INBOX", None, None, message(BIG))
    client.select("INBOX")
    typ, data = client.fetch("1", "(BINARY.SIZE[2] BINARY.PEEK[2])")
    assert typ == "OK"
    assert data[0][1] == BIG
    assert b"BINARY.SIZE[2] %d" % len(BIG) in data[0][0]
    client.logout()


def test_multiappend_over_a_socket(server):
    import socket

    messages = [b"Subject: m%d\r\n\r\nbody %d\r\n" % (n, n) for n in range(3)]
    with socket.create_connection(("127.0.0.1", server.port("imap")), timeout=10) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"* OK")
        sock.sendall(b"a LOGIN alice pw\r\n")
        assert reader.readline().startswith(b"a OK")
        # RFC 3502: one command, three messages, synchronizing literals.
        sock.sendall(b"b APPEND INBOX (\\Seen) {%d}\r\n" % len(messages[0]))
        for n, message in enumerate(messages):
            assert reader.readline() == b"+ Ready for literal data\r\n"
            sock.sendall(message + (b" ($M%d) {%d}\r\n" % (n + 1, len(messages[n + 1])) if n < 2 else b"\r\n"))
        assert reader.readline().endswith(b" 1:3] APPEND completed\r\n")
        sock.sendall(b"c LOGOUT\r\n")
    client = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=30)
    client.login("alice", "pw")
    client.select("INBOX")
    typ, data = client.fetch("1:3", "(FLAGS BODY.PEEK[])")
    assert [item[1] for item in data if isinstance(item, tuple)] == messages
    assert b"$M2" in data[4][0]
    client.logout()


def test_utf8_accept_with_imaplib(server):
    client = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=30)
    client.login("alice", "pw")
    assert b"UTF8=ACCEPT" in client.capability()[1][0].split()
    # imaplib sends names as UTF-8 once the server enabled it.
    assert client.enable("UTF8=ACCEPT")[0] == "OK"
    assert client.create('"Ünïcode"')[0] == "OK"
    typ, data = client.list('""', '"Ü*"')
    assert typ == "OK" and data == ['(\\HasNoChildren) "/" "Ünïcode"'.encode()]
    assert client.select('"Ünïcode"')[0] == "OK"
    client.logout()
