"""Which networks a listener serves (gateway/net/access.py), on StringTransports."""

import pytest
from twisted.internet.address import UNIXAddress
from twisted.internet.interfaces import ISSLTransport, ITLSTransport
from twisted.internet.protocol import ServerFactory
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from zope.interface import directlyProvides, implementer

from gateway.net.access import NetworkAccessFactory
from gateway.policy.addresses import Networks
from tests.net.test_connlimit import Greeter, close, connect, v4

OFFICE = Networks.parse(["192.0.2.0/24"])


def factory(kind="pop3", admits=lambda host: host in OFFICE):
    return NetworkAccessFactory(ServerFactory.forProtocol(Greeter), admits, "legacy", kind)


@pytest.mark.parametrize(
    ("kind", "line"),
    [
        ("pop3", b"-ERR [SYS/PERM] Not served to your network\r\n"),
        ("imap", b"* BYE Not served to your network\r\n"),
        ("pop3s", b""),
        ("imaps", b""),
    ],
)
def test_a_peer_elsewhere_is_answered_and_closed_before_the_protocol_sees_it(kind, line):
    with capturedLogs() as events:
        protocol, transport = connect(factory(kind), v4("198.51.100.7"))
    assert transport.value() == line
    assert transport.disconnecting
    protocol.dataReceived(b"USER alice\r\n")
    assert protocol.wrappedProtocol.received == b""
    close(protocol)
    assert not protocol.wrappedProtocol.lost
    assert [formatEvent(e) for e in events] == [
        "Refused a legacy connection from 198.51.100.7: not a network it serves"
    ]


def test_a_peer_of_a_served_network_reaches_the_protocol():
    protocol, transport = connect(factory(), v4("192.0.2.9"))
    assert transport.value() == b"+OK hello\r\n"
    greeter = protocol.wrappedProtocol
    protocol.dataReceived(b"CAPA\r\n")
    assert greeter.received == b"CAPA\r\n"
    close(protocol)
    assert greeter.lost


def test_the_rule_is_asked_per_connection_with_the_peer_as_the_protocols_name_it():
    asked = []

    def admits(host):
        asked.append(host)
        return host == "local"

    access = factory(admits=admits)
    protocol = access.buildProtocol(None)
    transport = StringTransport(peerAddress=UNIXAddress(b"/run/gateway/pop3.sock"))
    protocol.makeConnection(transport)
    assert transport.value() == b"+OK hello\r\n"
    connect(access, v4("192.0.2.9"))
    assert asked == ["local", "192.0.2.9"]


def test_an_admitted_protocol_is_given_the_transport_itself():
    # What it writes, its producers and its STARTTLS skip the gate, and
    # after STARTTLS it sees a secure transport.
    @implementer(ITLSTransport)
    class TlsTransport(StringTransport):
        def startTLS(self, context_factory, normal=True):
            directlyProvides(self, ISSLTransport, ITLSTransport)

    protocol = factory().buildProtocol(None)
    transport = TlsTransport(peerAddress=v4("192.0.2.9"))
    protocol.makeConnection(transport)
    greeter = protocol.wrappedProtocol
    assert greeter.transport is transport
    greeter.transport.startTLS(object())
    assert ISSLTransport.providedBy(greeter.transport)
    close(protocol)
    assert greeter.lost
