"""
Connection limits on a listener: a ``WrappingFactory`` that asks a
``gateway.policy.limits.ConnectionLimiter`` before letting a connection reach the
protocol, and answers the refused ones with their protocol's line.

Twisted's ``policies.LimitConnectionsByPeer`` cannot do this job: it indexes
the address (``addr[0]``, ``getPeer()[1]``) as the tuples of old Twisted
releases, and today's ``IPv4Address``/``IPv6Address`` objects raise
TypeError there (tests/net/test_connlimit.py shows it).

The peer is read from the transport when the connection is made, not from
the address ``buildProtocol`` gets, so that behind the PROXY protocol
wrapper (which makes the connection once the header names the real client)
the limit counts the client, not the load balancer.
"""

from __future__ import annotations

from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from zope.interface import directlyProvides, providedBy

from gateway.policy.limits import ConnectionLimiter

log = Logger()

# What a refused client reads before the close.
REFUSALS = {
    # RFC 2449 8, RFC 3206 4: SYS/TEMP, a transient problem, try later.
    "pop3": b"-ERR [SYS/TEMP] Too many connections\r\n",
    # RFC 3501 7.1.5: a server refusing a connection greets with BYE.
    "imap": b"* BYE Too many connections\r\n",
    # RFC 2033 4.1 uses SMTP's 421 greeting (RFC 5321 3.8); RFC 3463 4.3.2.
    "lmtp": b"421 4.3.2 Too many connections\r\n",
    # Implicit TLS: the client expects a handshake, a plain-text line would be
    # noise; a clean close says enough.
    "pop3s": None,
    "imaps": None,
}


def peer_host(address) -> str | None:
    """
    The IP a limit counts a peer under, or None for a peer without one (a
    UNIX socket): what may connect there is the socket's permissions' call,
    and all its clients share one "address", so only the total applies.
    """
    host = getattr(address, "host", None)
    return host if isinstance(host, str) else None


class _LimitedConnection(ProtocolWrapper):
    """One connection: counted while it lives (under its limit key), or refused and closed."""

    _counted = False
    _counted_as: str | None = None

    def makeConnection(self, transport):
        host = peer_host(transport.getPeer())
        counted_as = self.factory.limiter.try_acquire(host)
        if counted_as is None:
            Protocol.makeConnection(self, transport)
            log.info(
                "Refused a {listener} connection from {host}: too many connections",
                listener=self.factory.listener,
                host=host or "local",
            )
            if self.factory.refusal is not None:
                transport.write(self.factory.refusal)
            transport.loseConnection()
            return
        self._counted, self._counted_as = True, counted_as
        super().makeConnection(transport)

    def startTLS(self, context_factory, normal=True):
        # STARTTLS/STLS through this wrapper: once the transport is secure,
        # so must the wrapper look (ISSLTransport.providedBy) to the protocol.
        self.transport.startTLS(context_factory, normal)
        directlyProvides(self, providedBy(self.transport))

    def dataReceived(self, data):
        if self._counted:
            super().dataReceived(data)

    def connectionLost(self, reason):
        if not self._counted:
            return
        self.factory.limiter.release(self._counted_as)
        self._counted = False
        super().connectionLost(reason)


class ConnectionLimitFactory(WrappingFactory):
    """
    Wrap ``wrapped_factory`` so that its connections first take a place in
    ``limiter`` (shared between listeners that share a budget); ``kind``
    (the listener's own name unless it has another: pop3, imap, lmtp,
    pop3s, imaps) picks the line written to a refused client before the
    close, if any.
    """

    protocol = _LimitedConnection

    def __init__(self, wrapped_factory, limiter: ConnectionLimiter, listener: str, kind: str | None = None) -> None:
        super().__init__(wrapped_factory)
        self.limiter = limiter
        self.listener = listener
        self.refusal = REFUSALS[kind or listener]
