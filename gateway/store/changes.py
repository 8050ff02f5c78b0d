"""
The change feed: tells live sessions which mailboxes changed.

A notification carries only (mailbox id, highest modseq); subscribers ask the
store ``changes_since`` for the details, so a change made in this process and
one noticed from another process (the CLI, another node) take the same path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from gateway.store.interfaces import IChangeFeed

log = Logger()

Poll = Callable[[Iterable[int]], "dict[int, int] | None"]


@implementer(IChangeFeed)
class ChangeFeed:
    """
    In-process fan-out of change notifications, plus a poller for changes
    committed by other processes.

    With a reactor, callbacks run on a later reactor turn, coalesced per
    mailbox, so a store call never re-enters a session in the middle of a
    command.  Without one (the CLI), there is nobody to notify but this
    process's own subscribers, and they are called at once.
    """

    def __init__(self, reactor=None, poll: Poll | None = None, interval: float = 0.5):
        self._reactor = reactor
        self._poll = poll
        self._interval = interval
        self._subscribers: dict[int, list[Callable[[int, int], object]]] = {}
        self._pending: dict[int, int] = {}
        self._known: dict[int, int] = {}
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

    def start_polling(self):
        """
        Look for changes by other processes every ``interval`` seconds.
        """
        if self._poll is None or self._reactor is None or self._poller is not None:
            return
        self._poller = LoopingCall(self.poll_once)
        self._poller.clock = self._reactor
        self._poller.start(self._interval, now=False).addErrback(
            lambda failure: log.failure("Change poller stopped", failure)
        )

    def stop_polling(self):
        if self._poller is not None and self._poller.running:
            self._poller.stop()
        self._poller = None
        if self._dispatch_call is not None and self._dispatch_call.active():
            self._dispatch_call.cancel()
        self._dispatch_call = None

    def poll_once(self):
        if not self._subscribers:
            return
        current = self._poll(list(self._subscribers))
        if not current:
            return
        for mailbox_id, modseq in current.items():
            if modseq != self._known.get(mailbox_id):
                self.notify(mailbox_id, modseq)
