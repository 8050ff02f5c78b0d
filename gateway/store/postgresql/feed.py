"""
The change feed across nodes: every commit NOTIFYs the mailboxes it
changed (``database.py``), and each node LISTENs on one connection of its
own, kept open by a thread of its own, and wakes its sessions.

NOTIFY is a wake-up, not the record: a node whose listening connection was
lost may have missed some, so once it listens again it asks for the
highest modseq of every mailbox its sessions watch, and wakes those that
moved.  Sessions then read what changed from the modseq log
(``changes_since``), as for a change made on their own node.

A user's list of mailboxes travels the same way (``notices.encode_list``,
sent by the transaction that changes it): a node that listens again tells
every session watching a list to look at it again, as it may have changed.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable

import psycopg
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from gateway.store.changes import ChangeFeed
from gateway.store.interfaces import IChangeFeed
from gateway.store.postgresql import notices
from gateway.store.postgresql.database import connection_settings

log = Logger()


@implementer(IChangeFeed)
class ClusterChangeFeed:
    """
    L{IChangeFeed} for a store several nodes share.  ``highest`` is called
    on the reactor thread with mailbox ids and returns a Deferred of
    {mailbox id: highest modseq}: how a node catches up.
    """

    def __init__(self, reactor, dsn: str, highest: Callable[[list[int]], Deferred], retry_limit: float = 10.0,
                 connect_timeout: float = 10.0):
        self._reactor = reactor
        self._fanout = ChangeFeed(reactor)
        self._known: dict[int, int] = {}
        self._watched: dict[int, int] = {}
        self._highest = highest
        # user -> how many sessions here watch the user's list of mailboxes
        self._lists_watched: dict[str, int] = {}
        # How this node's NOTIFY of a list change names it.
        self.node = secrets.token_hex(6)
        self._listener = Listener(reactor, dsn, self.told, self.catch_up, retry_limit, connect_timeout)
        # What learns that a mailbox moved on (the store's ``ChangesMemo``
        # and ``BodyKeys``), or that anything may have, when listening
        # starts again: each has forget(mailbox_id) and clear().
        self.memos: list = []

    def fresh(self, mailbox_id: int) -> bool:
        """
        Whether every change of the mailbox reaches this feed now: it is
        watched, and the node listens.
        """
        return self._listener.listening and mailbox_id in self._watched

    def known(self, mailbox_id: int) -> int:
        """The highest modseq of the mailbox this feed has heard of."""
        return self._known.get(mailbox_id, 0)

    def subscribe(self, mailbox_id, callback):
        def unwatched():
            self._known.pop(mailbox_id, None)
            for memo in self.memos:
                memo.forget(mailbox_id)

        return _counted(self._watched, mailbox_id, self._fanout.subscribe(mailbox_id, callback), unwatched)

    def notify(self, mailbox_id, highestmodseq):
        """A change committed by this node."""
        self.heard({mailbox_id: highestmodseq})

    def subscribe_mailboxes(self, user, callback):
        return _counted(self._lists_watched, user, self._fanout.subscribe_mailboxes(user, callback))

    def notify_mailboxes(self, user):
        """A change of the user's list of mailboxes committed by this node."""
        self._fanout.notify_mailboxes(user)

    def told(self, payload: str) -> None:
        """A NOTIFY payload, from any node."""
        self.heard(notices.decode(payload))
        for node, user in notices.decode_lists(payload):
            if node == self.node:
                continue  # told already, when it committed
            for watched in (user,) if user is not None else list(self._lists_watched):
                if watched in self._lists_watched:
                    self._fanout.notify_mailboxes(watched)

    def heard(self, changed: dict[int, int]) -> None:
        """
        Changes committed by any node, this one included (its own commit is
        told twice: when it returns and by its NOTIFY, in either order):
        those not known here yet wake the sessions watching.
        """
        for mailbox_id, modseq in changed.items():
            if mailbox_id in self._watched and modseq > self._known.get(mailbox_id, 0):
                self._known[mailbox_id] = modseq
                for memo in self.memos:
                    memo.forget(mailbox_id)
                self._fanout.notify(mailbox_id, modseq)

    def catch_up(self) -> Deferred:
        """Listening (again): wake whatever moved while nobody listened."""
        for memo in self.memos:
            memo.clear()
        for user in list(self._lists_watched):
            self._fanout.notify_mailboxes(user)
        ids = sorted(self._watched)
        if not ids:
            return succeed(None)
        d = self._highest(ids)
        d.addCallback(self.heard)
        d.addErrback(lambda failure: log.failure("Catching up on changes failed", failure))
        return d

    def start_polling(self) -> None:
        """Start listening (the name the service calls every feed by)."""
        self._listener.start()

    def stop_polling(self) -> Deferred:
        self._fanout.stop_polling()
        return self._listener.stop()


class Listener:
    """
    One thread holding one connection that LISTENs; a lost connection is
    opened again after a pause that doubles up to ``retry_limit`` seconds.
    ``on_changes`` (given each payload) and ``on_listening`` run on the
    reactor thread.
    """

    # How long the thread waits for a notification before it looks whether
    # it was asked to stop.
    WAKE = 0.25

    def __init__(self, reactor, dsn: str, on_changes, on_listening, retry_limit: float, connect_timeout: float):
        self._reactor = reactor
        self._connect_timeout = connect_timeout
        self._dsn = dsn
        self._on_changes = on_changes
        self._on_listening = on_listening
        self._retry_limit = retry_limit
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped: list[Deferred] = []
        self._listened = False

    @property
    def listening(self) -> bool:
        return self._listened

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="gateway-listen", daemon=True)
        self._thread.start()

    def stop(self) -> Deferred:
        """@return: Deferred firing once the thread has closed its connection."""
        self._stopping.set()
        if self._thread is None or not self._thread.is_alive():
            return succeed(None)
        d = Deferred()
        self._stopped.append(d)
        return d

    def _finished(self) -> None:
        stopped, self._stopped = self._stopped, []
        for d in stopped:
            d.callback(None)

    def _run(self) -> None:
        pause = 0.5
        try:
            while not self._stopping.is_set():
                try:
                    self._listen()
                    return
                except psycopg.Error as e:
                    if self._listened:
                        self._listened, pause = False, 0.5
                    log.warn("Listening for changes of other nodes: {error}; again in {pause}s",
                             error=str(e).strip(), pause=pause)
                self._stopping.wait(pause)
                pause = min(pause * 2, self._retry_limit)
        finally:
            self._reactor.callFromThread(self._finished)

    def _listen(self) -> None:
        with psycopg.connect(self._dsn, autocommit=True, application_name="gateway-listen",
                             **connection_settings(self._connect_timeout)) as connection:
            connection.execute(f"LISTEN {notices.CHANNEL}")
            self._listened = True
            self._reactor.callFromThread(self._on_listening)
            while not self._stopping.is_set():
                for notification in connection.notifies(timeout=self.WAKE):
                    self._reactor.callFromThread(self._on_changes, notification.payload)
                    if self._stopping.is_set():
                        break


def _counted(watchers: dict, key, unsubscribe: Callable[[], None],
             unwatched: Callable[[], None] = lambda: None) -> Callable[[], None]:
    """
    Count one more watcher of ``key``; the end it returns (harmless to
    call twice) unsubscribes and, for the last watcher, forgets ``key``
    and calls ``unwatched``.
    """
    watchers[key] = watchers.get(key, 0) + 1
    done = []

    def end():
        if done:
            return
        done.append(True)
        unsubscribe()
        watchers[key] -= 1
        if not watchers[key]:
            del watchers[key]
            unwatched()

    return end
