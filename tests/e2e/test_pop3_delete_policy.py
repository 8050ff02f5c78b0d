"""
What POP3 DELE means to an IMAP user of the same mailbox (issue 6), end to
end: for each ``pop3.delete_policy``, poplib deletes a message and quits,
then imaplib looks at INBOX and Trash, and the next POP3 session lists what
is left with the UIDLs it had.
"""

from __future__ import annotations

import imaplib
import poplib
import re

import pytest

from gateway.store.sqlite.store import SQLiteStore
from tests.deferreds import result_of
from tests.serverproc import GatewayProcess, run_gateway

MESSAGES = [b"From: a@example.org\r\nSubject: policy %d\r\n\r\nbody %d\r\n" % (n, n) for n in (1, 2, 3)]


@pytest.fixture
def data_dir(tmp_path):
    data = tmp_path / "data"
    run_gateway(data, "user", "add", "alice", input=b"secret\n")
    store = SQLiteStore(data / "store")
    try:
        result_of(store.ensure_user("alice"))
        inbox = result_of(store.get_mailbox("alice", "INBOX"))
        for message in MESSAGES:
            result_of(store.append(inbox.id, message))
    finally:
        store.close()
    return data


def start(data_dir, policy):
    config = data_dir.parent / "gateway.toml"
    config.write_text(f'[pop3]\ndelete_policy = "{policy}"\n[auth]\nfailure_delay = 0.1\n')
    return GatewayProcess(data_dir, lmtp=None, config=config)


def pop3_session(server) -> poplib.POP3:
    client = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=30)
    client.user("alice")
    client.pass_("secret")
    return client


def uidl_listing(client) -> list[bytes]:
    return [line.split()[1] for line in client.uidl()[1]]


def imap_view(server, mailbox):
    """(UID, FLAGS, Subject) of every message in ``mailbox``, as imaplib sees them."""
    client = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=30)
    try:
        client.login("alice", "secret")
        status, _ = client.select(mailbox, readonly=True)
        assert status == "OK"
        status, data = client.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert status == "OK"
        seen = []
        for item in data:
            if not isinstance(item, tuple):
                continue
            meta, header = item
            uid = int(re.search(rb"UID (\d+)", meta).group(1))
            flags = set(re.search(rb"FLAGS \(([^)]*)\)", meta).group(1).split())
            seen.append((uid, flags, header.strip()))
        return seen
    finally:
        client.logout()


def dele_second_and_quit(server) -> list[bytes]:
    client = pop3_session(server)
    before = uidl_listing(client)
    assert client.dele(2).startswith(b"+OK")
    assert client.quit() == b"+OK Bye, 1 messages deleted"
    return before


def test_expunge_removes_it_for_imap_too(data_dir):
    with start(data_dir, "expunge") as server:
        before = dele_second_and_quit(server)
        assert [(uid, subject) for uid, _, subject in imap_view(server, "INBOX")] == [
            (1, b"Subject: policy 1"),
            (3, b"Subject: policy 3"),
        ]
        assert imap_view(server, "Trash") == []
        client = pop3_session(server)
        assert uidl_listing(client) == [before[0], before[2]]
        client.quit()


def test_trash_moves_it_to_the_imap_trash(data_dir):
    with start(data_dir, "trash") as server:
        before = dele_second_and_quit(server)
        assert [(uid, subject) for uid, _, subject in imap_view(server, "INBOX")] == [
            (1, b"Subject: policy 1"),
            (3, b"Subject: policy 3"),
        ]
        assert [subject for _, _, subject in imap_view(server, "Trash")] == [b"Subject: policy 2"]
        client = pop3_session(server)
        assert uidl_listing(client) == [before[0], before[2]]
        assert client.stat() == (2, len(MESSAGES[0]) + len(MESSAGES[2]))
        client.quit()


def test_hide_keeps_it_for_imap_and_hides_it_from_pop3(data_dir):
    with start(data_dir, "hide") as server:
        before = dele_second_and_quit(server)
        inbox = imap_view(server, "INBOX")
        assert [(uid, subject) for uid, _, subject in inbox] == [
            (1, b"Subject: policy 1"),
            (2, b"Subject: policy 2"),
            (3, b"Subject: policy 3"),
        ]
        assert [b"$POP3Deleted" in flags for _, flags, _ in inbox] == [False, True, False]
        assert imap_view(server, "Trash") == []
        client = pop3_session(server)
        assert uidl_listing(client) == [before[0], before[2]]
        # Numbers close up, UIDLs do not change: message 2 is now "policy 3".
        assert b"Subject: policy 3" in client.top(2, 0)[1]
        client.quit()
    # A restart changes nothing.
    with start(data_dir, "hide") as server:
        client = pop3_session(server)
        assert uidl_listing(client) == [before[0], before[2]]
        client.quit()
