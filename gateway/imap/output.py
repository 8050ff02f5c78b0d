"""
Large answers (FETCH) written in large pieces, at the pace the client reads.

Many small messages go out as one ``transport.write`` of about ``CHUNK``
bytes, instead of one write (and one trip through the protocol wrappers and
the reactor) each; a big body goes out ``CHUNK`` bytes at a time.  Between
pieces the writer waits while the transport's buffer is full, as a streaming
producer, so memory per session stays near ``CHUNK`` plus the transport's
buffer whatever the size of the answer (DESIGN.md, "Performance rules").
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

CHUNK = 256 * 1024


class ShortBody(OSError):
    """A stored body ended before the size its literal announced."""


@implementer(IPushProducer)
class Output:
    """
    Gathers the pieces of one answer for ``transport``; registered as its
    producer from creation to ``finish``.  ``closing()`` says whether the
    session said BYE or lost its connection; then, or once the transport
    stopped its producer, nothing more is written.
    """

    def __init__(self, transport, closing):
        self._transport = transport
        self._closing = closing
        self._pieces: list[bytes] = []
        self._size = 0
        self._paused = False
        self._waiting: defer.Deferred | None = None
        self.stopped = False
        transport.registerProducer(self, True)

    def write(self, data: bytes) -> None:
        self._pieces.append(data)
        self._size += len(data)
        if self._size >= CHUNK:
            self.flush()

    def flush(self) -> None:
        pieces, self._pieces, self._size = self._pieces, [], 0
        if pieces and not self.stopped and not self._closing():
            # The transport joins its buffer anyway: no copy of our own.
            self._transport.writeSequence(pieces)

    @property
    def full(self) -> bool:
        """Whether the transport holds more than it wants: ``drain`` would wait."""
        return self._paused and not self.stopped

    async def drain(self) -> None:
        """Wait while the transport holds more than it wants."""
        while self._paused and not self.stopped:
            self._waiting = defer.Deferred()
            await self._waiting

    async def write_file(self, file, start: int, end: int) -> None:
        """Bytes ``start``..``end`` of ``file``, ``CHUNK`` at a time."""
        file.seek(start)
        left = end - start
        while left and not self.stopped:
            chunk = file.read(min(CHUNK, left))
            if not chunk:
                raise ShortBody(f"stored body is {left} bytes short")
            left -= len(chunk)
            self.write(chunk)
            await self.drain()

    def finish(self, keep: bool = False) -> list[bytes]:
        """
        Give the transport back, and write what is left; with ``keep``,
        return it instead, for the caller to write with what follows.
        """
        pieces = []
        if keep:
            if not self.stopped and not self._closing():
                pieces = self._pieces
            self._pieces, self._size = [], 0
        else:
            self.flush()
        self._transport.unregisterProducer()
        return pieces

    # -- IPushProducer: the transport tells us how full it is -------------

    def pauseProducing(self):
        self._paused = True

    def resumeProducing(self):
        self._paused = False
        self._wake()

    def stopProducing(self):
        self.stopped = True
        self._wake()

    def _wake(self):
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.callback(None)
