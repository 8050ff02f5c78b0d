"""
Flag changes on the PostgreSQL backend: the durability tier of
``[store] flag_durability`` and the grouping of the flag changes of many
sessions into one transaction, seen from inside the database (a trigger
records, for every row a statement writes, the transaction and its
``synchronous_commit``).
"""

from __future__ import annotations

import pytest
from twisted.internet import reactor
from twisted.internet.defer import gatherResults

from gateway.store.interfaces import NoSuchMailbox
from gateway.store.postgresql import flags
from gateway.store.postgresql.chunks import ChunkedBlobs
from gateway.store.postgresql.store import PostgreSQLStore
from tests.deferreds import failure_of, result_of
from tests.store.contract import MESSAGE, inbox
from tests.store.test_postgresql import turn_until

SEEN = frozenset({"\\Seen"})


def sql(dsn, query, params=()):
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        cursor = conn.execute(query, params or None)
        return cursor.fetchall() if cursor.description else None


def watch_writes(dsn) -> None:
    """Record (operation, transaction, synchronous_commit) of every row written to ``messages``."""
    sql(dsn, """
        CREATE TABLE writes (op text, xid bigint, synchronous text);
        CREATE FUNCTION record_write() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO writes VALUES (TG_OP, txid_current(), current_setting('synchronous_commit'));
            RETURN NULL;
        END $$;
        CREATE TRIGGER record_write AFTER INSERT OR UPDATE ON messages
            FOR EACH ROW EXECUTE FUNCTION record_write();
    """)


def writes(dsn, op):
    return sql(dsn, "SELECT xid, synchronous FROM writes WHERE op = %s", (op,))


@pytest.fixture
def database(postgres_database):
    """A database whose sessions commit synchronously unless told otherwise (a deployment's default)."""
    sql(postgres_database, "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET synchronous_commit = on',"
                           " current_database()); END $$")
    return postgres_database


def open_store(dsn, durability):
    return PostgreSQLStore(reactor, dsn, ChunkedBlobs(), pool_size=4, flag_durability=durability)


@pytest.mark.parametrize("durability, flag_commits", [("batched", ["on", "off", "off"]),
                                                    ("immediate", ["on", "on", "on"])])
def test_flag_changes_skip_the_wal_flush_only_when_batched(database, durability, flag_commits, monkeypatch):
    monkeypatch.setattr(flags, "FLUSH_DELAY", 600)  # the record stays while the test runs, however slowly
    store = open_store(database, durability)
    try:
        watch_writes(database)
        box = inbox(store)
        uid = result_of(store.append(box.id, MESSAGE)).uid
        for flag in ("\\Seen", "\\Flagged", "\\Answered"):
            changed = result_of(store.store_flags(box.id, [uid], {flag}, "add"))
            assert [r.uid for r in changed] == [uid] and flag in changed[0].flags
            # Visible at once to another connection, whichever the tier.
            assert flag in sql(database, "SELECT flags FROM messages WHERE uid = %s", (uid,))[0][0]
    finally:
        result_of(store.close())
    # A delivery is always flushed before it is answered; so is the first
    # flag change of a mailbox, which records it (flags.py).
    assert {s for _, s in writes(database, "INSERT")} == {"on"}
    assert [s for _, s in sorted(writes(database, "UPDATE"))] == flag_commits
    # A clean stop leaves no record of unflushed changes.
    assert sql(database, "SELECT count(*) FROM unsynced_flags") == [(0,)]


def test_the_record_of_unflushed_changes_goes_once_they_are_flushed(database, monkeypatch):
    monkeypatch.setattr(flags, "FLUSH_DELAY", 0.1)
    store = open_store(database, "batched")
    try:
        box = inbox(store)
        uid = result_of(store.append(box.id, MESSAGE)).uid
        result_of(store.store_flags(box.id, [uid], SEEN, "add"))
        assert sql(database, "SELECT mailbox_id FROM unsynced_flags") == [(box.id,)]
        result_of(store.store_flags(box.id, [uid], SEEN, "remove"))
        assert store.flag_groups.unflushed == 1
        assert turn_until(lambda: sql(database, "SELECT count(*) FROM unsynced_flags") == [(0,)], 10)
        # The next change records the mailbox again before going unflushed.
        result_of(store.store_flags(box.id, [uid], SEEN, "add"))
        assert sql(database, "SELECT mailbox_id FROM unsynced_flags") == [(box.id,)]
        assert store.flag_groups.unflushed == 1
    finally:
        result_of(store.close())


def test_a_server_restart_gives_recorded_mailboxes_higher_modseqs(database, monkeypatch):
    # RFC 7162 3.1.1: a crash of the server may lose the unflushed changes,
    # whose mod-sequences clients may know; none may be handed out again.
    monkeypatch.setattr(flags, "FLUSH_DELAY", 600)
    node = open_store(database, "batched")
    try:
        box, other = inbox(node), inbox(node, "bob")
        uids = [result_of(node.append(box.id, MESSAGE)).uid for _ in range(3)]
        result_of(node.append(other.id, MESSAGE))
        result_of(node.store_flags(box.id, uids[:1], SEEN, "add"))
        result_of(node.store_flags(box.id, uids[1:2], SEEN, "add"))  # unflushed
        highest = result_of(node.get_mailbox("alice", "INBOX")).highestmodseq
        other_highest = result_of(node.get_mailbox("bob", "INBOX")).highestmodseq
        # As if the server had started again since the record was made.
        sql(database, "UPDATE unsynced_flags SET server_started = server_started - interval '1 hour'")
        restarted = open_store(database, "batched")  # its first connection recovers
        try:
            after = result_of(restarted.get_mailbox("alice", "INBOX"))
            assert after.highestmodseq == highest + flags.MARGIN
            assert {r.modseq for r in result_of(restarted.list_messages(box.id))} == {after.highestmodseq}
            assert result_of(restarted.get_mailbox("bob", "INBOX")).highestmodseq == other_highest
            changes = result_of(restarted.changes_since(box.id, highest))
            assert sorted(r.uid for r in changes.updated) == uids
            # Recovered once: the record is current again, kept for its node.
            assert sql(database, "SELECT mailbox_id FROM unsynced_flags"
                                 " WHERE server_started = pg_postmaster_start_time()") == [(box.id,)]
        finally:
            result_of(restarted.close())
    finally:
        result_of(node.close())
    assert sql(database, "SELECT count(*) FROM unsynced_flags") == [(0,)]


def test_a_burst_of_flag_saves_from_many_sessions_is_one_transaction(database):
    store = open_store(database, "batched")
    try:
        users = [f"user{n}" for n in range(8)]
        boxes = [inbox(store, user) for user in users]
        uids = {box.id: [result_of(store.append(box.id, MESSAGE)).uid for _ in range(3)] for box in boxes}
        watch_writes(database)
        before = store.flag_groups.transactions
        # As POP3 sessions' \Seen saves falling due in one reactor turn,
        # plus a second save on one mailbox and an IMAP STORE that removes.
        asked = [store.store_flags(box.id, uids[box.id][:2], SEEN, "add") for box in boxes]
        again = store.store_flags(boxes[0].id, uids[boxes[0].id], SEEN, "add")
        removed = store.store_flags(boxes[1].id, uids[boxes[1].id][:1], SEEN, "remove")
        results = result_of(gatherResults(asked + [again, removed]))
        assert store.flag_groups.transactions == before + 1
        # One transaction in the database too.
        assert len({xid for xid, _ in writes(database, "UPDATE")}) == 1

        # Each caller got its own changes, with its mailbox's next modseq.
        for box, changed in zip(boxes, results[:8]):
            assert [r.uid for r in changed] == uids[box.id][:2]
            assert all(r.flags == SEEN for r in changed)
        first_modseq = results[0][0].modseq
        assert [r.uid for r in results[8]] == uids[boxes[0].id][2:]  # the first two were \Seen already
        assert results[8][0].modseq == first_modseq + 1
        assert [(r.uid, r.flags) for r in results[9]] == [(uids[boxes[1].id][0], frozenset())]
        assert results[9][0].modseq == results[1][0].modseq + 1

        # What every session reads afterwards agrees, modseqs included.
        for box in boxes:
            after = result_of(store.get_mailbox(box.user, "INBOX"))
            records = result_of(store.list_messages(box.id))
            assert after.highestmodseq == max(r.modseq for r in records)
        changes = result_of(store.changes_since(boxes[0].id, 0))
        assert changes.highestmodseq == first_modseq + 1
    finally:
        result_of(store.close())


def test_a_refused_change_fails_alone_in_its_group(database):
    store = open_store(database, "batched")
    try:
        box = inbox(store)
        uid = result_of(store.append(box.id, MESSAGE)).uid
        gone = result_of(store.create_mailbox("alice", "Gone"))
        result_of(store.delete_mailbox("alice", "Gone"))
        good = store.store_flags(box.id, [uid], SEEN, "add")
        bad = store.store_flags(gone.id, [1], SEEN, "add")
        failure_of(bad, NoSuchMailbox)
        assert [r.uid for r in result_of(good)] == [uid]
    finally:
        result_of(store.close())


def test_reads_do_not_queue_behind_writes_waiting_on_a_lock(database):
    import psycopg

    store = PostgreSQLStore(reactor, database, ChunkedBlobs(), pool_size=4)
    try:
        box = inbox(store)
        uids = [result_of(store.append(box.id, MESSAGE)).uid for _ in range(4)]
        # Another node holds the mailbox's row lock: every write to it waits.
        with psycopg.connect(database) as holder:
            holder.execute("SELECT 1 FROM mailboxes WHERE id = %s FOR UPDATE", (box.id,))
            waiting = [store.expunge(box.id, [uid]) for uid in uids]
            done = []
            for d in waiting:
                d.addBoth(lambda result: done.append(result) or result)
            # As many writes as threads are waiting, yet a read is answered.
            assert [r.uid for r in result_of(store.list_messages(box.id))] == uids
            assert done == []
        assert sorted(uid for d in waiting for uid in result_of(d)) == uids
    finally:
        result_of(store.close())
