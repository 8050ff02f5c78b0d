"""
COMPRESS=DEFLATE (RFC 4978): raw DEFLATE (RFC 1951, no zlib header) both
ways on a connection, over whatever transport it has: TCP, STARTTLS or
implicit TLS.

``DeflateTransport`` stands between a protocol and its transport.  What
the protocol writes is deflated at once, so the transport's buffer (and so
the producers it pauses) sees every byte; one Z_SYNC_FLUSH ends each batch
of writes (a reactor turn, or before the connection closes), so the client
can inflate everything it was sent without waiting for more.  What arrives
is inflated a slice at a time and handed to the protocol only while the
protocol reads: a paused protocol leaves the rest compressed, so a small
hostile input that inflates a thousandfold never sits in memory inflated.

No protocol here: the protocol hands received bytes to ``received`` and
gives a ``deliver`` that takes the inflated ones.
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Callable, Iterable

from twisted.internet.interfaces import IConsumer, IPushProducer, ISSLTransport, ITCPTransport, ITransport
from twisted.logger import Logger
from zope.interface import alsoProvides, implementer

log = Logger()

# RFC 4978 4: raw DEFLATE, a 32 KB window.
_WBITS = -15
# Bytes of inflated input handed to the protocol at a time.
SLICE = 64 * 1024


class CompressionError(Exception):
    """The client's compressed stream cannot be inflated."""


@implementer(ITransport, IConsumer, IPushProducer)
class DeflateTransport:
    """
    The protocol's transport once compression is on (RFC 4978 3: both
    sides start with the octet after the tagged OK's CRLF).

    ``deliver(data)`` takes inflated input; ``failed()`` is called once if
    the client's stream is corrupt (the protocol says BYE and closes).
    ``level`` is the zlib compression level, 1 (fast) to 9 (small).
    """

    def __init__(self, transport, reactor, deliver: Callable[[bytes], object],
                 failed: Callable[[], object], level: int = 6):
        self.inner = transport
        self._reactor = reactor
        self._deliver = deliver
        self._failed = failed
        self._deflater = zlib.compressobj(level, zlib.DEFLATED, _WBITS)
        self._inflater = zlib.decompressobj(_WBITS)
        self._flush_call = None
        # Compressed input not inflated yet, while the protocol is paused.
        self._input: deque[bytes] = deque()
        self._paused = False
        self._pumping = False
        self._broken = False
        # Raw byte counts, for the metrics and the benchmarks.
        self.plain_out = self.compressed_out = 0
        self.compressed_in = self.plain_in = 0
        if ISSLTransport.providedBy(transport):
            alsoProvides(self, ISSLTransport)

    # -- what the protocol writes ------------------------------------------

    def write(self, data: bytes) -> None:
        if not data or self._broken:
            return
        self.plain_out += len(data)
        self._send(self._deflater.compress(data))
        self._flush_later()

    def writeSequence(self, data: Iterable[bytes]) -> None:
        for piece in data:
            self.write(piece)

    def _send(self, compressed: bytes) -> None:
        if compressed:
            self.compressed_out += len(compressed)
            self.inner.write(compressed)

    def _flush_later(self) -> None:
        if self._flush_call is None:
            self._flush_call = self._reactor.callLater(0, self.flush)

    def flush(self) -> None:
        """End the batch: everything written so far can be inflated by the client."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        if not self._broken:
            self._send(self._deflater.flush(zlib.Z_SYNC_FLUSH))

    def loseConnection(self) -> None:
        self.flush()
        self.inner.loseConnection()

    def abortConnection(self) -> None:
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        self.inner.abortConnection()

    # -- what arrives ------------------------------------------------------

    def received(self, data: bytes) -> None:
        """Compressed bytes from the client."""
        if self._broken or not data:
            return
        self.compressed_in += len(data)
        self._input.append(data)
        self._pump()

    def _pump(self) -> None:
        # Re-entered from deliver (a command that resumes input at once):
        # the loop already running takes the rest.
        if self._pumping:
            return
        self._pumping = True
        try:
            while self._input and not self._paused and not self._broken:
                try:
                    plain = self._inflater.decompress(self._input[0], SLICE)
                except zlib.error:
                    self._corrupt()
                    return
                tail = self._inflater.unconsumed_tail
                if tail or len(plain) == SLICE:
                    # More may be waiting inside zlib even when all the
                    # input was read: ask again with what is left.
                    self._input[0] = tail
                else:
                    self._input.popleft()
                if self._inflater.eof:
                    # The client ended its stream: nothing after it counts.
                    self._input.clear()
                if plain:
                    self.plain_in += len(plain)
                    self._deliver(plain)
        finally:
            self._pumping = False

    def _corrupt(self) -> None:
        log.info("COMPRESS: the client's stream cannot be inflated; closing")
        self._input.clear()
        self._failed()
        self._broken = True

    # -- the transport's other faces ----------------------------------------

    def pauseProducing(self) -> None:
        self._paused = True
        self.inner.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        self.inner.resumeProducing()
        self._pump()

    def stopProducing(self) -> None:
        self.inner.stopProducing()

    def registerProducer(self, producer, streaming) -> None:
        # Deflated bytes go to the inner transport as they are made, so its
        # buffer is the one to watch.
        self.inner.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.inner.unregisterProducer()

    @property
    def disconnecting(self) -> bool:
        return self.inner.disconnecting

    def getPeer(self):
        return self.inner.getPeer()

    def getHost(self):
        return self.inner.getHost()

    def setTcpNoDelay(self, enabled: bool) -> None:
        if ITCPTransport.providedBy(self.inner):
            self.inner.setTcpNoDelay(enabled)

    def getPeerCertificate(self):
        return self.inner.getPeerCertificate()
