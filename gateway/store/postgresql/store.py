"""
The networked store: the index in PostgreSQL, bodies by content address in
an S3-compatible object store or in PostgreSQL itself, shared by any number
of gateway nodes.

Identities are decided where they are stored.  A message gets its UID and
modseq inside the transaction that inserts it, under a row lock on its
mailbox held to the commit, so UIDs commit in ascending order: no session
on any node sees UID n+1 before n.  UIDVALIDITY comes from one counter row
that only goes up.  A body is written, under a lock on its ``blobs`` row,
before the row that names it commits; the store never deletes a body when
a message goes, orphan collection does (``collect_orphans``).

Every call runs in a bounded thread pool, never on the reactor thread.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from gateway.store.blobs.interface import BlobMissing, IBlobStore
from gateway.store.encoding import date_text, flag_set, record_from_row, structure_from_row
from gateway.store.interfaces import (
    IGroupCommitStore,
    IImportableStore,
    IMailStore,
    IStoreDump,
    IStoreLoad,
    IStoreMaintenance,
    MessageExpunged,
    NoSuchMailbox,
    TemporaryFailure,
)
from gateway.store.model import ChangeSet
from gateway.store.postgresql.check import CheckMixin
from gateway.store.postgresql.copying import CopyingMixin
from gateway.store.postgresql.database import Database, Transaction
from gateway.store.postgresql.delivery import STRUCTURE_COLUMNS, DeliveryMixin
from gateway.store.postgresql.devices import DevicesMixin
from gateway.store.postgresql.feed import ClusterChangeFeed
from gateway.store.postgresql.flags import FlagChange, FlagGroups
from gateway.store.postgresql.flags import recover as recover_unflushed
from gateway.store.postgresql.maildrops import MaildropLocks
from gateway.store.postgresql.mailboxes import MailboxesMixin
from gateway.store.postgresql.maintenance import MaintenanceMixin
from gateway.store.postgresql.bodykeys import AHEAD, BodyKeys
from gateway.store.postgresql.memo import ChangesMemo
from gateway.store.postgresql.readahead import ReadAhead
from gateway.store.postgresql.recent import RecentClaims
from gateway.store.postgresql.schema import migrate, require_current

log = Logger()

RECORD_COLUMNS = "uid, flags, internaldate, tzoffset, size, modseq"
# What fetch_rows selects for each of interfaces.FETCH_COLUMNS.
_FETCH_COLUMNS = {
    "size": "size", "internaldate": "internaldate, tzoffset", "modseq": "modseq", "envelope": "envelope",
    "body": "body", "bodystructure": "bodystructure", "header": "header",
}


@implementer(IMailStore, IImportableStore, IGroupCommitStore, IStoreMaintenance, IStoreDump, IStoreLoad)
class PostgreSQLStore(MailboxesMixin, DeliveryMixin, DevicesMixin, MaintenanceMixin, CheckMixin, CopyingMixin):
    """
    ``dsn`` is a libpq connection string; ``blobs`` where bodies go.  The
    schema is migrated before the constructor returns (a node cannot serve
    on an older one); with ``migrate_schema`` false it must be current
    already, and is left as it is.  ``flag_durability`` is ``[store]
    flag_durability``.
    """

    def __init__(self, reactor, dsn: str, blobs: IBlobStore, pool_size: int = 10, min_connections: int = 1,
                 spool_dir: str | None = None, connect_timeout: float = 10.0, migrate_schema: bool = True,
                 flag_durability: str = "batched"):
        self._reactor = reactor
        self._blobs = blobs
        self._spool_dir = spool_dir
        # Bodies are spooled where the caller says, else in the system's
        # temporary directory: the store has no disk of its own.
        self.spool_directory = spool_dir
        self._closed = None
        self._collector = None  # collect_orphans_every's
        self.changes = ClusterChangeFeed(reactor, dsn, self._highest_modseqs, connect_timeout=connect_timeout)
        self._changes_memo = ChangesMemo(self.changes)
        self._body_keys = BodyKeys()
        self._recent = RecentClaims(self.changes)
        self.changes.memos += [self._changes_memo, self._body_keys, self._recent]
        # A body this node keeps a copy of opens without a thread (the
        # cache of blobs/cache.py); others are read in the pool.
        self._open_local = getattr(blobs, "open_cached", None)
        # Bodies from an object store are fetched ahead into that cache.
        self._read_ahead = None
        self._db = Database(reactor, dsn, pool_size, min_connections, connect_timeout, on_commit=self._committed,
                            flag_durability=flag_durability, on_connect=recover_unflushed)
        self.flag_groups = FlagGroups(reactor, self._db, flag_durability)
        self._db.open()
        self._blobs_in_index = getattr(blobs, "in_index", False)
        if self._open_local is not None and not self._blobs_in_index:
            self._read_ahead = ReadAhead(blobs, self._db.in_body_thread)
        try:
            if migrate_schema:
                self._db.transact(migrate)
            else:
                self._db.transact(require_current, (), None)
        except BaseException:
            self._db.close()
            raise
        self._maildrops = MaildropLocks(reactor, dsn, connect_timeout)

    def close(self):
        """
        Stop listening, finish the work asked for and close every
        connection.

        @return: Deferred firing with None once done.
        """
        if self._closed is None:
            if self._collector is not None and self._collector.running:
                self._collector.stop()
            self._closed = self.changes.stop_polling()
            self._closed.addCallback(lambda _: self.flag_groups.close())
            self._closed.addCallback(lambda _: self._maildrops.close())
            self._closed.addCallback(lambda _: self._db.close())
        d = defer.Deferred()
        self._closed.addBoth(lambda result: d.callback(None) or result)
        return d

    def lock_maildrop(self, user, device=None):
        """
        Hold the user's POP3 maildrop, or a device's view of it, for one
        session against every session on every node (RFC 1939 8).

        @return: Deferred firing with a no-argument callable that releases
            it, or with None when another session holds it.
        """
        return self._maildrops.lock(user, device)

    def _committed(self, changed: dict[int, int]) -> None:
        for mailbox_id, modseq in changed.items():
            self.changes.notify(mailbox_id, modseq)

    def _highest_modseqs(self, mailbox_ids: list[int]):
        def work(tx):
            return dict(tx.all("SELECT id, highestmodseq FROM mailboxes WHERE id = ANY(%s)", (mailbox_ids,)))

        return self._db.read(work)

    # -- reading ------------------------------------------------------------

    def list_messages(self, mailbox_id):
        def work(tx):
            rows = tx.all(f"SELECT {RECORD_COLUMNS} FROM messages WHERE mailbox_id = %s ORDER BY uid", (mailbox_id,))
            return [record_from_row(row) for row in rows]

        return self._db.read(work)

    def list_flags(self, mailbox_id):
        def work(tx):
            rows = tx.all("SELECT uid, flags FROM messages WHERE mailbox_id = %s ORDER BY uid", (mailbox_id,))
            return [(uid, flag_set(flags)) for uid, flags in rows]

        return self._db.read(work)

    @staticmethod
    def _select_uids(tx: Transaction, columns: str, mailbox_id: int, uids, lock: str = "") -> list:
        uids = sorted(set(uids))
        if not uids:
            return []
        return tx.all(
            f"SELECT {columns} FROM messages WHERE mailbox_id = %s AND uid = ANY(%s) ORDER BY uid {lock}",
            (mailbox_id, uids),
        )

    def get_records(self, mailbox_id, uids):
        def work(tx):
            return [record_from_row(row) for row in self._select_uids(tx, RECORD_COLUMNS, mailbox_id, uids)]

        return self._db.read(work)

    def get_messages(self, mailbox_id, uids):
        def work(tx):
            rows = self._select_uids(tx, f"{RECORD_COLUMNS}, {STRUCTURE_COLUMNS}", mailbox_id, uids)
            return [(record_from_row(row[:6]), structure_from_row(*row[6:])) for row in rows]

        return self._db.read(work)

    def get_structures(self, mailbox_id, uids):
        def work(tx):
            rows = self._select_uids(tx, f"uid, {STRUCTURE_COLUMNS}", mailbox_id, uids)
            return {row[0]: structure_from_row(*row[1:]) for row in rows}

        return self._db.read(work)

    def fetch_rows(self, mailbox_id, uids, columns):
        selected = ", ".join(["uid", *(_FETCH_COLUMNS[name] for name in columns)])
        # INTERNALDATE comes as its two columns, formatted here.
        date_at = 1 + columns.index("internaldate") if "internaldate" in columns else None

        def work(tx):
            rows = self._select_uids(tx, selected, mailbox_id, uids)
            if date_at is None:
                return [tuple(row) for row in rows]
            return [(*row[:date_at], date_text(row[date_at], row[date_at + 1]), *row[date_at + 2:]) for row in rows]

        return self._db.read(work)

    def count_messages(self, mailbox_id, first_uid, last_uid):
        def work(tx):
            return tx.one(
                "SELECT count(*) FROM messages WHERE mailbox_id = %s AND uid BETWEEN %s AND %s",
                (mailbox_id, first_uid, last_uid),
            )[0]

        return self._db.read(work)

    def open_message(self, mailbox_id, uid):
        opened = self.open_message_now(mailbox_id, uid)
        if opened is not None:
            return defer.succeed(opened)
        key = self._body_keys.get(mailbox_id, uid)
        if key is None:
            d = self._db.read(self._open_work, mailbox_id, uid)
            if self._read_ahead is not None:
                d.addCallback(self._reading_on, mailbox_id, uid)
            return d
        if self._blobs_in_index:
            return self._db.read(self._open_known, mailbox_id, uid, key)
        waiting = None if self._read_ahead is None else self._read_ahead.fetching(key)
        if waiting is None:
            d = self._open_remote(mailbox_id, uid, key)
        else:
            d = waiting.addCallback(lambda _: self._open_fetched(mailbox_id, uid, key))
        self._reading_on(None, mailbox_id, uid)
        return d

    def open_message_now(self, mailbox_id, uid):
        # Only a body whose key this process knows, in the local cache: all
        # else asks the index or the object store.
        key = self._body_keys.get(mailbox_id, uid)
        if key is None or self._open_local is None:
            return None
        opened = self._open_local(key)
        if opened is not None:
            self._reading_on(None, mailbox_id, uid)
        return opened

    def _reading_on(self, opened, mailbox_id, uid):
        """A session reads ``uid``: the bodies after it are fetched ahead."""
        if self._read_ahead is not None:
            self._read_ahead.ahead(self._body_keys.ahead(mailbox_id, uid, self._read_ahead.depth))
        return opened

    def _open_fetched(self, mailbox_id, uid, key):
        opened = self._open_local(key)
        if opened is not None:
            return opened
        return self._open_remote(mailbox_id, uid, key)  # not kept, or its fetch failed

    def _open_remote(self, mailbox_id, uid, key):
        """From the object store, holding no index connection; a missing body is looked up again."""
        def missing(failure):
            failure.trap(BlobMissing)
            self._body_keys.forget(mailbox_id, [uid])
            return self._db.read(self._open_work, mailbox_id, uid)

        return self._db.in_body_thread(self._blobs.open, None, key).addErrback(missing)

    def _open_work(self, tx, mailbox_id, uid):
        generation = self._body_keys.generation()
        rows = tx.all(
            "SELECT uid, blob, size FROM messages WHERE mailbox_id = %s AND uid >= %s ORDER BY uid LIMIT %s",
            (mailbox_id, uid, AHEAD),
        )
        if not rows or rows[0][0] != uid:
            raise MessageExpunged(uid)
        self._body_keys.learn(mailbox_id, rows, generation)
        try:
            return self._blobs.open(tx, rows[0][1])
        except BlobMissing:
            self._body_keys.forget(mailbox_id, [uid])
            if tx.one("SELECT 1 FROM messages WHERE mailbox_id = %s AND uid = %s", (mailbox_id, uid)) is None:
                raise MessageExpunged(uid) from None  # and collected since
            log.error("Body {key} of UID {uid} in mailbox {mailbox_id} is missing",
                      key=rows[0][1], uid=uid, mailbox_id=mailbox_id)
            raise TemporaryFailure(f"the body of UID {uid} is missing") from None

    def _open_known(self, tx, mailbox_id, uid, key):
        try:
            return self._blobs.open(tx, key)
        except BlobMissing:
            # Collected: the message is gone too, or its body is lost.
            self._body_keys.forget(mailbox_id, [uid])
            return self._open_work(tx, mailbox_id, uid)

    # -- changes ------------------------------------------------------------

    @staticmethod
    def _counters(tx: Transaction, mailbox_id: int) -> tuple[int, int]:
        row = tx.one("SELECT uidnext, highestmodseq FROM mailboxes WHERE id = %s", (mailbox_id,))
        if row is None:
            raise NoSuchMailbox(str(mailbox_id))
        return row

    def _store_flags(self, mailbox_id, uids, flags, mode, unchangedsince):
        """
        Under the mailbox's row lock (flags.py), so that with
        ``unchangedsince`` (RFC 7162 3.1.3) nobody changes a message between
        our reading its modseq and our update.
        """
        if mode not in ("set", "add", "remove"):
            return defer.fail(ValueError(mode))
        return self.flag_groups.submit(FlagChange(mailbox_id, tuple(uids), frozenset(flags), mode, unchangedsince))

    def store_flags(self, mailbox_id, uids, flags, mode):
        return self._store_flags(mailbox_id, uids, flags, mode, None).addCallback(lambda outcome: outcome[0])

    def store_flags_unchanged_since(self, mailbox_id, uids, flags, mode, unchangedsince):
        return self._store_flags(mailbox_id, uids, flags, mode, unchangedsince)

    @staticmethod
    def _expunge_work(tx, mailbox_id, uids, counters) -> list[int]:
        """Under the mailbox's row lock (``counters`` from ``_lock_mailboxes``)."""
        if mailbox_id not in counters:
            raise NoSuchMailbox(str(mailbox_id))
        uids = sorted(set(uids))
        if not uids:
            return []
        removed = sorted(
            row[0] for row in tx.all(
                "DELETE FROM messages WHERE mailbox_id = %s AND uid = ANY(%s) RETURNING uid", (mailbox_id, uids)
            )
        )
        if not removed:
            return []
        modseq = counters[mailbox_id][1] = counters[mailbox_id][1] + 1
        tx.execute(
            "INSERT INTO expunged (mailbox_id, uid, modseq) SELECT %s, uid, %s FROM unnest(%s::bigint[]) AS uid"
            " ON CONFLICT (mailbox_id, uid) DO UPDATE SET modseq = excluded.modseq",
            (mailbox_id, modseq, removed),
        )
        tx.execute("UPDATE mailboxes SET highestmodseq = %s WHERE id = %s", (modseq, mailbox_id))
        tx.changed_mailbox(mailbox_id, modseq)
        return removed

    def _forgetting(self, mailbox_id, uids, d):
        """``d``, a write removing ``uids`` (None: any) from the mailbox: their body keys are forgotten after it too."""
        return d.addBoth(lambda result: self._body_keys.forget(mailbox_id, uids) or result)

    def expunge(self, mailbox_id, uids):
        def work(tx):
            return self._expunge_work(tx, mailbox_id, uids, self._lock_mailboxes(tx, [mailbox_id]))

        uids = list(uids)
        self._body_keys.forget(mailbox_id, uids)
        return self._forgetting(mailbox_id, uids, self._db.write(work))

    def _copy_work(self, tx, mailbox_id, uids, dest_mailbox_id, counters) -> list[tuple[int, int]]:
        """
        Under both mailboxes' row locks: the source's keeps its messages
        from being expunged between the two statements here.  Bodies are
        shared by key, so a copy writes no bytes.
        """
        if dest_mailbox_id not in counters:
            raise NoSuchMailbox(str(dest_mailbox_id))
        present = [row[0] for row in self._select_uids(tx, "uid", mailbox_id, uids)]
        if not present:
            return []
        uidnext, modseq = counters[dest_mailbox_id]
        modseq += 1
        tx.execute(
            f"INSERT INTO messages (mailbox_id, uid, flags, internaldate, tzoffset, size, modseq, blob,"
            f" {STRUCTURE_COLUMNS})"
            f" SELECT %s, %s + row_number() OVER (ORDER BY uid) - 1, flags, internaldate, tzoffset, size, %s, blob,"
            f" {STRUCTURE_COLUMNS} FROM messages WHERE mailbox_id = %s AND uid = ANY(%s)",
            (dest_mailbox_id, uidnext, modseq, mailbox_id, present),
        )
        counters[dest_mailbox_id] = [uidnext + len(present), modseq]
        self._set_counters(tx, counters, [dest_mailbox_id])
        tx.changed_mailbox(dest_mailbox_id, modseq)
        return list(zip(present, range(uidnext, uidnext + len(present))))

    def copy(self, mailbox_id, uids, dest_mailbox_id):
        def work(tx):
            counters = self._lock_mailboxes(tx, [mailbox_id, dest_mailbox_id])
            return self._copy_work(tx, mailbox_id, uids, dest_mailbox_id, counters)

        return self._db.write(work)

    def move(self, mailbox_id, uids, dest_mailbox_id):
        def work(tx):
            counters = self._lock_mailboxes(tx, [mailbox_id, dest_mailbox_id])
            pairs = self._copy_work(tx, mailbox_id, uids, dest_mailbox_id, counters)
            self._expunge_work(tx, mailbox_id, [source for source, _ in pairs], counters)
            return pairs

        uids = list(uids)
        self._body_keys.forget(mailbox_id, uids)
        return self._forgetting(mailbox_id, uids, self._db.write(work))

    def changes_since(self, mailbox_id, modseq):
        return self._changes_memo.ask(
            mailbox_id, modseq, lambda: self._db.snapshot(self._changes_work, mailbox_id, modseq)
        )

    def _changes_work(self, tx, mailbox_id, modseq):
        uidnext, highestmodseq = self._counters(tx, mailbox_id)
        if modseq >= highestmodseq:
            updated = expunged = ()
        else:
            updated = tuple(
                record_from_row(row) for row in tx.all(
                    f"SELECT {RECORD_COLUMNS} FROM messages WHERE mailbox_id = %s AND modseq > %s ORDER BY uid",
                    (mailbox_id, modseq),
                )
            )
            expunged = tuple(
                row[0] for row in tx.all(
                    "SELECT uid FROM expunged WHERE mailbox_id = %s AND modseq > %s ORDER BY uid",
                    (mailbox_id, modseq),
                )
            )
        return ChangeSet(mailbox_id=mailbox_id, highestmodseq=highestmodseq, uidnext=uidnext,
                         updated=updated, expunged=expunged)

    def claim_recent(self, mailbox_id):
        def work(tx):
            # Sessions on other nodes ask too; only the first has anything
            # to claim, and the others take no row lock.
            row = tx.one("SELECT first_recent_uid, uidnext, highestmodseq FROM mailboxes WHERE id = %s",
                         (mailbox_id,))
            if row is None:
                raise NoSuchMailbox(str(mailbox_id))
            if row[0] >= row[1]:
                return frozenset(), row[2]
            claimed = tx.one(
                "UPDATE mailboxes AS m SET first_recent_uid = m.uidnext"
                " FROM (SELECT id, first_recent_uid FROM mailboxes WHERE id = %s FOR UPDATE) AS before"
                " WHERE m.id = before.id AND before.first_recent_uid < m.uidnext"
                " RETURNING before.first_recent_uid, m.uidnext, m.highestmodseq",
                (mailbox_id,),
            )
            if claimed is None:
                return frozenset(), row[2]  # another session claimed them first
            return frozenset(
                row[0] for row in tx.all(
                    "SELECT uid FROM messages WHERE mailbox_id = %s AND uid >= %s AND uid < %s",
                    (mailbox_id, claimed[0], claimed[1]),
                )
            ), claimed[2]

        return self._recent.claim(mailbox_id, lambda: self._db.write(work))

    def count_recent(self, mailbox_id):
        def work(tx):
            row = tx.one(
                "SELECT (SELECT count(*) FROM messages WHERE mailbox_id = m.id AND uid >= m.first_recent_uid)"
                " FROM mailboxes AS m WHERE id = %s",
                (mailbox_id,),
            )
            if row is None:
                raise NoSuchMailbox(str(mailbox_id))
            return row[0]

        return self._db.read(work)
