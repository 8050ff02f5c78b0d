"""
Delivery into the PostgreSQL store: a body is spooled and parsed in the
thread pool before any transaction; then, in one transaction, its bytes are
written under the lock of its ``blobs`` row, its mailbox row is locked, and
the message gets the next UID and modseq; the caller hears of it after the
commit.  A mixin of L{PostgreSQLStore}.
"""

from __future__ import annotations

import datetime

import attrs
from twisted.internet.defer import Deferred

from gateway.mail import message
from gateway.store.blobs.spool import Spooled, spool
from gateway.store.encoding import date_columns, flags_text, structure_columns
from gateway.store.interfaces import NoSuchMailbox, TemporaryFailure, UidNotAvailable
from gateway.store.model import Inbox, MessageRecord
from gateway.store.postgresql.database import Transaction

STRUCTURE_COLUMNS = "envelope, body, bodystructure, header, parts"


@attrs.frozen
class Prepared:
    """A body spooled and parsed, before any transaction."""

    body: Spooled
    structure: object


def now() -> datetime.datetime:
    return datetime.datetime.now().astimezone().replace(microsecond=0)


class DeliveryMixin:
    def _prepare(self, source) -> Prepared:
        body = spool(source, self._spool_dir)
        try:
            structure = message.parse(body.file)
        except BaseException:
            body.file.close()
            raise
        return Prepared(body, structure)

    def _store_body(self, tx: Transaction, body: Spooled) -> None:
        """
        Lock the body's ``blobs`` row (made if new) and write the bytes: the
        lock keeps orphan collection off this key until the commit, and
        ``last_used`` (the clock now, not the transaction's start) tells
        collection the key is in use again.
        """
        tx.execute(
            "INSERT INTO blobs (key, size, last_used) VALUES (%s, %s, clock_timestamp())"
            " ON CONFLICT (key) DO UPDATE SET last_used = clock_timestamp()",
            (body.key, body.size),
        )
        self._blobs.put(tx, body.key, body.file)

    @staticmethod
    def _insert_message(tx, mailbox_id, uid, flags, internaldate, size, modseq, key, structure) -> None:
        tx.execute(
            "INSERT INTO messages (mailbox_id, uid, flags, internaldate, tzoffset, size, modseq, blob,"
            f" {STRUCTURE_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (mailbox_id, uid, flags_text(flags), *date_columns(internaldate), size, modseq, key,
             *structure_columns(structure)),
        )

    def _append_work(self, tx, mailbox_id, prepared: Prepared, flags, internaldate, wanted_uid):
        if tx.one("SELECT 1 FROM mailboxes WHERE id = %s", (mailbox_id,)) is None:
            raise NoSuchMailbox(str(mailbox_id))
        self._store_body(tx, prepared.body)
        counters = self._lock_mailboxes(tx, [mailbox_id])
        if mailbox_id not in counters:
            raise NoSuchMailbox(str(mailbox_id))
        uid, modseq = counters[mailbox_id]
        if wanted_uid is not None:
            if wanted_uid < uid:
                raise UidNotAvailable(f"UID {wanted_uid} is below UIDNEXT {uid}")
            uid = wanted_uid
        modseq += 1
        self._insert_message(tx, mailbox_id, uid, flags, internaldate, prepared.body.size, modseq,
                             prepared.body.key, prepared.structure)
        counters[mailbox_id] = [uid + 1, modseq]
        self._set_counters(tx, counters, [mailbox_id])
        tx.changed_mailbox(mailbox_id, modseq)
        return MessageRecord(uid=uid, flags=frozenset(flags), internaldate=internaldate,
                             size=prepared.body.size, modseq=modseq)

    async def _append(self, mailbox_id, source, flags, internaldate, wanted_uid):
        prepared = await self._db.in_thread(self._prepare, source)
        try:
            return await self._db.write(
                self._append_work, mailbox_id, prepared, frozenset(flags), internaldate or now(), wanted_uid
            )
        finally:
            prepared.body.file.close()

    def append(self, mailbox_id, source, flags=frozenset(), internaldate=None, recent=False):
        # ``recent`` is left to claim_recent, which the interface allows.
        return Deferred.fromCoroutine(self._append(mailbox_id, source, flags, internaldate, None))

    def append_many(self, deliveries):
        """
        Several appends in one transaction: one commit for the lot, and one
        write of each distinct body (a message to many recipients is stored
        once); an L{Inbox} is looked up in that transaction.  Each
        delivery's outcome is its record or the exception that refused it;
        one refused delivery does not stop the others.
        """
        return Deferred.fromCoroutine(self._append_many(deliveries))

    async def _append_many(self, deliveries):
        outcomes: list = [None] * len(deliveries)

        def prepare_all():
            prepared = {}
            for index, (_, source) in enumerate(deliveries):
                try:
                    prepared[index] = self._prepare(source)
                except TemporaryFailure as e:
                    outcomes[index] = e
            return prepared

        prepared = await self._db.in_thread(prepare_all)
        internaldate = now()

        def work(tx):
            bodies = {p.body.key: p.body for p in prepared.values()}
            for key in sorted(bodies):
                self._store_body(tx, bodies[key])
            ids = self._mailbox_ids(tx, {deliveries[i][0] for i in prepared})
            counters = self._lock_mailboxes(tx, ids.values())
            results = {}
            for index, item in prepared.items():
                mailbox = deliveries[index][0]
                mailbox_id = ids.get(mailbox)
                if mailbox_id not in counters:
                    results[index] = NoSuchMailbox("INBOX" if isinstance(mailbox, Inbox) else str(mailbox))
                    continue
                uid, modseq = counters[mailbox_id]
                modseq += 1
                self._insert_message(tx, mailbox_id, uid, (), internaldate, item.body.size, modseq,
                                     item.body.key, item.structure)
                counters[mailbox_id] = [uid + 1, modseq]
                tx.changed_mailbox(mailbox_id, modseq)
                results[index] = MessageRecord(uid=uid, flags=frozenset(), internaldate=internaldate,
                                               size=item.body.size, modseq=modseq)
            self._set_counters(tx, counters, counters)
            return results

        try:
            if prepared:
                results = await self._db.write(work)
                for index, outcome in results.items():
                    outcomes[index] = outcome
        except TemporaryFailure as e:
            for index in prepared:
                outcomes[index] = e
        finally:
            for item in prepared.values():
                item.body.file.close()
        return outcomes

