"""
TCP connections that send at once: a write to a connection with nothing
waiting to go goes to the socket in the call, not on the reactor's next
turn.

Twisted's ``FileDescriptor.write`` only buffers: it asks the reactor to
watch the socket for writing (an ``epoll_ctl``), and on the next turn of
the loop ``doWrite`` joins the buffer, sends it and stops watching (a
second ``epoll_ctl``).  For a server that answers one command with one
reply, as POP3 RETR, an IMAP FETCH or an LMTP reply, that is a loop turn
and two system calls per reply on the one reactor thread, and the reply
leaves only after every other ready connection has been read.  Here the
reply goes out in the call when nothing is buffered; what the socket does
not take is buffered as before, and Twisted's ``doWrite``, producers,
``loseConnection`` and TLS (``startTLS``: Twisted's TLS layer writes
underneath ``write``) work unchanged on it.

``tests/net/test_writethrough.py`` shows the gap and fails if Twisted
renames what this relies on (``dataBuffer``, ``offset``, ``_tempDataLen``,
``_writeDisconnected``, ``Port.transport``).
"""

from __future__ import annotations

import socket

from twisted.internet import tcp

# Written through in one sendmsg of many pieces at most (IOV_MAX is 1024 on Linux).
_MAX_PIECES = 512


class WriteThroughServer(tcp.Server):
    """A server-side TCP connection whose writes are sent in the call when nothing waits."""

    def _idle(self) -> bool:
        """Nothing buffered, so sending now keeps the order of the bytes."""
        return (
            not self.TLS
            and self.connected
            and not self._writeDisconnected
            and not self._tempDataLen
            and self.offset == len(self.dataBuffer)
        )

    def _send(self, send, data) -> int:
        """Bytes the socket took now; 0 when it takes none or fails (the buffered path sees to that)."""
        try:
            return send(data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:
            # A reset or broken pipe: doWrite meets it again and ends the connection.
            return 0

    def write(self, data: bytes) -> None:
        if data and type(data) is bytes and self._idle():
            sent = self._send(self.socket.send, data)
            if sent == len(data):
                return
            data = data[sent:]
        super().write(data)

    def writeSequence(self, iovec) -> None:
        # A tuple too: LineOnlyReceiver.sendLine (POP3's and LMTP's one-line
        # replies) writes one of the line and its CRLF.
        if (
            isinstance(iovec, (list, tuple))
            and iovec
            and len(iovec) <= _MAX_PIECES
            and self._idle()
            and all(type(piece) is bytes for piece in iovec)
        ):
            sent = self._send(self.socket.sendmsg, iovec)
            total = sum(map(len, iovec))
            if sent == total:
                return
            if sent:
                iovec = [b"".join(iovec)[sent:]]
        super().writeSequence(iovec)


def write_through(port) -> None:
    """Make the connections ``port`` accepts from now on send at once (a plain TCP port; others are left as they are)."""
    if isinstance(port, tcp.Port) and port.transport is tcp.Server and port.addressFamily in (
        socket.AF_INET,
        socket.AF_INET6,
    ):
        port.transport = WriteThroughServer
