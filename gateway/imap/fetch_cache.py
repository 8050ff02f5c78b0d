"""
The part of FETCH answers that never changes for a message, kept as sent:
per mailbox and FETCH item list, each message's items that the index holds
(RFC822.SIZE, INTERNALDATE, ENVELOPE, BODYSTRUCTURE, header fields) as
rendered once, shared by all the sessions of a process within a byte budget
(``[imap] fetch_cache_size``).

A message's UID names the same message, with the same contents, as long as
the mailbox keeps its UIDVALIDITY (RFC 3501 2.3.1.1), so what is kept under
(mailbox, UIDVALIDITY, UID) never goes stale; a mailbox made again gets
another UIDVALIDITY, and with it nothing of the old one.  What changes (FLAGS,
MODSEQ) and whether the message is still there are asked every time.

Pure: no Twisted.
"""

from __future__ import annotations

from collections import OrderedDict

# What a kept message costs beyond its bytes: its dict slot, its key, the
# bytes object's header.
_OVERHEAD = 120
# Parts of expunged messages a mailbox may keep beyond those it holds.
_SLACK = 1000


class RenderedParts:
    """
    Rendered parts by (mailbox id, UIDVALIDITY, item list): for each, a
    dict UID -> what ``fetch_response.CachedLines.render`` made.  The least
    recently used go first when the budget is spent.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.size = 0
        self._kept: OrderedDict[tuple, _Kept] = OrderedDict()

    def resize(self, budget: int) -> None:
        """Another budget (a reload): what no longer fits goes at once, the least recently used first."""
        self.budget = budget
        while self.size > budget:
            self.size -= self._kept.popitem(last=False)[1].size

    def lookup(self, key: tuple) -> dict:
        """What is kept under ``key`` (read-only for the caller; empty if nothing)."""
        kept = self._kept.get(key)
        if kept is None:
            return {}
        self._kept.move_to_end(key)
        return kept.parts

    def keep(self, key: tuple, rendered: dict, exists: int) -> None:
        """
        Keep ``rendered`` (UID -> parts) under ``key``, as much of it as
        the budget allows; ``exists`` is how many messages the mailbox
        holds.  Parts of messages expunged since stay until their mailbox
        has twice as many kept as it holds: then they all go, and those
        still there are kept again as they are fetched.
        """
        kept = self._kept.get(key)
        if kept is None:
            kept = self._kept[key] = _Kept()
        elif len(kept.parts) + len(rendered) > 2 * exists + _SLACK:
            self.size -= kept.size
            kept = self._kept[key] = _Kept()
        self._kept.move_to_end(key)
        if rendered and type(next(iter(rendered.values()))) is bytes:
            cost = sum(map(len, rendered.values())) + _OVERHEAD * len(rendered)
            if self.size + cost <= self.budget and kept.parts.keys().isdisjoint(rendered):
                kept.parts.update(rendered)
                kept.size += cost
                self.size += cost
                return
        for uid, parts in rendered.items():
            if uid in kept.parts:
                continue
            cost = _cost(parts)
            if self.size + cost > self.budget and not self._evict(cost, key):
                return
            kept.parts[uid] = parts
            kept.size += cost
            self.size += cost

    def _evict(self, cost: int, keeping: tuple) -> bool:
        """Forget the least recently used (never ``keeping``) until ``cost`` fits; whether it does."""
        while self.size + cost > self.budget:
            oldest = next(iter(self._kept))
            if oldest == keeping:
                return False
            self.size -= self._kept.pop(oldest).size
        return True


class _Kept:
    __slots__ = ("parts", "size")

    def __init__(self) -> None:
        self.parts: dict = {}
        self.size = 0


def _cost(parts) -> int:
    if type(parts) is bytes:
        return len(parts) + _OVERHEAD
    return sum(map(len, parts)) + _OVERHEAD * (1 + len(parts))
