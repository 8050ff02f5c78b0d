"""
A connection a listener may turn away before its protocol sees it: the
refused peer reads its protocol's line (none on a TLS port) and is closed.

The peer is read from the transport when the connection is made, not from
the address ``buildProtocol`` gets, so that behind the PROXY protocol
wrapper (which makes the connection once the header names the real client)
the gate judges the client, not the load balancer.

An admitted connection's protocol is given the transport itself, not the
gate: the gate has nothing to say about what the protocol writes, and every
write, producer and TLS call of every command would otherwise pass through
one more Python call per gate (a listener has two: its networks and its
connection limits).  The gate stays the transport's protocol, so it still
sees the bytes arrive and the connection end.
"""

from __future__ import annotations

from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper

log = Logger()


def peer_host(address) -> str | None:
    """
    The IP a rule judges a peer by, or None for a peer without one (a UNIX
    socket): what may connect there is the socket's permissions' call.
    """
    host = getattr(address, "host", None)
    return host if isinstance(host, str) else None


class GatedConnection(ProtocolWrapper):
    """
    One connection through a gate: ``admit(host)`` decides when it is made;
    an admitted one reaches the protocol and ``leave()`` runs once when it
    ends.  The factory has ``listener``, ``refusal`` (bytes or None) and
    ``refused_because`` (for the log).
    """

    _admitted = False

    def admit(self, host: str | None) -> bool:
        raise NotImplementedError

    def leave(self) -> None:
        """The admitted connection has ended."""

    def makeConnection(self, transport):
        host = peer_host(transport.getPeer())
        if not self.admit(host):
            Protocol.makeConnection(self, transport)
            log.info(
                "Refused a {listener} connection from {host}: {reason}",
                listener=self.factory.listener,
                host=host or "local",
                reason=self.factory.refused_because,
            )
            if self.factory.refusal is not None:
                transport.write(self.factory.refusal)
            transport.loseConnection()
            return
        self._admitted = True
        # ProtocolWrapper.makeConnection, but with the transport handed on.
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        self.wrappedProtocol.makeConnection(transport)

    def dataReceived(self, data):
        if self._admitted:
            self.wrappedProtocol.dataReceived(data)

    def connectionLost(self, reason):
        if not self._admitted:
            return
        self._admitted = False
        self.leave()
        super().connectionLost(reason)
