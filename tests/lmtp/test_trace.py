"""
The trace fields LMTP writes on each copy (gateway/lmtp/trace.py): the
Received field byte for byte in Dovecot's shape (RFC 5321 4.4), folded as
RFC 5322 2.2.3 allows, dated as 3.3 says.
"""

from __future__ import annotations

import email
import email.policy
import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.lmtp.trace import (
    Transaction,
    address_literal,
    date_time,
    helo_domain,
    received,
    trace_fields,
    transaction_id,
)

# 2024-03-05 11:00:00 UTC, a Tuesday.
MARCH_5 = 1709636400


@pytest.fixture
def zone(monkeypatch):
    """Set the local time zone for one test; restored after it."""

    def set_zone(name: str):
        monkeypatch.setenv("TZ", name)
        time.tzset()

    yield set_zone
    monkeypatch.undo()
    time.tzset()


def transaction(**changes) -> Transaction:
    values = dict(
        helo=b"client.example.org",
        peer_ip="192.0.2.25",
        hostname=b"mx.example.org",
        id=b"3ZqkGrbd9mWzHgAAZ4D0yA",
        sender=b"sender@example.org",
        started=MARCH_5,
    )
    values.update(changes)
    return Transaction(**values)


def test_received_in_dovecots_shape(zone):
    zone("Europe/Berlin")
    assert received(transaction(), b"alice@example.org") == (
        b"Received: from client.example.org ([192.0.2.25])\r\n"
        b"\tby mx.example.org with LMTP\r\n"
        b"\tid 3ZqkGrbd9mWzHgAAZ4D0yA\r\n"
        b"\t(envelope-from <sender@example.org>)\r\n"
        b"\tfor <alice@example.org>; Tue, 05 Mar 2024 12:00:00 +0100\r\n"
    )


def test_unix_socket_peer_has_no_address_part(zone):
    # Dovecot writes "([ip])" only when the peer has an IP address.
    zone("UTC")
    assert received(transaction(peer_ip=None), b"alice@example.org") == (
        b"Received: from client.example.org\r\n"
        b"\tby mx.example.org with LMTP\r\n"
        b"\tid 3ZqkGrbd9mWzHgAAZ4D0yA\r\n"
        b"\t(envelope-from <sender@example.org>)\r\n"
        b"\tfor <alice@example.org>; Tue, 05 Mar 2024 11:00:00 +0000\r\n"
    )


def test_unknown_client_name_and_null_sender(zone):
    zone("America/New_York")
    assert received(transaction(helo=None, sender=b""), b"bob@example.org") == (
        b"Received: from unknown ([192.0.2.25])\r\n"
        b"\tby mx.example.org with LMTP\r\n"
        b"\tid 3ZqkGrbd9mWzHgAAZ4D0yA\r\n"
        b"\t(envelope-from <>)\r\n"
        b"\tfor <bob@example.org>; Tue, 05 Mar 2024 06:00:00 -0500\r\n"
    )


def test_trace_fields_in_dovecots_order(zone):
    zone("UTC")
    fields = trace_fields(transaction(), b"alice+lists@example.org")
    assert fields.startswith(b"Return-Path: <sender@example.org>\r\nDelivered-To: alice+lists@example.org\r\nReceived: ")
    assert fields.endswith(b"\tfor <alice+lists@example.org>; Tue, 05 Mar 2024 11:00:00 +0000\r\n")


@pytest.mark.parametrize(
    ("argument", "domain"),
    [
        (b"client.example.org", b"client.example.org"),
        (b"c", b"c"),
        (b"mail-1.example", b"mail-1.example"),
        (b"[192.0.2.1]", b"[192.0.2.1]"),
        (b"[IPv6:2001:db8::1]", b"[IPv6:2001:db8::1]"),
        (b"-bad.example", None),
        (b"bad-.example", None),
        (b"two words", None),
        (b"under_score.example", None),
        (b"trailing.dot.", None),
        (b"[192.0.2.256]", None),
        (b"[2001:db8::1]", None),
        (b"a" * 256, None),
        (b"x\x00y", None),
        (b"\xc3\xa9.example", None),
    ],
)
def test_helo_domain(argument, domain):
    assert helo_domain(argument) == domain


@pytest.mark.parametrize(
    ("ip", "literal"),
    [
        ("192.0.2.1", b"[192.0.2.1]"),
        ("::1", b"[IPv6:::1]"),
        ("2001:DB8::1", b"[IPv6:2001:db8::1]"),
        # A dual-stack listener's IPv4 client is an IPv4 client.
        ("::ffff:192.0.2.1", b"[192.0.2.1]"),
    ],
)
def test_address_literal(ip, literal):
    assert address_literal(ip) == literal


def test_date_time_is_local_time_with_its_offset(zone):
    zone("Asia/Kolkata")
    assert date_time(MARCH_5) == b"Tue, 05 Mar 2024 16:30:00 +0530"
    zone("UTC")
    assert date_time(0) == b"Thu, 01 Jan 1970 00:00:00 +0000"
    # Single-digit days keep two digits, as Dovecot's message_date_create.
    assert date_time(MARCH_5).split(b" ")[1] == b"05"


def test_transaction_ids_are_dovecot_shaped_and_distinct():
    ids = {transaction_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(rb"[A-Za-z0-9+/]{22}", i) for i in ids)


_ADDRESS = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="<>"), max_size=254)


@given(
    helo=st.binary(max_size=300).map(helo_domain),
    peer=st.one_of(st.none(), st.ip_addresses().map(str)),
    sender=_ADDRESS,
    recipient=_ADDRESS.filter(bool),
    started=st.integers(0, 2**32),
)
def test_received_is_one_well_folded_field(helo, peer, sender, recipient, started):
    field = received(transaction(helo=helo, peer_ip=peer, sender=sender.encode(), started=started),
                     recipient.encode())
    lines = field.split(b"\r\n")
    assert lines[-1] == b""
    # RFC 5322 2.1.1 and 2.2.3: lines under 998 octets; every continuation
    # starts with white space; no bare CR or LF.
    assert all(len(line) <= 998 and b"\r" not in line and b"\n" not in line for line in lines)
    assert all(line.startswith(b"\t") for line in lines[1:-1])
    # A mail parser reads it back as one field, the clauses in order.
    parsed = email.message_from_bytes(field + b"\r\nbody\r\n", policy=email.policy.compat32)
    value = " ".join(parsed["Received"].split())
    assert value.startswith("from ")
    assert f"(envelope-from <{sender}>) for <{recipient}>; " in value
