"""
Tests for gateway.net.deflate: COMPRESS=DEFLATE (RFC 4978) as a transport
between a protocol and its connection.
"""

import socket
import zlib

import pytest
from twisted.internet import protocol
from twisted.internet.interfaces import IPushProducer, ISSLTransport, ITransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.basic import LineReceiver
from zope.interface import alsoProvides, implementer
from zope.interface.verify import verifyObject

from gateway.net.deflate import SLICE, DeflateTransport

SYNC_MARKER = b"\x00\x00\xff\xff"


class Receiver:
    def __init__(self):
        self.data = []
        self.failures = 0
        self.on_data = None

    def deliver(self, data):
        self.data.append(data)
        if self.on_data is not None:
            self.on_data(data)

    def failed(self):
        self.failures += 1


def make(inner=None, level=6):
    clock = Clock()
    inner = inner or StringTransport()
    receiver = Receiver()
    wrapped = DeflateTransport(inner, clock, receiver.deliver, receiver.failed, level)
    return wrapped, inner, clock, receiver


def client_inflater():
    return zlib.decompressobj(-15)


def test_provides_the_transport_interfaces():
    wrapped, _, _, _ = make()
    verifyObject(ITransport, wrapped)
    verifyObject(IPushProducer, wrapped)
    assert not ISSLTransport.providedBy(wrapped)


def test_under_tls_it_says_so():
    inner = StringTransport()
    alsoProvides(inner, ISSLTransport)
    wrapped, _, _, _ = make(inner)
    assert ISSLTransport.providedBy(wrapped)


def test_writes_of_one_turn_end_with_one_sync_flush():
    wrapped, inner, clock, _ = make()
    for number in range(100):
        wrapped.write(b"* %d FETCH (FLAGS (\\Seen))\r\n" % number)
    wrapped.writeSequence([b"a1 OK ", b"FETCH completed\r\n"])
    clock.advance(0)
    sent = inner.value()
    assert sent.endswith(SYNC_MARKER) and sent.count(SYNC_MARKER) == 1
    plain = client_inflater().decompress(sent)
    assert plain == b"".join(b"* %d FETCH (FLAGS (\\Seen))\r\n" % n for n in range(100)) + b"a1 OK FETCH completed\r\n"
    # Repetitive IMAP output shrinks.
    assert len(sent) * 5 < len(plain)
    assert (wrapped.plain_out, wrapped.compressed_out) == (len(plain), len(sent))


def test_every_batch_can_be_read_before_the_next():
    wrapped, inner, clock, _ = make()
    inflater = client_inflater()
    for batch in (b"* OK first\r\n", b"* OK second\r\n"):
        wrapped.write(batch)
        clock.advance(0)
        assert inflater.decompress(inner.value()) == batch
        inner.clear()


def test_closing_flushes_first():
    wrapped, inner, clock, _ = make()
    wrapped.write(b"* BYE Logging out\r\n")
    wrapped.loseConnection()
    assert inner.disconnecting and wrapped.disconnecting
    assert client_inflater().decompress(inner.value()) == b"* BYE Logging out\r\n"
    assert not clock.getDelayedCalls()


def test_input_is_inflated():
    wrapped, _, _, receiver = make()
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    sent = deflater.compress(b"a1 NOOP\r\n") + deflater.flush(zlib.Z_SYNC_FLUSH)
    # A byte at a time: partial blocks wait for the rest.
    for index in range(len(sent)):
        wrapped.received(sent[index:index + 1])
    assert b"".join(receiver.data) == b"a1 NOOP\r\n"


def test_a_paused_protocol_gets_nothing_and_the_input_stays_compressed():
    wrapped, inner, _, receiver = make()
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = deflater.compress(b"x" * (64 * SLICE)) + deflater.flush(zlib.Z_SYNC_FLUSH)
    assert len(bomb) < SLICE // 8
    # The protocol pauses after the first slice (a command started).
    receiver.on_data = lambda data: wrapped.pauseProducing()
    wrapped.received(bomb)
    assert [len(data) for data in receiver.data] == [SLICE]
    assert inner.producerState == "paused"
    # Each resume hands one more slice to a protocol that pauses again.
    wrapped.resumeProducing()
    assert len(receiver.data) == 2 and inner.producerState == "paused"
    receiver.on_data = None
    wrapped.resumeProducing()
    assert sum(map(len, receiver.data)) == 64 * SLICE
    assert inner.producerState == "producing"


def test_a_corrupt_stream_fails_once():
    wrapped, inner, clock, receiver = make()
    receiver.on_data = None
    wrapped.received(b"\xff\xff\xff\xff not deflate")
    assert receiver.failures == 1
    wrapped.received(b"more")
    assert receiver.failures == 1 and receiver.data == []


def test_the_end_of_the_clients_stream_ends_its_input():
    wrapped, _, _, receiver = make()
    deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
    wrapped.received(deflater.compress(b"a1 LOGOUT\r\n") + deflater.flush() + b"trailing junk")
    assert b"".join(receiver.data) == b"a1 LOGOUT\r\n" and receiver.failures == 0


def test_producers_are_registered_with_the_connection():
    wrapped, inner, _, _ = make()

    @implementer(IPushProducer)
    class Producer:
        def pauseProducing(self):
            pass

        def resumeProducing(self):
            pass

        def stopProducing(self):
            pass

    producer = Producer()
    wrapped.registerProducer(producer, True)
    assert inner.producer is producer and inner.streaming
    wrapped.unregisterProducer()
    assert inner.producer is None


# -- over a real socket ----------------------------------------------------------------


class EchoLines(LineReceiver):
    """Echoes lines; "COMPRESS" switches both directions to DEFLATE, as IMAP does."""

    delimiter = b"\r\n"

    def __init__(self, reactor):
        self.reactor = reactor
        self.deflate = None

    def dataReceived(self, data):
        if self.deflate is not None:
            self.deflate.received(data)
        else:
            super().dataReceived(data)

    def lineReceived(self, line):
        if line == b"COMPRESS" and self.deflate is None:
            self.sendLine(b"OK DEFLATE active")
            self.deflate = DeflateTransport(self.transport, self.reactor,
                                            lambda data: LineReceiver.dataReceived(self, data),
                                            lambda: self.transport.loseConnection())
            self.transport = self.deflate
            return
        self.sendLine(b"echo " + line)


def test_both_ways_over_tcp(reactor_thread):
    reactor = reactor_thread.reactor
    factory = protocol.Factory.forProtocol(lambda: EchoLines(reactor))
    port = reactor_thread.call(reactor.listenTCP, 0, factory, interface="127.0.0.1")
    try:
        with socket.create_connection(("127.0.0.1", port.getHost().port), timeout=10) as client:
            client.sendall(b"COMPRESS\r\n")
            answer = b""
            while not answer.endswith(b"\r\n"):
                answer += client.recv(100)
            assert answer == b"OK DEFLATE active\r\n"
            deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
            inflater = zlib.decompressobj(-15)
            lines = [b"line %d " % n + b"x" * (n % 700) for n in range(2000)]
            client.sendall(deflater.compress(b"".join(line + b"\r\n" for line in lines))
                           + deflater.flush(zlib.Z_SYNC_FLUSH))
            expected = b"".join(b"echo " + line + b"\r\n" for line in lines)
            received = b""
            while len(received) < len(expected):
                chunk = client.recv(65536)
                assert chunk, "connection closed early"
                received += inflater.decompress(chunk)
            assert received == expected
    finally:
        reactor_thread.call(port.stopListening)
