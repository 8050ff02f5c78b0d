"""
Which body each message has, as this node last read it: a FETCH or a RETR
of a message whose body key the node knows opens the body (most often from
the node's own cache) without asking the database, and one query that
misses learns the keys of the next few hundred messages, which a FETCH of a
range or a POP3 download asks for next.

A message's body never changes and a mailbox never gives a UID out twice,
so a key can only go stale by its message leaving the mailbox:

- through this node (EXPUNGE, MOVE, POP3 QUIT, a deleted mailbox): the
  store forgets those messages before it writes and again once it has
  committed, and a query that began before the second forgetting learns
  nothing (its generation is gone), so no session here is ever given the
  body of a message expunged here;
- through another node, in a mailbox that a session here watches (IMAP):
  the change feed forgets the mailbox when the node hears of the change, a
  few milliseconds later.  Until then the body is given as before, which
  RFC 2180 4.1.1 allows a session not yet told of the EXPUNGE;
- through another node, in a mailbox nobody here watches (a POP3 session's,
  whose maildrop the session holds; RFC 1939 keeps its listing as it was at
  login): its sessions may still read what they listed.

With each key it keeps the body's size, so that the bodies a download will
read next can be fetched ahead (``ahead``) when they are small enough to be
kept.

Thread-safe: the store's threads learn, the reactor asks and forgets.
"""

from __future__ import annotations

import collections
import threading

# Keys kept, over every mailbox (about 150 bytes each); the mailbox read
# least recently goes first.
LIMIT = 200_000
# Keys one missed lookup learns: this message's and those of the next UIDs.
AHEAD = 500


class BodyKeys:
    def __init__(self, limit: int = LIMIT):
        self._limit = limit
        self._lock = threading.Lock()
        # mailbox id -> {uid: (key, size)}
        self._boxes: collections.OrderedDict[int, dict[int, tuple[str, int]]] = collections.OrderedDict()
        self._count = 0
        self._generation = 0

    def generation(self) -> int:
        """Taken before a query whose answer is to be learnt."""
        with self._lock:
            return self._generation

    def get(self, mailbox_id: int, uid: int) -> str | None:
        with self._lock:
            box = self._boxes.get(mailbox_id)
            if box is None:
                return None
            self._boxes.move_to_end(mailbox_id)
            known = box.get(uid)
            return None if known is None else known[0]

    def ahead(self, mailbox_id: int, uid: int, count: int) -> list[tuple[str, int]]:
        """(key, size) of the messages known among the ``count`` UIDs after ``uid``."""
        with self._lock:
            box = self._boxes.get(mailbox_id)
            if box is None:
                return []
            return [known for n in range(uid + 1, uid + 1 + count) if (known := box.get(n)) is not None]

    def learn(self, mailbox_id: int, rows, generation: int) -> None:
        """(uid, key, size) rows read after ``generation`` was taken; dropped if anything was forgotten since."""
        with self._lock:
            if generation != self._generation:
                return
            box = self._boxes.setdefault(mailbox_id, {})
            self._boxes.move_to_end(mailbox_id)
            before = len(box)
            box.update((uid, (key, size)) for uid, key, size in rows)
            self._count += len(box) - before
            while self._count > self._limit and len(self._boxes) > 1:
                _, oldest = self._boxes.popitem(last=False)
                self._count -= len(oldest)

    def forget(self, mailbox_id: int, uids=None) -> None:
        """Those messages of the mailbox (all of them when ``uids`` is None) may be gone."""
        with self._lock:
            self._generation += 1
            box = self._boxes.get(mailbox_id)
            if box is None:
                return
            if uids is None:
                del self._boxes[mailbox_id]
                self._count -= len(box)
                return
            for uid in uids:
                if box.pop(uid, None) is not None:
                    self._count -= 1

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._boxes.clear()
            self._count = 0
