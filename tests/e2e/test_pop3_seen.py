"""
The \\Seen a POP3 RETR sets, against the real server process: other
sessions see it within ``maildrop.SEEN_DELAY`` without the POP3 client
quitting, and it survives ``kill -9`` within the second the batched
durability tier promises (README, "Storage and durability").
"""

from __future__ import annotations

import time

from gateway.pop3.maildrop import SEEN_DELAY
from gateway.store.sqlite.store import SQLiteStore
from gateway.store.sqlite.writer import FLAG_SYNC_DELAY
from tests.deferreds import result_of
from tests.e2e.test_imap import idle_until
from tests.e2e.test_imap_pop3 import imap_client, lmtp_deliver, pop3_client, server  # noqa: F401

# The README's promise: a flag change is durable within a second.
DURABLE_WITHIN = 1.0


def test_retr_seen_reaches_an_idling_imap_session_before_quit(server):  # noqa: F811
    lmtp_deliver(server)
    lmtp_deliver(server)
    c = imap_client(server)
    c.select_folder("INBOX")
    c.idle()
    p = pop3_client(server)
    p.retr(2)
    # The POP3 session stays open: nothing but the delay saves the flag.
    [(number, _, items)] = [event for event in idle_until(c, b"FETCH") if event[1] == b"FETCH"]
    assert number == 2
    assert b"\\Seen" in dict(zip(items[::2], items[1::2]))[b"FLAGS"]
    flags = c.get_flags([1, 2])
    assert b"\\Seen" not in flags[1] and b"\\Seen" in flags[2]
    p.quit()
    c.logout()


def test_retr_seen_survives_kill_9_within_a_second(server):  # noqa: F811
    assert SEEN_DELAY + FLAG_SYNC_DELAY < DURABLE_WITHIN
    lmtp_deliver(server)
    p = pop3_client(server)
    p.retr(1)
    time.sleep(DURABLE_WITHIN)
    server.kill()
    p.close()
    store = SQLiteStore(server.data_dir / "store")
    try:
        inbox = result_of(store.get_mailbox("erin", "INBOX"))
        [record] = result_of(store.list_messages(inbox.id))
        assert "\\Seen" in record.flags
    finally:
        store.close()
