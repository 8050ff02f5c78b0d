"""
An index rebuilt after crashes gives back exactly the mailboxes the live
index held (DESIGN.md: the index can be rebuilt from the files).

The real server is killed (``kill -9``) several times while LMTP clients
deliver, an IMAP client moves messages to Archive and expunges some, and a
POP3 client deletes some and QUITs.  After the last restart (where the
server sweeps what each crash left) the live index is recorded: per
mailbox UIDVALIDITY, UIDNEXT and the UIDs with their flags.  Every message
is whole and in one place only, every acknowledged delivery is there unless
a deletion of it was asked for, and no acknowledged deletion came back.
Then index.sqlite is deleted and the server started again: the rebuilt
index holds the same mailboxes, UIDs and UIDNEXTs (flags, which live only
in the index, start afresh: README "Back up"), and the next delivery gets a
UID never given out before.
"""

from __future__ import annotations

import imaplib
import os
import poplib
import random
import re
import threading
import time

import tests.e2e.test_delivery
from gateway.store.sqlite.store import SQLiteStore
from tests.deferreds import result_of
from tests.e2e.test_delivery import untraced
from tests.serverproc import GatewayProcess, run_gateway

CYCLES = 4
# More cycles, until a kill lands between a body's rename and its commit.
EXTRA_CYCLES = 6
PASSWORD = "secret"
MESSAGE_ID = re.compile(rb"Message-ID: <burst-(\d+)@example.org>")
GONE = (OSError, EOFError, imaplib.IMAP4.abort, imaplib.IMAP4.error, poplib.error_proto)


class Ledger:
    """What the clients were told, shared by their threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.in_inbox: dict[int, int] = {}  # INBOX UID -> message number, as far as we know
        self.asked_deleted: set[int] = set()  # numbers a deletion was asked for
        self.deleted: set[int] = set()  # numbers whose deletion was acknowledged
        self.moved = 0  # acknowledged moves to Archive

    def pick(self, count: int) -> dict[int, int]:
        with self.lock:
            uids = sorted(self.in_inbox)[:count]
            return {uid: self.in_inbox.pop(uid) for uid in uids}


class Burst(tests.e2e.test_delivery.Burst):
    """LMTP deliveries, each acknowledged one noted in the ledger."""

    def __init__(self, port, ledger, first_number, **kwargs):
        super().__init__(port, **kwargs)
        self.ledger = ledger
        self.next_number = first_number

    def send(self, client, number):
        uid = super().send(client, number)
        if uid is not None:
            with self.ledger.lock:
                self.ledger.in_inbox[uid] = number
        return uid


def number_of(header: bytes) -> int:
    return int(MESSAGE_ID.search(header).group(1))


def imap_worker(port: int, ledger: Ledger, seed: int) -> None:
    """Moves to Archive and expunges, in INBOX and in Archive, until the server goes away."""
    rng = random.Random(seed)
    try:
        imap = imaplib.IMAP4("127.0.0.1", port, timeout=30)
        imap.login("alice", PASSWORD)
        while True:
            picked = ledger.pick(rng.randint(1, 4))
            if not picked:
                imap.noop()
                continue
            uids = ",".join(map(str, picked))
            imap.select("INBOX")
            if rng.random() < 0.5:
                # Each stays somewhere, whatever the kill.
                if imap.uid("MOVE", uids, "Archive")[0] == "OK":
                    with ledger.lock:
                        ledger.moved += len(picked)
                continue
            with ledger.lock:
                ledger.asked_deleted.update(picked.values())
            imap.uid("STORE", uids, "+FLAGS.SILENT", r"(\Deleted)")
            if imap.uid("EXPUNGE", uids)[0] == "OK":
                with ledger.lock:
                    ledger.deleted.update(picked.values())
            # Now and then, deletes in Archive what an earlier move put there.
            imap.select("Archive")
            typ, found = imap.uid("SEARCH", "ALL")
            archived = found[0].split()[:2] if typ == "OK" else []
            if len(found[0].split()) > 4 and rng.random() < 0.3:
                typ, fetched = imap.uid("FETCH", b",".join(archived).decode(), "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
                numbers = {number_of(item[1]) for item in fetched if isinstance(item, tuple)}
                with ledger.lock:
                    ledger.asked_deleted.update(numbers)
                imap.uid("STORE", b",".join(archived).decode(), "+FLAGS.SILENT", r"(\Deleted)")
                if imap.uid("EXPUNGE", b",".join(archived).decode())[0] == "OK":
                    with ledger.lock:
                        ledger.deleted.update(numbers)
    except GONE:
        pass  # the server was killed


def pop3_worker(port: int, ledger: Ledger, seed: int) -> None:
    """Sessions that delete a few messages and QUIT, until the server goes away."""
    rng = random.Random(seed)
    try:
        while True:
            pop = poplib.POP3("127.0.0.1", port, timeout=30)
            pop.user("alice")
            pop.pass_(PASSWORD)
            listed = {int(uidl[:8], 16): int(number) for number, uidl in
                      (line.split() for line in pop.uidl()[1])}
            with ledger.lock:
                mine = {uid: ledger.in_inbox.pop(uid) for uid in sorted(listed) if uid in ledger.in_inbox}
                chosen = dict(rng.sample(sorted(mine.items()), min(len(mine), rng.randint(1, 3))))
                for uid in mine.keys() - chosen.keys():
                    ledger.in_inbox[uid] = mine[uid]
                ledger.asked_deleted.update(chosen.values())
            for uid in chosen:
                try:
                    pop.dele(listed[uid])
                except poplib.error_proto:
                    pass  # expunged over IMAP meanwhile: -ERR, and the session goes on
            if pop.quit().startswith(b"+OK"):
                with ledger.lock:
                    ledger.deleted.update(chosen.values())
    except GONE:
        pass


def kill_mid_delivery(server, burst: Burst, inbox_dir, acknowledged: dict[int, int]) -> None:
    """
    Once the burst got going, kill -9 the server as soon as a body shows up
    in INBOX that no client was told of: most likely between its rename into
    place and its commit, the window a rebuild must not bring back (bounded:
    after a few seconds the kill comes anyway).
    """
    before = set(os.listdir(inbox_dir))
    try:
        for thread in burst.threads:
            thread.start()
        assert burst.wait_for_acknowledgements(timeout=120), "the burst did not get going"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with burst.lock:
                told = {str(uid) for uid in burst.acknowledged.values()}
            if any(name.isdigit() for name in set(os.listdir(inbox_dir)) - before - told):
                break
    finally:
        server.kill()
    for thread in burst.threads:
        thread.join(timeout=60)
        assert not thread.is_alive()
    acknowledged.update(burst.acknowledged)


def snapshot_ids(data) -> dict[str, int]:
    store = SQLiteStore(data / "store")
    try:
        return {info.name: info.id for info in result_of(store.list_mailboxes("alice"))}
    finally:
        store.close()


def snapshot(data) -> tuple[dict, dict]:
    """
    The index as the store serves it: per mailbox (UIDVALIDITY, UIDNEXT,
    [(UID, flags)]), and per mailbox {UID: body}.
    """
    store = SQLiteStore(data / "store")
    try:
        index, bodies = {}, {}
        for info in result_of(store.list_mailboxes("alice")):
            records = result_of(store.list_messages(info.id))
            index[info.name] = (info.uidvalidity, info.uidnext, [(r.uid, r.flags) for r in records])
            bodies[info.name] = {}
            for record in records:
                with result_of(store.open_message(info.id, record.uid)) as f:
                    bodies[info.name][record.uid] = f.read()
        return index, bodies
    finally:
        store.close()


def test_rebuilt_index_equals_the_live_one_after_kill_9_cycles(tmp_path):
    data = tmp_path / "data"
    run_gateway(data, "user", "add", "alice", input=PASSWORD.encode() + b"\n")
    config = tmp_path / "gateway.toml"
    config.write_text("[auth]\nfailure_delay = 0.1\n")
    ledger = Ledger()
    acknowledged: dict[int, int] = {}
    first_number = 0
    for cycle in range(CYCLES + EXTRA_CYCLES):
        server = GatewayProcess(data, config=config).start()
        try:
            if cycle == 0:
                imap = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=30)
                imap.login("alice", PASSWORD)
                assert imap.create("Archive")[0] == "OK"
                imap.logout()
                inbox_dir = data / "store" / "mail" / str(snapshot_ids(data)["INBOX"])
            with ledger.lock:
                ledger.in_inbox.clear()  # UIDs the last crash may have taken back
            burst = Burst(server.port("lmtp"), ledger, first_number, threads=3, kill_after=25 + 5 * cycle)
            workers = [
                threading.Thread(target=imap_worker, args=(server.port("imap"), ledger, cycle), daemon=True),
                threading.Thread(target=pop3_worker, args=(server.port("pop3"), ledger, cycle), daemon=True),
            ]
            for worker in workers:
                worker.start()
        except BaseException:
            server.kill()
            raise
        kill_mid_delivery(server, burst, inbox_dir, acknowledged)
        for worker in workers:
            worker.join(timeout=60)
            assert not worker.is_alive()
        first_number = burst.next_number
        left = run_gateway(data, "check", check=False).stdout
        if cycle + 1 >= CYCLES and b"was never committed" in left:
            break

    # The server's start sweeps what the last crash left.
    with GatewayProcess(data, config=config):
        pass
    live, bodies = snapshot(data)
    numbers = []
    for name, messages in bodies.items():
        for uid, body in untraced(messages.items(), b"sender@example.org", b"alice@example.test"):
            number = number_of(body)
            numbers.append(number)
            assert body == Burst.message(number), f"{name} UID {uid} is not a whole message"
    assert len(numbers) == len(set(numbers)), "a message is in two places"
    assert not set(numbers) & ledger.deleted, "a deleted message came back"
    missing = set(acknowledged) - ledger.asked_deleted - set(numbers)
    assert not missing, f"acknowledged deliveries lost: {sorted(missing)}"
    assert ledger.deleted and ledger.moved, "the clients did too little to test anything"
    live_check = run_gateway(data, "check", check=False)

    for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
        (data / "store" / name).unlink(missing_ok=True)
    with GatewayProcess(data, config=config) as server:
        rebuilt, rebuilt_bodies = snapshot(data)
        assert server.deliver("alice", b"Subject: after the rebuild\r\n\r\nnew\r\n").returncode == 0
        after, _ = snapshot(data)
    # The same mailboxes, UIDVALIDITY, UIDNEXT and UIDs; flags start afresh.
    assert rebuilt == {name: (v, n, [(uid, frozenset()) for uid, _ in records])
                       for name, (v, n, records) in live.items()}
    assert rebuilt_bodies == bodies
    # No UID given out before the rebuild (expunged ones included) is given out again.
    uidvalidity, uidnext, records = after["INBOX"]
    assert records[-1][0] == live["INBOX"][1] and uidnext == live["INBOX"][1] + 1
    for checked in (live_check, run_gateway(data, "check", check=False)):
        assert (checked.returncode, checked.stdout) == (0, b"store is consistent\n")
