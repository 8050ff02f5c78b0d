"""
The body keys a PostgreSQL node remembers (store/postgresql/bodykeys.py):
a FETCH of a range or a POP3 download opens bodies without a query each,
and a message expunged is never served from a remembered key on the node
that expunged it, nor on a node watching the mailbox once it has heard.
"""

from __future__ import annotations

import pytest
from twisted.internet import reactor

from gateway.store.blobs.cache import CachedBlobs
from gateway.store.interfaces import MessageExpunged
from gateway.store.postgresql.bodykeys import BodyKeys
from gateway.store.postgresql.chunks import ChunkedBlobs
from gateway.store.postgresql.readahead import DEPTH
from gateway.store.postgresql.store import PostgreSQLStore
from tests.deferreds import failure_of, result_of
from tests.store.contract import inbox
from tests.store.test_postgresql import listening, settle, turn_until


def test_keys_are_learnt_and_forgotten_per_mailbox():
    keys = BodyKeys()
    keys.learn(1, [(5, "a", 10), (6, "b", 10)], keys.generation())
    keys.learn(2, [(5, "c", 10)], keys.generation())
    assert (keys.get(1, 5), keys.get(1, 6), keys.get(2, 5), keys.get(1, 7)) == ("a", "b", "c", None)
    keys.forget(1, [5])
    assert (keys.get(1, 5), keys.get(1, 6)) == (None, "b")
    keys.forget(1)
    assert (keys.get(1, 6), keys.get(2, 5)) == (None, "c")
    keys.clear()
    assert keys.get(2, 5) is None


def test_what_a_query_read_before_a_forgetting_is_not_learnt():
    keys = BodyKeys()
    generation = keys.generation()
    keys.forget(1, [5])  # an expunge committed while the query ran
    keys.learn(1, [(5, "a", 10)], generation)
    assert keys.get(1, 5) is None


def test_the_mailbox_read_least_recently_goes_first():
    keys = BodyKeys(limit=4)
    keys.learn(1, [(1, "a", 10), (2, "b", 10)], keys.generation())
    keys.learn(2, [(1, "c", 10), (2, "d", 10)], keys.generation())
    assert keys.get(1, 1) == "a"  # mailbox 1 read last
    keys.learn(3, [(1, "e", 10)], keys.generation())
    assert (keys.get(1, 2), keys.get(2, 1), keys.get(3, 1)) == ("b", None, "e")


BODY = b"From: a@example.org\r\nSubject: %d\r\n\r\nbody %d\r\n"


@pytest.fixture
def cached_store(postgres_dsn, tmp_path):
    store = PostgreSQLStore(reactor, postgres_dsn, CachedBlobs(ChunkedBlobs(), tmp_path / "cache", 1 << 20),
                            pool_size=2)
    yield store
    result_of(store.close())


def read(store, box, uid) -> bytes:
    with result_of(store.open_message(box.id, uid)) as body:
        return body.read()


def test_a_range_of_bodies_is_read_with_one_query(cached_store, monkeypatch):
    box = inbox(cached_store)
    uids = [result_of(cached_store.append(box.id, BODY % (n, n))).uid for n in range(50)]
    queries = []
    real = cached_store._db.read
    monkeypatch.setattr(cached_store._db, "read", lambda *args: queries.append(args) or real(*args))
    assert [read(cached_store, box, uid) for uid in uids] == [BODY % (n, n) for n in range(50)]
    assert len(queries) == 1


def test_a_message_expunged_or_moved_here_is_never_served_again(cached_store):
    box = inbox(cached_store)
    other = result_of(cached_store.create_mailbox("alice", "Other"))
    uids = [result_of(cached_store.append(box.id, BODY % (n, n))).uid for n in range(4)]
    assert read(cached_store, box, uids[0]) == BODY % (0, 0)  # every key of the mailbox known now
    result_of(cached_store.expunge(box.id, [uids[1]]))
    result_of(cached_store.move(box.id, [uids[2]], other.id))
    failure_of(cached_store.open_message(box.id, uids[1]), MessageExpunged)
    failure_of(cached_store.open_message(box.id, uids[2]), MessageExpunged)
    assert read(cached_store, box, uids[3]) == BODY % (3, 3)
    assert read(cached_store, other, 1) == BODY % (2, 2)
    result_of(cached_store.delete_mailbox("alice", "Other"))
    failure_of(cached_store.open_message(other.id, 1), MessageExpunged)


@pytest.fixture
def listening_nodes(postgres_database):
    nodes = [PostgreSQLStore(reactor, postgres_database, ChunkedBlobs(), pool_size=2) for _ in range(2)]
    for node in nodes:
        node.changes.start_polling()
    yield nodes
    for node in nodes:
        result_of(node.close())


def test_an_expunge_through_another_node_is_heard_by_a_node_watching(listening_nodes):
    a, b = listening_nodes
    box = inbox(a)
    uids = [result_of(a.append(box.id, BODY % (n, n))).uid for n in range(3)]
    heard = []
    a.changes.subscribe(box.id, lambda mailbox_id, modseq: heard.append(modseq))
    assert turn_until(lambda: listening(b), 10)
    settle(a, heard)
    assert read(a, box, uids[0]) == BODY % (0, 0)
    result_of(b.expunge(box.id, [uids[1]]))
    assert turn_until(lambda: heard, 1.0)
    failure_of(a.open_message(box.id, uids[1]), MessageExpunged)
    assert read(a, box, uids[2]) == BODY % (2, 2)


def test_a_download_finds_the_next_bodies_fetched_ahead(postgres_dsn, tmp_path):
    # Two nodes on one object store: the second has no copy of anything.
    from tests.store.test_blob_cache import Streaming

    remote = Streaming()
    writer = PostgreSQLStore(reactor, postgres_dsn, CachedBlobs(remote, tmp_path / "a", 1 << 20), pool_size=2)
    reader = PostgreSQLStore(reactor, postgres_dsn, CachedBlobs(remote, tmp_path / "b", 1 << 20), pool_size=2)
    try:
        box = inbox(writer)
        uids = [result_of(writer.append(box.id, BODY % (n, n))).uid for n in range(20)]
        assert read(reader, box, uids[0]) == BODY % (0, 0)
        assert turn_until(lambda: len(remote.reads) == 1 + DEPTH, 10)
        # The next DEPTH bodies were fetched ahead, each once.
        assert read(reader, box, uids[1]) == BODY % (1, 1)
        assert turn_until(lambda: len(remote.reads) == 2 + DEPTH, 10)
        assert len(set(remote.reads)) == len(remote.reads)
        # A whole download reads every body from the object store once.
        assert [read(reader, box, uid) for uid in uids] == [BODY % (n, n) for n in range(20)]
        assert turn_until(lambda: not reader._read_ahead._fetching, 10)
        assert len(remote.reads) == 20 and len(set(remote.reads)) == 20
    finally:
        result_of(writer.close())
        result_of(reader.close())
