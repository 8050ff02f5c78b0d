"""
kill -9 of the real server during a mixed burst (DESIGN.md, durability
tiers): LMTP deliveries to two users (one message, two copies), IMAP STOREs with
CONDSTORE on alice's INBOX, and POP3 RETRs one at a time on bob's unseen
mail.  After a restart: every acknowledged message is whole at the UID its
250 named, no UID is handed out again, UIDVALIDITY is unchanged and
HIGHESTMODSEQ is above every MODSEQ a client was told, and the flags clients
were told of are there: under ``batched``, all but those of the last second
before the kill; under ``immediate``, every STORE answered.

A kill -9 loses what the process had not handed to the kernel; what it had
written but not fsynced survives in the page cache (only a power cut loses
that), so this shows the ordering and the recovery, and
tests/store/test_writer.py times the WAL sync itself.
"""

from __future__ import annotations

import imaplib
import poplib
import re
import smtplib
import threading
import time

import pytest

from gateway.store.sqlite.store import SQLiteStore
from tests.deferreds import result_of
from tests.serverproc import GatewayProcess, run_gateway

SAVED = re.compile(rb"Saved as UID (\d+)")
MODSEQ = re.compile(rb"MODSEQ \((\d+)\)")
UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
RECIPIENTS = ["alice@example.test", "bob@example.test"]
# What each client does before the kill (bounded: the kill comes once all
# three are reached, or the test fails after DEADLINE seconds).
DELIVERIES, STORES, RETRS = 30, 25, 15
DEADLINE = 60.0


def message(number: int) -> bytes:
    filler = b"".join(b"%d filler line %05d\r\n" % (number, n) for n in range((number * 397) % 1500))
    return b"Message-ID: <mixed-%d@example.org>\r\nSubject: mixed %d\r\n\r\n" % (number, number) + filler


class Clients:
    """The three clients, each on its own thread, recording what they were told and when."""

    def __init__(self, ports: dict[str, int]):
        self.ports = ports
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.delivered: dict[int, tuple[int, int]] = {}  # number -> (alice UID, bob UID)
        self.stored: list[tuple[int, str, float]] = []  # (UID, keyword, answered at)
        self.retrieved: list[tuple[int, float]] = []  # (bob's UID, RETR answered at)
        self.highest_modseq = 0
        self.uidvalidity: int | None = None
        self.errors: list[BaseException] = []

    def enough(self) -> bool:
        with self.lock:
            return (len(self.delivered) >= DELIVERIES and len(self.stored) >= STORES
                    and len(self.retrieved) >= RETRS)

    def run(self, work):
        try:
            work()
        except (OSError, imaplib.IMAP4.abort, poplib.error_proto, smtplib.SMTPException) as e:
            if not self.stop.is_set():
                self.errors.append(e)

    def lmtp(self):
        with smtplib.LMTP("127.0.0.1", self.ports["lmtp"], timeout=30) as client:
            client.ehlo_or_helo_if_needed()
            number = 0
            while not self.stop.is_set():
                number += 1
                assert client.mail("sender@example.org")[0] == 250
                for recipient in RECIPIENTS:
                    assert client.rcpt(recipient)[0] == 250
                replies = [client.data(message(number)), client.getreply()]
                if all(code == 250 for code, _ in replies):
                    uids = tuple(int(SAVED.search(text).group(1)) for _, text in replies)
                    with self.lock:
                        self.delivered[number] = uids

    def imap(self):
        client = imaplib.IMAP4("127.0.0.1", self.ports["imap"], timeout=30)
        client.login("alice", "alice-password")
        assert client._simple_command("ENABLE", "CONDSTORE")[0] == "OK"
        client.select("INBOX")
        self.uidvalidity = int(UIDVALIDITY.search(b" ".join(client.untagged_responses.get("OK", []))).group(1))
        count = 0
        while not self.stop.is_set():
            status, data = client.uid("SEARCH", "ALL")
            uids = [int(uid) for uid in data[0].split()]
            if not uids:
                client.noop()
                time.sleep(0.02)
                continue
            count += 1
            uid, keyword = uids[count % len(uids)], f"$K{count}"
            status, data = client.uid("STORE", str(uid), "+FLAGS", f"({keyword})")
            answered = time.monotonic()
            assert status == "OK", data
            modseqs = [int(m) for item in data if isinstance(item, bytes) for m in MODSEQ.findall(item)]
            with self.lock:
                self.stored.append((uid, keyword, answered))
                self.highest_modseq = max([self.highest_modseq, *modseqs])

    def pop3(self):
        retrieved = set()
        while not self.stop.is_set():
            client = poplib.POP3("127.0.0.1", self.ports["pop3"], timeout=30)
            client.user("bob")
            client.pass_("bob-password")
            for line in client.uidl()[1]:
                number, uidl = line.split()
                uid = int(uidl[:8], 16)  # %08Xu%08Xv
                if uid in retrieved or self.stop.is_set():
                    continue
                client.retr(int(number))
                answered = time.monotonic()
                retrieved.add(uid)
                with self.lock:
                    self.retrieved.append((uid, answered))
            client.quit()
            time.sleep(0.02)


def mailbox_state(data, user: str):
    """(UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, {UID: (flags, body)}) of the user's INBOX, from the disk."""
    store = SQLiteStore(data / "store")
    try:
        info = result_of(store.get_mailbox(user, "INBOX"))
        messages = {}
        for record in result_of(store.list_messages(info.id)):
            with result_of(store.open_message(info.id, record.uid)) as body:
                messages[record.uid] = (record.flags, body.read())
        return info.uidvalidity, info.uidnext, info.highestmodseq, messages
    finally:
        store.close()


@pytest.mark.parametrize("flag_durability", ["batched", "immediate"])
def test_kill_9_mid_mixed_burst(tmp_path, flag_durability):
    data = tmp_path / "data"
    for name in ("alice", "bob"):
        run_gateway(data, "user", "add", name, input=f"{name}-password\n".encode())
    config = tmp_path / "gateway.toml"
    config.write_text(f'[store]\nflag_durability = "{flag_durability}"\n')
    server = GatewayProcess(data, config=config).start()
    clients = Clients({name: server.port(name) for name in ("pop3", "imap", "lmtp")})
    threads = [threading.Thread(target=clients.run, args=(work,), daemon=True)
               for work in (clients.lmtp, clients.imap, clients.pop3)]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + DEADLINE
        while not clients.enough() and time.monotonic() < deadline and not clients.errors:
            time.sleep(0.05)
        assert clients.errors == []
        assert clients.enough(), "the burst did not get going"
        killed_at = time.monotonic()
        clients.stop.set()
        server.kill()
    finally:
        clients.stop.set()
        server.kill()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive()
    assert clients.errors == []

    # The next start recovers (a record of unsynced flag changes was left).
    with GatewayProcess(data, config=config) as restarted:
        with smtplib.LMTP("127.0.0.1", restarted.port("lmtp"), timeout=30) as client:
            assert client.sendmail("sender@example.org", ["alice@example.test"], b"Subject: after\r\n\r\n") == {}
    uidvalidity, uidnext, highestmodseq, alice = mailbox_state(data, "alice")
    _, _, _, bob = mailbox_state(data, "bob")

    # Every acknowledged message whole, at the UID its 250 named, for both.
    for number, (alice_uid, bob_uid) in clients.delivered.items():
        for uid, body, recipient in ((alice_uid, alice[alice_uid][1], b"alice"), (bob_uid, bob[bob_uid][1], b"bob")):
            # Each copy: its own trace fields, then the whole message.
            top = b"Return-Path: <sender@example.org>\r\nDelivered-To: %s@example.test\r\nReceived: " % recipient
            assert body.startswith(top) and body.endswith(b"\r\n" + message(number)), f"message {number} ({uid})"
    # No identity reused or gone down.
    assert uidvalidity == clients.uidvalidity
    after = max(alice)
    assert alice[after][1].endswith(b"Subject: after\r\n\r\n")
    assert after > max(uid for uid, _ in clients.delivered.values()) and uidnext == after + 1
    assert highestmodseq > clients.highest_modseq
    # Flags: none of what clients were told is lost beyond the last second
    # (under "immediate": no answered STORE at all).
    stores_behind = 0.0 if flag_durability == "immediate" else 1.0
    for uid, keyword, answered in clients.stored:
        if answered < killed_at - stores_behind and uid in alice:
            assert keyword in alice[uid][0], f"{keyword} on UID {uid}, answered {killed_at - answered:.2f}s before"
    # The \Seen a RETR sets is saved after its answer, in either mode.
    for uid, answered in clients.retrieved:
        if answered < killed_at - 1.0:
            assert "\\Seen" in bob[uid][0], f"\\Seen on UID {uid}, RETR {killed_at - answered:.2f}s before"
