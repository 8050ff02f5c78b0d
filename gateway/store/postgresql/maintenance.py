"""
What the PostgreSQL store does besides serving sessions: migration with
given UIDVALIDITY and UIDs (IImportableStore), and collecting the bodies no
message names any more, on ``gateway check --repair`` and on a schedule on
every node, one at a time.  A mixin of L{PostgreSQLStore}: it works through
the same database and body store.
"""

from __future__ import annotations

import datetime

import attrs
import psycopg
from psycopg import errors
from twisted.internet import defer, task
from twisted.logger import Logger

from gateway.store.interfaces import MailboxExists, NoSuchMailbox, UidNotAvailable
from gateway.store.model import UID_MAX
from gateway.store.names import check_name
from gateway.store.postgresql.database import connection_settings

log = Logger()

# A body written for a transaction that never committed (a node died
# between the write and the commit) is collected once it is this old: no
# transaction stays open that long.
ORPHAN_GRACE = datetime.timedelta(hours=1)

# pg_try_advisory_lock key of the scheduled collection: "collect" in ASCII.
# One node at a time collects; the others find it taken and skip their turn.
_COLLECTION_LOCK = 0x636F6C6C656374


@attrs.frozen
class Collected:
    """What ``collect_orphans`` removed: keys of bodies no message named."""

    unreferenced: tuple[str, ...]
    uncommitted: tuple[str, ...]


class MaintenanceMixin:
    # -- migration (IImportableStore) ---------------------------------------

    def create_mailbox_with_uidvalidity(self, user, name, uidvalidity):
        if not 1 <= uidvalidity <= UID_MAX:
            return defer.fail(ValueError(f"UIDVALIDITY out of range: {uidvalidity}"))

        def work(tx):
            canonical = check_name(name)
            info = self._mailbox(tx, user, canonical)
            if info is None:
                info = self._create(tx, user, canonical, None)
                if info is None:
                    raise MailboxExists(name)
            elif info.uidnext != 1:
                raise MailboxExists(f"{name} has held messages; its UIDVALIDITY cannot change")
            tx.execute("UPDATE mailboxes SET uidvalidity = %s WHERE id = %s", (uidvalidity, info.id))
            # Never issue afresh a UIDVALIDITY that came from elsewhere.
            tx.execute("UPDATE counters SET value = greatest(value, %s) WHERE name = 'uidvalidity'", (uidvalidity,))
            return attrs.evolve(info, uidvalidity=uidvalidity)

        return self._db.write(work)

    def append_with_uid(self, mailbox_id, uid, source, flags, internaldate):
        if not 1 <= uid <= UID_MAX:
            return defer.fail(UidNotAvailable(f"UID out of range: {uid}"))
        return defer.Deferred.fromCoroutine(self._append(mailbox_id, source, flags, internaldate, uid))

    def raise_uidnext(self, mailbox_id, uidnext):
        def work(tx):
            counters = self._lock_mailboxes(tx, [mailbox_id])
            if mailbox_id not in counters:
                raise NoSuchMailbox(str(mailbox_id))
            current = counters[mailbox_id][0]
            if uidnext <= current:
                return current
            if uidnext > UID_MAX + 1:
                raise UidNotAvailable(f"UIDNEXT out of range: {uidnext}")
            tx.execute("UPDATE mailboxes SET uidnext = %s WHERE id = %s", (uidnext, mailbox_id))
            return uidnext

        return self._db.write(work)

    # -- orphan collection --------------------------------------------------

    def collect_orphans(self, grace: datetime.timedelta = ORPHAN_GRACE):
        """
        Remove the bodies no message names: those whose last message went
        (expunged, or its mailbox or user deleted) and those written for a
        delivery that never committed, once older than ``grace``.

        A body is removed under its ``blobs`` row lock and only while that
        row's ``last_used`` is older than ``grace``: a delivery of the same
        bytes takes the lock first and moves ``last_used``, so it either
        waits for the removal to finish and writes the bytes again, or
        keeps its body.  The foreign key from messages stops the removal of
        a row a message still names, whatever the timing.

        @return: Deferred firing with a L{Collected}.
        """
        return self._db.in_thread(self._collect_orphans, grace)

    def collect_orphans_every(self, interval: float, grace: datetime.timedelta = ORPHAN_GRACE) -> None:
        """
        Collect the orphan bodies every ``interval`` seconds from now on
        (the server's store; a tool's never does), while another node is
        not at it; ``close`` stops it.
        """
        def collect():
            d = self.collect_orphans_if_free(grace)
            d.addCallback(collected)
            # A failure (the database away) waits for the next turn.
            d.addErrback(lambda failure: log.failure("Collecting orphan bodies", failure))
            return d

        def collected(outcome):
            if outcome is not None and (outcome.unreferenced or outcome.uncommitted):
                log.info("Collected {count} bodies no message names",
                         count=len(outcome.unreferenced) + len(outcome.uncommitted))

        self._collector = task.LoopingCall(collect)
        self._collector.clock = self._reactor
        self._collector.start(interval, now=False)

    def collect_orphans_if_free(self, grace: datetime.timedelta = ORPHAN_GRACE):
        """
        L{collect_orphans}, unless another node is collecting now: the
        scheduled collection every node runs, done by one at a time.

        @return: Deferred firing with a L{Collected}, or None when another
            node holds the collection's lock.
        """
        return self._db.in_thread(self._collect_orphans_if_free, grace)

    def _collect_orphans_if_free(self, grace: datetime.timedelta) -> Collected | None:
        # A session-level lock on a connection of its own, held while the
        # collection runs its transactions through the pool; a node that
        # dies lets it go with its connection.
        with psycopg.connect(self._db.dsn, autocommit=True, application_name="gateway-collect",
                             **connection_settings(10)) as connection:
            if not connection.execute("SELECT pg_try_advisory_lock(%s)", (_COLLECTION_LOCK,)).fetchone()[0]:
                return None
            try:
                return self._collect_orphans(grace)
            finally:
                connection.execute("SELECT pg_advisory_unlock(%s)", (_COLLECTION_LOCK,))

    def _collect_orphans(self, grace: datetime.timedelta) -> Collected:
        def candidates(tx):
            return [row[0] for row in tx.all(
                "SELECT key FROM blobs AS b WHERE last_used < clock_timestamp() - %s"
                " AND NOT EXISTS (SELECT 1 FROM messages AS m WHERE m.blob = b.key)",
                (grace,),
            )]

        def remove(tx, key):
            try:
                row = tx.one(
                    "DELETE FROM blobs AS b WHERE key = %s AND last_used < clock_timestamp() - %s"
                    " AND NOT EXISTS (SELECT 1 FROM messages AS m WHERE m.blob = b.key) RETURNING key",
                    (key, grace),
                )
            except errors.ForeignKeyViolation:
                return False  # named again meanwhile
            if row is None:
                return False
            self._blobs.delete(tx, key)
            return True

        unreferenced = []
        for key in self._db.transact(candidates, (), None)[0]:
            if self._db.transact(remove, (key,))[0]:
                unreferenced.append(key)

        def uncommitted(tx):
            cutoff = tx.one("SELECT clock_timestamp() - %s", (grace,))[0]
            stored = list(self._blobs.keys(tx, cutoff))
            known = {row[0] for row in tx.all("SELECT key FROM blobs WHERE key = ANY(%s)", (stored,))}
            return [key for key in stored if key not in known]

        def remove_uncommitted(tx, key):
            # Take the key's row as a delivery would: a delivery that wrote
            # these bytes holds it until its commit, and then the row is
            # there and the bytes stay; a later one waits for this removal
            # and writes the bytes again.
            if tx.one(
                "INSERT INTO blobs (key, size, last_used) VALUES (%s, 0, '-infinity')"
                " ON CONFLICT (key) DO NOTHING RETURNING key", (key,)
            ) is None:
                return False
            self._blobs.delete(tx, key)
            tx.execute("DELETE FROM blobs WHERE key = %s", (key,))
            return True

        removed = []
        for key in self._db.transact(uncommitted, (), None)[0]:
            if self._db.transact(remove_uncommitted, (key,))[0]:
                removed.append(key)
        return Collected(tuple(unreferenced), tuple(removed))
