"""
Which networks a listener serves: a ``WrappingFactory`` that asks, before
the protocol sees a connection, whether its peer may use this listener
(``[pop3] networks``, ``[imap] networks``, a ``[listeners.NAME]`` table's
``networks``), and answers the others with their protocol's line.

As in ``gateway/net/connlimit.py``, the peer is read from the transport
when the connection is made, so that behind a trusted PROXY balancer the
client's own address is what is matched.  It sits outside the connection
limits: a refused client holds no place there.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from zope.interface import directlyProvides, providedBy

from gateway.net.connlimit import peer_host
from gateway.policy.limits import ADDRESSLESS

log = Logger()

# What a refused client reads before the close.
REFUSALS = {
    # RFC 3206 4: SYS/PERM, a problem that will not go away if retried.
    "pop3": b"-ERR [SYS/PERM] Not served to your network\r\n",
    # RFC 3501 7.1.5: a server refusing a connection greets with BYE.
    "imap": b"* BYE Not served to your network\r\n",
    # Implicit TLS: no plain text inside a TLS port; a clean close.
    "pop3s": None,
    "imaps": None,
}


class _AdmittedConnection(ProtocolWrapper):
    _admitted = False

    def makeConnection(self, transport):
        host = peer_host(transport.getPeer()) or ADDRESSLESS
        if not self.factory.admits(host):
            Protocol.makeConnection(self, transport)
            log.info("Refused a {listener} connection from {host}: not a network it serves",
                     listener=self.factory.listener, host=host)
            if self.factory.refusal is not None:
                transport.write(self.factory.refusal)
            transport.loseConnection()
            return
        self._admitted = True
        super().makeConnection(transport)

    def startTLS(self, context_factory, normal=True):
        # STARTTLS/STLS through this wrapper: once the transport is secure,
        # so must the wrapper look (ISSLTransport.providedBy) to the protocol.
        self.transport.startTLS(context_factory, normal)
        directlyProvides(self, providedBy(self.transport))

    def dataReceived(self, data):
        if self._admitted:
            super().dataReceived(data)

    def connectionLost(self, reason):
        if self._admitted:
            super().connectionLost(reason)


class NetworkAccessFactory(WrappingFactory):
    """
    Wrap ``wrapped_factory`` so that only peers ``admits(host)`` (the peer's
    address text, ``local`` for a UNIX socket) reach it; the rule is asked
    at each connection, so a reloaded config applies to the next one.
    ``kind`` (pop3, imap, pop3s, imaps) picks the refusal line.
    """

    protocol = _AdmittedConnection

    def __init__(self, wrapped_factory, admits: Callable[[str], bool], listener: str, kind: str) -> None:
        super().__init__(wrapped_factory)
        self.admits = admits
        self.listener = listener
        self.refusal = REFUSALS[kind]
