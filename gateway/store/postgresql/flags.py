"""
Flag changes of every session on a node, grouped: those asked for in one
reactor turn (the \\Seen saves of POP3 sessions fall due together, IMAP
STOREs of many clients) run in one transaction, with one commit.

Each change keeps its own identity: the group row-locks every mailbox it
touches, in id order, as any single change would (so a group never waits
crosswise on a COPY or MOVE), and gives each change the next mod-sequence
of its mailbox in the order they were asked, so a mailbox's mod-sequences
still only go up (RFC 7162 3.1.1) and each caller gets the changes and the
modseq of its own request.  A request the group cannot serve (its mailbox
is gone) is refused alone; a failure of the transaction fails the group,
and each request is then tried on its own, so one cannot fail another.

Under ``flag_durability`` "batched" a group commits without waiting for
its WAL flush (database.py), and a crash of the database server within the
WAL writer's delay loses it.  The lost changes' mod-sequences must not be
handed out again (RFC 7162 3.1.1: a client may know them), so before a
mailbox's first such commit its node records the mailbox, with the start
time of the server, in ``unsynced_flags``, durably.  The record is removed
once a later synchronous commit has flushed those changes (``FLUSH_DELAY``
after the first).  A connection the pool opens to a server that started
since a record was made (it crashed, or failed over) first gives every
message of the recorded mailboxes a mod-sequence above any the lost commits
can have taken (``recover``), before any session writes through it; a
clean restart costs the same, CONDSTORE clients fetching those mailboxes'
flags again.
"""

from __future__ import annotations

import collections
import uuid

import attrs
from psycopg import errors
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.store.encoding import flag_changes
from gateway.store.interfaces import NoSuchMailbox

# Changes in one transaction at most: each holds its mailbox's row lock to
# the commit.
MAX_GROUP = 256

RECORD_COLUMNS = "uid, flags, internaldate, tzoffset, size, modseq"

# Seconds after a mailbox's first unflushed flag commit that its record is
# removed by a synchronous commit (which flushes everything before it).
FLUSH_DELAY = 1.0

# Above every mod-sequence the unflushed commits of one mailbox can have
# taken before a crash.
MARGIN = 1_000_000

log = Logger()


@attrs.frozen
class FlagChange:
    mailbox_id: int
    uids: tuple[int, ...]
    flags: frozenset[str]
    mode: str
    unchangedsince: int | None


class FlagGroups:
    """
    ``db`` is the node's L{Database}; ``durability`` is ``[store]
    flag_durability``.
    """

    def __init__(self, reactor, db, durability: str = "batched"):
        self._reactor = reactor
        self._db = db
        self._batched = durability == "batched"
        self.node = uuid.uuid4().hex
        self._waiting: list[tuple[FlagChange, Deferred]] = []
        self._due = None
        # Mailboxes recorded in unsynced_flags for this node; those whose
        # record is being removed; groups under way per mailbox.
        self._recorded: set[int] = set()
        self._removing: set[int] = set()
        self._running: collections.Counter[int] = collections.Counter()
        self._pending: set[Deferred] = set()
        self._flush_due = None
        # Transactions run, those committed without a flush, and the
        # changes they carried.
        self.transactions = 0
        self.unflushed = 0
        self.changes = 0

    def submit(self, change: FlagChange) -> Deferred:
        """A Deferred firing with (changed records, modified UIDs) once ``change`` is committed."""
        d = Deferred()
        self._waiting.append((change, d))
        if self._due is None:
            self._due = self._reactor.callLater(0, self._run)
        return d

    def _run(self) -> None:
        self._due = None
        waiting, self._waiting = self._waiting, []
        for start in range(0, len(waiting), MAX_GROUP):
            self._start(waiting[start:start + MAX_GROUP])

    def _start(self, group: list[tuple[FlagChange, Deferred]]) -> None:
        self.transactions += 1
        self.changes += len(group)
        changes = [change for change, _ in group]
        mailboxes = {change.mailbox_id for change in changes}
        unflushed = self._batched and mailboxes <= self._recorded
        if unflushed:
            self.unflushed += 1
            d = self._db.write_flags(apply_changes, changes, self.node, ())
        else:
            # Durable on its own, and it records the mailboxes so that the
            # next groups need not be (unless their record is going).
            record = sorted(mailboxes - self._recorded - self._removing) if self._batched else []
            d = self._db.write(apply_changes, changes, self.node, record)
        self._running.update(mailboxes)
        self._pending.add(d)

        def done(outcomes):
            if not unflushed:
                self._recorded.update(record)
            elif self._flush_due is None:
                self._flush_due = self._reactor.callLater(FLUSH_DELAY, self._flush)
            for (_, waiting), outcome in zip(group, outcomes):
                if isinstance(outcome, Exception):
                    waiting.errback(Failure(outcome))
                else:
                    waiting.callback(outcome)

        def failed(failure):
            if len(group) == 1:
                group[0][1].errback(failure)
                return
            # Whatever it was, it was no one request's refusal: each again
            # alone, so that the one at fault fails alone.
            for item in group:
                self._start([item])

        def finished(result):
            self._pending.discard(d)
            for mailbox_id in mailboxes:
                self._running[mailbox_id] -= 1
                if not self._running[mailbox_id]:
                    del self._running[mailbox_id]
            return result

        d.addBoth(finished)
        d.addCallbacks(done, failed)

    def _flush(self) -> None:
        """
        Remove the records of mailboxes with no group under way: every
        commit of theirs came before this synchronous one, which flushes
        them.  The others wait for the next turn.
        """
        self._flush_due = None
        idle = sorted(m for m in self._recorded if self._running[m] <= 0)
        if idle:
            self._recorded.difference_update(idle)
            self._removing.update(idle)
            d = self._db.write(remove_records, self.node, idle)

            def removed(result):
                self._removing.difference_update(idle)
                return result

            def kept(failure):
                self._recorded.update(idle)  # still recorded; tried again
                log.warn("Records of unflushed flag changes kept: {error}", error=failure.getErrorMessage())

            d.addBoth(removed).addErrback(kept)
        if self._recorded and self._flush_due is None:
            self._flush_due = self._reactor.callLater(FLUSH_DELAY, self._flush)

    def close(self) -> Deferred:
        """Once every group has committed, this node's records removed (a synchronous commit)."""
        if self._flush_due is not None and self._flush_due.active():
            self._flush_due.cancel()
        self._flush_due = None
        pending = DeferredList(list(self._pending), consumeErrors=True) if self._pending else succeed(None)

        def remove(_):
            if not self._recorded:
                return None
            mailboxes, self._recorded = sorted(self._recorded), set()
            return self._db.write(remove_records, self.node, mailboxes)

        return pending.addCallback(remove).addErrback(
            lambda failure: log.warn("Records of unflushed flag changes left: {error}",
                                     error=failure.getErrorMessage()))


def remove_records(tx, node: str, mailbox_ids) -> None:
    tx.execute("DELETE FROM unsynced_flags WHERE node = %s AND mailbox_id = ANY(%s)", (node, list(mailbox_ids)))


def recover(connection) -> None:
    """
    On a connection just opened: if the server started since a mailbox
    was recorded, the flag changes committed unflushed before may be lost,
    so every message of those mailboxes gets a mod-sequence above any they
    can have taken (and the mailbox that HIGHESTMODSEQ).  The records stay,
    made current, for the nodes that hold them (they remove them once
    flushed).  Connections opening at once each try; one does it.
    """
    try:
        stale = connection.execute(
            "SELECT EXISTS (SELECT 1 FROM unsynced_flags WHERE server_started <> pg_postmaster_start_time())"
        ).fetchone()[0]
    except errors.UndefinedTable:
        return  # the schema is not migrated yet: nothing was recorded
    if not stale:
        return
    with connection.transaction():
        mailbox_ids = sorted({row[0] for row in connection.execute(
            "SELECT mailbox_id FROM unsynced_flags WHERE server_started <> pg_postmaster_start_time() FOR UPDATE"
        ).fetchall()})
        if not mailbox_ids:
            return  # recovered by another connection meanwhile
        rows = connection.execute(
            "SELECT id, highestmodseq FROM mailboxes WHERE id = ANY(%s) ORDER BY id FOR UPDATE", (mailbox_ids,)
        ).fetchall()
        for mailbox_id, highest in rows:
            modseq = highest + MARGIN
            connection.execute("UPDATE messages SET modseq = %s WHERE mailbox_id = %s", (modseq, mailbox_id))
            connection.execute("UPDATE mailboxes SET highestmodseq = %s WHERE id = %s", (modseq, mailbox_id))
        connection.execute(
            "UPDATE unsynced_flags SET server_started = pg_postmaster_start_time() WHERE mailbox_id = ANY(%s)",
            (mailbox_ids,),
        )
    log.warn("The database server restarted: mailboxes {mailboxes} given new mod-sequences (flag changes"
             " committed unflushed may be lost)", mailboxes=[row[0] for row in rows])


def write_flags(tx, mailbox_id: int, rows: list[tuple[int, str, int]]) -> None:
    """
    Set (UID, flags text, modseq) on those messages of the mailbox, in one
    statement: a statement per message costs the driver's work per
    statement, which over a POP3 download's \\Seen saves was as much CPU as
    serving the messages.
    """
    uids, flags, modseqs = zip(*rows)
    tx.execute(
        "UPDATE messages SET flags = v.flags, modseq = v.modseq"
        " FROM unnest(%s::bigint[], %s::text[], %s::bigint[]) AS v(uid, flags, modseq)"
        " WHERE messages.mailbox_id = %s AND messages.uid = v.uid",
        (list(uids), list(flags), list(modseqs), mailbox_id),
    )


def apply_changes(tx, changes: list[FlagChange], node: str, record) -> list:
    """
    In one transaction: each change's (changed records, modified UIDs), or
    the refusal (an exception) of a change whose mailbox is gone.  The
    mailboxes ``record`` names are recorded as ``node``'s in
    ``unsynced_flags``.
    """
    if record:
        tx.execute(
            "INSERT INTO unsynced_flags (node, mailbox_id, server_started)"
            " SELECT %s, m, pg_postmaster_start_time() FROM unnest(%s::bigint[]) AS m ON CONFLICT DO NOTHING",
            (node, list(record)),
        )
    mailbox_ids = sorted({change.mailbox_id for change in changes})
    modseqs = dict(tx.all(
        "SELECT id, highestmodseq FROM mailboxes WHERE id = ANY(%s) ORDER BY id FOR UPDATE", (mailbox_ids,)
    ))
    outcomes: list = []
    for change in changes:
        if change.mailbox_id not in modseqs:
            outcomes.append(NoSuchMailbox(str(change.mailbox_id)))
            continue
        modseq = modseqs[change.mailbox_id] + 1
        rows = tx.all(
            f"SELECT {RECORD_COLUMNS} FROM messages WHERE mailbox_id = %s AND uid = ANY(%s) ORDER BY uid",
            (change.mailbox_id, sorted(set(change.uids))),
        ) if change.uids else []
        changed, modified, written = flag_changes(rows, change.flags, change.mode, change.unchangedsince, modseq)
        if changed:
            write_flags(tx, change.mailbox_id, [(uid, text, modseq) for text, uids in written.items() for uid in uids])
            modseqs[change.mailbox_id] = modseq
            tx.changed_mailbox(change.mailbox_id, modseq)
        outcomes.append((changed, modified))
    if tx.changed:
        tx.cursor.executemany(
            "UPDATE mailboxes SET highestmodseq = %s WHERE id = %s",
            [(modseq, mailbox_id) for mailbox_id, modseq in sorted(tx.changed.items())],
        )
    return outcomes
