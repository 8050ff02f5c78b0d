"""
The PostgreSQL backend against a private PostgreSQL (tests/store/engines.py):
the IMailStore contract with bodies in SeaweedFS over S3 and with bodies in
PostgreSQL, plus what only a shared store must do.
"""

from __future__ import annotations

import datetime

import pytest
from twisted.internet import reactor
from zope.interface.verify import verifyObject

from gateway.store.blobs.s3 import S3Blobs
from gateway.store.interfaces import (
    IChangeFeed,
    IGroupCommitStore,
    IImportableStore,
    IMailStore,
    IStoreMaintenance,
    MailboxExists,
    MessageExpunged,
    TemporaryFailure,
    TooManyDevices,
)
from gateway.store.postgresql.chunks import ChunkedBlobs
from gateway.store.postgresql.maintenance import Collected
from gateway.store.postgresql.store import PostgreSQLStore
from tests.deferreds import failure_of, result_of
from tests.store.contract import (
    MESSAGE,
    crlf,
    GroupCommitContract,
    ImportableStoreContract,
    MailStoreContract,
    StoreDumpContract,
    inbox,
)


def s3_blobs(seaweed, bucket):
    return S3Blobs(bucket, endpoint=seaweed.endpoint, region=seaweed.REGION,
                   access_key=seaweed.ACCESS_KEY, secret_key=seaweed.SECRET_KEY)


@pytest.fixture(params=["s3", "postgresql"])
def blobs(request):
    if request.param == "s3":
        seaweed = request.getfixturevalue("seaweed")
        bucket = seaweed.create_bucket()
        yield s3_blobs(seaweed, bucket)
        seaweed.drop_bucket(bucket)
    else:
        yield ChunkedBlobs()


@pytest.fixture
def store(postgres_dsn, blobs):
    s = PostgreSQLStore(reactor, postgres_dsn, blobs, pool_size=4)
    yield s
    result_of(s.close())


class TestPostgreSQLStore(MailStoreContract, ImportableStoreContract, GroupCommitContract, StoreDumpContract):
    """The contract, with each kind of body store."""


def test_provides_contracts(store):
    assert verifyObject(IMailStore, store)
    assert verifyObject(IChangeFeed, store.changes)
    assert verifyObject(IGroupCommitStore, store)
    assert verifyObject(IImportableStore, store)
    assert verifyObject(IStoreMaintenance, store)


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
        result_of(node.close())


def cut_listening(node, database_dsn):
    """
    Drop ``node``'s LISTEN connection on the server's side and point it at a
    port nobody listens on, so that it cannot listen again until the test
    gives back the DSN it returns with the listener.
    """
    from tests.ports import free_port

    listener = node.changes._listener
    good_dsn = listener._dsn
    listener._dsn = good_dsn + f" port={free_port()}"  # the last port= wins
    sql(database_dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = 'gateway-listen' AND datname = current_database()")
    assert turn_until(lambda: not listener._listened, 5)
    return listener, good_dsn


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


# -- bodies -------------------------------------------------------------------


class S3Outside:
    """Looks at, and damages, the bodies in a bucket, from outside the gateway."""

    def __init__(self, client, bucket):
        self.client, self.bucket = client, bucket

    def keys(self):
        return sorted(o["Key"] for o in self.client.list_objects_v2(Bucket=self.bucket).get("Contents", ()))

    def put(self, key, data):
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def remove(self, key):
        self.client.delete_object(Bucket=self.bucket, Key=key)


class ChunksOutside:
    """The same for bodies in PostgreSQL."""

    def __init__(self, dsn):
        self.dsn = dsn

    def _run(self, sql, params=()):
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else None

    def keys(self):
        return sorted(row[0] for row in self._run("SELECT DISTINCT key FROM blob_chunks"))

    def put(self, key, data):
        self._run("DELETE FROM blob_chunks WHERE key = %s", (key,))
        self._run("INSERT INTO blob_chunks (key, seq, data) VALUES (%s, 0, %s)", (key, data))

    def remove(self, key):
        self._run("DELETE FROM blob_chunks WHERE key = %s", (key,))


@pytest.fixture
def outside(request, blobs, postgres_dsn):
    if isinstance(blobs, S3Blobs):
        return S3Outside(request.getfixturevalue("seaweed").client(), blobs.bucket)
    return ChunksOutside(postgres_dsn)


def key_of(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data.replace(b"\n", b"\r\n")).hexdigest()


def test_one_body_is_stored_once_however_many_messages_name_it(store, outside):
    box = inbox(store)
    trash = result_of(store.get_mailbox("alice", "Trash"))
    for _ in range(3):
        result_of(store.append(box.id, MESSAGE))
    result_of(store.copy(box.id, [1, 2], trash.id))
    result_of(store.append(box.id, MESSAGE + b"other\n"))
    assert outside.keys() == sorted([key_of(MESSAGE), key_of(MESSAGE + b"other\n")])


def test_a_large_body_is_streamed_both_ways(store, tmp_path):
    # 40 MB in and out, never whole in memory.
    import hashlib
    import tracemalloc

    size = 40 * 1024 * 1024
    line = b"0123456789abcdef" * 4 + b"\r\n"
    source = tmp_path / "big.eml"
    with open(source, "wb") as f:
        f.write(b"Subject: big\r\n\r\n")
        for _ in range(size // len(line)):
            f.write(line)
    expected = hashlib.sha256(source.read_bytes()).hexdigest()
    box = inbox(store)
    tracemalloc.start()
    try:
        with open(source, "rb") as f:
            record = result_of(store.append(box.id, f))
        with result_of(store.open_message(box.id, record.uid)) as f:
            digest = hashlib.sha256()
            while chunk := f.read(1024 * 1024):
                digest.update(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert record.size == source.stat().st_size
    assert digest.hexdigest() == expected
    # S3 parts are 8 MB; PostgreSQL chunks 256 KB.
    assert peak < 16 * 1024 * 1024, f"peak {peak} bytes of Python memory for a {size}-byte body"


def test_bodies_no_message_names_are_collected_and_shared_ones_kept(store, outside):
    box = inbox(store)
    trash = result_of(store.get_mailbox("alice", "Trash"))
    gone, shared = MESSAGE + b"gone\n", MESSAGE + b"shared\n"
    result_of(store.append(box.id, gone))
    result_of(store.append(box.id, shared))
    result_of(store.copy(box.id, [2], trash.id))
    result_of(store.expunge(box.id, [1, 2]))
    # Within the grace period nothing goes: a delivery may be about to name it.
    assert result_of(store.collect_orphans()).unreferenced == ()
    collected = result_of(store.collect_orphans(datetime.timedelta(0)))
    assert collected.unreferenced == (key_of(gone),)
    assert outside.keys() == [key_of(shared)]
    with result_of(store.open_message(trash.id, 1)) as f:
        assert f.read() == crlf(shared)
    # Delivered again after its collection, the body is written again.
    record = result_of(store.append(box.id, gone))
    with result_of(store.open_message(box.id, record.uid)) as f:
        assert f.read() == crlf(gone)
    result_of(store.delete_user("alice"))
    assert sorted(result_of(store.collect_orphans(datetime.timedelta(0))).unreferenced) == sorted(
        [key_of(gone), key_of(shared)]
    )
    assert outside.keys() == []


def test_the_scheduled_collection_runs_on_one_node_at_a_time(store, outside, postgres_dsn):
    import psycopg

    from gateway.store.postgresql.maintenance import _COLLECTION_LOCK

    box = inbox(store)
    result_of(store.append(box.id, MESSAGE + b"gone\n"))
    result_of(store.expunge(box.id, [1]))
    with psycopg.connect(postgres_dsn, autocommit=True) as other_node:
        other_node.execute("SELECT pg_advisory_lock(%s)", (_COLLECTION_LOCK,))
        assert result_of(store.collect_orphans_if_free(datetime.timedelta(0))) is None
        assert outside.keys() == [key_of(MESSAGE + b"gone\n")]
    # The other node is done (or died): the next turn collects, with
    # nobody asking.
    store.collect_orphans_every(0.1, datetime.timedelta(0))
    assert turn_until(lambda: outside.keys() == [], 10)


def test_a_body_whose_delivery_never_committed_is_collected(store, outside, postgres_dsn, blobs):
    # What a node dying between writing a body and committing its row
    # leaves: bytes under a key that no blobs row names.
    box = inbox(store)
    kept = result_of(store.append(box.id, MESSAGE))
    stray = MESSAGE + b"stray\n"
    outside.put(key_of(stray), crlf(stray))
    collected = result_of(store.collect_orphans(datetime.timedelta(0)))
    assert collected == Collected(unreferenced=(), uncommitted=(key_of(stray),))
    assert outside.keys() == [key_of(MESSAGE)]
    with result_of(store.open_message(box.id, kept.uid)) as f:
        assert f.read() == crlf(MESSAGE)


def test_an_object_younger_than_the_grace_period_is_left_alone(postgres_dsn, seaweed):
    # It may belong to a delivery still between its write and its commit.
    bucket = seaweed.create_bucket()
    store = PostgreSQLStore(reactor, postgres_dsn, s3_blobs(seaweed, bucket), pool_size=2)
    try:
        outside = S3Outside(seaweed.client(), bucket)
        outside.put(key_of(MESSAGE), crlf(MESSAGE))
        assert result_of(store.collect_orphans()) == Collected(unreferenced=(), uncommitted=())
        assert outside.keys() == [key_of(MESSAGE)]
    finally:
        result_of(store.close())


def test_a_body_changed_behind_the_store_is_refused_not_served(store, outside):
    box = inbox(store)
    record = result_of(store.append(box.id, MESSAGE))
    outside.put(key_of(MESSAGE), crlf(MESSAGE).replace(b"hello", b"HELLO"))
    failure_of(store.open_message(box.id, record.uid), TemporaryFailure)
    outside.remove(key_of(MESSAGE))
    failure_of(store.open_message(box.id, record.uid), TemporaryFailure)
    result_of(store.expunge(box.id, [record.uid]))
    failure_of(store.open_message(box.id, record.uid), MessageExpunged)


def test_an_unreachable_object_store_fails_the_delivery_and_leaves_nothing(postgres_dsn):
    from tests.ports import free_port

    blobs = S3Blobs("mail", endpoint=f"http://127.0.0.1:{free_port()}", access_key="k", secret_key="s")
    store = PostgreSQLStore(reactor, postgres_dsn, blobs, pool_size=2)
    try:
        box = inbox(store)
        failure_of(store.append(box.id, MESSAGE), TemporaryFailure)
        outcomes = result_of(store.append_many([(box.id, MESSAGE)]))
        assert isinstance(outcomes[0], TemporaryFailure)
        assert result_of(store.list_messages(box.id)) == []
        assert result_of(store.get_mailbox("alice", "INBOX")).uidnext == 1
    finally:
        result_of(store.close())


# -- the database -------------------------------------------------------------


def sql(dsn, query, params=()):
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else None


def test_nodes_starting_at_once_migrate_the_schema_once(postgres_dsn):
    import threading

    from gateway.store.postgresql.schema import MIGRATIONS

    stores, errors = [], []

    def start():
        try:
            stores.append(PostgreSQLStore(reactor, postgres_dsn, ChunkedBlobs(), pool_size=1))
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    try:
        assert errors == [] and len(stores) == 3
        assert sql(postgres_dsn, "SELECT version FROM schema_migrations ORDER BY version") == [
            (n,) for n in range(1, len(MIGRATIONS) + 1)
        ]
    finally:
        for store in stores:
            result_of(store.close())


def test_a_schema_newer_than_the_code_is_refused(postgres_dsn):
    from gateway.store.postgresql.schema import MIGRATIONS, SchemaTooNew

    result_of(PostgreSQLStore(reactor, postgres_dsn, ChunkedBlobs(), pool_size=1).close())
    sql(postgres_dsn, "INSERT INTO schema_migrations (version) VALUES (%s)", (len(MIGRATIONS) + 1,))
    with pytest.raises(SchemaTooNew, match=f"version {len(MIGRATIONS) + 1}; this gateway knows up to"):
        PostgreSQLStore(reactor, postgres_dsn, ChunkedBlobs(), pool_size=1)


def test_a_store_opened_without_migrating_leaves_an_older_schema_alone(postgres_dsn):
    # What ``gateway check`` opens: it reads and repairs, but the schema is
    # the nodes' to migrate.
    from gateway.store.postgresql.schema import MIGRATIONS, SchemaNotCurrent

    with pytest.raises(SchemaNotCurrent, match="no gateway schema: a node creates it"):
        PostgreSQLStore(reactor, postgres_dsn, ChunkedBlobs(), pool_size=1, migrate_schema=False)
    assert sql(postgres_dsn, "SELECT to_regclass('schema_migrations') IS NULL") == [(True,)]
    sql(postgres_dsn, "CREATE TABLE schema_migrations (version integer PRIMARY KEY,"
        " applied timestamptz NOT NULL DEFAULT now()); INSERT INTO schema_migrations VALUES (1)")
    sql(postgres_dsn, MIGRATIONS[0])
    with pytest.raises(SchemaNotCurrent, match=f"version 1, older than this gateway's {len(MIGRATIONS)}"):
        PostgreSQLStore(reactor, postgres_dsn, ChunkedBlobs(), pool_size=1, migrate_schema=False)
    assert sql(postgres_dsn, "SELECT max(version) FROM schema_migrations") == [(1,)]
    # A node migrates it; then the check opens it.
    result_of(PostgreSQLStore(reactor, postgres_dsn, ChunkedBlobs(), pool_size=1).close())
    checked = PostgreSQLStore(reactor, postgres_dsn, ChunkedBlobs(), pool_size=1, migrate_schema=False)
    assert result_of(checked.check_store(repair=False)) == ([], [])
    result_of(checked.close())


def test_an_unreachable_database_is_a_temporary_failure(postgres_cluster):
    from tests.ports import free_port

    dsn = postgres_cluster.dsn().replace(f"port={postgres_cluster.port}", f"port={free_port()}")
    with pytest.raises(TemporaryFailure, match="no database connection"):
        PostgreSQLStore(reactor, dsn, ChunkedBlobs(), pool_size=1, connect_timeout=1)


def test_connections_the_server_dropped_are_replaced(store, postgres_dsn):
    # What a PostgreSQL restart does to every pooled connection.
    box = inbox(store)
    result_of(store.append(box.id, MESSAGE))
    dropped = sql(postgres_dsn, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                  " WHERE application_name = 'gateway'")
    assert dropped[0][0] >= 1
    assert [r.uid for r in result_of(store.list_messages(box.id))] == [1]
    assert result_of(store.append(box.id, MESSAGE)).uid == 2


# -- one live view across nodes -------------------------------------------------


def turn_until(condition, seconds: float) -> bool:
    """Turn the reactor until ``condition()`` holds or ``seconds`` pass."""
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() >= deadline:
            return False
        reactor.iterate(0.01)
    return True


@pytest.fixture
def listening_nodes(postgres_database):
    """Two nodes on a database of their own (NOTIFY channels are per database), listening."""
    nodes = [PostgreSQLStore(reactor, postgres_database, ChunkedBlobs(), pool_size=2) for _ in range(2)]
    for node in nodes:
        node.changes.start_polling()
    yield nodes
    for node in nodes:
        result_of(node.close())


def listening(node) -> bool:
    return node.changes._listener._listened


def settle(node, heard) -> None:
    """
    Wait until ``node`` listens and has caught up once: the catch-up that
    starts listening wakes every subscriber (the feed cannot know what a
    new subscriber has seen); forget that wake.
    """
    assert turn_until(lambda: listening(node), 10)
    result_of(node.changes.catch_up())
    heard.clear()


def test_a_change_on_one_node_wakes_sessions_on_the_other(listening_nodes):
    a, b = listening_nodes
    box = inbox(a)
    heard = []
    a.changes.subscribe(box.id, lambda mailbox_id, modseq: heard.append(modseq))
    assert turn_until(lambda: listening(b), 10)
    settle(a, heard)
    record = result_of(b.append(box.id, MESSAGE))
    assert turn_until(lambda: heard, 1.0), "node A heard nothing of node B's delivery within 1 s"
    assert heard == [record.modseq]
    changes = result_of(a.changes_since(box.id, record.modseq - 1))
    assert [r.uid for r in changes.updated] == [record.uid]
    result_of(b.store_flags(box.id, [record.uid], {"\\Seen"}, "add"))
    result_of(b.expunge(box.id, [record.uid]))
    assert turn_until(lambda: len(heard) == 3 or heard[-1] == record.modseq + 2, 1.0)
    assert heard[-1] == record.modseq + 2


def test_sessions_asking_the_same_changes_share_one_query_until_a_change_is_heard(listening_nodes, monkeypatch):
    # A delivery wakes every session idling on the mailbox, and each asks
    # changes_since with the modseq it knows.
    a, b = listening_nodes
    box = inbox(a)
    other = result_of(a.create_mailbox("alice", "Other"))
    first = result_of(a.append(box.id, MESSAGE))
    heard = []
    a.changes.subscribe(box.id, lambda mailbox_id, modseq: heard.append(modseq))
    assert turn_until(lambda: listening(b), 10)
    settle(a, heard)
    queries = []
    snapshot = a._db.snapshot
    monkeypatch.setattr(a._db, "snapshot", lambda *args: queries.append(args) or snapshot(*args))

    answers = wait_all([a.changes_since(box.id, 0) for _ in range(50)])
    assert len(queries) == 1 and all(answer == answers[0] for answer in answers)
    assert [r.uid for r in answers[0].updated] == [first.uid]
    assert result_of(a.changes_since(box.id, 0)) == answers[0] and len(queries) == 1
    # Another node's delivery: once heard, the question is asked again.
    second = result_of(b.append(box.id, MESSAGE))
    assert turn_until(lambda: heard, 1.0)
    again = wait_all([a.changes_since(box.id, 0) for _ in range(10)])
    assert len(queries) == 2 and [r.uid for r in again[0].updated] == [first.uid, second.uid]
    # This node's own change forgets it at once, before its caller goes on.
    result_of(a.store_flags(box.id, [first.uid], {"\\Seen"}, "add"))
    assert "\\Seen" in result_of(a.changes_since(box.id, 0)).updated[0].flags and len(queries) == 3
    # A mailbox no session here watches is asked each time.
    wait_all([a.changes_since(other.id, 0) for _ in range(3)])
    assert len(queries) == 6
    # Not listening, the node might miss a change: no memo.
    a.changes._listener._listened = False
    wait_all([a.changes_since(box.id, 0) for _ in range(2)])
    assert len(queries) == 8


def test_a_node_hears_its_own_change_once(listening_nodes):
    a, _ = listening_nodes
    box = inbox(a)
    heard = []
    a.changes.subscribe(box.id, lambda mailbox_id, modseq: heard.append(modseq))
    settle(a, heard)
    record = result_of(a.append(box.id, MESSAGE))
    turn_until(lambda: False, 0.3)  # its own NOTIFY comes back meanwhile
    assert heard == [record.modseq]


def test_a_node_that_lost_its_listening_connection_catches_up(listening_nodes, postgres_database):
    a, b = listening_nodes
    box = inbox(a)
    heard = []
    a.changes.subscribe(box.id, lambda mailbox_id, modseq: heard.append(modseq))
    settle(a, heard)
    # The server drops A's listening connection, and A cannot listen again
    # until B has delivered: A never gets that NOTIFY.
    listener, good_dsn = cut_listening(a, postgres_database)
    record = result_of(b.append(box.id, MESSAGE))
    turn_until(lambda: False, 0.3)
    assert heard == []
    listener._dsn = good_dsn
    assert turn_until(lambda: heard, 10), "A never caught up"
    assert heard == [record.modseq]


# -- POP3 maildrop locks across nodes --------------------------------------------


def test_a_maildrop_is_held_by_one_session_across_nodes(two_nodes):
    a, b = two_nodes
    release = result_of(a.lock_maildrop("alice"))
    assert callable(release)
    assert result_of(b.lock_maildrop("alice")) is None
    assert result_of(a.lock_maildrop("alice")) is None  # a second session on the same node
    other = result_of(b.lock_maildrop("bob"))
    assert callable(other)
    released = release()
    assert release() is None  # twice is once
    # Free on the other node the moment the release says so: a client that
    # QUITs on node A and logs in on node B as it reads the answer gets in.
    assert turn_until(lambda: released.called, 5)
    again = result_of(b.lock_maildrop("alice"))
    assert callable(again)
    assert result_of(a.lock_maildrop("alice")) is None
    again()
    other()


def test_device_views_are_maildrops_of_their_own_across_nodes(two_nodes):
    a, b = two_nodes
    phone = result_of(a.lock_maildrop("alice", "phone"))
    assert callable(phone)
    assert result_of(b.lock_maildrop("alice", "phone")) is None
    desktop = result_of(b.lock_maildrop("alice", "desktop"))
    plain = result_of(b.lock_maildrop("alice"))
    assert callable(desktop) and callable(plain)
    phone()
    tries = []
    assert turn_until(lambda: tries.append(result_of(b.lock_maildrop("alice", "phone"))) or callable(tries[-1]), 5)
    for release in (tries[-1], desktop, plain):
        release()


def test_devices_quitting_on_two_nodes_at_once_each_count_the_others_marks(two_nodes):
    # Each round, a phone on node A and a desktop on node B delete the same
    # message at the same moment: one of the two must learn that every
    # device has deleted it, or it would stay in INBOX for ever.
    a, b = two_nodes
    box = inbox(a)
    rounds = 25
    wait_all([a.append(box.id, MESSAGE) for _ in range(rounds)])
    for device, node in (("phone", a), ("desktop", b)):
        result_of(node.open_device(box.id, device, 1000.0, 10, 0.0))
    for uid in range(1, rounds + 1):
        answers = wait_all([a.delete_for_device(box.id, "phone", [uid]),
                            b.delete_for_device(box.id, "desktop", [uid])])
        assert [uid] in answers, (uid, answers)
        result_of(a.forget_device_deletions(box.id, [uid]))


def test_new_devices_on_two_nodes_at_once_never_pass_the_limit(two_nodes, postgres_dsn):
    from twisted.internet.defer import DeferredList

    a, b = two_nodes
    box = inbox(a)
    outcomes = result_of(DeferredList(
        [node.open_device(box.id, f"{name}{n}", 1000.0, 3, 0.0) for n in range(6) for name, node in (("a", a), ("b", b))],
        consumeErrors=True,
    ))
    assert sum(ok for ok, _ in outcomes) == 3
    assert all(f.check(TooManyDevices) for ok, f in outcomes if not ok)
    assert sql(postgres_dsn, "SELECT count(*) FROM pop3_devices WHERE mailbox_id = %s", (box.id,)) == [(3,)]


def test_a_dead_node_releases_its_maildrops(two_nodes, postgres_dsn):
    # What the server does when a node's connection goes: kill -9 of the
    # node, or a network cut long enough for its connection to drop.
    a, b = two_nodes
    assert callable(result_of(a.lock_maildrop("alice")))
    assert result_of(b.lock_maildrop("alice")) is None
    sql(postgres_dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = 'gateway-maildrops' AND pid = %s", (a._maildrops._connection.info.backend_pid,))
    assert turn_until(lambda: callable(result_of(b.lock_maildrop("alice"))), 5)


# -- gateway check ----------------------------------------------------------------


def test_a_consistent_store_checks_clean(store):
    box = inbox(store)
    result_of(store.append(box.id, MESSAGE))
    assert result_of(store.check_store(repair=False)) == ([], [])
    assert result_of(store.check_store(repair=True)) == ([], [])


def test_check_finds_and_repair_mends_what_it_safely_can(store, outside, postgres_dsn):
    box = inbox(store)
    lost, kept, gone = (result_of(store.append(box.id, MESSAGE + b"%d\n" % n)) for n in range(3))
    result_of(store.expunge(box.id, [gone.uid]))
    lost_key = key_of(MESSAGE + b"0\n")
    outside.remove(lost_key)
    sql(postgres_dsn, "UPDATE mailboxes SET uidnext = 2, highestmodseq = 3 WHERE id = %s", (box.id,))
    problems, repairs = result_of(store.check_store(repair=False, grace=datetime.timedelta(0)))
    assert problems == [
        "alice/INBOX: UIDNEXT 2 is not above UID 3",
        f"alice/INBOX: HIGHESTMODSEQ 3 is below modseq {gone.modseq + 1} of a change",
        f"alice/INBOX: UID 1 has no body (key {lost_key} is not in the body store)",
        "1 stored bodies named by no message",
    ]
    assert repairs == []
    assert result_of(store.check_store(repair=False, grace=datetime.timedelta(0)))[0] == problems
    problems, repairs = result_of(store.check_store(repair=True, grace=datetime.timedelta(0)))
    assert problems == []
    assert repairs == [
        "alice/INBOX: UIDNEXT raised to 4",
        f"alice/INBOX: HIGHESTMODSEQ raised to {gone.modseq + 1}",
        "alice/INBOX: UID 1, whose body is gone, expunged",
        # UID 1's row went with its expunge: its key is named by no message now.
        "2 bodies named by no message removed",
    ]
    assert [r.uid for r in result_of(store.list_messages(box.id))] == [kept.uid]
    assert outside.keys() == [key_of(MESSAGE + b"1\n")]
    assert result_of(store.append(box.id, MESSAGE)).uid == 4
