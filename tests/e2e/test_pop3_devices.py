"""
POP3 views per device end to end: the real server, poplib as a phone
(``alice#phone``) and a desktop (``alice#desktop``) both set to delete mail
from the server, imaplib looking at the same INBOX, and ``gateway uidl``
deriving the UIDLs on its own.
"""

from __future__ import annotations

import imaplib
import poplib
import re

import pytest

from tests.serverproc import GatewayProcess, run_gateway

MESSAGE = b"From: a@example.org\r\nSubject: message %d\r\n\r\nbody %d\r\n"


@pytest.fixture
def server(tmp_path):
    config = tmp_path / "gateway.toml"
    config.write_text("[auth]\nfailure_delay = 0.1\n")
    with GatewayProcess(tmp_path / "data", config=config) as running:
        running.add_user("alice", "secret")
        yield running


def device(server, name: str) -> poplib.POP3:
    client = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=30)
    client.user(f"alice#{name}")
    client.pass_("secret")
    return client


def deliver(server, *numbers):
    for n in numbers:
        server.deliver("alice", MESSAGE % (n, n))


def uidls(client) -> list[bytes]:
    return [line.split()[1] for line in client.uidl()[1]]


def imap_inbox(server) -> tuple[int, list[int]]:
    """UIDVALIDITY and the UIDs of INBOX, as imaplib sees them."""
    client = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=30)
    try:
        client.login("alice", "secret")
        client.select("INBOX", readonly=True)
        uidvalidity = int(client.response("UIDVALIDITY")[1][0])
        status, data = client.uid("SEARCH", "ALL")
        assert status == "OK"
        return uidvalidity, [int(uid) for uid in data[0].split()]
    finally:
        client.logout()


def derived_uidl(server, uidvalidity: int, uid: int) -> bytes:
    return run_gateway(server.data_dir, "uidl", str(uidvalidity), str(uid)).stdout.strip()


def download_and_delete(client) -> list[bytes]:
    """What a client set to delete from the server does: RETR all, DELE all, QUIT."""
    subjects = []
    count = len(client.list()[1])
    for number in range(1, count + 1):
        text = b"\r\n".join(client.retr(number)[1])
        subjects.append(re.search(rb"Subject: ([^\r\n]*)", text)[1])
        client.dele(number)
    client.quit()
    return subjects


def test_a_dele_on_one_device_leaves_the_message_to_the_other(server):
    # Both devices set up before any mail is deleted.
    device(server, "phone").quit()
    device(server, "desktop").quit()
    deliver(server, 1, 2)
    uidvalidity, uids = imap_inbox(server)
    assert uids == [1, 2]

    phone = device(server, "phone")
    phone_uidls = uidls(phone)
    phone.dele(1)
    phone.quit()

    desktop = device(server, "desktop")
    # The UIDLs are the same in both views, and the ones derived from
    # (UIDVALIDITY, UID) as Dovecot's pop3_uidl_format would give.
    assert uidls(desktop) == phone_uidls == [derived_uidl(server, uidvalidity, uid) for uid in uids]
    assert desktop.stat()[0] == 2
    assert b"body 1" in b"\r\n".join(desktop.retr(1)[1])
    # IMAP still shows it: only the phone deleted it.
    assert imap_inbox(server)[1] == [1, 2]
    desktop.dele(1)
    desktop.quit()
    # Both devices deleted it: it is gone, for IMAP too.
    assert imap_inbox(server)[1] == [2]

    phone = device(server, "phone")
    assert uidls(phone) == [derived_uidl(server, uidvalidity, 2)]
    phone.quit()


def test_two_devices_deleting_from_the_server_each_get_every_message_once(server):
    for name in ("phone", "desktop"):
        device(server, name).quit()
    deliver(server, 1, 2)
    assert download_and_delete(device(server, "phone")) == [b"message 1", b"message 2"]
    deliver(server, 3)
    assert download_and_delete(device(server, "phone")) == [b"message 3"]
    assert download_and_delete(device(server, "desktop")) == [b"message 1", b"message 2", b"message 3"]
    deliver(server, 4)
    assert download_and_delete(device(server, "desktop")) == [b"message 4"]
    assert download_and_delete(device(server, "phone")) == [b"message 4"]
    # Nothing is downloaded twice, and the maildrop is empty.
    assert download_and_delete(device(server, "phone")) == []
    assert download_and_delete(device(server, "desktop")) == []
    assert imap_inbox(server)[1] == []


def test_the_same_device_twice_is_in_use_and_another_is_not(server):
    phone = device(server, "phone")
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        device(server, "phone")
    desktop = device(server, "desktop")
    plain = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=30)
    plain.user("alice")
    plain.pass_("secret")
    for client in (phone, desktop, plain):
        client.quit()
