"""
Which networks a listener serves: a ``WrappingFactory`` that asks, before
the protocol sees a connection, whether its peer may use this listener
(``[pop3] networks``, ``[imap] networks``, a ``[listeners.NAME]`` table's
``networks``), and answers the others with their protocol's line.

As every gate (``gateway/net/gate.py``), behind a trusted PROXY balancer
the client's own address is what is matched.  It sits outside the
connection limits: a refused client holds no place there.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.protocols.policies import WrappingFactory

from gateway.net.gate import GatedConnection
from gateway.policy.limits import ADDRESSLESS

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


class _AdmittedConnection(GatedConnection):
    def admit(self, host: str | None) -> bool:
        return self.factory.admits(host or ADDRESSLESS)


class NetworkAccessFactory(WrappingFactory):
    """
    Wrap ``wrapped_factory`` so that only peers ``admits(host)`` (the peer's
    address text, ``local`` for a UNIX socket) reach it; the rule is asked
    at each connection, so a reloaded config applies to the next one.
    ``kind`` (pop3, imap, pop3s, imaps) picks the refusal line.
    """

    protocol = _AdmittedConnection
    refused_because = "not a network it serves"

    def __init__(self, wrapped_factory, admits: Callable[[str], bool], listener: str, kind: str) -> None:
        super().__init__(wrapped_factory)
        self.admits = admits
        self.listener = listener
        self.refusal = REFUSALS[kind]
