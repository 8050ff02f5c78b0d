"""
Running store work against PostgreSQL off the reactor: a bounded thread
pool, one pooled psycopg connection per running piece of work, one
transaction per piece, and one boundary where database errors become the
store contract's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import psycopg
from psycopg import errors
from psycopg_pool import ConnectionPool, PoolTimeout
from twisted.internet.defer import DeferredSemaphore
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from gateway.store.interfaces import StoreFull, TemporaryFailure
from gateway.store.postgresql import notices

log = Logger()

T = TypeVar("T")

# A deadlock victim or a serialization failure did nothing; run it again.
_RETRIES = 3


def connection_settings(connect_timeout: float) -> dict:
    """
    libpq settings of every connection: a bounded wait to connect, and TCP
    keepalives, so that a server gone silent (a dead network path rather
    than a closed connection) is noticed within about half a minute.
    """
    return {
        "connect_timeout": max(2, math.ceil(connect_timeout)),
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
    }


class Transaction:
    """
    One open transaction: its cursor, and the changes to announce once it
    commits (mailbox id -> highest modseq).
    """

    def __init__(self, connection: psycopg.Connection):
        self.connection = connection
        self.cursor = connection.cursor()
        self.changed: dict[int, int] = {}

    def execute(self, query, params=None):
        return self.cursor.execute(query, params)

    def one(self, query, params=None):
        return self.cursor.execute(query, params).fetchone()

    def all(self, query, params=None) -> list:
        return self.cursor.execute(query, params).fetchall()

    def changed_mailbox(self, mailbox_id: int, modseq: int) -> None:
        self.changed[mailbox_id] = max(modseq, self.changed.get(mailbox_id, 0))


class Database:
    """
    ``size`` threads and at most ``size`` connections: work queues for a
    thread rather than for a connection, so the reactor never waits.  A
    connection found dead when its transaction begins (the server restarted)
    is dropped and the work goes to another.
    """

    def __init__(self, reactor, dsn: str, size: int = 10, min_connections: int = 1,
                 connect_timeout: float = 10.0, on_commit: Callable[[dict[int, int]], object] | None = None,
                 flag_durability: str = "batched", on_connect: Callable[[psycopg.Connection], object] | None = None):
        if size < 1 or not 0 <= min_connections <= size:
            raise ValueError(f"pool size {size} with {min_connections} kept open is not usable")
        self._reactor = reactor
        self._on_commit = on_commit
        self.dsn = dsn
        self.size = size
        self._pool = ConnectionPool(
            dsn, min_size=min_connections, max_size=size, open=False, timeout=connect_timeout,
            kwargs={"autocommit": True, "application_name": "gateway", **connection_settings(connect_timeout)},
            name="gateway", configure=on_connect,
        )
        self._threads = ThreadPool(minthreads=0, maxthreads=size, name="gateway-postgresql")
        # Writes (waiting on row locks, on their commit's flush) take at
        # most this many threads: the rest are always there for reads, so
        # a session's SELECT or FETCH never queues behind writes.
        self._write_slots = DeferredSemaphore(size - max(1, size // 4) if size > 1 else 1)
        # Bodies travel from an object store in threads of their own: a
        # download waiting on the network holds no connection, and no
        # query waits behind it.
        self._body_threads = ThreadPool(minthreads=0, maxthreads=size, name="gateway-bodies")
        # "batched" (README, "Storage and durability"): a flag-only commit
        # does not wait for its WAL flush; the WAL writer flushes it within
        # 3 x wal_writer_delay, and any later synchronous commit (a
        # delivery, from any node) flushes it first.  The cluster's own
        # setting (on, remote_apply...) holds for everything else.
        self._flags_begin = "BEGIN" if flag_durability == "immediate" else (
            "BEGIN; SET LOCAL synchronous_commit TO off")

    def open(self) -> None:
        self._pool.open(wait=False)
        self._threads.start()
        self._body_threads.start()

    def close(self) -> None:
        self._body_threads.stop()
        self._threads.stop()
        self._pool.close()

    def write(self, work: Callable[..., T], *args):
        """
        ``work(transaction, *args)`` in one read-write transaction, in the
        thread pool.

        @return: Deferred firing with what ``work`` returns, after the
            commit, on the reactor thread; the changes it recorded are handed
            to ``on_commit`` there first.
        """
        return self._defer(work, args, "BEGIN", self._write_slots)

    def write_flags(self, work: Callable[..., T], *args):
        """
        As L{write}, for a transaction that changes flags only (and the
        mod-sequences that go with them): under ``flag_durability``
        "batched" it is visible at once and durable within the WAL writer's
        delay, without a flush of its own.
        """
        return self._defer(work, args, self._flags_begin, self._write_slots)

    def snapshot(self, work: Callable[..., T], *args):
        """As L{write}, read-only, every statement seeing the same snapshot."""
        return self._defer(work, args, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def read(self, work: Callable[..., T], *args):
        """As L{write} for reads that need no transaction (one statement each)."""
        return self._defer(work, args, None)

    def in_thread(self, function: Callable[..., T], *args):
        """``function(*args)`` in the thread pool, with no connection."""
        return deferToThreadPool(self._reactor, self._threads, function, *args)

    def in_body_thread(self, function: Callable[..., T], *args):
        """``function(*args)`` in the threads that read bodies from an object store, with no connection."""
        return deferToThreadPool(self._reactor, self._body_threads, function, *args)

    def _defer(self, work, args, begin, slots: DeferredSemaphore | None = None):
        if slots is None:
            d = deferToThreadPool(self._reactor, self._threads, self.transact, work, args, begin)
        else:
            d = slots.run(deferToThreadPool, self._reactor, self._threads, self.transact, work, args, begin)
        if self._on_commit is not None:
            d.addCallback(self._announce)
        else:
            d.addCallback(lambda outcome: outcome[0])
        return d

    def _announce(self, outcome):
        result, changed = outcome
        if changed:
            self._on_commit(changed)
        return result

    def transact(self, work: Callable[..., T], args=(), begin: str | None = "BEGIN") -> tuple[T, dict[int, int]]:
        """
        Run ``work`` in one transaction (``begin`` starts it; None runs each
        statement on its own) on this thread: a pool thread, or a tool with
        no reactor.  Database failures the caller cannot help become
        L{TemporaryFailure}.

        @return: what ``work`` returned, and the changes it recorded.
        """
        for attempt in range(_RETRIES):
            try:
                with self._pool.connection() as connection:
                    transaction = Transaction(connection)
                    # A connection the server closed (it restarted) fails
                    # its first statement: the pool drops it and the work,
                    # having done nothing yet, goes to another.
                    if begin is None:
                        try:
                            return work(transaction, *args), {}
                        except psycopg.OperationalError:
                            if connection.broken and attempt + 1 < _RETRIES:
                                continue  # reads may run again
                            raise
                    try:
                        connection.execute(begin)
                    except psycopg.OperationalError:
                        if connection.broken and attempt + 1 < _RETRIES:
                            continue
                        raise
                    try:
                        result = work(transaction, *args)
                        # NOTIFY is sent at COMMIT, and only if it commits.
                        for payload in notices.encode(transaction.changed):
                            connection.execute("SELECT pg_notify(%s, %s)", (notices.CHANNEL, payload))
                        connection.execute("COMMIT")
                    except BaseException:
                        if not connection.broken:
                            connection.execute("ROLLBACK")
                        raise
                    return result, transaction.changed
            except (errors.DeadlockDetected, errors.SerializationFailure):
                if attempt + 1 < _RETRIES:
                    continue
                raise TemporaryFailure("the index is busy; try again") from None
            except PoolTimeout as e:
                raise TemporaryFailure(f"no database connection: {e}") from e
            except errors.DiskFull as e:
                log.error("PostgreSQL: {error}", error=e)
                raise StoreFull(f"the database is full: {e}".strip()) from e
            except psycopg.OperationalError as e:
                # Connection lost, disk full, statement timeout, shutdown.
                log.error("PostgreSQL: {error}", error=e)
                raise TemporaryFailure(f"database unavailable: {e}".strip()) from e
        raise AssertionError("unreachable")
