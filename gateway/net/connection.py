"""
What every protocol's session knows of its connection: TCP_NODELAY set
once, the client's address as the policies name it, and whether the
session is under TLS.
"""

from __future__ import annotations

from twisted.internet.interfaces import ISSLTransport
from twisted.logger import Logger

from gateway.policy.addresses import normalise_ip

log = Logger()


def set_no_delay(transport) -> None:
    """
    Turn Nagle's algorithm off where ``transport`` has it: a TCP transport,
    or a wrapper of one (TLS, PROXY) passing the call down.  DESIGN.md,
    "Performance rules": with it, each short reply of a pipelined session
    waits for the client's delayed ACK of the one before (the stock POP3
    server fell from ~4,900 to ~23 messages/s).  A UNIX socket has nothing
    to turn off; a transport that refuses the option is served anyway,
    only slower.
    """
    set_option = getattr(transport, "setTcpNoDelay", None)
    if set_option is None:
        return
    try:
        set_option(True)
    except OSError as e:
        log.warn("Cannot set TCP_NODELAY: {error}", error=e.strerror)


def peer_address(transport) -> str:
    """
    The client's address as limits, the plain-text rule and the auth log
    name it: one text per IP (``normalise_ip``; behind a trusted PROXY
    balancer, the source it names), ``local`` for a UNIX socket.
    """
    host = getattr(transport.getPeer(), "host", None)
    return normalise_ip(host) if isinstance(host, str) else "local"


def under_tls(transport, started_tls: bool) -> bool:
    """A listener with implicit TLS, or a session after STARTTLS/STLS."""
    return started_tls or ISSLTransport.providedBy(transport)
