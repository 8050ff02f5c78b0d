"""
``gateway check`` of the PostgreSQL store's quota counters: each mailbox's
``message_count`` and ``message_octets`` (RFC 9208 usage, the LMTP quota
refusal) against the count and sum of its messages, and ``--repair``
counting them again under the mailbox's row lock while other nodes deliver
and expunge.
"""

from __future__ import annotations

import psycopg
import pytest
from twisted.internet import reactor

from gateway.store.model import QuotaUsage
from gateway.store.postgresql.chunks import ChunkedBlobs
from gateway.store.postgresql.store import PostgreSQLStore
from tests.deferreds import result_of
from tests.store.contract import inbox
from tests.store.test_postgresql import sql, turn_until, two_nodes, wait_all  # noqa: F401
from tests.store.test_postgresql_quota import assert_counted, body


@pytest.fixture
def store(postgres_dsn):
    s = PostgreSQLStore(reactor, postgres_dsn, ChunkedBlobs(), pool_size=4)
    yield s
    result_of(s.close())


def held(store, mailbox_id) -> tuple[int, int]:
    records = result_of(store.list_messages(mailbox_id))
    return len(records), sum(r.size for r in records)


def set_counters(dsn, mailbox_id, count, octets) -> None:
    sql(dsn, "UPDATE mailboxes SET message_count = %s, message_octets = %s WHERE id = %s",
        (count, octets, mailbox_id))


def counters(dsn):
    return sql(dsn, "SELECT id, message_count, message_octets FROM mailboxes ORDER BY id")


def test_miscounted_mailboxes_are_reported_and_counted_again_on_repair(store, postgres_dsn):
    box, bob = inbox(store, "alice"), inbox(store, "bob")
    sent = result_of(store.get_mailbox("alice", "Sent"))
    archive = result_of(store.create_mailbox("alice", "Archive"))
    wait_all([store.append(box.id, body(n)) for n in range(3)] + [store.append(bob.id, body(10 + n)) for n in range(2)]
             + [store.append(sent.id, body(20))])
    result_of(store.expunge(box.id, [2]))
    inbox_held, bob_held, sent_held = held(store, box.id), held(store, bob.id), held(store, sent.id)
    assert inbox_held[0] == 2
    # What a manual UPDATE, a partial restore or a disabled trigger leaves:
    # too many, none at all, and some in a mailbox that holds nothing.
    # Sent stays right.
    set_counters(postgres_dsn, box.id, 7, 1)
    set_counters(postgres_dsn, bob.id, 0, 0)
    set_counters(postgres_dsn, archive.id, 2, 500)
    corrupted = counters(postgres_dsn)
    # What a user sees meanwhile: the counters, not the mail.
    assert result_of(store.quota_usage("alice")) == QuotaUsage(1 + sent_held[1] + 500, 7 + 1 + 2)
    expected = sorted([
        (box.id, f"alice/INBOX: quota counters say 7 messages / 1 bytes,"
                 f" the mailbox holds {inbox_held[0]} / {inbox_held[1]}"),
        (bob.id, f"bob/INBOX: quota counters say 0 messages / 0 bytes,"
                 f" the mailbox holds {bob_held[0]} / {bob_held[1]}"),
        (archive.id, "alice/Archive: quota counters say 2 messages / 500 bytes, the mailbox holds 0 / 0"),
    ])
    assert result_of(store.check_store(repair=False)) == ([line for _, line in expected], [])
    # A check without --repair changes nothing.
    assert counters(postgres_dsn) == corrupted
    problems, repairs = result_of(store.check_store(repair=True))
    assert problems == []
    counted = {box.id: inbox_held, bob.id: bob_held, archive.id: (0, 0)}
    assert repairs == [
        f"{line.split(':')[0]}: quota counters counted again:"
        f" {counted[mailbox_id][0]} messages / {counted[mailbox_id][1]} bytes"
        for mailbox_id, line in expected
    ]
    summed = assert_counted(postgres_dsn, (store,), ["alice", "bob"])
    assert summed["alice"] == QuotaUsage(inbox_held[1] + sent_held[1], inbox_held[0] + sent_held[0])
    assert result_of(store.check_store(repair=False)) == ([], [])
    # The triggers go on from the right figures.
    result_of(store.append(archive.id, body(30)))
    assert_counted(postgres_dsn, (store,), ["alice", "bob"])


def test_counting_again_waits_for_a_writer_holding_the_mailbox(store, postgres_dsn):
    box = inbox(store)
    wait_all([store.append(box.id, body(n)) for n in range(2)])
    set_counters(postgres_dsn, box.id, 9, 9)
    with psycopg.connect(postgres_dsn, application_name="other-node") as writer:
        # Another node's delivery, as delivery.py makes it: the mailbox's row
        # lock, then a message row (the trigger counts it) with the next UID
        # and modseq; not committed yet.
        writer.execute("SELECT uidnext FROM mailboxes WHERE id = %s FOR UPDATE", (box.id,))
        writer.execute(
            "INSERT INTO messages SELECT m.mailbox_id, b.uidnext, m.flags, m.internaldate, m.tzoffset, m.size + 1,"
            " b.highestmodseq + 1, m.blob, m.envelope, m.body, m.bodystructure, m.header, m.parts"
            " FROM messages AS m JOIN mailboxes AS b ON b.id = m.mailbox_id WHERE m.mailbox_id = %s AND m.uid = 1",
            (box.id,),
        )
        writer.execute("UPDATE mailboxes SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1"
                       " WHERE id = %s", (box.id,))
        repaired = store.check_store(repair=True)

        def waiting_for_the_lock():
            return sql(postgres_dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'gateway'"
                       " AND wait_event_type = 'Lock' AND datname = current_database()") == [(1,)]

        assert turn_until(waiting_for_the_lock, 10)
        writer.commit()
    count, octets = held(store, box.id)
    assert count == 3
    # Counted after the writer's commit: its message is in the figures, and
    # its trigger's +1 on the wrong ones is gone.
    assert result_of(repaired) == ([], [f"alice/INBOX: quota counters counted again: 3 messages / {octets} bytes"])
    assert_counted(postgres_dsn, (store,), ["alice"])


def test_counting_again_while_another_node_delivers_and_expunges(two_nodes, postgres_dsn):
    a, b = two_nodes
    box, bob = inbox(a, "alice"), inbox(a, "bob")
    wait_all([a.append(box.id, body(n)) for n in range(10)] + [a.append(bob.id, body(n)) for n in range(4)])
    set_counters(postgres_dsn, box.id, 100, 100)
    set_counters(postgres_dsn, bob.id, 0, 1)
    # Node b delivers, singly and grouped, and expunges, while node a's
    # check repairs; and then again while a checks without repairing.
    repaired = a.check_store(repair=True)
    wait_all([b.append(box.id, body(100 + n)) for n in range(15)]
             + [b.append_many([(box.id, body(200 + n)), (bob.id, body(200 + n))]) for n in range(5)]
             + [b.expunge(box.id, [n]) for n in range(1, 8)] + [b.expunge(bob.id, [1])] + [repaired])
    problems, repairs = result_of(repaired)
    assert problems == []
    assert [line.split(": ")[0] for line in repairs] == ["alice/INBOX", "bob/INBOX"]
    summed = assert_counted(postgres_dsn, (a, b), ["alice", "bob"])
    assert (summed["alice"].messages, summed["bob"].messages) == (10 + 15 + 5 - 7, 4 + 5 - 1)
    checked = a.check_store(repair=False)
    wait_all([b.append(box.id, body(300 + n)) for n in range(10)] + [b.expunge(box.id, [8, 9, 10])] + [checked])
    # One snapshot: the counters and the rows agree in it, whatever commits.
    assert result_of(checked) == ([], [])
    assert_counted(postgres_dsn, (a, b), ["alice", "bob"])
