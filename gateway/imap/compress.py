"""
COMPRESS DEFLATE (RFC 4978): the IMAP command that puts
``gateway.net.deflate.DeflateTransport`` between the session and its
connection.

A mixin of ``gateway.imap.server.IMAPServer``, first in its bases so that
its ``dataReceived`` sees the connection's bytes before the framing does:
once compression is on they are inflated first.  The tagged OK goes out
uncompressed; both sides compress from the octet after its CRLF (RFC 4978
3), so bytes the client pipelined after the command, already read into
the line buffer, are compressed ones and go back through the inflater.
"""

from __future__ import annotations

from gateway.imap.arguments import word
from gateway.imap.errors import CommandError, bad
from gateway.imap.responses import BYE, OK, Condition, Tagged
from gateway.net.deflate import DeflateTransport

CORRUPT = Condition(BYE, b"Compressed stream is corrupt")


class CompressionActive(CommandError):
    # RFC 5530 3, as Dovecot answers a second COMPRESS.
    text = b"[COMPRESSIONACTIVE] DEFLATE is active already"


class CompressCommand:
    deflate: DeflateTransport | None = None
    # Set while bytes arrive from the inflater rather than the connection.
    _plain = False

    @property
    def compressed(self) -> bool:
        return self.deflate is not None

    def dataReceived(self, data):
        # Twisted's line reader calls this itself with bytes it holds
        # already, plain: b"" from resumeProducing (to run buffered lines)
        # and the rest of a piece after a literal's end (setLineMode).
        if self.deflate is None or not data or self._plain:
            super().dataReceived(data)
        else:
            self.deflate.received(data)

    def _inflated(self, data: bytes) -> None:
        self._as_plain(super().dataReceived, data)

    def setLineMode(self, extra=b""):
        return self._as_plain(super().setLineMode, extra)

    def _as_plain(self, call, data):
        was, self._plain = self._plain, True
        try:
            return call(data)
        finally:
            self._plain = was

    def do_COMPRESS(self, tag, mechanism):
        if mechanism.upper() != b"DEFLATE":
            raise bad(b"Unknown compression mechanism")
        if self.deflate is not None:
            raise CompressionActive()
        # Nothing more is read as commands until the inflater is in place.
        self.pauseProducing()
        pipelined = self.clearLineBuffer()
        self.send(Tagged(tag, OK, b"DEFLATE active"))
        self.deflate = DeflateTransport(self.transport, self.reactor, self._inflated,
                                        lambda: self.close_with(CORRUPT))
        self.transport = self.deflate
        if pipelined:
            self.deflate.received(pipelined)
        self.resumeProducing()

    auth_COMPRESS = select_COMPRESS = (do_COMPRESS, word)
