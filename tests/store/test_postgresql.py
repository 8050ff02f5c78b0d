"""
The PostgreSQL backend against a private PostgreSQL (tests/store/engines.py):
the IMailStore contract with bodies in SeaweedFS over S3 and with bodies in
PostgreSQL, plus what only a shared store must do.
"""

from __future__ import annotations

import pytest
from twisted.internet import reactor
from zope.interface.verify import verifyObject

from gateway.store.blobs.s3 import S3Blobs
from gateway.store.interfaces import IChangeFeed, IGroupCommitStore, IImportableStore, IMailStore, MailboxExists
from gateway.store.postgresql.chunks import ChunkedBlobs
from gateway.store.postgresql.store import PostgreSQLStore
from tests.deferreds import failure_of, result_of
from tests.store.contract import MESSAGE, GroupCommitContract, ImportableStoreContract, MailStoreContract, inbox


def s3_blobs(seaweed, bucket):
    return S3Blobs(bucket, endpoint=seaweed.endpoint, region=seaweed.REGION,
                   access_key=seaweed.ACCESS_KEY, secret_key=seaweed.SECRET_KEY)


@pytest.fixture(params=["s3", "postgresql"])
def blobs(request):
    if request.param == "s3":
        seaweed = request.getfixturevalue("seaweed")
        return s3_blobs(seaweed, seaweed.create_bucket())
    return ChunkedBlobs()


@pytest.fixture
def store(postgres_dsn, blobs):
    s = PostgreSQLStore(reactor, postgres_dsn, blobs, pool_size=4)
    yield s
    s.close()


class TestPostgreSQLStore(MailStoreContract, ImportableStoreContract, GroupCommitContract):
    """The contract, with each kind of body store."""


def test_provides_contracts(store):
    assert verifyObject(IMailStore, store)
    assert verifyObject(IChangeFeed, store.changes)
    assert verifyObject(IGroupCommitStore, store)
    assert verifyObject(IImportableStore, store)


# -- several nodes on one database ---------------------------------------------


def wait_all(deferreds):
    from twisted.internet.defer import gatherResults

    return result_of(gatherResults(deferreds, consumeErrors=True))


@pytest.fixture
def two_nodes(postgres_dsn):
    """Two stores on one database, as two gateway nodes have."""
    nodes = [PostgreSQLStore(reactor, postgres_dsn, ChunkedBlobs(), pool_size=4) for _ in range(2)]
    yield nodes
    for node in nodes:
        node.close()


def test_uids_from_two_nodes_are_unique_and_commit_in_order(two_nodes, postgres_dsn):
    # A reader watching the mailbox while both nodes deliver never sees UID
    # n+1 without n: what one snapshot holds is always 1..highest.
    import threading

    import psycopg

    a, b = two_nodes
    box = inbox(a)
    seen, stop = [], threading.Event()

    def watch():
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            while not stop.is_set():
                seen.append(conn.execute(
                    "SELECT count(*), coalesce(max(uid), 0) FROM messages WHERE mailbox_id = %s", (box.id,)
                ).fetchone())

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        # Distinct bodies: the same one would serialise the appends on its
        # blobs row before they reach the mailbox's.
        records = wait_all([node.append(box.id, MESSAGE + b"%d %d\n" % (n, node is a))
                            for n in range(40) for node in (a, b)])
    finally:
        stop.set()
        watcher.join(timeout=10)
    assert sorted(r.uid for r in records) == list(range(1, 81))
    assert len({r.modseq for r in records}) == 80
    assert len(seen) > 1 and all(count == highest for count, highest in seen)
    assert [r.uid for r in result_of(b.list_messages(box.id))] == list(range(1, 81))
    assert result_of(a.get_mailbox("alice", "INBOX")).uidnext == 81


def test_uidvalidity_is_unique_across_nodes_and_never_reused(two_nodes):
    a, b = two_nodes
    wait_all([a.ensure_user("alice"), b.ensure_user("alice")])
    assert len(result_of(a.list_mailboxes("alice"))) == 5
    created = wait_all([node.create_mailbox("alice", f"{node is a}-{n}") for n in range(10) for node in (a, b)])
    for info in created[:10]:
        result_of(b.delete_mailbox("alice", info.name))
    again = wait_all([node.create_mailbox("alice", f"{node is a}-{n}") for n in range(5) for node in (a, b)])
    issued = [m.uidvalidity for m in created + again] + [m.uidvalidity for m in result_of(a.list_mailboxes("alice"))]
    assert len(set(m.uidvalidity for m in created + again)) == 30
    assert min(m.uidvalidity for m in again) > max(m.uidvalidity for m in created)
    assert all(0 < v < 2**32 for v in issued)


def test_the_same_mailbox_created_on_two_nodes_at_once_exists_once(two_nodes):
    from twisted.internet.defer import DeferredList

    a, b = two_nodes
    inbox(a)
    outcomes = result_of(DeferredList([a.create_mailbox("alice", "Projects"), b.create_mailbox("alice", "Projects")],
                                      consumeErrors=True))
    assert sorted(ok for ok, _ in outcomes) == [False, True]
    assert [f for ok, f in outcomes if not ok][0].check(MailboxExists)


def test_moves_crossing_between_two_mailboxes_both_finish(two_nodes):
    # Each move locks both mailboxes; in id order, so they never deadlock.
    a, b = two_nodes
    box = inbox(a)
    other = result_of(a.create_mailbox("alice", "Other"))
    wait_all([a.append(box.id, MESSAGE) for _ in range(10)] + [a.append(other.id, MESSAGE) for _ in range(10)])
    moves = []
    for n in range(1, 11):
        moves.append(a.move(box.id, [n], other.id))
        moves.append(b.move(other.id, [n], box.id))
    wait_all(moves)
    assert len(result_of(a.list_messages(box.id))) + len(result_of(a.list_messages(other.id))) == 20
