"""What every session knows of its connection (gateway/net/connection.py)."""

import socket

from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher

from gateway.net.connection import peer_address, set_no_delay, under_tls


class Recording(StringTransport):
    no_delay = None

    def setTcpNoDelay(self, enabled):
        self.no_delay = enabled


class Refusing(StringTransport):
    def setTcpNoDelay(self, enabled):
        raise OSError(95, "Operation not supported")


def test_a_tcp_transport_gets_nodelay():
    transport = Recording()
    set_no_delay(transport)
    assert transport.no_delay is True


def test_a_transport_without_tcp_is_left_alone():
    transport = StringTransport()
    set_no_delay(transport)
    assert transport.value() == b""


def test_a_refusal_is_logged_and_the_session_goes_on():
    seen = []
    globalLogPublisher.addObserver(seen.append)
    try:
        set_no_delay(Refusing())
    finally:
        globalLogPublisher.removeObserver(seen.append)
    assert any("TCP_NODELAY" in event.get("log_format", "") for event in seen)


class _Probe(Protocol):
    def connectionMade(self):
        set_no_delay(self.transport)
        handle = self.transport.getHandle()
        self.factory.seen.callback(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def test_a_real_tcp_socket_gets_nodelay(reactor_thread):
    factory = Factory.forProtocol(_Probe)
    factory.seen = defer.Deferred()
    endpoint = serverFromString(reactor_thread.reactor, "tcp:0:interface=127.0.0.1")
    port = reactor_thread.call(endpoint.listen, factory)
    try:
        with socket.create_connection(("127.0.0.1", port.getHost().port), timeout=10):
            assert reactor_thread.call(lambda: factory.seen) != 0
    finally:
        reactor_thread.call(port.stopListening)


class _UnixProbe(Protocol):
    def connectionMade(self):
        set_no_delay(self.transport)
        self.factory.seen.callback(True)


def test_a_unix_socket_is_served(reactor_thread, tmp_path):
    factory = Factory.forProtocol(_UnixProbe)
    factory.seen = defer.Deferred()
    path = tmp_path / "probe.sock"
    port = reactor_thread.call(reactor_thread.reactor.listenUNIX, str(path), factory)
    try:
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(10)
            client.connect(str(path))
            assert reactor_thread.call(lambda: factory.seen) is True
    finally:
        reactor_thread.call(port.stopListening)


def test_the_peer_as_the_policies_name_it():
    from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

    def peer(address):
        return peer_address(StringTransport(peerAddress=address))

    assert peer(IPv4Address("TCP", "192.0.2.7", 1)) == "192.0.2.7"
    # A dual-stack listener's IPv4 client counts as its IPv4 address.
    assert peer(IPv6Address("TCP", "::ffff:192.0.2.7", 1)) == "192.0.2.7"
    assert peer(UNIXAddress(b"/run/gateway/imap.sock")) == "local"


def test_under_tls_by_listener_or_by_starttls():
    from twisted.internet.interfaces import ISSLTransport
    from zope.interface import alsoProvides

    plain = StringTransport()
    assert not under_tls(plain, started_tls=False)
    assert under_tls(plain, started_tls=True)
    implicit = StringTransport()
    alsoProvides(implicit, ISSLTransport)
    assert under_tls(implicit, started_tls=False)
