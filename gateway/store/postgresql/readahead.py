"""
Bodies fetched from the object store before they are asked for: a POP3
download or an IMAP FETCH of a range reads messages in UID order, one at a
time, and each body the node has no copy of would otherwise cost the client
a round trip to the object store.  When a body is opened, the next few the
node knows the keys of are fetched into its cache (blobs/cache.py) in the
background, so that the next RETR finds its body local.

Each body is fetched once: a session asking for one being fetched waits
for that fetch.  What is fetched is bounded (``DEPTH`` bodies past the one
opened, each small enough for the cache to keep), and runs in threads of
its own, so that index queries never queue behind it.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.logger import Logger

log = Logger()

# Bodies fetched ahead of the one opened, per session reading.
DEPTH = 8


class ReadAhead:
    """
    ``cache`` is the node's L{CachedBlobs}; ``in_thread(f, *args)`` runs a
    blocking call in the body threads and returns its Deferred.
    """

    def __init__(self, cache, in_thread, depth: int = DEPTH):
        self._cache = cache
        self._in_thread = in_thread
        self.depth = depth
        self._fetching: dict[str, Deferred] = {}
        # Bodies fetched ahead so far (for the tests and a node's metrics).
        self.fetched = 0

    def fetching(self, key: str) -> Deferred | None:
        """A Deferred firing (with None, never failing) once the fetch of ``key`` under way ends, or None."""
        running = self._fetching.get(key)
        if running is None:
            return None
        waiting = Deferred()
        running.addBoth(lambda result: waiting.callback(None) or result)
        return waiting

    def ahead(self, bodies) -> None:
        """Fetch ``bodies``, (key, size) pairs, into the cache unless there already, or too big for it."""
        for key, size in bodies:
            if key in self._fetching or not self._cache.keeps(size) or self._cache.holds(key):
                continue
            self.fetched += 1
            d = self._fetching[key] = self._in_thread(self._cache.fetch, key)
            d.addErrback(self._failed, key)
            d.addBoth(self._done, key)

    def _done(self, result, key: str):
        del self._fetching[key]

    @staticmethod
    def _failed(failure, key: str) -> None:
        # The session that asks for it fetches it again, and says why.
        log.debug("Body {key} not fetched ahead: {error}", key=key, error=failure.getErrorMessage())
