"""
The change feed: tells live sessions which mailboxes changed.

A notification carries only (mailbox id, highest modseq); subscribers ask the
store ``changes_since`` for the details, so a change made in this process and
one noticed from another process (the CLI, another node) take the same path.
A user's list of mailboxes has a feed of its own: subscribers are told the
user, and list the mailboxes again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from gateway.store.interfaces import IChangeFeed

log = Logger()

Poll = Callable[[Iterable[int]], "dict[int, int] | None"]
# Users -> a version of each one's list of mailboxes that moves with every
# change to it; None when nothing was committed since the last poll.
PollUsers = Callable[[Iterable[str]], "dict[str, int] | None"]


@implementer(IChangeFeed)
class ChangeFeed:
    """
    In-process fan-out of change notifications, plus a poller for changes
    committed by other processes, beside the backend's own channel that
    tells of them at once where it has one (``listen``).

    With a reactor, callbacks run on a later reactor turn, coalesced per
    mailbox, so a store call never re-enters a session in the middle of a
    command.  Without one (the CLI), there is nobody to notify but this
    process's own subscribers, and they are called at once.
    """

    def __init__(self, reactor=None, poll: Poll | None = None, interval: float = 0.5,
                 poll_users: PollUsers | None = None, listen: Callable[[], Callable[[], object]] | None = None):
        self._reactor = reactor
        # Starts hearing of other processes' changes as they commit (the
        # backend's own channel); returns what stops it.  The poll stays
        # beside it, for whatever that channel misses.
        self._listen = listen
        self._stop_listening: Callable[[], object] | None = None
        self._poll = poll
        self._poll_users = poll_users
        self._interval = interval
        self._subscribers: dict[int, list[Callable[[int, int], object]]] = {}
        self._pending: dict[int, int] = {}
        self._known: dict[int, int] = {}
        # The same for users' lists of mailboxes.
        self._user_subscribers: dict[str, list[Callable[[str], object]]] = {}
        self._pending_users: set[str] = set()
        self._known_users: dict[str, int] = {}
        self._dispatch_call = None
        self._poller: LoopingCall | None = None

    def subscribe(self, mailbox_id, callback):
        callbacks = self._subscribers.setdefault(mailbox_id, [])
        callbacks.append(callback)

        def unsubscribe():
            if callback in callbacks:
                callbacks.remove(callback)
            if not callbacks and self._subscribers.get(mailbox_id) is callbacks:
                del self._subscribers[mailbox_id]
                self._known.pop(mailbox_id, None)

        return unsubscribe

    def notify(self, mailbox_id, highestmodseq):
        self._known[mailbox_id] = max(highestmodseq, self._known.get(mailbox_id, 0))
        if mailbox_id not in self._subscribers:
            return
        self._pending[mailbox_id] = max(highestmodseq, self._pending.get(mailbox_id, 0))
        self._dispatch_soon()

    def subscribe_mailboxes(self, user, callback):
        callbacks = self._user_subscribers.setdefault(user, [])
        callbacks.append(callback)

        def unsubscribe():
            if callback in callbacks:
                callbacks.remove(callback)
            if not callbacks and self._user_subscribers.get(user) is callbacks:
                del self._user_subscribers[user]
                self._known_users.pop(user, None)

        return unsubscribe

    def notify_mailboxes(self, user):
        if user in self._user_subscribers:
            self._pending_users.add(user)
            self._dispatch_soon()

    def _dispatch_soon(self):
        if self._reactor is None:
            self._dispatch()
        elif self._dispatch_call is None:
            self._dispatch_call = self._reactor.callLater(0, self._dispatch)

    def _dispatch(self):
        self._dispatch_call = None
        pending, self._pending = self._pending, {}
        for mailbox_id, modseq in pending.items():
            for callback in list(self._subscribers.get(mailbox_id, ())):
                try:
                    callback(mailbox_id, modseq)
                except Exception:
                    log.failure("Change subscriber failed for mailbox {mailbox_id}", mailbox_id=mailbox_id)
        users, self._pending_users = self._pending_users, set()
        for user in users:
            for callback in list(self._user_subscribers.get(user, ())):
                try:
                    callback(user)
                except Exception:
                    log.failure("Mailbox list subscriber failed for {user}", user=user)

    def start_polling(self):
        """
        Look for changes by other processes every ``interval`` seconds, and
        listen for them where the backend can say at once.
        """
        if self._reactor is None or self._poller is not None:
            return
        if self._listen is not None and self._stop_listening is None:
            self._stop_listening = self._listen()
        if self._poll is None and self._poll_users is None:
            return
        self._poller = LoopingCall(self.poll_once)
        self._poller.clock = self._reactor
        self._poller.start(self._interval, now=False).addErrback(
            lambda failure: log.failure("Change poller stopped", failure)
        )

    def stop_polling(self):
        if self._stop_listening is not None:
            stop, self._stop_listening = self._stop_listening, None
            stop()
        if self._poller is not None and self._poller.running:
            self._poller.stop()
        self._poller = None
        if self._dispatch_call is not None and self._dispatch_call.active():
            self._dispatch_call.cancel()
        self._dispatch_call = None

    def poll_once(self):
        if self._user_subscribers and self._poll_users is not None:
            versions = self._poll_users(list(self._user_subscribers))
            for user, version in (versions or {}).items():
                known = self._known_users.get(user)
                self._known_users[user] = version
                if known is not None and version != known:
                    self.notify_mailboxes(user)
        if not self._subscribers or self._poll is None:
            return
        current = self._poll(list(self._subscribers))
        if not current:
            return
        for mailbox_id, modseq in current.items():
            if modseq != self._known.get(mailbox_id):
                self.notify(mailbox_id, modseq)
