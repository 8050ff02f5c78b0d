"""
A process's writer of an SQLite store: write requests go through a queue to one
thread, which runs them in groups, one transaction and one commit a group.

Why a thread: a commit with ``synchronous=FULL`` is an fsync, and an fsync on
the reactor thread stops every session for as long as the disk takes.  Here
the reactor thread only queues a request and gets its answer later (through
``callFromThread``), and reads go on meanwhile on a connection of their own
(WAL: readers never wait for the writer).  While one group commits, the
requests that arrive queue up and become the next group: under load, many
writes share one fsync.  A group about to start waits a moment
(``GATHER_SECONDS``) for the requests of bodies the spool threads are
writing at that time, as PostgreSQL's ``commit_delay`` waits only while
other transactions are open: a lone request never waits.

Other processes may write the store too (a node's other workers, the CLI):
each group's transaction is run under the store's cross-process write lock
(``writelock.py``), which this thread waits for in the kernel and gets the
moment the other writer commits.

Durability tiers (DESIGN.md): a group of flag changes only commits with
``synchronous=NORMAL``, visible to every reader at once, and the WAL is
fsynced within ``FLAG_SYNC_DELAY`` unless a durable group (which syncs the
whole WAL, earlier frames included) comes first.  A group holding anything
acknowledged as durable (a delivery, APPEND, COPY, MOVE, an expunge)
commits with ``synchronous=NORMAL`` too, and the writer fsyncs the WAL right
after, once it has let the write lock go, and answers after that: the lock
is held for the statements, not for the disk, so the writers of a node's
processes no longer queue behind each other's flushes.  Before any such
commit the mailboxes it changes are recorded durably (``unsynced.py``), so
that a crash that loses a commit other sessions saw cannot make their
mod-sequences go down nor a UID be given twice.  What the record cannot
cover commits with ``synchronous=FULL``, synced before anyone sees it: a
mailbox made, renamed or deleted, a group of more than ``UID_MARGIN`` rows.
``immediate`` makes every group FULL.

The directories a group added entries to (a body linked in place) are
fsynced beside its COMMIT, on helper threads, and so are other small
durable writes a request asks for (``Step.beside_commit``: a mailbox's
UIDNEXT slot): the disk flushes overlap rather than follow each other, and
nothing is answered before all are done.  A body is fsynced before it is linked, so a crash between the two
flushes leaves either a complete body no commit took (removed at start as
above UIDNEXT) or a committed row whose name was lost (expunged at start as
a row without a body); neither was acknowledged.  A directory fsync that
fails after the commit fails the group's requests all the same: the sender
tries again, better twice than lost.

Each request runs inside a savepoint, so a refusal (no such mailbox, a name
taken) undoes that request alone and the group goes on.  Any other failure
(a full disk, an I/O error) undoes the whole group, files included; the
request that failed gets the error and the others run again in a new group.
A failed COMMIT fails every request of the group, except that on a full disk
the requests that free space (expunges) run again alone: a full disk must
not stop a user from deleting mail.

Without threads (no reactor able to run them: tests, a Clock), ``submit``
runs the request at once on the calling thread, as a group of one committed
with ``synchronous=FULL``, and its Deferred has fired on return.
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from concurrent.futures import Future, ThreadPoolExecutor
from time import monotonic

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.durable import fsync_dir
from gateway.store.interfaces import StoreFull, TemporaryFailure
from gateway.store.sqlite.requests import Request, Step, refusal, store_error
from gateway.store.sqlite.unsynced import UID_MARGIN
from gateway.store.sqlite.writelock import WriteLock

log = Logger()

# A flag change committed with synchronous=NORMAL reaches the disk at most
# this long after (well inside the second DESIGN.md promises, however slow
# the fsync itself).
FLAG_SYNC_DELAY = 0.25

# The record of unsynced flag changes is emptied once the writer has had
# nothing to do for this long (unsynced.py: it keeps its mailboxes meanwhile).
RELEASE_RECORD_AFTER = 2.0

# Directories fsynced at once beside a commit, at most.
DIRECTORY_SYNC_THREADS = 4

# Requests in one transaction at most: a group holds the write lock, and a
# process outside (the CLI) waits for it.
MAX_GROUP = 256

# Longest a group waits for the write requests of bodies being spooled
# meanwhile (each follows its spool within a reactor turn), so that
# concurrent deliveries and APPENDs share one transaction and one flush.
# A spool's body fsync takes up to a few milliseconds on a busy disk: a
# millisecond let many of them miss the group (4 LMTP connections on two
# processes, 4 alternating runs, medians of their last rounds: 1 ms 708
# messages a second at 1,860 us of CPU each, 3 ms 813 at 1,600).
GATHER_SECONDS = 0.003

_STOP = object()


class Writer:
    """
    The write side of one SQLite store.  ``connection`` is its own write
    connection; ``sync_wal`` fsyncs the WAL file; ``unsynced`` is the
    L{UnsyncedRecord} of this process; ``on_done(requests, changed)`` runs
    on the reactor thread after each group, before any of its Deferreds
    fires (the store forgets its memos and announces changes there).
    """

    def __init__(self, connection: sqlite3.Connection, sync_wal: Callable[[], None], unsynced,
                 on_done: Callable[[list[Request], bool], None], reactor=None,
                 flag_durability: str = "batched", before_write: Callable[[], None] = lambda: None,
                 lock: WriteLock | None = None, arriving: Callable[[], int] = lambda: 0):
        self._db = connection
        # Taken around each transaction: other processes' writers wait in
        # the kernel, not in SQLite's sleeping busy handler (writelock.py).
        self._lock = lock
        self._sync_wal = sync_wal
        self._unsynced = unsynced
        # Called before each transaction (the store's disk reserve).
        self._before_write = before_write
        self._on_done = on_done
        # How many requests are on their way (bodies being spooled).
        self._arriving = arriving
        self._reactor = reactor
        # Without a thread nothing would sync a NORMAL commit later.
        self._immediate = flag_durability == "immediate" or reactor is None
        self._local = threading.local()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed: defer.Deferred | None = None
        self._synchronous: str | None = None
        # monotonic() of the first NORMAL commit the disk may not have yet.
        self._unsynced_since: float | None = None
        # Fsyncs directories beside a commit; made with the writer thread.
        self._directory_syncs: ThreadPoolExecutor | None = None

    def writing(self) -> bool:
        """Whether this thread is running a write request now."""
        return getattr(self._local, "writing", False)

    # -- the reactor side --------------------------------------------------

    def submit(self, run: Callable[[Step], object], durable: bool = True, frees_space: bool = False):
        """
        Run ``run(step)`` in a write transaction; a Deferred firing with its
        result once committed (and durable, for ``durable`` requests).
        """
        return self.submit_together([(run, durable, frees_space)])[0]

    def submit_together(self, runs: Iterable[tuple[Callable[[Step], object], bool, bool]]) -> list[defer.Deferred]:
        """Several requests, in order, in one group."""
        requests = [Request(run, durable, frees_space) for run, durable, frees_space in runs]
        if self._closed is not None:
            for request in requests:
                request.deferred.errback(TemporaryFailure("the store is closed"))
        elif self._reactor is None:
            self._local.writing = True
            try:
                changed = self._run_groups(requests)
            finally:
                self._local.writing = False
            self._finish(requests, changed)
        else:
            if self._thread is None:
                # Started on first use, not when the store is built: twistd
                # forks to daemonize after building the service.
                self._directory_syncs = ThreadPoolExecutor(DIRECTORY_SYNC_THREADS, thread_name_prefix="store-dirsync")
                self._thread = threading.Thread(target=self._loop, name="store-writer", daemon=True)
                self._thread.start()
            self._queue.put(requests)
        return [request.deferred for request in requests]

    @contextlib.contextmanager
    def transaction(self):
        """
        A write transaction on the calling thread, committed with
        ``synchronous=FULL``, for what the store does while it opens (the
        sweep, a rebuild, a recovery) before the writer thread starts.
        Yields the L{Step}; a backend failure is raised as the contract's
        error, with the step's file changes undone.
        """
        assert self._thread is None, "the writer thread owns the write connection"
        self._local.writing = True
        step = Step(self._db)
        try:
            with self.held():
                self._before_write()
                self._set_synchronous("FULL")
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                except sqlite3.Error as e:
                    raise TemporaryFailure(f"index is busy: {e}") from e
                try:
                    yield step
                    for directory in step.directories:
                        fsync_dir(directory)
                    for action in step.beside.values():
                        action()
                    self._db.execute("COMMIT")
                except BaseException as e:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    step.roll_back()
                    if isinstance(e, (OSError, sqlite3.Error)):
                        raise store_error(e) from e
                    raise
            self._synced()
            for action in step.committed:
                action()
        finally:
            self._local.writing = False

    @contextlib.contextmanager
    def held(self):
        """The cross-process write lock (blocking: never on a reactor); writes outside a request take it too."""
        self._acquire()
        try:
            yield
        finally:
            if self._lock is not None:
                self._lock.release()

    def _acquire(self) -> None:
        if self._lock is not None:
            try:
                self._lock.acquire()
            except OSError as e:
                raise store_error(e) from e

    def close(self) -> defer.Deferred:
        """Finish what is queued, sync, close the write connection."""
        if self._closed is None:
            self._closed = defer.Deferred()
            if self._thread is None:
                self._shut()
                self._closed.callback(None)
            else:
                self._queue.put(_STOP)
        return self._closed

    def _finish(self, requests: list[Request], changed: bool) -> None:
        self._on_done(requests, changed)
        for request in requests:
            if isinstance(request.outcome, Failure):
                request.deferred.errback(request.outcome)
            else:
                request.deferred.callback(request.outcome)

    # -- the writer thread -------------------------------------------------

    def _loop(self) -> None:
        self._local.writing = True
        while True:
            batch = self._take()
            if batch is None:
                self._idle()
                continue
            stop = _STOP in batch
            requests = [r for r in batch if r is not _STOP]
            if requests:
                try:
                    changed = self._run_groups(requests)
                except Exception:
                    # A fault of the writer itself: answer, and keep writing.
                    log.failure("Store writer failed")
                    self._roll_back(requests)
                    self._fail(requests, TemporaryFailure("store writer failed"))
                    changed = True
                self._reactor.callFromThread(self._finish, requests, changed)
            if stop:
                self._shut()
                self._reactor.callFromThread(self._closed.callback, None)
                return

    def _take(self) -> list | None:
        """The next group (None when a flag sync, or emptying the record of them, is due first)."""
        timeout = None
        if self._unsynced_since is not None:
            timeout = max(0.0, self._unsynced_since + FLAG_SYNC_DELAY - monotonic())
        elif self._unsynced.mailboxes:
            timeout = RELEASE_RECORD_AFTER
        try:
            first = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        batch = [_STOP] if first is _STOP else list(first)
        deadline = None
        while len(batch) < MAX_GROUP and _STOP not in batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                if not self._arriving():
                    break
                deadline = deadline or monotonic() + GATHER_SECONDS
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - monotonic()))
                except queue.Empty:
                    break
            batch.extend([_STOP] if item is _STOP else item)
        return batch

    def _shut(self) -> None:
        self._sync_flags()
        if self._unsynced_since is None:
            self._unsynced.close()
        self._db.close()
        if self._lock is not None:
            self._lock.close()
        if self._directory_syncs is not None:
            self._directory_syncs.shutdown(wait=False)

    def _idle(self) -> None:
        if self._unsynced_since is not None:
            self._sync_flags()
            return
        try:
            self._unsynced.release()
        except OSError:
            log.failure("Cannot empty the record of unsynced flag changes")

    def _sync_flags(self) -> None:
        if self._unsynced_since is None:
            return
        try:
            self._sync_wal()
        except OSError:
            # Retried after another delay; the next FULL commit syncs it too.
            log.failure("Cannot fsync the index's write-ahead log")
            self._unsynced_since = monotonic()
            return
        self._synced()

    def _synced(self) -> None:
        self._unsynced_since = None
        try:
            self._unsynced.synced()
        except OSError:
            log.failure("Cannot keep the record of unsynced flag changes")

    def _set_synchronous(self, level: str) -> None:
        if self._synchronous != level:
            self._db.execute(f"PRAGMA synchronous={level}")
            self._synchronous = level

    def _run_groups(self, requests: list[Request]) -> bool:
        """
        Run ``requests`` to an outcome each, in as few groups as failures
        allow; whether anything was committed.
        """
        changed = False
        pending = list(requests)
        while pending:
            pending, committed = self._run_group(pending)
            changed = changed or committed
        return changed

    def _run_group(self, requests: list[Request]) -> tuple[list[Request], bool]:
        """
        One transaction over ``requests``.  Returns the requests to run again
        in a new group (after a failure that was not theirs) and whether a
        commit changed anything.
        """
        try:
            self._acquire()
        except TemporaryFailure as e:
            # The lock file cannot be opened: nothing was run.
            self._fail(requests, e)
            return [], False
        try:
            again, changed, durable_after = self._run_group_locked(requests)
        finally:
            if self._lock is not None:
                self._lock.release()
        if durable_after is not None:
            durable_after()
        return again, changed

    def _run_group_locked(self, requests: list[Request], full: bool = False):
        """
        The transaction of ``_run_group``, under the write lock.  Returns
        its two answers and, for a durable group committed with
        ``synchronous=NORMAL``, what makes it durable once the lock is let
        go (None when nothing is left to do).  ``full``: commit with
        ``synchronous=FULL`` whatever the group holds.
        """
        durable = self._immediate or full or any(r.durable for r in requests)
        # Synced after the lock, not in it (see the module docstring).
        later = durable and not (self._immediate or full)
        self._before_write()
        try:
            self._set_synchronous("FULL" if durable and not later else "NORMAL")
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            # Another process has held the write lock past the busy timeout.
            self._fail(requests, TemporaryFailure(f"index is busy: {e}"))
            return [], False, None
        changes_before = self._db.total_changes
        for index, request in enumerate(requests):
            request.step = Step(self._db)
            try:
                self._db.execute("SAVEPOINT request")
                request.outcome = request.run(request.step)
                self._db.execute("RELEASE request")
            except Exception as e:
                if refusal(e) and self._db.in_transaction:
                    self._db.execute("ROLLBACK TO request")
                    self._db.execute("RELEASE request")
                    request.step.roll_back()
                    request.outcome = Failure()
                    continue
                # The transaction may be gone with the statement (SQLITE_FULL).
                failure = Failure(store_error(e)) if isinstance(e, (OSError, sqlite3.Error)) else Failure()
                self._roll_back(requests[: index + 1])
                request.outcome = failure
                for earlier in requests[:index]:
                    earlier.outcome = None
                return [r for r in requests if r is not request], False, None
        if later and not self._may_sync_later(requests, self._db.total_changes - changes_before):
            # SQLite cannot change its synchronous level inside a transaction.
            self._roll_back(requests)
            for request in requests:
                request.outcome = None
            return self._run_group_locked(requests, full=True)
        directories = set().union(*(r.step.directories for r in requests))
        beside = {}
        for request in requests:
            beside.update(request.step.beside)
        try:
            if not durable or later:
                self._unsynced.mark(set().union(*(r.step.notices for r in requests)))
            if later:
                syncs = self._commit_leaving_syncs(directories, list(beside.values()))
            else:
                late = self._commit(directories, list(beside.values()))
        except (OSError, sqlite3.Error) as e:
            error = store_error(e)
            self._roll_back(requests)
            again = [r for r in requests if r.frees_space] if isinstance(error, StoreFull) else []
            if len(again) == len(requests):
                again = []
            self._fail([r for r in requests if r not in again], error)
            return again, False, None
        changed = self._db.total_changes != changes_before
        if later:
            return [], changed, lambda: self._make_durable(requests, syncs)
        if not durable and changed:
            if self._unsynced_since is None:
                self._unsynced_since = monotonic()
        elif durable:
            self._synced()
        self._settle(requests, late)
        return [], changed, None

    @staticmethod
    def _may_sync_later(requests: list[Request], changes: int) -> bool:
        """
        Whether a durable group may be seen before it is synced: a crash
        can then lose what clients were told, and the record of unsynced
        mailboxes covers that only for changes inside known mailboxes
        (not a mailbox made, renamed or deleted) of at most ``UID_MARGIN``
        rows, so at most that many UIDs, which a recovery steps over.
        """
        return changes <= UID_MARGIN and not any(r.step.users for r in requests)

    def _make_durable(self, requests: list[Request], syncs: list[Future]) -> None:
        """After the lock: sync the WAL beside the group's directory fsyncs, then settle it."""
        late = None
        try:
            self._sync_wal()
        except OSError as e:
            late = e
        errors = [error for error in (sync.exception() for sync in syncs) if error is not None]
        late = late or (errors[0] if errors else None)
        if late is None:
            self._synced()
        elif self._unsynced_since is None:
            # The flag sync's timer tries the WAL again; the record keeps
            # the group's mailboxes until a sync succeeds.
            self._unsynced_since = monotonic()
        self._settle(requests, late)

    def _settle(self, requests: list[Request], late: OSError | None) -> None:
        """A committed group: fail it if it is not durable (``late``), else run what follows its commit."""
        if late is not None:
            log.error("Committed, but cannot make it durable: {error}; the requests are failed", error=late)
            self._fail(requests, store_error(late))
            return
        for request in requests:
            for action in request.step.committed:
                try:
                    action()
                except Exception:
                    # Committed all the same; `gateway check` finds what is left.
                    log.failure("After a store commit")

    def _commit(self, directories: set[Path], beside: list[Callable[[], object]]) -> OSError | None:
        """
        COMMIT, with ``directories`` fsynced and the ``beside`` actions run
        beside it (in turn before it without helper threads).  Raises what
        fails before the commit is done; returns the error of a directory
        fsync or an action that failed once it was.
        """
        if self._directory_syncs is None or not (directories or beside):
            for directory in directories:
                fsync_dir(directory)
            for action in beside:
                action()
            self._db.execute("COMMIT")
            return None
        syncs = self._commit_leaving_syncs(directories, beside)
        errors = [error for error in (sync.exception() for sync in syncs) if error is not None]
        return errors[0] if errors else None

    def _commit_leaving_syncs(self, directories: set[Path], beside: list[Callable[[], object]]) -> list[Future]:
        """COMMIT with the fsyncs of ``directories`` and the ``beside`` actions started beside it, left running."""
        syncs = [self._directory_syncs.submit(fsync_dir, directory) for directory in directories]
        syncs += [self._directory_syncs.submit(action) for action in beside]
        try:
            self._db.execute("COMMIT")
        except BaseException:
            for sync in syncs:
                sync.exception()
            raise
        return syncs

    def _roll_back(self, requests: list[Request]) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
        for request in reversed(requests):
            if request.step is not None:
                request.step.roll_back()

    @staticmethod
    def _fail(requests: list[Request], error: TemporaryFailure) -> None:
        for request in requests:
            request.outcome = Failure(error)
