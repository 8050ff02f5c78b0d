"""
Quota usage on PostgreSQL (RFC 9208): each mailbox's message count and
octets kept in the transaction that changes them, on every node, and
counted for the mailboxes of a database migrated from before the counters.
"""

from __future__ import annotations

from twisted.internet import reactor

from gateway.store.model import QuotaUsage
from gateway.store.postgresql.chunks import ChunkedBlobs
from gateway.store.postgresql.store import PostgreSQLStore
from tests.deferreds import result_of
from tests.store.contract import MESSAGE, inbox
from tests.store.test_postgresql import sql, two_nodes, wait_all  # noqa: F401

COUNTED = (
    "SELECT b.id, b.message_count, b.message_octets, count(m.uid), coalesce(sum(m.size), 0)"
    " FROM mailboxes AS b LEFT JOIN messages AS m ON m.mailbox_id = b.id GROUP BY b.id ORDER BY b.id"
)
SUMMED = (
    "SELECT b.owner, coalesce(sum(m.size), 0), count(m.uid) FROM mailboxes AS b"
    " LEFT JOIN messages AS m ON m.mailbox_id = b.id GROUP BY b.owner ORDER BY b.owner"
)


def assert_counted(dsn, nodes, users):
    rows = sql(dsn, COUNTED)
    assert rows and all((count, octets) == (actual, summed) for _, count, octets, actual, summed in rows), rows
    summed = {owner: QuotaUsage(int(storage), messages) for owner, storage, messages in sql(dsn, SUMMED)}
    for node in nodes:
        assert {user: result_of(node.quota_usage(user)) for user in users} == {
            user: summed.get(user, QuotaUsage(0, 0)) for user in users
        }
    return summed


def body(n: int) -> bytes:
    # Bodies of different sizes, so that a count right by chance shows.
    return MESSAGE + b"x" * n + b"\n"


def test_counters_equal_the_sums_after_a_burst_from_two_nodes(two_nodes, postgres_dsn):
    a, b = two_nodes
    box, bob = inbox(a, "alice"), inbox(b, "bob")
    archive = result_of(a.create_mailbox("alice", "Archive"))
    trash = result_of(b.get_mailbox("alice", "Trash"))
    # Deliveries from both nodes at once, single and grouped (LMTP's group
    # commit), some to several recipients.
    wait_all([node.append(box.id, body(n)) for n in range(15) for node in (a, b)]
             + [a.append_many([(box.id, body(100 + n)), (bob.id, body(100 + n)), (archive.id, body(200 + n))])
                for n in range(5)]
             + [b.append_many([(bob.id, body(300 + n))]) for n in range(5)])
    assert_counted(postgres_dsn, (a, b), ["alice", "bob"])
    # Copies, moves and expunges crossing between nodes at once.
    uids = [r.uid for r in result_of(a.list_messages(box.id))]
    wait_all([a.copy(box.id, uids[:10], archive.id), b.move(box.id, uids[10:20], trash.id),
              a.expunge(box.id, uids[20:25]), b.expunge(box.id, uids[22:30]),
              b.copy(box.id, uids[:5], trash.id), a.expunge(bob.id, [1, 2])])
    wait_all([b.move(archive.id, [r.uid for r in result_of(b.list_messages(archive.id))][:7], box.id),
              a.expunge(trash.id, [r.uid for r in result_of(a.list_messages(trash.id))][::2])])
    summed = assert_counted(postgres_dsn, (a, b), ["alice", "bob"])
    assert summed["alice"].messages == len(result_of(a.list_messages(box.id))) + sum(
        len(result_of(a.list_messages(m.id))) for m in (archive, trash))
    # A renamed INBOX keeps its messages and its count; a deleted mailbox
    # and a deleted user take theirs.
    result_of(a.rename_mailbox("alice", "INBOX", "Old"))
    result_of(b.delete_mailbox("alice", "Archive"))
    result_of(a.delete_user("bob"))
    summed = assert_counted(postgres_dsn, (a, b), ["alice", "bob"])
    assert "bob" not in summed and summed["alice"].messages > 0


def test_a_database_from_before_the_counters_is_counted_when_migrated(postgres_dsn):
    from gateway.store.postgresql.schema import MIGRATIONS

    store = PostgreSQLStore(reactor, postgres_dsn, ChunkedBlobs(), pool_size=2)
    try:
        box = inbox(store, "alice")
        wait_all([store.append(box.id, body(n)) for n in range(12)])
        result_of(store.expunge(box.id, [3, 4]))
        wait_all([store.append(inbox(store, "bob").id, body(n)) for n in range(3)])
    finally:
        result_of(store.close())
    # The schema as version 2 left it, holding those messages.
    sql(postgres_dsn, "DROP TRIGGER messages_counted_in ON messages; DROP TRIGGER messages_counted_out ON messages;"
        " DROP FUNCTION gateway_count_added(); DROP FUNCTION gateway_count_removed();"
        " ALTER TABLE mailboxes DROP COLUMN message_count, DROP COLUMN message_octets;"
        " DELETE FROM schema_migrations WHERE version > 2")
    store = PostgreSQLStore(reactor, postgres_dsn, ChunkedBlobs(), pool_size=2)
    try:
        assert sql(postgres_dsn, "SELECT max(version) FROM schema_migrations") == [(len(MIGRATIONS),)]
        summed = assert_counted(postgres_dsn, (store,), ["alice", "bob"])
        assert (summed["alice"].messages, summed["bob"].messages) == (10, 3)
        result_of(store.append(box.id, body(50)))
        assert result_of(store.quota_usage("alice")).messages == 11
        assert_counted(postgres_dsn, (store,), ["alice", "bob"])
    finally:
        result_of(store.close())
