"""
The trace fields LMTP puts on top of each delivered copy: ``Return-Path``,
``Delivered-To`` and ``Received``, in the shape Dovecot's LMTP writes them.

RFC 5321 4.4: the server that delivers a message adds ``Return-Path`` with
the MAIL reverse-path, and every server that accepts one adds a ``Received``
field, time-stamped, naming who sent it, who took it and with what.
Dovecot (``smtp_server_transaction_write_trace_record``) writes::

    Received: from client.example.org ([192.0.2.25])
    \tby mx.example.org with LMTP
    \tid 3ZqkGrbd9mWzHgAAZ4D0yA
    \t(envelope-from <sender@example.org>)
    \tfor <alice@example.org>; Tue, 05 Mar 2024 12:00:00 +0100

each clause on its own folded line (RFC 5322 2.2.3), the LHLO name when it
is a domain or address literal and ``unknown`` otherwise, no ``([...])``
for a peer without an IP address (a UNIX socket), the transaction id of
MAIL and the time of MAIL in local time with its offset.  Two differences,
both deliberate: an IPv6 peer is written as RFC 5321 4.1.3's address
literal ``[IPv6:2001:db8::1]`` (Dovecot leaves out ``IPv6:``); and
``for`` names the recipient of each copy even when the transaction has
several.  Dovecot builds one header block per transaction, so it names
nobody then (and writes no ``Delivered-To`` either); here each copy gets
its own block, and naming its own recipient discloses nothing about the
others (RFC 5321 7.2).

No Twisted import here.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import functools
import ipaddress
import math
import os
import re
import time

import attrs

# RFC 5321 4.1.2: Domain = sub-domain *("." sub-domain), a sub-domain being
# letters, digits and inner hyphens; at most 255 octets (4.5.3.1.2).
_DOMAIN = re.compile(rb"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*")
_MAX_DOMAIN = 255


def transaction_id() -> bytes:
    """A new transaction id: 128 random bits in base64 without its ``==``, as Dovecot's."""
    return base64.b64encode(os.urandom(16))[:-2]


def helo_domain(argument: bytes) -> bytes | None:
    """
    The LHLO argument when it is a Domain or an address literal (RFC 5321
    4.1.3), else None: whatever else a client calls itself is not copied
    into the message.
    """
    if len(argument) > _MAX_DOMAIN:
        return None
    if _DOMAIN.fullmatch(argument):
        return argument
    if argument.startswith(b"[") and argument.endswith(b"]"):
        literal = argument[1:-1].decode("ascii", "replace")
        try:
            if literal[:5].upper() == "IPV6:":
                ipaddress.IPv6Address(literal[5:])
            else:
                ipaddress.IPv4Address(literal)
        except ValueError:
            return None
        return argument
    return None


@functools.lru_cache(maxsize=256)
def address_literal(ip: str) -> bytes:
    """``192.0.2.1`` -> ``[192.0.2.1]``; ``2001:db8::1`` -> ``[IPv6:2001:db8::1]`` (RFC 5321 4.1.3)."""
    address = ipaddress.ip_address(ip)
    if address.version == 6:
        mapped = address.ipv4_mapped
        if mapped is None:
            return b"[IPv6:%s]" % str(address).encode("ascii")
        address = mapped
    return b"[%s]" % str(address).encode("ascii")


def date_time(seconds: float) -> bytes:
    """RFC 5322 3.3 date-time in local time with its offset, as Dovecot writes it."""
    # Every delivery of a second is dated alike; the zone is in the key,
    # as a change of TZ (tzset) changes what is written.
    return _date_time(math.floor(seconds), time.timezone, time.altzone, time.daylight, time.tzname)


@functools.lru_cache(maxsize=4)
def _date_time(second: int, *zone) -> bytes:
    local = datetime.datetime.fromtimestamp(second).astimezone()
    return email.utils.format_datetime(local).encode("ascii")


@attrs.frozen
class Transaction:
    """What the trace fields say about one MAIL transaction."""

    # The LHLO name as helo_domain() accepts it; None is written "unknown".
    helo: bytes | None
    # The client's IP address; None for a UNIX-socket peer.
    peer_ip: str | None
    hostname: bytes
    id: bytes
    # The reverse-path, without its brackets; empty for the null sender.
    sender: bytes
    # When MAIL was accepted, in seconds since the epoch.
    started: float


def received(transaction: Transaction, recipient: bytes) -> bytes:
    """The ``Received`` field for the copy delivered to ``recipient``, folded, CRLF-ended."""
    origin = transaction.helo if transaction.helo is not None else b"unknown"
    if transaction.peer_ip is not None:
        origin += b" (" + address_literal(transaction.peer_ip) + b")"
    return b"".join(
        [
            b"Received: from " + origin + b"\r\n",
            b"\tby " + transaction.hostname + b" with LMTP\r\n",
            b"\tid " + transaction.id + b"\r\n",
            b"\t(envelope-from <" + transaction.sender + b">)\r\n",
            b"\tfor <" + recipient + b">; " + date_time(transaction.started) + b"\r\n",
        ]
    )


def trace_fields(transaction: Transaction, recipient: bytes) -> bytes:
    """
    Every field put on top of the copy for ``recipient``, in Dovecot's
    order: ``Return-Path``, ``Delivered-To``, then ``Received``.
    """
    return (
        b"Return-Path: <" + transaction.sender + b">\r\n"
        + b"Delivered-To: " + recipient + b"\r\n"
        + received(transaction, recipient)
    )
