"""
Several processes on one SQLite store, as the workers of one node serve it:
each side a real process (tests/store/sqlite_child.py) or a store on a real
reactor in this one.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from twisted.internet import defer

from gateway.store.sqlite import peers
from gateway.store.sqlite.store import SQLiteStore
from gateway.store.sqlite.writelock import WriteLock
from tests.deferreds import result_of
from tests.store.contract import MESSAGE, inbox

ROOT = Path(__file__).resolve().parent.parent.parent
WAIT = 30.0


class Child:
    """A process with the store open, answering commands (sqlite_child.py) within a bounded wait."""

    def __init__(self, root: Path, env: dict[str, str] | None = None):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.store.sqlite_child", str(root)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, env=env,
        )

    def send(self, line: str) -> None:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def answer(self, timeout: float = WAIT) -> str:
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        assert ready, "the other process did not answer"
        line = self.process.stdout.readline()
        assert line, f"the other process ended ({self.process.wait(timeout)})"
        return line.strip()

    def ask(self, line: str) -> str:
        self.send(line)
        return self.answer()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(WAIT)

    def close(self) -> None:
        if self.process.poll() is None:
            self.send("quit")
            try:
                self.process.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process.stdin.close()
        self.process.stdout.close()


@pytest.fixture
def children(tmp_path):
    made = []

    def child():
        made.append(Child(tmp_path / "store"))
        return made[-1]

    yield child
    for each in made:
        each.close()


# -- POP3 maildrop locks ---------------------------------------------------------


def test_a_maildrop_held_in_another_process_is_in_use_until_that_process_dies(store, children):
    # RFC 1939 8 / RFC 2449 8.1.2: a second session on the maildrop gets
    # [IN-USE], wherever it runs; a holder that dies frees it.
    other = children()
    assert other.ask("lock alice") == "locked"
    assert other.ask("lock alice phone") == "locked"
    assert result_of(store.lock_maildrop("alice")) is None
    assert result_of(store.lock_maildrop("alice", "phone")) is None
    bob = result_of(store.lock_maildrop("bob"))
    assert callable(bob)
    assert other.ask("lock bob") == "in-use"
    other.kill()
    alice = result_of(store.lock_maildrop("alice"))
    assert callable(alice)
    assert callable(result_of(store.lock_maildrop("alice", "phone")))
    again = children()
    assert again.ask("lock alice") == "in-use"
    alice()
    assert again.ask("lock alice") == "locked"
    bob()


def test_maildrop_lock_files_are_named_by_a_hash_and_removed_on_release(store, tmp_path):
    release = result_of(store.lock_maildrop("alice@example.org", "phone"))
    run = tmp_path / "store" / "run"
    names = [path.name for path in run.iterdir() if path.name.startswith("maildrop.")]
    assert len(names) == 1 and "alice" not in names[0]
    release()
    assert not [path for path in run.iterdir() if path.name.startswith("maildrop.")]


def test_a_lock_file_removed_under_a_latecomer_is_not_a_lock(store, tmp_path, monkeypatch):
    # The holder releases (and removes the file) between the latecomer's
    # open and its flock: the latecomer must lock the file that is there
    # now, or a third session could lock a new file beside it.
    holder = result_of(store.lock_maildrop("alice"))
    real_open = os.open
    opened = []

    def open_then_release(path, *args, **kwargs):
        fd = real_open(path, *args, **kwargs)
        if "maildrop." in str(path) and not opened:
            opened.append(path)
            holder()
        return fd

    monkeypatch.setattr(os, "open", open_then_release)
    latecomer = result_of(store.lock_maildrop("alice"))
    monkeypatch.setattr(os, "open", real_open)
    assert callable(latecomer) and opened
    assert result_of(store.lock_maildrop("alice")) is None
    latecomer()
    assert callable(result_of(store.lock_maildrop("alice")))


# -- writes from several processes ---------------------------------------------


def test_appends_from_two_processes_at_once_get_distinct_ascending_uids(store, children, tmp_path):
    box = inbox(store)
    first, second, restarts = children(), children(), children()
    for child in (first, second):
        child.send(f"append {box.id} 40")
    # A serving process starting meanwhile sweeps under the write lock: it
    # must take no body another process is placing.
    restarts.send("reopen 5")
    uids = [list(map(int, child.answer().split())) for child in (first, second)]
    assert restarts.answer() == "reopened"
    for each in uids:
        assert each == sorted(set(each)) and len(each) == 40
    assert sorted(uids[0] + uids[1]) == list(range(1, 81))
    records = result_of(store.list_messages(box.id))
    assert [record.uid for record in records] == list(range(1, 81))
    for uid in range(1, 81):
        with result_of(store.open_message(box.id, uid)) as body:
            assert b"from another process" in body.read()


def test_a_live_processes_unsynced_record_is_not_recovered(store, children, tmp_path):
    box = inbox(store)
    result_of(store.append(box.id, MESSAGE))
    before = result_of(store.get_mailbox("alice", "INBOX")).highestmodseq
    other = children()
    assert other.ask(f"mark {box.id}") == "marked"
    result_of(SQLiteStore(tmp_path / "store", serving=True).close())
    assert result_of(store.get_mailbox("alice", "INBOX")).highestmodseq == before
    assert list((tmp_path / "store").glob("unsynced.*"))
    other.kill()
    # As a power cut leaves it: written before the machine started again
    # (a process that died while the machine ran on lost nothing).
    (record,) = (tmp_path / "store").glob("unsynced.*")
    record.write_text(json.dumps({**json.loads(record.read_text()), "boot": "an earlier boot"}))
    result_of(SQLiteStore(tmp_path / "store", serving=True).close())
    assert result_of(store.get_mailbox("alice", "INBOX")).highestmodseq > before
    assert not list((tmp_path / "store").glob("unsynced.*"))


# -- change notices between processes -------------------------------------------


class Heard:
    """What a subscriber on the reactor thread was told, waited for from the test's thread."""

    def __init__(self):
        self.told: list = []
        self._event = threading.Event()

    def __call__(self, *args):
        self.told.append(args)
        self._event.set()

    def wait(self) -> list:
        assert self._event.wait(WAIT), "nothing was heard"
        self._event.clear()
        return self.told


def inbox_of(store):
    """Alice's INBOX, from the reactor thread."""
    return store.ensure_user("alice").addCallback(lambda _: store.get_mailbox("alice", "INBOX"))


@pytest.fixture
def listening(tmp_path, reactor_thread):
    """A serving store on a real reactor whose poll would take an hour: only a datagram tells it soon."""
    store = reactor_thread.call(SQLiteStore, tmp_path / "store", reactor=reactor_thread.reactor,
                                poll_interval=3600)
    reactor_thread.call(store.changes.start_polling)
    yield store
    reactor_thread.call(store.close)


def test_a_commit_in_another_process_reaches_subscribers_at_once(listening, children, reactor_thread):
    box = reactor_thread.call(inbox_of, listening)
    # Memoised before the change: the notice must make it stale.
    assert reactor_thread.call(listening.changes_since, box.id, 0).updated == ()
    heard = Heard()
    reactor_thread.call(listening.changes.subscribe, box.id, heard)
    other = children()
    uid = int(other.ask(f"append {box.id} 1"))
    (mailbox_id, modseq), = heard.wait()
    changes = reactor_thread.call(listening.changes_since, box.id, 0)
    assert mailbox_id == box.id and modseq == changes.highestmodseq
    assert [record.uid for record in changes.updated] == [uid]
    seen_modseq = int(other.ask(f"seen {box.id} {uid}"))
    assert heard.wait()[-1] == (box.id, seen_modseq)
    assert "\\Seen" in reactor_thread.call(listening.get_records, box.id, [uid])[0].flags


def test_a_mailbox_list_change_in_another_process_reaches_subscribers_at_once(listening, children,
                                                                            reactor_thread):
    reactor_thread.call(inbox_of, listening)
    heard = Heard()
    reactor_thread.call(listening.changes.subscribe_mailboxes, "alice", heard)
    children().ask("create alice Projects")
    assert heard.wait() == [("alice",)]


def test_recent_is_claimed_by_one_session_across_processes(listening, children, reactor_thread):
    # RFC 3501 2.3.2.  The listening process has found nothing to claim
    # (and remembers it); a delivery elsewhere must be claimable here at
    # once, and then by nobody else.
    box = reactor_thread.call(inbox_of, listening)
    assert reactor_thread.call(listening.claim_recent, box.id) == frozenset()
    claimed = []
    done = threading.Event()

    def on_change(mailbox_id, modseq):
        # As an IDLE session does, in the turn it is told.
        listening.claim_recent(mailbox_id).addCallback(claimed.append).addBoth(lambda _: done.set())

    reactor_thread.call(listening.changes.subscribe, box.id, on_change)
    other = children()
    uid = int(other.ask(f"append {box.id} 1"))
    assert done.wait(WAIT)
    assert claimed == [frozenset({uid})]
    assert other.ask(f"claim {box.id}") == ""


def test_an_expunge_under_way_in_a_live_process_finished_by_a_starting_one_is_told(listening, reactor_thread,
                                                                                  tmp_path):
    # A worker starting while another is between an expunge's two commits
    # finishes it (as a concurrent expunge would), and says so.
    box = reactor_thread.call(inbox_of, listening)
    uid = reactor_thread.call(listening.append, box.id, MESSAGE).uid
    reactor_thread.call(listening._writer.submit, lambda step: listening._mark_expunging(step, box.id, [uid]))
    heard = Heard()
    reactor_thread.call(listening.changes.subscribe, box.id, heard)
    starting = SQLiteStore(tmp_path / "store", serving=True)
    try:
        assert heard.wait()
        assert reactor_thread.call(listening.changes_since, box.id, 0).expunged == (uid,)
        # The live process's second step finds it done.
        assert reactor_thread.call(lambda: defer.Deferred.fromCoroutine(
            listening._expunge_in_two_steps(box.id, [uid]))) == []
    finally:
        result_of(starting.close())


def test_a_process_alone_sends_nothing_and_lists_its_peers_once(store, monkeypatch):
    listed = []
    real_listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda path: listed.append(path) or real_listdir(path))
    monkeypatch.setattr(peers.time, "time_ns", lambda: 10**20)  # every listing settled
    box = inbox(store)
    sent = []
    monkeypatch.setattr(store._peers, "_send_to", lambda *args: sent.append(args))
    for _ in range(5):
        result_of(store.append(box.id, MESSAGE))
    assert len(listed) <= 1 and sent == []


def test_a_dead_peers_socket_is_removed_and_the_rest_still_hear(store, tmp_path):
    import socket

    directory = tmp_path / "store" / "run" / "peers"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(directory / "1.0"))
    dead.close()  # its file stays, as after a SIGKILL
    alive = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    alive.bind(str(directory / "2.0"))
    alive.settimeout(WAIT)
    try:
        box = inbox(store)
        record = result_of(store.append(box.id, MESSAGE))
        notices, users = peers.decode(alive.recv(peers.DATAGRAM_LIMIT))
        assert notices[box.id] == record.modseq
        assert not (directory / "1.0").exists()
    finally:
        alive.close()


# -- the datagrams (pure) ---------------------------------------------------------


def test_datagrams_carry_every_notice_under_the_limit():
    notices = {mailbox_id: 10**15 + mailbox_id for mailbox_id in range(1, 5000)}
    users = [f"user{n}@example.org" for n in range(800)]
    datagrams = list(peers.encode(notices, users))
    assert len(datagrams) > 1 and all(len(d) <= peers.DATAGRAM_LIMIT for d in datagrams)
    told, named = {}, []
    for datagram in datagrams:
        pairs, more = peers.decode(datagram)
        told.update(pairs)
        named += more
    assert told == notices and sorted(named) == sorted(users)
    assert list(peers.encode({}, [])) == []


def test_unreadable_datagrams_are_skipped():
    assert peers.decode(b"\xff") == ({}, [])
    assert peers.decode(b"[1, 2]") == ({}, [])
    assert peers.decode(b'{"m": [[1, 5], [1, 9], ["x", 1], [2], [3, -1]], "u": ["bob", 7]}') == ({1: 9}, ["bob"])


# -- the write lock ----------------------------------------------------------------


def test_writes_wait_for_another_writers_lock_and_go_on_once_it_is_free(tmp_path, reactor_thread):
    # Another process's writer holds run/write.lock (a lock of its own open
    # file, as another process's is): this store's writer thread, and a
    # write without threads (the CLI), wait for it and no longer.
    threaded = reactor_thread.call(SQLiteStore, tmp_path / "store", reactor=reactor_thread.reactor)
    alone = SQLiteStore(tmp_path / "store")
    box = reactor_thread.call(inbox_of, threaded)
    other = WriteLock(tmp_path / "store" / "run" / "write.lock")
    other.acquire()
    written = []
    waiting = [
        threading.Thread(target=lambda: written.append(reactor_thread.call(threaded.append, box.id, MESSAGE).uid)),
        threading.Thread(target=lambda: written.append(result_of(alone.append(box.id, MESSAGE)).uid)),
    ]
    try:
        for thread in waiting:
            thread.start()
        for thread in waiting:
            thread.join(0.3)
        assert written == []
    finally:
        other.release()
    for thread in waiting:
        thread.join(WAIT)
    assert sorted(written) == [1, 2]
    other.close()
    result_of(alone.close())
    reactor_thread.call(threaded.close)


def test_notices_reach_a_store_whose_path_is_too_long_for_a_socket_address(tmp_path, reactor_thread):
    root = tmp_path / ("d" * 60) / ("e" * 60) / "store"
    listening = reactor_thread.call(SQLiteStore, root, reactor=reactor_thread.reactor, poll_interval=3600)
    reactor_thread.call(listening.changes.start_polling)
    other = SQLiteStore(root)
    try:
        box = reactor_thread.call(inbox_of, listening)
        heard = Heard()
        reactor_thread.call(listening.changes.subscribe, box.id, heard)
        record = result_of(other.append(box.id, MESSAGE))
        assert heard.wait() == [(box.id, record.modseq)]
    finally:
        result_of(other.close())
        reactor_thread.call(listening.close)


def test_the_index_writes_no_temporary_file(tmp_path):
    """
    A request runs in a savepoint, whose journal keeps the index pages it
    changes; past SQLite's 64 KiB (a flag change over a few thousand
    messages; a delivery's structures, now and then) it would spill to a
    file in the temporary directory, on another file system (the root's;
    under systemd a private one): a file made and deleted there every few
    dozen deliveries, and a write refused when that disk is full though the
    store's has room.  The journal stays in memory.  (SQLite reads
    SQLITE_TMPDIR once, when it starts: hence another process.)
    """
    store = SQLiteStore(tmp_path / "store")
    box = inbox(store)
    for _ in range(10):
        result_of(store.append_many([(box.id, MESSAGE)] * 300))
    uids = [record.uid for record in result_of(store.list_messages(box.id))]
    result_of(store.close())
    temporary = tmp_path / "sqlite-tmp"
    temporary.mkdir()
    # A file made or removed there would move its time from zero.
    os.utime(temporary, ns=(0, 0))
    other = Child(tmp_path / "store", env={**os.environ, "SQLITE_TMPDIR": str(temporary)})
    try:
        assert int(other.ask(f"seen {box.id} {uids[0]} {uids[-1]}")) > 0
    finally:
        other.close()
    assert temporary.stat().st_mtime_ns == 0
