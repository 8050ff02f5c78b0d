"""
PROXY protocol on haproxy: listeners, only from trusted networks: the wrapper
on StringTransport, then the real server over real sockets, connecting from
127.0.0.1 (trusted by default) and 127.0.0.2 (not; Linux routes all of
127/8 to lo).
"""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.haproxy._wrapper import HAProxyWrappingFactory
from twisted.python.failure import Failure

from gateway.net.proxy import HEADER_TIMEOUT, TrustedProxyFactory, split_description
from gateway.policy.addresses import Networks
from tests.serverproc import GatewayProcess

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v1_header(source="192.0.2.7", port=5555):
    return f"PROXY TCP4 {source} 127.0.0.1 {port} 110\r\n".encode()


def v2_header(source="192.0.2.8", port=6666):
    source = ipaddress.ip_address(source)
    destination = ipaddress.ip_address("127.0.0.1" if source.version == 4 else "::1")
    addresses = source.packed + destination.packed + struct.pack("!HH", port, 110)
    # Version 2, command PROXY; TCP over IPv4 or IPv6.
    family = b"\x11" if source.version == 4 else b"\x21"
    return V2_SIGNATURE + b"\x21" + family + struct.pack("!H", len(addresses)) + addresses


def v2_unix_header(source=b"/run/haproxy/client.sock", destination=b"/run/haproxy/imap.sock"):
    # Version 2, command PROXY; AF_UNIX, stream: two 108-byte paths.
    addresses = source.ljust(108, b"\0") + destination.ljust(108, b"\0")
    return V2_SIGNATURE + b"\x21\x31" + struct.pack("!H", len(addresses)) + addresses


class Greeter(Protocol):
    def __init__(self):
        self.peer = None
        self.received = b""
        self.lost = False

    def connectionMade(self):
        self.peer = self.transport.getPeer()
        self.transport.write(b"+OK hello\r\n")

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.lost = True


def connect(peer, trusted=("127.0.0.1/32", "::1/128")):
    clock = Clock()
    factory = TrustedProxyFactory(ServerFactory.forProtocol(Greeter), Networks.parse(trusted), clock)
    wrapper = factory.buildProtocol(peer)
    transport = StringTransport(peerAddress=peer)
    wrapper.makeConnection(transport)
    return wrapper, transport, clock


LOCAL = IPv4Address("TCP", "127.0.0.1", 40000)


def test_split_description():
    assert split_description("haproxy:tcp:143") == (True, "tcp:143")
    assert split_description("HAPROXY:tcp:143:interface=::1") == (True, "tcp:143:interface=::1")
    assert split_description("tcp:143") == (False, "tcp:143")


def test_twisted_wrapper_believes_a_header_from_anyone():
    """Issue 4: the haproxy endpoint wrapper checks no trusted source."""
    factory = HAProxyWrappingFactory(ServerFactory.forProtocol(Greeter))
    stranger = IPv4Address("TCP", "203.0.113.9", 40000)
    wrapper = factory.buildProtocol(stranger)
    wrapper.makeConnection(StringTransport(peerAddress=stranger))
    wrapper.dataReceived(v1_header("192.0.2.99"))
    assert wrapper.getPeer().host == "192.0.2.99"
    # And the application was connected (and greeted) before the header.
    assert wrapper.wrappedProtocol.peer == stranger


def test_untrusted_peer_is_dropped_before_the_protocol_sees_it():
    stranger = IPv4Address("TCP", "127.0.0.2", 40000)
    wrapper, transport, clock = connect(stranger)
    inner = wrapper.wrappedProtocol
    assert transport.disconnecting
    wrapper.dataReceived(v1_header() + b"USER alice\r\n")
    wrapper.connectionLost(Failure(Exception("gone")))
    assert transport.value() == b""
    assert inner.peer is None
    assert inner.received == b""
    assert not inner.lost


@pytest.mark.parametrize("header", [v1_header(), v2_header(source="192.0.2.7", port=5555)])
def test_trusted_header_names_the_client_even_byte_by_byte(header):
    wrapper, transport, clock = connect(LOCAL)
    inner = wrapper.wrappedProtocol
    for byte in header:
        assert transport.value() == b""
        wrapper.dataReceived(bytes([byte]))
    # The greeting goes out only now, and the protocol saw the real client.
    assert transport.value() == b"+OK hello\r\n"
    assert (inner.peer.host, inner.peer.port) == ("192.0.2.7", 5555)
    wrapper.dataReceived(b"USER alice\r\n")
    assert inner.received == b"USER alice\r\n"
    assert not clock.getDelayedCalls()


def test_bytes_after_the_header_in_the_same_packet_are_delivered():
    wrapper, transport, clock = connect(LOCAL)
    wrapper.dataReceived(v2_header() + b"CAPA\r\n")
    assert wrapper.wrappedProtocol.peer.host == "192.0.2.8"
    assert wrapper.wrappedProtocol.received == b"CAPA\r\n"


@pytest.mark.parametrize(
    "garbage",
    [
        b"USER alice\r\n",
        b"PROXY TCP4 not-an-ip 127.0.0.1 1 2\r\n",
        b"PROXY TCP4 192.0.2.1 127.0.0.1 99999 2\r\n",
        b"PROXY TCP6 192.0.2.1 127.0.0.1 1 2\r\n",
        b"PROXY " + b"x" * 200,
        V2_SIGNATURE + b"\x11\x11\x00\x00",
    ],
)
def test_an_invalid_header_drops_the_connection(garbage):
    wrapper, transport, clock = connect(LOCAL)
    wrapper.dataReceived(garbage)
    assert transport.disconnecting
    assert transport.value() == b""
    assert wrapper.wrappedProtocol.peer is None
    assert not clock.getDelayedCalls()


def test_no_header_in_time_drops_the_connection():
    wrapper, transport, clock = connect(LOCAL)
    wrapper.dataReceived(b"PROX")
    clock.advance(HEADER_TIMEOUT - 0.1)
    assert not transport.disconnecting
    clock.advance(0.1)
    assert transport.disconnecting
    assert wrapper.wrappedProtocol.peer is None


def test_v2_ipv6_header_names_the_ipv6_client():
    wrapper, transport, clock = connect(LOCAL)
    wrapper.dataReceived(v2_header("2001:db8:1:2::7", 7777))
    peer = wrapper.wrappedProtocol.peer
    assert isinstance(peer, IPv6Address) and peer.port == 7777
    # Twisted writes it uncompressed ("2001:db8:1:2:0:0:0:7"); the limits and logs normalise.
    assert ipaddress.ip_address(peer.host) == ipaddress.ip_address("2001:db8:1:2::7")


def test_v2_unix_socket_addresses_count_as_local():
    """HAProxy relaying a client of a UNIX socket: the balancer's own address stands."""
    wrapper, transport, clock = connect(LOCAL)
    wrapper.dataReceived(v2_unix_header() + b"CAPA\r\n")
    assert not transport.disconnecting
    assert transport.value() == b"+OK hello\r\n"
    assert wrapper.wrappedProtocol.peer == LOCAL
    assert wrapper.getHost() == transport.getHost()
    assert wrapper.wrappedProtocol.received == b"CAPA\r\n"


def test_ipv4_mapped_peer_matches_an_ipv4_network():
    wrapper, transport, clock = connect(IPv6Address("TCP", "::ffff:10.1.2.3", 40000), trusted=["10.0.0.0/8"])
    assert not transport.disconnecting
    wrapper, transport, clock = connect(IPv6Address("TCP", "::ffff:11.1.2.3", 40000), trusted=["10.0.0.0/8"])
    assert transport.disconnecting


# Real sockets, the real server


def connect_from(source: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("proxy")
    config = base / "gateway.toml"
    config.write_text("[limits]\nmax_connections_per_ip = 1\n")
    with GatewayProcess(base / "data", pop3="haproxy:tcp:0:interface=127.0.0.1", config=config) as running:
        yield running


def test_v1_and_v2_headers_from_a_trusted_source(server):
    first = connect_from("127.0.0.1", server.port("pop3"))
    second = connect_from("127.0.0.1", server.port("pop3"))
    try:
        first.sendall(v1_header("192.0.2.7"))
        assert first.makefile("rb").readline().startswith(b"+OK")
        second.sendall(v2_header("192.0.2.8"))
        assert second.makefile("rb").readline().startswith(b"+OK")
        # The per-IP limit (1) counts the clients behind the balancer, not
        # the balancer: a second connection for 192.0.2.7 is refused.
        with connect_from("127.0.0.1", server.port("pop3")) as third:
            third.sendall(v2_header("192.0.2.7"))
            reader = third.makefile("rb")
            assert reader.readline() == b"-ERR [SYS/TEMP] Too many connections\r\n"
            assert reader.read() == b""
    finally:
        first.close()
        second.close()


def test_ipv6_clients_of_one_64_count_as_one_address(server):
    """max_connections_per_ip (1) holds for a /64, whatever address in it the client picks."""
    first = connect_from("127.0.0.1", server.port("pop3"))
    try:
        first.sendall(v2_header("2001:db8:1:2::1"))
        assert first.makefile("rb").readline().startswith(b"+OK")
        for source, answer in (("2001:db8:1:2:ffff::9", b"-ERR [SYS/TEMP] Too many connections\r\n"),
                               ("2001:db8:1:3::1", b"+OK")):
            with connect_from("127.0.0.1", server.port("pop3")) as other:
                other.sendall(v2_header(source))
                assert other.makefile("rb").readline().startswith(answer)
    finally:
        first.close()


def test_v2_unix_socket_header_from_a_trusted_source_is_served(server):
    with connect_from("127.0.0.1", server.port("pop3")) as sock:
        sock.sendall(v2_unix_header())
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"+OK")
        sock.sendall(b"CAPA\r\n")
        assert reader.readline() == b"+OK Capability list follows\r\n"
    assert "AttributeError" not in server.log() and "Traceback" not in server.log()


@pytest.mark.parametrize("header", [v1_header("192.0.2.50"), v2_header("192.0.2.51")])
def test_header_from_an_untrusted_source_is_dropped(server, header):
    with connect_from("127.0.0.2", server.port("pop3")) as stranger:
        try:
            stranger.sendall(header)
            received = stranger.recv(100)
        except ConnectionResetError:
            received = b""
        assert received == b""
    assert "not a trusted PROXY source" in server.log()
