"""
Real clients (poplib, imaplib, plain sockets) connecting from a chosen
loopback address: 127.0.0.0/8 is all this machine's, so addresses in it
stand for the networks of a test's ``[networks]`` without a packet leaving
the host.

    pop = pop3_from("127.0.2.5", port)          # a scanner on its VLAN
    imap = imap_from("127.0.3.9", port, context) # someone on the internet
"""

from __future__ import annotations

import imaplib
import poplib
import socket
import ssl

HOST = "127.0.0.1"


def connect_from(source: str, port: int, timeout: float = 10) -> socket.socket:
    return socket.create_connection((HOST, port), timeout, source_address=(source, 0))


def pop3_from(source: str, port: int, context: ssl.SSLContext | None = None) -> poplib.POP3:
    """poplib's POP3 (or POP3_SSL with ``context``) from ``source``."""
    base = poplib.POP3 if context is None else poplib.POP3_SSL

    class Pop3(base):
        def _create_socket(self, timeout):
            sock = connect_from(source, self.port, timeout)
            return sock if context is None else context.wrap_socket(sock, server_hostname=self.host)

    return Pop3(HOST, port, timeout=10) if context is None else Pop3(HOST, port, timeout=10, context=context)


def imap_from(source: str, port: int, context: ssl.SSLContext | None = None) -> imaplib.IMAP4:
    """imaplib's IMAP4 (or IMAP4_SSL with ``context``) from ``source``."""
    base = imaplib.IMAP4 if context is None else imaplib.IMAP4_SSL

    class Imap(base):
        def _create_socket(self, timeout):
            sock = connect_from(source, self.port, timeout)
            return sock if context is None else context.wrap_socket(sock, server_hostname=self.host)

    return Imap(HOST, port, timeout=10) if context is None else Imap(HOST, port, ssl_context=context, timeout=10)
