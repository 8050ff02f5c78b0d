"""
One store, two views: IMAP sessions and POP3 sessions (and LMTP delivery)
against the real server process, watching each other's changes.
"""

from __future__ import annotations

import poplib
import smtplib

import imapclient
import pytest

from tests.serverproc import GatewayProcess, run_gateway
from tests.e2e.test_imap import idle_until

MESSAGE = b"From: a@example.org\r\nTo: erin@example.org\r\nSubject: cross\r\n\r\nbody\r\n"


@pytest.fixture
def server(tmp_path):
    data = tmp_path / "data"
    run_gateway(data, "user", "add", "erin", input=b"pw\n")
    with GatewayProcess(data) as process:
        yield process


def imap_client(server):
    c = imapclient.IMAPClient("127.0.0.1", port=server.port("imap"), ssl=False, timeout=30)
    c.login("erin", "pw")
    return c


def pop3_client(server):
    p = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=30)
    p.user("erin")
    p.pass_("pw")
    return p


def lmtp_deliver(server, message=MESSAGE):
    with smtplib.LMTP("127.0.0.1", server.port("lmtp")) as lmtp:
        lmtp.sendmail("a@example.org", ["erin"], message)


def test_lmtp_delivery_reaches_idle_and_pop3_uidl_matches_uid(server):
    c = imap_client(server)
    uidvalidity = c.select_folder("INBOX")[b"UIDVALIDITY"]
    c.idle()
    lmtp_deliver(server)
    assert (1, b"EXISTS") in idle_until(c, b"EXISTS")
    [uid] = c.search()  # imapclient speaks UIDs
    p = pop3_client(server)
    _, listing, _ = p.uidl()
    assert listing == [b"1 %08x%08x" % (uid, uidvalidity)]
    p.quit()
    c.logout()


def test_pop3_quit_expunges_in_idle_imap_session(server):
    lmtp_deliver(server)
    lmtp_deliver(server)
    c = imap_client(server)
    c.select_folder("INBOX")
    c.idle()
    p = pop3_client(server)
    p.dele(1)
    p.quit()
    assert (1, b"EXPUNGE") in idle_until(c, b"EXPUNGE")
    assert c.search() == [2]
    c.logout()


def test_imap_expunge_makes_pop3_retr_fail_but_session_goes_on(server):
    lmtp_deliver(server)
    lmtp_deliver(server)
    p = pop3_client(server)
    c = imap_client(server)
    c.select_folder("INBOX")
    c.delete_messages([1])
    c.expunge()
    with pytest.raises(poplib.error_proto) as refused:
        p.retr(1)
    assert refused.value.args[0].startswith(b"-ERR")
    assert p.retr(2)[1][-1] == b"body"
    p.quit()
    c.logout()


def test_pop3_retr_sets_seen_for_imap(server):
    lmtp_deliver(server)
    p = pop3_client(server)
    p.retr(1)
    p.quit()
    c = imap_client(server)
    c.select_folder("INBOX", readonly=True)
    assert b"\\Seen" in c.get_flags([1])[1]
    c.logout()
