"""TCP connections that send at once (gateway/net/writethrough.py), over real sockets."""

from __future__ import annotations

import socket
import threading

from twisted.internet import defer, tcp
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol

from gateway.net.writethrough import WriteThroughServer, write_through

REPLY = b"+OK 3 octets\r\nabc\r\n.\r\n"


class _Replier(Protocol):
    """Writes its reply, then holds the reactor thread until the client says it has read it."""

    def connectionMade(self):
        self.factory.transports.append(self.transport)
        self.factory.write(self.transport)
        # False if the client read nothing while this call held the reactor.
        self.factory.in_call = self.factory.arrived.wait(timeout=10)


def _serve(reactor_thread, write, through: bool):
    factory = Factory.forProtocol(_Replier)
    factory.write = write
    factory.arrived = threading.Event()
    factory.transports = []
    endpoint = serverFromString(reactor_thread.reactor, "tcp:0:interface=127.0.0.1")
    port = reactor_thread.call(endpoint.listen, factory)
    if through:
        write_through(port)
    return factory, port


def _reply_arrives_during_the_call(reactor_thread, write, through: bool) -> bytes:
    """What the client reads while the server's reactor is still inside the call that wrote."""
    factory, port = _serve(reactor_thread, write, through)
    try:
        with socket.create_connection(("127.0.0.1", port.getHost().port), timeout=10) as client:
            client.settimeout(10 if through else 0.5)
            received = b""
            try:
                while len(received) < len(REPLY):
                    chunk = client.recv(4096)
                    if not chunk:
                        break
                    received += chunk
            except TimeoutError:
                pass
            factory.arrived.set()
            # Once connectionMade has returned: a reply the reactor sent
            # only after the call is not one sent in it.
            reactor_thread.call(lambda: None)
            return received if factory.in_call else b""
    finally:
        factory.arrived.set()
        reactor_thread.call(port.stopListening)


def test_twisted_buffers_a_write_until_the_next_reactor_turn(reactor_thread):
    # The gap: with Twisted's own transport nothing leaves while the call runs.
    received = _reply_arrives_during_the_call(reactor_thread, lambda t: t.write(REPLY), through=False)
    assert received == b""


def test_a_write_is_sent_in_the_call(reactor_thread):
    received = _reply_arrives_during_the_call(reactor_thread, lambda t: t.write(REPLY), through=True)
    assert received == REPLY


def test_a_write_sequence_is_sent_in_the_call(reactor_thread):
    pieces = [REPLY[:4], REPLY[4:14], b"", REPLY[14:]]
    received = _reply_arrives_during_the_call(reactor_thread, lambda t: t.writeSequence(pieces), through=True)
    assert received == REPLY


def test_a_line_receivers_reply_is_sent_in_the_call(reactor_thread):
    # LineOnlyReceiver.sendLine (POP3's and LMTP's one-line replies) writes
    # a tuple of the line and its CRLF.
    line = REPLY[:-2]
    received = _reply_arrives_during_the_call(
        reactor_thread, lambda t: t.writeSequence((line, b"\r\n")), through=True
    )
    assert received == REPLY


class _Flood(Protocol):
    """Writes far more than the socket takes at once, in writes and write sequences, then closes."""

    def connectionMade(self):
        self.factory.kinds.append(type(self.transport))
        for piece in self.factory.pieces:
            if isinstance(piece, (list, tuple)):
                self.transport.writeSequence(piece)
            else:
                self.transport.write(piece)
        self.transport.loseConnection()


def test_what_the_socket_does_not_take_follows_in_order(reactor_thread):
    pieces = []
    for n in range(40):
        block = bytes([65 + n % 26]) * (100_000 + n)
        pieces.append([(block[:7], block[7:]), [block[:7], block[7:]], block][n % 3])
    expected = b"".join(p if isinstance(p, bytes) else b"".join(p) for p in pieces)
    factory = Factory.forProtocol(_Flood)
    factory.pieces = pieces
    factory.kinds = []
    endpoint = serverFromString(reactor_thread.reactor, "tcp:0:interface=127.0.0.1")
    port = reactor_thread.call(endpoint.listen, factory)
    write_through(port)
    try:
        with socket.create_connection(("127.0.0.1", port.getHost().port), timeout=10) as client:
            chunks = []
            while chunk := client.recv(1 << 16):
                chunks.append(chunk)
        assert b"".join(chunks) == expected
        assert factory.kinds == [WriteThroughServer]
    finally:
        reactor_thread.call(port.stopListening)


def test_only_plain_tcp_ports_change(reactor_thread, tmp_path):
    factory = Factory.forProtocol(Protocol)
    port = reactor_thread.call(reactor_thread.reactor.listenUNIX, str(tmp_path / "s.sock"), factory)
    try:
        write_through(port)
        assert port.transport is not WriteThroughServer
    finally:
        reactor_thread.call(port.stopListening)


def test_twisted_still_has_what_this_relies_on(reactor_thread):
    assert tcp.Port.transport is tcp.Server

    class _Names(Protocol):
        def connectionMade(self):
            transport = self.transport
            self.factory.seen.callback(
                (transport.dataBuffer, transport.offset, transport._tempDataLen, transport._writeDisconnected)
            )

    factory = Factory.forProtocol(_Names)
    factory.seen = defer.Deferred()
    endpoint = serverFromString(reactor_thread.reactor, "tcp:0:interface=127.0.0.1")
    port = reactor_thread.call(endpoint.listen, factory)
    try:
        with socket.create_connection(("127.0.0.1", port.getHost().port), timeout=10):
            assert reactor_thread.call(lambda: factory.seen) == (b"", 0, 0, False)
    finally:
        reactor_thread.call(port.stopListening)
