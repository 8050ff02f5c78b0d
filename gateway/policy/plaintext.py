"""
Where a plain-text password may be sent (DESIGN.md security rules; RFC 3501
6.2.3 LOGINDISABLED, RFC 2595 and RFC 1939 USER/PASS): the one rule POP3 and
IMAP apply to USER/PASS, LOGIN and AUTH(ENTICATE) PLAIN, and to what their
CAPA/CAPABILITY advertise.

Pure: no Twisted.
"""

from __future__ import annotations

from gateway.policy.addresses import is_loopback


def plaintext_allowed(local_address: object, secure: bool, configured: bool) -> bool:
    """
    Under TLS, when ``[auth] plaintext_without_tls`` says so, or on a
    connection to a loopback address (``local_address`` is the transport's
    ``getHost()``; one without a host, a UNIX socket, is local too).
    """
    host = getattr(local_address, "host", None)
    return secure or configured or is_loopback(host if isinstance(host, str) else None)
