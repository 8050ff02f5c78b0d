"""
One ``changes_since`` query per (mailbox, modseq) at a time: a delivery
wakes every session idling on its mailbox, on every node, and each asks the
same question.  On a node, the first asks the database and the others
share its answer, which stays memoised until the node hears of a newer
change of the mailbox.

It is kept only for the mailboxes the node's change feed watches, and only
while the feed listens (``ClusterChangeFeed.fresh``): then every commit of
any node reaches the feed (its own at once, the others' by NOTIFY a few
milliseconds later) and ``forget`` drops the mailbox's answers.  An answer
older than a change already heard is never kept.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed

from gateway.store.encoding import MEMO_LIMIT
from gateway.store.model import ChangeSet


class ChangesMemo:
    def __init__(self, feed):
        self._feed = feed
        # mailbox id -> {modseq: ChangeSet, or the Deferreds waiting for it}
        self._answers: dict[int, dict[int, ChangeSet | list[Deferred]]] = {}
        self._size = 0

    def ask(self, mailbox_id: int, modseq: int, query) -> Deferred:
        """``query()`` (a Deferred of a ChangeSet), or the answer to the same question asked already."""
        if not self._feed.fresh(mailbox_id):
            return query()
        answers = self._answers.setdefault(mailbox_id, {})
        entry = answers.get(modseq)
        if isinstance(entry, ChangeSet):
            return succeed(entry)
        if entry is not None:
            waiting = Deferred()
            entry.append(waiting)
            return waiting
        if self._size >= MEMO_LIMIT:
            self.clear()
            answers = self._answers.setdefault(mailbox_id, {})
        waiters: list[Deferred] = []
        answers[modseq] = waiters
        self._size += 1

        def answered(changes):
            if self._answers.get(mailbox_id, {}).get(modseq) is waiters:
                if self._feed.fresh(mailbox_id) and changes.highestmodseq >= self._feed.known(mailbox_id):
                    self._answers[mailbox_id][modseq] = changes
                else:
                    self._drop(mailbox_id, modseq)
            for waiting in waiters:
                waiting.callback(changes)
            return changes

        def failed(failure):
            if self._answers.get(mailbox_id, {}).get(modseq) is waiters:
                self._drop(mailbox_id, modseq)
            for waiting in waiters:
                waiting.errback(failure)
            return failure

        return query().addCallbacks(answered, failed)

    def _drop(self, mailbox_id: int, modseq: int) -> None:
        del self._answers[mailbox_id][modseq]
        self._size -= 1

    def forget(self, mailbox_id: int) -> None:
        """The mailbox changed: its answers are stale (those being asked still go to their askers)."""
        answers = self._answers.pop(mailbox_id, None)
        if answers:
            self._size -= len(answers)

    def clear(self) -> None:
        self._answers.clear()
        self._size = 0
