"""
The embedded store: an index in SQLite, message bodies as immutable files.

Layout under the store root::

    index.sqlite            the index (WAL); can be rebuilt from the rest
    uidvalidity             last UIDVALIDITY issued (a counter, not the clock)
    reserve                 room kept for index writes on a full disk (reserve.py)
    unsynced.<pid>.<n>      mailboxes with flag changes not yet fsynced (unsynced.py)
    run/write.lock          taken around every write transaction (writelock.py)
    run/maildrop.<hash>     a POP3 maildrop held by a session (maildrops.py)
    run/peer.<pid>.<n>      a serving process's socket for change notices (peers.py)
    tmp/                    bodies being written
    mail/<id>/mailbox.json  owner, name, UIDVALIDITY, special use
    mail/<id>/uidnext       a UIDNEXT a rebuild must not go below, in a slot
                            file (durable.py) rewritten in place
    mail/<id>/<uid>         one body per file, CRLF, never changed

Mailbox names never become paths: directories are named by the index's id.
Durability (DESIGN.md): a body is written to tmp/ (or an LMTP spool file is
linked there), fsynced, linked into place, and the index row is committed
while the directory is fsynced; the caller is answered after both.  A crash
leaves no message or a whole one.  The UID a message
gets is decided inside the write transaction, so two processes delivering at
once never share one.

Which body files count: those the index names.  A crash can leave others (a
body renamed in before a commit that never came, the source of a committed
move before its unlink); the serving process sweeps them at start, under the
write lock (maintenance.py), so the files say what the index committed and a
rebuild from them gives the same mailboxes back.  An expunge commits its
UIDs as under way, unlinks their bodies (freeing the room its commit needs on
a full disk, as Maildir's unlink does), then drops the rows; whatever a crash
interrupts is finished when the store is next opened (``expunges.py``).

Several processes may serve one store at once (a node's workers), beside
CLI tools such as ``gateway deliver``: every write transaction takes the
store's write lock (``writelock.py``), so the UIDs and mod-sequences a
transaction reads and raises are its own; each commit is told to the other
processes at once (``peers.py``), and a POP3 maildrop is held against
sessions of every process (``maildrops.py``).  What each process keeps in
memory (the memo of ``changes_since``, the mailboxes with nothing
\\Recent) is forgotten at another process's commit.

Two connections: reads run on the calling (reactor) thread on a read-only
connection and answer at once (``reads.py``; mailboxes in ``mailboxes.py``);
writes go to this process's one writer
(``writer.py``), which commits them in groups on its own thread and answers
later.  Bodies are spooled, fsynced and parsed by worker threads before
their write is queued (``delivery.py``), so neither a big message nor a
disk flush ever holds the reactor.  Code that runs inside a write request
reaches the write connection through ``self._db``, since the writer thread
(or, without threads, the request running) is the only one that sees it.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from twisted.internet.interfaces import IReactorThreads
from twisted.python.failure import Failure
from zope.interface import implementer

from gateway.durable import create_slot_file, read_slot_file, write_atomic, write_slot_file
from gateway.store.changes import ChangeFeed
from gateway.store.interfaces import (
    IGroupCommitStore,
    IImportableStore,
    IMailStore,
    IStoreDump,
    MessageExpunged,
    NoSuchMailbox,
)
from gateway.store.model import ChangeSet, Inbox
from gateway.store.sqlite.delivery import DeliveryMixin
from gateway.store.sqlite.devices import DevicesMixin
from gateway.store.sqlite.dump import DumpMixin
from gateway.store.sqlite.expunges import ExpungesMixin
from gateway.store.sqlite.mailboxes import MailboxesMixin
from gateway.store.sqlite.onestep import select_rows, uids_where
from gateway.store.sqlite.peers import Peers
from gateway.store.sqlite.maildrops import MaildropLocks
from gateway.store.sqlite.maintenance import MaintenanceMixin
from gateway.store.sqlite.reads import ReadsMixin
from gateway.store.sqlite.reserve import Reserve
from gateway.store.encoding import flag_changes, record_from_row
from gateway.store.sqlite.rows import (
    MAILBOX_LIST_SCHEMA,
    QUOTA_SCHEMA,
    RECORD_COLUMNS,
    SCHEMA,
    STRUCTURE_COLUMNS,
    WITH_STRUCTURES,
    split_structures,
)
from gateway.store.sqlite.spoolthreads import SpoolThreads
from gateway.store.sqlite.structures import StructuresMixin
from gateway.store.sqlite.summaries import add_summaries
from gateway.store.sqlite.synchronous import deferred
from gateway.store.sqlite.unsynced import UnsyncedRecord
from gateway.store.sqlite.writelock import WriteLock
from gateway.store.sqlite.requests import store_error
from gateway.store.sqlite.writer import Writer

# Deliveries spooled (written and fsynced) at once at most.
SPOOL_THREADS = 8
# Batches of structures parsed at once at most.
PARSE_THREADS = 2


def _connect(index: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(index, timeout=30, isolation_level=None, check_same_thread=False)
    # A request's savepoint journal (the index pages it changes) past 64 KiB,
    # and a sort too big for the cache, would go to a file in the temporary
    # directory: another file system, whose full disk would refuse a write
    # the store has room for.  In memory a journal holds at most the pages
    # one request changes (a flag change on a whole mailbox: its rows), a
    # sort the rows it sorts.
    connection.execute("PRAGMA temp_store=MEMORY")
    return connection


@implementer(IMailStore, IImportableStore, IGroupCommitStore, IStoreDump)
class SQLiteStore(ReadsMixin, StructuresMixin, MailboxesMixin, DeliveryMixin, ExpungesMixin, DevicesMixin,
                  DumpMixin, MaintenanceMixin):
    """
    The embedded default backend.  ``path`` is the store root directory.

    With a reactor that runs threads, writes go to the writer thread and
    their Deferreds fire later; without one (no reactor, a test clock) each
    write runs at once on the calling thread, committed with
    ``synchronous=FULL``, and its Deferred has fired on return.
    ``flag_durability`` is ``[store] flag_durability``; ``parse_at_delivery``
    false is ``[store] parse = "first-fetch"``.  ``serving`` is for the
    server's own long-lived store: opening it sweeps what a crash left
    (L{sweep}) and keeps the disk reserve.
    """

    def __init__(self, path, reactor=None, poll_interval: float = 0.5, flag_durability: str = "batched",
                 serving: bool = False, parse_at_delivery: bool = True):
        self.root = Path(path)
        self._parse_at_delivery = parse_at_delivery
        self._mail = self.root / "mail"
        self._mailbox_dirs: dict[int, Path] = {}
        # (mailbox id, UID) -> the readers waiting for its structure's parse.
        self._parsing: dict = {}
        self._tmp = self.root / "tmp"
        self.spool_directory = self._tmp
        # What live processes hold: locks, sockets (never data).
        self._run = self.root / "run"
        self._maildrops = MaildropLocks(self._run)
        self._reserve = Reserve(self.root / "reserve")
        # What opening the store put right, until a sweep reports it.
        self._recovered: list[str] = []
        for directory in (self.root, self._mail, self._tmp, self._run):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        index = self.root / "index.sqlite"
        self._wal = Path(f"{index}-wal")
        fresh = not index.exists()
        threads = reactor is not None and IReactorThreads.providedBy(reactor)
        self._write_db = _connect(index)
        lock = WriteLock(self._run / "write.lock")
        self._writer = Writer(self._write_db, self._sync_wal, UnsyncedRecord(self.root), self._written,
                              reactor if threads else None, flag_durability,
                              before_write=lambda: self._reserve.before_index_write(), lock=lock,
                              arriving=lambda: self._workers.pending() if self._workers is not None else 0)
        with self._writer.held():
            self._write_db.execute("PRAGMA journal_mode=WAL")
            self._write_db.executescript(SCHEMA)
            # Before the triggers on messages: the split makes the table anew.
            split_structures(self._write_db)
            add_summaries(self._write_db)
            self._write_db.executescript(QUOTA_SCHEMA)
            self._write_db.executescript(MAILBOX_LIST_SCHEMA)
        self._read_db = _connect(index)
        # The reactor thread's connection never writes, so never waits for a
        # lock or a disk flush.
        self._read_db.execute("PRAGMA query_only=1")
        # Spooling and fsyncing arriving messages.  An fsync mostly waits on
        # the disk, and the fsyncs of concurrent deliveries share the file
        # system's journal commits: more threads than cores.
        self._workers = SpoolThreads(reactor, SPOOL_THREADS, "store-spool") if threads else None
        # Parsing structures readers ask for (structures.py): threads of
        # their own, so that no delivery queues behind a big first FETCH,
        # and the writer, waiting for the deliveries being spooled, does
        # not wait for parses.  Parsing is Python, one core at a time.
        self._parsers = SpoolThreads(reactor, PARSE_THREADS, "store-parse") if threads else None
        self._data_version = None
        # What changes_since answered, per (mailbox id, modseq) (reads.py).
        self._changes_memo: dict[tuple[int, int], ChangeSet] = {}
        # Mailboxes with no \\Recent message left to claim, under the same rule.
        self._nothing_recent: set[int] = set()
        # Mailboxes whose \\Recent messages a claim in the writer's queue takes.
        self._claiming: set[int] = set()
        # \\Recent messages APPENDs claimed, for the next claim_recent here.
        self._claimed_here: dict[int, frozenset[int]] = {}
        self._memo_version = None
        # With a reactor, data_version is read once per reactor turn: a
        # delivery wakes a thousand sessions in one turn.
        self._reactor = reactor
        self._version_fresh = False
        self._mail_path = str(self._mail)
        self._lists_data_version = None
        # Other processes serving (or delivering into) this store tell us of
        # their commits, and we of ours (peers.py).
        self._peers = Peers(self._run / "peers")
        self.changes = ChangeFeed(reactor, self._poll_highestmodseq, poll_interval, self._poll_mailbox_lists,
                                  listen=self._listen)
        if serving:
            self._reserve.keep()
        if fresh and any(self._mail.iterdir()):
            self.rebuild_index()
        else:
            # Cheap when there is nothing to finish: every process does it.
            self._recovered = self._finish_interrupted_expunges()
            if serving:
                self.sweep()
        self.recover_unsynced()

    def close(self):
        self.changes.stop_polling()
        closed = self._writer.close()

        def release(result):
            for threads in (self._workers, self._parsers):
                if threads is not None and threads.started:
                    threads.stop()
            self._read_db.close()
            self._peers.close()
            return result

        return closed.addBoth(release)

    def _write(self):
        """A write transaction on the opening thread, before the writer starts (``Writer.transaction``)."""
        return self._writer.transaction()

    # -- connections and the writer -----------------------------------------

    @property
    def _db(self) -> sqlite3.Connection:
        """The write connection inside a write request, else the read one."""
        return self._write_db if self._writer.writing() else self._read_db

    def _written(self, requests, changed: bool) -> None:
        """A group was committed or refused: on the reactor thread, before it is answered."""
        if changed:
            self._forget()
            self._version_fresh = False
        notices: dict[int, int] = {}
        users: set[str] = set()
        for request in requests:
            if request.step is not None and not isinstance(request.outcome, Failure):
                for mailbox_id, modseq in request.step.notices.items():
                    notices[mailbox_id] = max(modseq, notices.get(mailbox_id, 0))
                users |= request.step.users
        self._announce(notices, users)

    def _announce(self, notices: dict[int, int], users) -> None:
        """Tell this process's sessions, and the store's other processes, of committed changes."""
        if not notices and not users:
            return
        for mailbox_id, modseq in notices.items():
            self.changes.notify(mailbox_id, modseq)
        for user in users:
            self.changes.notify_mailboxes(user)
        self._peers.send(notices, users)

    def _listen(self):
        self._peers.listen(self._reactor, self._heard)
        return self._peers.stop

    def _heard(self, notices: dict[int, int], users) -> None:
        """Another process committed: what we memoised may be stale, and our sessions are told."""
        self._forget()
        self._version_fresh = False
        for mailbox_id, modseq in notices.items():
            self.changes.notify(mailbox_id, modseq)
        for user in users:
            self.changes.notify_mailboxes(user)

    def _sync_wal(self) -> None:
        """Make what was committed with synchronous=NORMAL durable."""
        try:
            fd = os.open(self._wal, os.O_RDONLY)
        except FileNotFoundError:
            return  # checkpointed and removed: on disk already
        try:
            # The frames and the size that reads them back, not the WAL's
            # times: a WAL rewritten in place after a checkpoint keeps its
            # size, and its sync is then a flush of data alone, not also a
            # commit of the file system's journal (paired runs, 4 LMTP
            # connections: 1.06x, 16 of 26 rounds won).
            os.fdatasync(fd)
        finally:
            os.close(fd)

    # -- mailbox metadata files ---------------------------------------------

    def _mailbox_dir(self, mailbox_id: int) -> Path:
        # Memoised (a few thousand at most): a delivery asks on the writer
        # thread, where making a Path is dear.
        directory = self._mailbox_dirs.get(mailbox_id)
        if directory is None:
            if len(self._mailbox_dirs) >= 4096:
                self._mailbox_dirs.clear()
            directory = self._mailbox_dirs[mailbox_id] = self._mail / str(mailbox_id)
        return directory

    def _write_mailbox_meta(self, mailbox_id: int, **fields) -> None:
        """Identity fields of mailbox.json, rewritten whole (new blocks: not for deleting)."""
        directory = self._mailbox_dir(mailbox_id)
        meta_path = directory / "mailbox.json"
        try:
            meta = json.loads(meta_path.read_text())
        except FileNotFoundError:
            meta = {}
        meta.update(fields)
        write_atomic(meta_path, json.dumps(meta, sort_keys=True).encode())

    def _recorded_uidnext(self, mailbox_id: int) -> int:
        """
        The UIDNEXT a rebuild will not go below: from the uidnext slot file,
        or from the ``uid_floor`` of an older store's mailbox.json.
        """
        directory = self._mailbox_dir(mailbox_id)
        try:
            recorded = int(read_slot_file(directory / "uidnext") or 1)
        except FileNotFoundError:
            recorded = 1
        try:
            floor = json.loads((directory / "mailbox.json").read_text()).get("uid_floor", 0)
        except (FileNotFoundError, ValueError):
            floor = 0
        return max(recorded, floor + 1)

    def _record_uidnext(self, mailbox_id: int, uidnext: int) -> None:
        """
        Make sure no rebuild hands out a UID below ``uidnext`` again, even
        once the bodies of the highest UIDs are gone: rewritten in place, so
        this works on a full disk; made only where an older store has none.
        """
        if self._recorded_uidnext(mailbox_id) >= uidnext:
            return
        path = self._mailbox_dir(mailbox_id) / "uidnext"
        try:
            write_slot_file(path, b"%d" % uidnext)
        except FileNotFoundError:
            create_slot_file(path, b"%d" % uidnext)

    # -- messages -----------------------------------------------------------

    def _counters(self, mailbox_id: int) -> tuple[int, int]:
        row = self._db.execute("SELECT uidnext, highestmodseq FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()
        if row is None:
            raise NoSuchMailbox(str(mailbox_id))
        return row

    def _counters_of(self, mailbox: int | Inbox) -> tuple[int, int, int]:
        """The id, UIDNEXT and HIGHESTMODSEQ of ``mailbox``, an id or an L{Inbox}, in one read."""
        if not isinstance(mailbox, Inbox):
            return (mailbox, *self._counters(mailbox))
        row = self._db.execute(
            "SELECT id, uidnext, highestmodseq FROM mailboxes WHERE user = ? AND name = 'INBOX'", (mailbox.user,)
        ).fetchone()
        if row is None:
            raise NoSuchMailbox("INBOX")
        return row

    @deferred
    def store_flags(self, mailbox_id, uids, flags, mode):
        return self._store_flags(mailbox_id, uids, flags, mode, None).addCallback(lambda outcome: outcome[0])

    def _store_flags(self, mailbox_id, uids, flags, mode, unchangedsince):
        """
        Change flags, all in one write request, so that with
        ``unchangedsince`` (RFC 7162 3.1.3) nobody changes a message between
        our reading its modseq and our update.  A Deferred firing with
        (changed records, UIDs refused because they changed after
        ``unchangedsince``).  A flag change is of the batched durability
        tier (``[store] flag_durability``).
        """
        flags = frozenset(flags)
        if mode not in ("set", "add", "remove"):
            raise ValueError(mode)
        uids = list(uids)

        def run(step):
            _, modseq = self._counters(mailbox_id)
            modseq += 1
            rows = select_rows(self._db, RECORD_COLUMNS, mailbox_id, uids)
            changed, modified, by_flags = flag_changes(rows, flags, mode, unchangedsince, modseq)
            if not changed:
                return [], modified
            # One UPDATE for each flag list the change makes, most often one.
            for text, same in by_flags.items():
                where, listed = uids_where(same)
                self._db.execute(
                    f"UPDATE messages SET flags = ?, modseq = ? WHERE mailbox_id = ? AND {where}",
                    (text, modseq, mailbox_id, listed),
                )
            self._db.execute("UPDATE mailboxes SET highestmodseq = ? WHERE id = ?", (modseq, mailbox_id))
            step.notify(mailbox_id, modseq)
            return changed, modified

        return self._writer.submit(run, durable=False)

    def _copy(self, step, mailbox_id: int, uids, dest_mailbox_id: int) -> tuple[list[tuple[int, int]], int]:
        rows = self._select_uids(
            f"{RECORD_COLUMNS}, {STRUCTURE_COLUMNS}", mailbox_id, uids, WITH_STRUCTURES
        )
        uidnext, modseq = self._counters(dest_mailbox_id)
        modseq += 1
        pairs = []
        source_dir = self._mailbox_dir(mailbox_id)
        for row in rows:
            record = record_from_row(row[:6])
            new_uid = uidnext
            uidnext += 1
            try:
                self._place(step, source_dir / str(record.uid), dest_mailbox_id, new_uid)
            except FileNotFoundError:
                raise MessageExpunged(record.uid) from None
            # A copy of a message not yet parsed is parsed when asked for, as it is.
            columns = None if row[6] is None else row[6:]
            self._insert_message(
                dest_mailbox_id, new_uid, record.flags, record.internaldate, record.size, modseq, columns
            )
            pairs.append((record.uid, new_uid))
        if pairs:
            self._db.execute(
                "UPDATE mailboxes SET uidnext = ?, highestmodseq = ? WHERE id = ?",
                (uidnext, modseq, dest_mailbox_id),
            )
        return pairs, modseq

    @deferred
    def copy(self, mailbox_id, uids, dest_mailbox_id):
        uids = list(uids)

        def run(step):
            pairs, modseq = self._copy(step, mailbox_id, uids, dest_mailbox_id)
            if pairs:
                step.notify(dest_mailbox_id, modseq)
            return pairs

        return self._writer.submit(run)

    @deferred
    def move(self, mailbox_id, uids, dest_mailbox_id):
        # Linked into the destination, committed, and only then unlinked at
        # the source: a crash at any point leaves the message where the
        # index says it is (a source body the index no longer names is
        # swept at start).
        uids = list(uids)

        def run(step):
            pairs, dest_modseq = self._copy(step, mailbox_id, uids, dest_mailbox_id)
            removed, source_modseq = self._expunge(step, mailbox_id, [source for source, _ in pairs])
            if pairs:
                step.after_commit(lambda: self._unlink_bodies(mailbox_id, removed))
                step.notify(dest_mailbox_id, dest_modseq)
                step.notify(mailbox_id, source_modseq)
            return pairs

        return self._writer.submit(run)

    @deferred
    def lock_maildrop(self, user, device=None):
        try:
            return self._maildrops.lock(user, device)
        except OSError as e:
            raise store_error(e) from e

    @deferred
    def claim_recent(self, mailbox_id):
        # What an APPEND of this process claimed with its message.
        taken = frozenset(self._claimed_here.pop(mailbox_id, ()))
        # Every session idling on a mailbox asks after each delivery; only
        # the first has anything to claim, and the others need no write lock.
        self._check_memo()
        # RFC 3501 2.3.2: one session sees a message as recent.  A claim
        # already queued takes, when it runs, every message there is now.
        if mailbox_id in self._nothing_recent or mailbox_id in self._claiming:
            return taken
        row = self._db.execute("SELECT first_recent_uid, uidnext FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()
        if row is not None and row[0] >= row[1]:
            self._nothing_recent.add(mailbox_id)
            return taken

        def claimed(result):
            self._claiming.discard(mailbox_id)
            if isinstance(result, frozenset):
                return result | taken
            # Nothing was claimed: what this process's APPENDs claimed waits
            # for the next claim, which the session makes on its next command.
            if taken:
                self._keep_claimed(mailbox_id, taken)
            return result

        self._claiming.add(mailbox_id)
        return self._writer.submit(lambda step: self._claim(mailbox_id), durable=False).addBoth(claimed)

    def _claim(self, mailbox_id: int) -> frozenset[int]:
        """Inside a write request: take every \\Recent message of the mailbox not yet taken."""
        row = self._db.execute("SELECT first_recent_uid, uidnext FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()
        if row is None:
            raise NoSuchMailbox(str(mailbox_id))
        first, uidnext = row
        if first >= uidnext:
            return frozenset()
        self._db.execute("UPDATE mailboxes SET first_recent_uid = ? WHERE id = ?", (uidnext, mailbox_id))
        uids = self._db.execute("SELECT uid FROM messages WHERE mailbox_id = ? AND uid >= ?", (mailbox_id, first))
        return frozenset(row[0] for row in uids)

    # -- IMAP extensions ----------------------------------------------------

    @deferred
    def store_flags_unchanged_since(self, mailbox_id, uids, flags, mode, unchangedsince):
        return self._store_flags(mailbox_id, uids, flags, mode, unchangedsince)
