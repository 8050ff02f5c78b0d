"""
Concurrent-session consistency, in the spirit of the acceptance stress
tester: several raw-socket clients on the same mailboxes do random SELECT,
FETCH, STORE, EXPUNGE, APPEND, SEARCH, LIST and STATUS with commands in
flight on several connections at once.  Every response must be well formed
(RFC 3501 9: a response code is followed by text, literals match their
counts), untagged EXPUNGE must never arrive during FETCH, STORE or SEARCH
(RFC 3501 7.4.1), and each session's sequence-number -> UID map, built only
from what it was told, must agree with every UID the server reports and,
once all is quiet, with every other session's.
"""

from __future__ import annotations

import random
import re

import pytest

from tests.rawimap import RawImap
from tests.serverproc import GatewayProcess, run_gateway

USERS = ("user0", "user1")
SESSIONS_PER_USER = 3
STEPS = 150
MESSAGE = b"From: x@example.org\r\nSubject: s%d\r\n\r\nbody %d\r\n"
FLAGS = ("\\Seen", "\\Flagged", "\\Deleted", "\\Answered", "work")

_FETCH = re.compile(rb"\* (\d+) FETCH \((.*)\)$", re.DOTALL)
_CODE = re.compile(rb"(?:\*|[A-Za-z0-9]+) (?:OK|NO|BAD|BYE) \[[^\]]*\] \S")
_NO_EXPUNGE = {b"FETCH", b"STORE", b"SEARCH"}


class Client(RawImap):
    def __init__(self, port, user):
        self.uids: list[int | None] = []
        self.flags: dict[int, frozenset] = {}
        super().__init__(port, user)

    def tagged(self, line: bytes, words: list[bytes]) -> None:
        super().tagged(line, words)
        if b" [" in line[: line.index(b" ") + 5]:
            assert _CODE.match(line), line

    def take(self, line: bytes, verb: bytes, by_uid: bool) -> None:
        parts = line.split(b" ", 3)
        if len(parts) > 2 and parts[1] in (b"OK", b"NO", b"BAD", b"BYE") and parts[2].startswith(b"["):
            assert _CODE.match(line), f"response code without text: {line!r}"
        if parts[1] == b"SEARCH" and not by_uid:
            assert all(1 <= int(n) <= len(self.uids) for n in line.split()[2:]), line
        if len(parts) >= 3 and parts[1].isdigit():
            number, kind = int(parts[1]), parts[2]
            if kind == b"EXISTS":
                assert number >= len(self.uids), (line, len(self.uids))
                self.uids.extend([None] * (number - len(self.uids)))
            elif kind == b"EXPUNGE":
                assert verb not in _NO_EXPUNGE, f"EXPUNGE during {verb!r}"
                assert 1 <= number <= len(self.uids), line
                uid = self.uids.pop(number - 1)
                self.flags.pop(uid, None)
            elif kind == b"FETCH":
                assert 1 <= number <= len(self.uids), (line, len(self.uids))
                m = _FETCH.match(line)
                uid = re.search(rb"\bUID (\d+)", m[2])
                assert uid, f"FETCH without UID: {line!r}"
                uid = int(uid[1])
                known = self.uids[number - 1]
                assert known in (None, uid), f"session thinks {number} is UID {known}, server says {uid}"
                assert uid not in [u for i, u in enumerate(self.uids) if i != number - 1], line
                self.uids[number - 1] = uid
                flags = re.search(rb"FLAGS \(([^)]*)\)", m[2])
                if flags:
                    self.flags[uid] = frozenset(flags[1].split()) - {b"\\Recent"}

    def select(self):
        self.uids, self.flags = [], {}
        line, _ = self.call(b"SELECT INBOX")
        assert line.endswith(b"[READ-WRITE] SELECT completed"), line

    def learn(self):
        if self.uids:
            line, _ = self.call(b"FETCH 1:* (UID FLAGS)")
            assert b" OK " in line, line


@pytest.fixture
def server(tmp_path):
    data = tmp_path / "data"
    for user in USERS:
        run_gateway(data, "user", "add", user, input=b"pw\n")
    with GatewayProcess(data, pop3=None, lmtp=None) as process:
        yield process


def random_command(rng: random.Random, client: Client, step: int):
    count = len(client.uids)
    choice = rng.randrange(12)
    if choice == 0:
        return b"APPEND INBOX", MESSAGE % (step, step)
    if choice == 1 and count:
        a = rng.randint(1, count)
        return b"FETCH %d:%d (UID FLAGS RFC822.SIZE)" % (a, rng.randint(a, count)), None
    if choice == 2:
        return b"UID FETCH 1:* (FLAGS)", None
    if choice == 3 and count:
        mode = rng.choice([b"+FLAGS", b"-FLAGS", b"FLAGS", b"+FLAGS.SILENT"])
        flags = " ".join(rng.sample(FLAGS, rng.randint(1, 2))).encode()
        return b"STORE %d %s (%s)" % (rng.randint(1, count), mode, flags), None
    if choice == 4:
        return b"EXPUNGE", None
    if choice == 5:
        return rng.choice([b"SEARCH UNSEEN", b"UID SEARCH DELETED", b"SEARCH ALL"]), None
    if choice == 6:
        return b"NOOP", None
    if choice == 7:
        return b'LIST "" *', None
    if choice == 8:
        return b"STATUS INBOX (MESSAGES UIDNEXT UNSEEN)", None
    if choice == 9 and count:
        return b"UID STORE %d:* +FLAGS (\\Deleted)" % rng.randint(1, 40), None
    return b"CHECK", None


def test_concurrent_sessions_stay_consistent(server):
    rng = random.Random(20261126)
    clients = [Client(server.port("imap"), user) for user in USERS for _ in range(SESSIONS_PER_USER)]
    for client in clients:
        client.call(b"APPEND INBOX", MESSAGE % (0, 0))
    for client in clients:
        client.select()
        client.learn()
    for step in range(STEPS):
        # Several sessions have a command in flight at once.
        busy = rng.sample(clients, rng.randint(1, len(clients)))
        for client in busy:
            if rng.random() < 0.05:
                client.send(b"SELECT INBOX")
                client.uids, client.flags = [], {}
            else:
                client.send(*random_command(rng, client, step))
        for client in busy:
            line, _ = client.finish()
            assert re.match(rb"t\d+ (OK|NO) ", line), line
            if not client.uids or None in client.uids:
                client.learn()
    for user in USERS:
        group = [c for c in clients if c.user == user]
        for client in group:
            client.call(b"NOOP")
        for client in group:
            client.call(b"NOOP")
            client.learn()
        fresh = Client(server.port("imap"), user)
        fresh.select()
        fresh.learn()
        for client in group:
            assert client.uids == fresh.uids
            assert {u: client.flags[u] for u in client.uids} == {u: fresh.flags[u] for u in fresh.uids}
