"""
Two real servers (``twistd -n gateway``) serving ONE SQLite store, as the
workers of one node do: the second server's data dir has its own ports and
users file, and its ``store`` is the first's (a symlink).  Driven by
imapclient, poplib and smtplib.LMTP over loopback.

The change feed's poll of the index runs every 0.5 s; what these tests time
must arrive far sooner, through the store's own notices between processes.
"""

from __future__ import annotations

import poplib
import smtplib
import statistics
import time

import imapclient
import pytest

from tests.serverproc import GatewayProcess, run_gateway

PASSWORD = "secret"
POLL_INTERVAL = 0.5


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    base = tmp_path_factory.mktemp("shared")
    a, b = base / "a", base / "b"
    for data in (a, b):
        run_gateway(data, "user", "add", "alice", input=PASSWORD.encode() + b"\n")
    with GatewayProcess(a) as first:
        (b / "store").symlink_to(a / "store")
        with GatewayProcess(b) as second:
            yield first, second


def imap(server) -> imapclient.IMAPClient:
    client = imapclient.IMAPClient("127.0.0.1", port=server.port("imap"), ssl=False, timeout=30)
    client.login("alice", PASSWORD)
    return client


def lmtp_deliver(server, subject: str) -> None:
    with smtplib.LMTP("127.0.0.1", server.port("lmtp"), timeout=30) as client:
        client.ehlo_or_helo_if_needed()
        assert client.mail("bob@example.org")[0] == 250
        assert client.rcpt("alice@example.test")[0] == 250
        code, reply = client.data(f"Subject: {subject}\r\n\r\nhello\r\n".encode())
        assert code == 250, reply


def wait_for(watcher, wanted, seconds: float = 5.0) -> tuple[list, float]:
    """IDLE responses until one ``wanted(response)`` accepts (bounded): them, and when it came."""
    events = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for event in watcher.idle_check(timeout=max(0.01, deadline - time.monotonic())):
            events.append(event)
            if wanted(event):
                return events, time.monotonic()
    raise AssertionError(f"not told within {seconds}s: {events}")


def test_a_delivery_to_one_server_is_pushed_to_idle_on_the_other_at_once(servers):
    a, b = servers
    watcher = imap(a)
    try:
        exists = watcher.select_folder("INBOX")[b"EXISTS"]
        watcher.idle()
        delays = []
        for n in range(7):
            lmtp_deliver(b, f"to b {n}")
            # B answered after its commit: from here on only the telling counts.
            answered = time.monotonic()
            exists += 1
            _, told = wait_for(watcher, lambda event, count=exists: event == (count, b"EXISTS"))
            delays.append(told - answered)
        watcher.idle_done()
    finally:
        watcher.logout()
    # The poll alone would take a median of a quarter of a second.
    assert statistics.median(delays) < POLL_INTERVAL / 5, delays


def test_a_flag_change_on_one_server_is_pushed_to_idle_on_the_other_at_once(servers):
    a, b = servers
    lmtp_deliver(a, "to be seen")
    watcher, changer = imap(a), imap(b)
    try:
        count = watcher.select_folder("INBOX")[b"EXISTS"]
        changer.select_folder("INBOX")
        uid = changer.search(["ALL"])[-1]
        watcher.idle()
        delays = []
        for n in range(6):
            seen = n % 2 == 0
            (changer.add_flags if seen else changer.remove_flags)([uid], [imapclient.SEEN])
            changed = time.monotonic()
            events, told = wait_for(watcher, lambda event: event[:2] == (count, b"FETCH"))
            fetched = events[-1][2]
            assert (b"\\Seen" in fetched[fetched.index(b"FLAGS") + 1]) == seen
            delays.append(told - changed)
        watcher.idle_done()
    finally:
        watcher.logout()
        changer.logout()
    assert statistics.median(delays) < POLL_INTERVAL / 5, delays


def pop3(server) -> poplib.POP3:
    client = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=10)
    client.user("alice")
    return client


def test_a_maildrop_held_on_one_server_is_in_use_on_the_other(servers):
    # RFC 1939 8, RFC 2449 8.1.2 (RFC 3206): one session per maildrop,
    # whichever process serves the second.
    a, b = servers
    first = pop3(a)
    first.pass_(PASSWORD)
    try:
        second = pop3(b)
        with pytest.raises(poplib.error_proto) as caught:
            second.pass_(PASSWORD)
        assert caught.value.args[0].startswith(b"-ERR [IN-USE]")
        second.quit()
    finally:
        first.quit()
    # QUIT released it: the other server lets the next session in.
    third = pop3(b)
    assert third.pass_(PASSWORD).startswith(b"+OK")
    third.quit()
