"""
POP3 maildrop locks across nodes (RFC 1939 8: one session per maildrop)
as PostgreSQL advisory locks.

Session-level advisory locks belong to the connection that took them, so
each node keeps one connection for all its locks, worked by one thread of
its own: a node that dies drops its connection, and the server releases
its locks with it.  A lock the node holds already is refused without asking
the server (the server would grant it again to the same connection).  If
the connection is lost while the node lives, the locks its sessions hold
are taken again on the next connection.
"""

from __future__ import annotations

import psycopg
from twisted.internet.defer import succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from gateway.store.interfaces import TemporaryFailure
from gateway.store.postgresql.database import connection_settings

log = Logger()

# The key of a maildrop: a 64-bit hash of its name, computed by the server
# so every node agrees.
_KEY = "hashtextextended(%s, 0)"


def maildrop_name(user: str, device: str | None) -> str:
    """
    The lock's name for a user's maildrop, or for a device's view of it:
    each device's view is a maildrop of its own.  A device name never holds
    '#', so no two (user, device) pairs share a name.
    """
    if device is None:
        return f"gateway maildrop {user}"
    return f"gateway device {user}#{device}"


class MaildropLocks:
    def __init__(self, reactor, dsn: str, connect_timeout: float = 10.0):
        self._reactor = reactor
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._held: set[str] = set()  # touched on the reactor thread only
        self._connection: psycopg.Connection | None = None  # touched on the lock thread only
        self._thread = ThreadPool(minthreads=0, maxthreads=1, name="gateway-maildrop-locks")
        self._thread.start()

    def close(self) -> None:
        self._thread.stop()
        if self._connection is not None:
            self._connection.close()

    def lock(self, user: str, device: str | None = None):
        """
        @return: Deferred firing with a no-argument callable that releases
            the lock, or with None when another session, on any node, holds
            it.
        """
        name = maildrop_name(user, device)
        if name in self._held:
            return succeed(None)
        self._held.add(name)
        d = self._run(self._try_lock, name, sorted(self._held - {name}))

        def locked(granted):
            if not granted:
                self._held.discard(name)
                return None
            released = []

            def release():
                # The one lock thread takes work in order: a session asking
                # for this maildrop next has its lock taken after this
                # unlock, so this node may count it free now (a client that
                # QUITs and at once logs in again is not refused).  Other
                # nodes ask the server: free for them once the Deferred fires.
                if released:
                    return None
                released.append(True)
                self._held.discard(name)
                return self._run(self._unlock, name).addErrback(
                    lambda failure: log.failure("Releasing the lock {name}", failure, name=name)
                )

            return release

        def failed(failure):
            self._held.discard(name)
            return failure

        return d.addCallbacks(locked, failed)

    def _run(self, function, *args):
        return deferToThreadPool(self._reactor, self._thread, function, *args)

    def _connect(self, others: list[str]) -> psycopg.Connection:
        if self._connection is not None and not self._connection.closed and not self._connection.broken:
            return self._connection
        lost = self._connection is not None
        try:
            self._connection = psycopg.connect(
                self._dsn, autocommit=True, application_name="gateway-maildrops",
                **connection_settings(self._connect_timeout),
            )
        except psycopg.OperationalError as e:
            self._connection = None
            raise TemporaryFailure(f"database unavailable: {e}".strip()) from e
        if lost:
            # The locks went with the old connection: take back those that
            # sessions of this node still hold.
            for name in others:
                if not self._connection.execute(f"SELECT pg_try_advisory_lock({_KEY})", (name,)).fetchone()[0]:
                    log.warn("The lock {name} was lost with its connection and is held elsewhere now", name=name)
        return self._connection

    def _try_lock(self, name: str, others: list[str]) -> bool:
        for attempt in range(2):
            connection = self._connect(others)
            try:
                return connection.execute(f"SELECT pg_try_advisory_lock({_KEY})", (name,)).fetchone()[0]
            except psycopg.OperationalError as e:
                if attempt or not connection.broken:
                    raise TemporaryFailure(f"database unavailable: {e}".strip()) from e
        raise AssertionError("unreachable")

    def _unlock(self, name: str) -> None:
        connection = self._connection
        if connection is None or connection.broken or connection.closed:
            return  # gone with the connection
        try:
            connection.execute(f"SELECT pg_advisory_unlock({_KEY})", (name,))
        except psycopg.OperationalError:
            pass  # gone with the connection

