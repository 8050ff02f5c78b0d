"""
``[store] parse = "first-fetch"`` end to end: mail delivered over LMTP is
not parsed until an IMAP client asks (smtplib, poplib and imaplib against
the real server); POP3 never makes it parse; what IMAP answers is what
parsing at delivery gives.
"""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import sqlite3
import time

import pytest

from gateway.mail import message
from tests.serverproc import GatewayProcess, run_gateway
from tests.store.test_sqlite_structures import MULTIPART as MESSAGE


@pytest.fixture
def server(tmp_path):
    data = tmp_path / "data"
    run_gateway(data, "user", "add", "bob", input=b"builder\n")
    config = tmp_path / "gateway.toml"
    # One process: the writes of every session go through one writer, in order.
    config.write_text('[server]\nworkers = 1\n\n[store]\nparse = "first-fetch"\n')
    with GatewayProcess(data, config=config) as process:
        yield process


def parsed_count(server) -> int:
    index = sqlite3.connect(f"file:{server.data_dir / 'store' / 'index.sqlite'}?mode=ro", uri=True)
    try:
        return index.execute("SELECT count(*) FROM message_structures").fetchone()[0]
    finally:
        index.close()


def kept_soon(server, count: int) -> int:
    """The structures kept once ``count`` are (a reader is answered before its parse is written), or after 10 s."""
    deadline = time.monotonic() + 10
    while (kept := parsed_count(server)) != count and time.monotonic() < deadline:
        time.sleep(0.01)
    return kept


def deliver(server, count: int) -> None:
    with smtplib.LMTP("127.0.0.1", server.port("lmtp"), timeout=30) as lmtp:
        for _ in range(count):
            lmtp.sendmail("alice@example.org", ["bob"], MESSAGE)


def test_pop3_downloads_without_a_parse_and_imap_gets_what_delivery_would_have_parsed(server):
    deliver(server, 3)
    pop3 = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=30)
    pop3.user("bob")
    pop3.pass_("builder")
    stored = b"\r\n".join(pop3.retr(1)[1]) + b"\r\n"
    assert pop3.top(2, 0)[1][-1] == b""
    pop3.quit()
    assert stored.endswith(MESSAGE)
    imap = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=30)
    imap.login("bob", "builder")
    imap.select("INBOX")
    # Committed after anything the POP3 session wrote: none of it was a parse.
    imap.store("3", "+FLAGS", "(\\Flagged)")
    assert parsed_count(server) == 0
    _, answer = imap.fetch("1:2", "(ENVELOPE BODYSTRUCTURE BODY.PEEK[1] BODY.PEEK[2.MIME])")
    expected = message.parse_bytes(stored)
    wire = b"".join(b"".join(item) if isinstance(item, tuple) else item for item in answer)
    assert wire.count(expected.envelope) == 2 and wire.count(expected.bodystructure) == 2
    assert wire.count(b"one") == 2 and wire.count(b"Content-Type: text/html\r\n\r\n") == 2
    assert kept_soon(server, 2) == 2
    # A header SEARCH parses the one message left, and finds them all.
    _, found = imap.search(None, "SUBJECT", "parts")
    assert found == [b"1 2 3"]
    imap.logout()
    assert kept_soon(server, 3) == 3


def test_clients_fetching_new_mail_at_once_each_get_its_envelope(server):
    clients = []
    for _ in range(5):
        imap = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=30)
        imap.login("bob", "builder")
        imap.select("INBOX")
        clients.append(imap)
    deliver(server, 1)
    for imap in clients:
        imap.noop()
    # Sent before any answer is read: the server has them all in hand at once.
    tags = [imap._command("FETCH", "1", "(ENVELOPE)") for imap in clients]
    for imap, tag in zip(clients, tags):
        assert imap._command_complete("FETCH", tag)[0] == "OK"
        assert b'"parts"' in imap.untagged_responses.pop("FETCH")[0]
        imap.logout()
    assert kept_soon(server, 1) == 1
