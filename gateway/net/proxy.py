"""
The PROXY protocol (HAProxy's, v1 text and v2 binary) on listeners written
``haproxy:tcp:...``, believed only from the networks in ``[proxy] trusted``.

Twisted's ``haproxy:`` endpoint wrapper believes a header from anyone, so a
client reaching the port directly could claim any address and dodge per-IP
limits and logs.  It also connects the application protocol before the
header arrives (the greeting goes out first and ``getPeer`` in
``connectionMade`` names the load balancer), and drops a header split over
two packets shorter than 16 or 8 bytes.  This wrapper reuses Twisted's
parsers and address handling, and instead:

- drops at once a connection whose peer is not trusted;
- buffers the header whatever its fragmentation, with a deadline;
- connects the application only once the header is parsed, so everything
  it does, limits included, sees the real client;
- takes a v2 header naming UNIX socket addresses (a client of a balancer
  on its own host) as LOCAL: the connection's own addresses stand, since
  there is no IP address to count or log.
"""

from __future__ import annotations

import ipaddress
from twisted.internet.address import IPv6Address, UNIXAddress
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
# Twisted exports only proxyEndpoint; its parsers and wrapper are what we
# build on, from their private modules (tests/test_proxy.py pins behaviour).
from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
from twisted.protocols.haproxy._info import ProxyInfo
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper, HAProxyWrappingFactory
from zope.interface import directlyProvides, providedBy

from gateway.policy.addresses import Networks

log = Logger()

PREFIX = "haproxy:"
# A trusted balancer sends its header at once; a connection that does not is
# a health check gone wrong or a stuck peer, and holds a socket.
HEADER_TIMEOUT = 10.0


def split_description(description: str) -> tuple[bool, str]:
    """``haproxy:tcp:143`` -> (True, ``tcp:143``); anything else unchanged."""
    if description.lower().startswith(PREFIX):
        return True, description[len(PREFIX):]
    return False, description


class _TrustedProxyConnection(HAProxyProtocolWrapper):
    _refused = False
    _connected_wrapped = False
    _buffer = b""
    _deadline = None

    def makeConnection(self, transport):
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        peer = transport.getPeer()
        if not self.factory.trusts(peer):
            self._refused = True
            log.warn("Dropped a connection from {host}: not a trusted PROXY source", host=getattr(peer, "host", peer))
            transport.loseConnection()
            return
        self._deadline = self.factory.clock.callLater(HEADER_TIMEOUT, self._header_too_late)

    def _header_too_late(self):
        self._deadline = None
        log.warn("Dropped a connection from a PROXY source: no header within {seconds}s", seconds=HEADER_TIMEOUT)
        self.transport.loseConnection()

    def dataReceived(self, data):
        if self._refused:
            return
        if self._connected_wrapped:
            self.wrappedProtocol.dataReceived(data)
            return
        try:
            self._read_header(data)
        except InvalidProxyHeader:
            self._refused = True
            log.warn("Dropped a connection: invalid PROXY header")
            self._cancel_deadline()
            self.transport.loseConnection()

    def _read_header(self, data):
        if self._parser is None:
            self._buffer += data
            buffered = self._buffer
            if V2Parser.PREFIX.startswith(buffered[:12]) and len(buffered) < 16:
                return
            if b"PROXY "[: len(buffered)] == buffered[:6] and len(buffered) < 6:
                return
            if buffered[:12] == V2Parser.PREFIX and buffered[12] & 0xF0 == 0x20:
                self._parser = V2Parser()
            elif buffered.startswith(b"PROXY "):
                self._parser = V1Parser()
            else:
                raise InvalidProxyHeader()
            data, self._buffer = buffered, b""
        info, remaining = self._parser.feed(data)
        if info is None:
            return
        self._proxyInfo = _checked(info)
        self._cancel_deadline()
        self._connected_wrapped = True
        self.wrappedProtocol.makeConnection(self)
        if remaining and not self.disconnecting and not self.transport.disconnecting:
            self.wrappedProtocol.dataReceived(remaining)

    def _cancel_deadline(self):
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def startTLS(self, context_factory, normal=True):
        # As in connlimit: a STARTTLS'd connection must look secure through us.
        self.transport.startTLS(context_factory, normal)
        directlyProvides(self, providedBy(self.transport))

    def connectionLost(self, reason):
        self._cancel_deadline()
        self.factory.unregisterProtocol(self)
        if self._connected_wrapped:
            self.wrappedProtocol.connectionLost(reason)
        self.wrappedProtocol = None


def _checked(info: ProxyInfo) -> ProxyInfo:
    """
    The addresses to believe.  Twisted's v1 parser takes any word for an
    address ("PROXY TCP4 x y 1 2"), and such a word would become a per-IP
    limit key and a log entry: refused.  UNIX socket addresses (v2 AF_UNIX)
    have no host: the header counts as LOCAL (HAProxy's proxy-protocol.txt
    2.2: the receiver then uses the connection's real endpoints).
    """
    addresses = (info.source, info.destination)
    if any(isinstance(address, UNIXAddress) for address in addresses):
        return ProxyInfo(info.header, None, None)
    for address in addresses:
        if address is None:
            continue
        try:
            ip = ipaddress.ip_address(address.host)
        except ValueError:
            raise InvalidProxyHeader() from None
        if ip.version != (6 if isinstance(address, IPv6Address) else 4) or not 0 <= address.port <= 65535:
            raise InvalidProxyHeader()
    return info


class TrustedProxyFactory(HAProxyWrappingFactory):
    """
    Wrap ``wrapped_factory`` for a ``haproxy:`` listener, taking headers from
    ``trusted`` (``[proxy] trusted``, resolved); ``clock`` is the reactor.
    """

    protocol = _TrustedProxyConnection

    def __init__(self, wrapped_factory, trusted: Networks, clock) -> None:
        super().__init__(wrapped_factory)
        self.trusted = trusted
        self.clock = clock

    def trusts(self, address) -> bool:
        return getattr(address, "host", None) in self.trusted
