"""
A bounded, seeded stress run: 10 sessions over 8 users for 20 seconds doing
random SELECT, FETCH, STORE with keywords, EXPUNGE, APPEND and IDLE, several
commands in flight at once, with every untagged response checked against
the session's model of its mailbox:

- a keyword shows in FETCH FLAGS only after a FLAGS response named it
  (RFC 3501 7.2.6);
- no FETCH response names an item twice (RFC 3501 7.4.2);
- EXISTS never shrinks, EXPUNGE names a message there, and never during
  FETCH, STORE or SEARCH (RFC 3501 7.3.1, 7.4.1); a sequence number keeps
  its UID until an EXPUNGE renumbers it;
- every command the model expects to work answers OK.
"""

from __future__ import annotations

import random
import re
import time

import pytest

from tests.rawimap import RawImap
from tests.serverproc import GatewayProcess, run_gateway

USERS = tuple(f"stress{n}" for n in range(8))
# 10 sessions over 8 users: two users have a second session.
SESSIONS = USERS + USERS[:2]
SECONDS = 20.0
SEED = 20261205
MAILBOXES = (b"INBOX", b"Work")
KEYWORDS = tuple(f"$Label{n}".encode() for n in range(1, 10))
SYSTEM = (b"\\Seen", b"\\Flagged", b"\\Answered", b"\\Draft", b"\\Deleted")
MESSAGE = b"From: x@example.org\r\nSubject: stress %d\r\nMessage-ID: <%d@stress>\r\n\r\nbody %d\r\n"

_NO_EXPUNGE = {b"FETCH", b"STORE", b"SEARCH"}
_ITEM = re.compile(rb"([A-Z0-9.]+(?:\[[^\]]*\])?(?:<\d+>)?) ")


def fetch_items(data: bytes) -> list[tuple[bytes, bytes]]:
    """(name, value) of each item of a FETCH response's list, literals inline."""
    items = []
    position = 0
    while position < len(data):
        match = _ITEM.match(data, position)
        assert match, f"bad FETCH item at {data[position:position + 40]!r}"
        name = match[1]
        position = match.end()
        start = position
        if data[position:position + 1] == b"(":
            depth = 0
            while True:
                char = data[position:position + 1]
                depth += {b"(": 1, b")": -1}.get(char, 0)
                if char == b'"':
                    position = data.index(b'"', position + 1)
                position += 1
                if depth == 0:
                    break
        elif data[position:position + 1] == b"{":
            size_end = data.index(b"}\r\n", position)
            position = size_end + 3 + int(data[position + 1:size_end])
        elif data[position:position + 1] == b'"':
            position = data.index(b'"', position + 1) + 1
        else:
            while position < len(data) and data[position:position + 1] != b" ":
                position += 1
        items.append((name, data[start:position]))
        position += 1
    return items


class Session(RawImap):
    tag_prefix = b"s"

    def __init__(self, port: int, user: str, rng: random.Random, condstore: bool):
        self.rng = rng
        self.selected: bytes | None = None
        self.uids: list[int | None] = []
        self.announced: set[bytes] = set()
        self.idling = False
        self.checked = 0
        super().__init__(port, user)
        if condstore:
            self.call(b"ENABLE CONDSTORE")

    def continued(self, line: bytes, verb: bytes) -> None:
        # Hold on in IDLE while the other sessions' commands run.
        assert verb == b"IDLE", line
        self.idling = True

    def tagged(self, line: bytes, words: list[bytes]) -> None:
        status = line.split(b" ", 2)[1]
        assert status in (b"OK", b"NO"), (words, line)
        if words[0] == b"SELECT" and status == b"OK":
            self.selected = words[1]

    def take(self, line: bytes, verb: bytes, by_uid: bool = False) -> None:
        self.checked += 1
        parts = line.split(b" ", 3)
        if parts[1] == b"FLAGS":
            self.announced = set(re.findall(rb"[^\s()]+", parts[2] + b" " + parts[3] if len(parts) > 3 else parts[2]))
            return
        if len(parts) < 3 or not parts[1].isdigit():
            return
        number, kind = int(parts[1]), parts[2]
        if kind == b"EXISTS":
            assert number >= len(self.uids), f"EXISTS shrank: {line!r} after {len(self.uids)}"
            self.uids.extend([None] * (number - len(self.uids)))
        elif kind == b"EXPUNGE":
            assert verb not in _NO_EXPUNGE, f"EXPUNGE during {verb!r}"
            assert 1 <= number <= len(self.uids), line
            del self.uids[number - 1]
        elif kind == b"FETCH":
            assert 1 <= number <= len(self.uids), (line, len(self.uids))
            body = parts[3]
            assert body.startswith(b"(") and body.endswith(b")"), line
            items = fetch_items(body[1:-1])
            names = [name for name, _ in items]
            assert len(names) == len(set(names)), f"FETCH names an item twice: {line!r}"
            values = dict(items)
            if b"UID" in values:
                uid = int(values[b"UID"])
                known = self.uids[number - 1]
                assert known in (None, uid), f"{number} was UID {known}, now {uid}: {line!r}"
                self.uids[number - 1] = uid
            if b"FLAGS" in values:
                for flag in values[b"FLAGS"][1:-1].split():
                    if not flag.startswith(b"\\"):
                        assert flag in self.announced, f"{flag!r} used before any FLAGS named it: {line!r}"

    def select(self, mailbox: bytes) -> None:
        self.uids, self.announced, self.selected = [], set(), None
        self.send(b"SELECT " + mailbox)

    def random_command(self, step: int) -> tuple[bytes, bytes | None]:
        rng, count = self.rng, len(self.uids)
        choice = rng.randrange(10)
        if choice == 0:
            return b"APPEND %s (%s)" % (rng.choice(MAILBOXES), rng.choice(KEYWORDS)), MESSAGE % (step, step, step)
        if choice in (1, 2) and count:
            low = rng.randint(1, count)
            items = rng.choice([b"(UID FLAGS)", b"(FLAGS UID INTERNALDATE MODSEQ)", b"(UID FLAGS BODY[])",
                                b"(FLAGS BODY.PEEK[HEADER] UID)", b"FAST"])
            return b"FETCH %d:%d %s" % (low, rng.randint(low, count), items), None
        if choice == 3:
            return b"UID FETCH 1:* (FLAGS)", None
        if choice in (4, 5) and count:
            mode = rng.choice([b"+FLAGS", b"-FLAGS", b"FLAGS", b"+FLAGS.SILENT"])
            flags = b" ".join(rng.sample(KEYWORDS + SYSTEM[:4], rng.randint(1, 3)))
            low = rng.randint(1, count)
            return b"STORE %d:%d %s (%s)" % (low, rng.randint(low, count), mode, flags), None
        if choice == 6 and count:
            return b"STORE %d +FLAGS.SILENT (\\Deleted)" % rng.randint(1, count), None
        if choice == 7:
            return b"EXPUNGE", None
        if choice == 8:
            return b"IDLE", None
        return b"NOOP", None


@pytest.fixture
def server(tmp_path):
    data = tmp_path / "data"
    for user in USERS:
        run_gateway(data, "user", "add", user, input=b"pw\n")
    with GatewayProcess(data, pop3=None, lmtp=None) as process:
        yield process


def test_ten_sessions_over_eight_users_for_twenty_seconds(server):
    rng = random.Random(SEED)
    port = server.port("imap")
    sessions = [Session(port, user, random.Random(SEED + index), condstore=index % 2 == 0)
                for index, user in enumerate(SESSIONS)]
    for session in sessions:
        for mailbox in MAILBOXES:
            if mailbox != b"INBOX" and session is sessions[SESSIONS.index(session.user)]:
                session.call(b"CREATE " + mailbox)
    for session in sessions:
        for n in range(3):
            session.call(b"APPEND INBOX", MESSAGE % (n, n, n))
        session.select(b"INBOX")
        session.finish()
    deadline = time.monotonic() + SECONDS
    step = 0
    while time.monotonic() < deadline:
        step += 1
        busy = rng.sample(sessions, rng.randint(1, len(sessions)))
        for session in busy:
            if rng.random() < 0.08:
                session.select(rng.choice(MAILBOXES))
            else:
                session.send(*session.random_command(step))
        for session in busy:
            command = session.pending[0][1]
            if command == b"IDLE":
                # Read the continuation, let the others' answers arrive, end it.
                while not session.idling:
                    line = session.read()
                    if line.startswith(b"+ "):
                        session.idling = True
                    else:
                        session.take(line, b"IDLE")
                session.sock.sendall(b"DONE\r\n")
                session.idling = False
            session.finish()
    for session in sessions:
        session.call(b"NOOP")
        session.call(b"LOGOUT")
    assert step > 100
    assert sum(session.checked for session in sessions) > 1000
