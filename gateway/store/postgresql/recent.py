"""
One claim of a mailbox's \\Recent messages at a time on a node, and none
while nothing can be claimed: a delivery wakes every session idling on the
mailbox, and each asks to claim what is new (RFC 3501 2.3.2: a message is
\\Recent in one session only).  Without this, a thousand idlers would be a
thousand write transactions per delivery, queued for the node's few
connections, and the last told of the delivery would be told late.

A claim in flight takes every message there was when it ran: a session
asking meanwhile gets nothing, unless the node heard of a change of the
mailbox after that claim began; it then claims again once the first is
answered.  After a claim, the node knows nothing is left to claim until
it hears of a newer change of the mailbox (a new message is a new modseq;
another node's claim only takes more), which holds only while the change
feed is ``fresh`` for the mailbox.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred, succeed

# query() -> Deferred of (claimed uids, the mailbox's highest modseq when claimed)
ClaimQuery = Callable[[], Deferred]


class RecentClaims:
    def __init__(self, feed):
        self._feed = feed
        # mailbox id -> (the modseq heard when the claim began, its waiters)
        self._claiming: dict[int, tuple[int, list[Deferred]]] = {}
        # mailbox id -> a modseq at which nothing was left to claim
        self._claimed_at: dict[int, int] = {}

    def claim(self, mailbox_id: int, query: ClaimQuery) -> Deferred:
        """A Deferred of the frozenset of UIDs this caller is first to see."""
        if not self._feed.fresh(mailbox_id):
            return query().addCallback(lambda outcome: outcome[0])
        heard = self._feed.known(mailbox_id)
        if mailbox_id in self._claiming:
            began, waiters = self._claiming[mailbox_id]
            if heard <= began:
                return succeed(frozenset())
            waiting = Deferred()
            waiters.append(waiting)
            return waiting.addCallback(lambda _: self.claim(mailbox_id, query))
        if self._claimed_at.get(mailbox_id, -1) >= heard:
            return succeed(frozenset())
        waiters: list[Deferred] = []
        self._claiming[mailbox_id] = (heard, waiters)

        def answered(outcome):
            claimed, modseq = outcome
            if self._feed.fresh(mailbox_id) and modseq >= self._feed.known(mailbox_id):
                self._claimed_at[mailbox_id] = modseq
            return claimed

        def finished(result):
            del self._claiming[mailbox_id]
            for waiting in waiters:
                waiting.callback(None)
            return result

        return query().addCallback(answered).addBoth(finished)

    def forget(self, mailbox_id: int) -> None:
        """The mailbox changed, or is no longer watched."""
        self._claimed_at.pop(mailbox_id, None)

    def clear(self) -> None:
        self._claimed_at.clear()
