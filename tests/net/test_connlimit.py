import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import ISSLTransport, ITLSTransport
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.protocols.policies import LimitConnectionsByPeer
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer

from gateway.net.connlimit import ConnectionLimitFactory
from gateway.net.gate import peer_host
from gateway.policy.limits import ConnectionLimiter


class Greeter(Protocol):
    def __init__(self):
        self.lost = False
        self.received = b""

    def connectionMade(self):
        self.transport.write(b"+OK hello\r\n")

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.lost = True


def v4(host="192.0.2.1", port=40000):
    return IPv4Address("TCP", host, port)


def connect(factory, address):
    protocol = factory.buildProtocol(address)
    transport = StringTransport(peerAddress=address)
    protocol.makeConnection(transport)
    return protocol, transport


def close(protocol):
    protocol.connectionLost(Failure(Exception("closed")))


def test_twisted_limit_by_peer_fails_on_todays_addresses():
    """Issue 4: policies.LimitConnectionsByPeer indexes addresses as tuples."""
    factory = LimitConnectionsByPeer(ServerFactory.forProtocol(Greeter))
    factory.startFactory()
    with pytest.raises(TypeError):
        factory.buildProtocol(v4())
    with pytest.raises(TypeError):
        factory.buildProtocol(IPv6Address("TCP", "::1", 40000))


@pytest.mark.parametrize(
    ("listener", "line"),
    [
        ("pop3", b"-ERR [SYS/TEMP] Too many connections\r\n"),
        ("imap", b"* BYE Too many connections\r\n"),
        ("lmtp", b"421 4.3.2 Too many connections\r\n"),
    ],
)
def test_the_connection_over_the_per_ip_limit_gets_its_protocol_line(listener, line):
    factory = ConnectionLimitFactory(ServerFactory.forProtocol(Greeter), ConnectionLimiter(10, 2), listener)
    accepted = [connect(factory, v4(port=n)) for n in (1, 2)]
    for protocol, transport in accepted:
        assert transport.value() == b"+OK hello\r\n"
    refused, transport = connect(factory, v4(port=3))
    assert transport.value() == line
    assert transport.disconnecting
    # Another address still gets in.
    _, other = connect(factory, v4("192.0.2.2"))
    assert other.value() == b"+OK hello\r\n"


def test_implicit_tls_listeners_refuse_with_a_clean_close():
    factory = ConnectionLimitFactory(ServerFactory.forProtocol(Greeter), ConnectionLimiter(10, 1), "imaps")
    connect(factory, v4(port=1))
    refused, transport = connect(factory, v4(port=2))
    assert transport.value() == b""
    assert transport.disconnecting


def test_a_closed_connection_frees_its_place():
    limiter = ConnectionLimiter(10, 1)
    factory = ConnectionLimitFactory(ServerFactory.forProtocol(Greeter), limiter, "pop3")
    first, _ = connect(factory, v4(port=1))
    refused, _ = connect(factory, v4(port=2))
    close(refused)
    # A refused connection's close frees nothing: it held nothing.
    assert limiter.total == 1
    inner = first.wrappedProtocol
    close(first)
    assert inner.lost
    assert limiter.total == 0
    _, transport = connect(factory, v4(port=3))
    assert transport.value() == b"+OK hello\r\n"


def test_refused_connection_never_reaches_the_protocol():
    factory = ConnectionLimitFactory(ServerFactory.forProtocol(Greeter), ConnectionLimiter(1, 1), "pop3")
    connect(factory, v4(port=1))
    refused, _ = connect(factory, v4(port=2))
    inner = refused.wrappedProtocol
    refused.dataReceived(b"USER alice\r\n")
    close(refused)
    assert inner.received == b""
    assert not inner.lost


def test_total_limit_is_shared_between_listeners():
    limiter = ConnectionLimiter(2, 10)
    pop3 = ConnectionLimitFactory(ServerFactory.forProtocol(Greeter), limiter, "pop3")
    imap = ConnectionLimitFactory(ServerFactory.forProtocol(Greeter), limiter, "imap")
    connect(pop3, v4("192.0.2.1"))
    connect(imap, v4("192.0.2.2"))
    _, transport = connect(imap, v4("192.0.2.3"))
    assert transport.value() == b"* BYE Too many connections\r\n"


def test_ipv4_mapped_peers_count_with_ipv4():
    factory = ConnectionLimitFactory(ServerFactory.forProtocol(Greeter), ConnectionLimiter(10, 1), "imap")
    connect(factory, v4("192.0.2.1"))
    _, transport = connect(factory, IPv6Address("TCP", "::ffff:192.0.2.1", 40001))
    assert transport.value() == b"* BYE Too many connections\r\n"


def test_peer_host():
    assert peer_host(v4("192.0.2.1")) == "192.0.2.1"
    assert peer_host(IPv6Address("TCP", "::1", 1)) == "::1"
    # A UNIX-socket peer has no address to count under.
    assert peer_host(UNIXAddress(None)) is None
    assert peer_host(UNIXAddress(b"/run/client.sock")) is None


@implementer(ITLSTransport)
class SwitchingTransport(StringTransport):
    def startTLS(self, context_factory, normal=True):
        self.tls_context = context_factory
        directlyProvides(self, ISSLTransport, ITLSTransport)


def test_starttls_through_the_wrapper_makes_it_look_secure():
    factory = ConnectionLimitFactory(ServerFactory.forProtocol(Greeter), ConnectionLimiter(10, 10), "imap")
    protocol = factory.buildProtocol(v4())
    transport = SwitchingTransport(peerAddress=v4())
    protocol.makeConnection(transport)
    inner = protocol.wrappedProtocol
    assert not ISSLTransport.providedBy(inner.transport)
    inner.transport.startTLS("context")
    assert transport.tls_context == "context"
    assert ISSLTransport.providedBy(inner.transport)


def test_unix_socket_peers_skip_the_per_ip_limit_but_not_the_total():
    factory = ConnectionLimitFactory(ServerFactory.forProtocol(Greeter), ConnectionLimiter(3, 1), "imap")
    unix_peers = [connect(factory, UNIXAddress(None)) for _ in range(3)]
    assert [transport.value() for _, transport in unix_peers] == [b"+OK hello\r\n"] * 3
    with capturedLogs() as events:
        protocol, transport = connect(factory, UNIXAddress(None))
    assert transport.value() == b"* BYE Too many connections\r\n"
    assert [formatEvent(e) for e in events] == ["Refused a imap connection from local: too many connections"]
    close(protocol)
    close(unix_peers[0][0])
    assert connect(factory, UNIXAddress(None))[1].value() == b"+OK hello\r\n"
