"""
Connection limits on a listener: a ``WrappingFactory`` that asks a
``gateway.policy.limits.ConnectionLimiter`` before letting a connection reach the
protocol, and answers the refused ones with their protocol's line.

Twisted's ``policies.LimitConnectionsByPeer`` cannot do this job: it indexes
the address (``addr[0]``, ``getPeer()[1]``) as the tuples of old Twisted
releases, and today's ``IPv4Address``/``IPv6Address`` objects raise
TypeError there (tests/net/test_connlimit.py shows it).

As every gate (``gateway/net/gate.py``), it judges the client behind a
trusted PROXY balancer, not the balancer.
"""

from __future__ import annotations

from twisted.protocols.policies import WrappingFactory

from gateway.net.balance import Loads
from gateway.net.gate import GatedConnection
from gateway.policy.limits import ConnectionLimiter

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


class _LimitedConnection(GatedConnection):
    """One connection: counted while it lives (under its limit key), or refused and closed."""

    _counted_as: str | None = None

    def admit(self, host: str | None) -> bool:
        self._counted_as = self.factory.limiter.try_acquire(host)
        if self._counted_as is None:
            return False
        if self.factory.loads is not None:
            self.factory.loads.add(1)
        return True

    def leave(self) -> None:
        self.factory.limiter.release(self._counted_as)
        if self.factory.loads is not None:
            self.factory.loads.add(-1)


class ConnectionLimitFactory(WrappingFactory):
    """
    Wrap ``wrapped_factory`` so that its connections first take a place in
    ``limiter`` (shared between listeners that share a budget); ``kind``
    (the listener's own name unless it has another: pop3, imap, lmtp,
    pop3s, imaps) picks the line written to a refused client before the
    close, if any.  ``loads``, in a node of several processes, is told of
    every connection admitted and ended (``gateway/net/balance.py``).
    """

    protocol = _LimitedConnection
    refused_because = "too many connections"

    def __init__(self, wrapped_factory, limiter: ConnectionLimiter, listener: str, kind: str | None = None,
                 loads: Loads | None = None) -> None:
        super().__init__(wrapped_factory)
        self.limiter = limiter
        self.loads = loads
        self.listener = listener
        self.refusal = REFUSALS[kind or listener]
