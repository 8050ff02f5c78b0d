"""
Where a plain-text password may be sent (DESIGN.md security rules; RFC 3501
6.2.3 LOGINDISABLED, RFC 2595 and RFC 1939 USER/PASS): the one rule POP3 and
IMAP apply to USER/PASS, LOGIN and AUTH(ENTICATE) PLAIN, and to what their
CAPA/CAPABILITY advertise.

Pure: no Twisted.
"""

from __future__ import annotations

from gateway.policy.addresses import Networks


def plaintext_allowed(peer: str, secure: bool, allowed: Networks) -> bool:
    """
    Under TLS, or from a network ``[auth] plaintext_without_tls`` names
    (``Config.plaintext_networks``: this machine alone by default, where a
    password crosses no network).  ``peer`` is the client's address as the
    protocols name it: the PROXY header's source behind a trusted balancer,
    ``local`` for a UNIX socket.  Like Dovecot's ``disable_plaintext_auth``
    with ``login_trusted_networks``, it is the connection's own peer that
    counts, never an address a front end names for its client (IMAP ID):
    the password crossed the network between the two.
    """
    return secure or peer in allowed
