"""
Hostile MIME structures against a real Dovecot 2.3: the same messages
appended to Dovecot, and its BODYSTRUCTURE, BODY and ENVELOPE compared byte
for byte with what ``gateway.mail.message`` parses at delivery: a million
sibling parts, ten thousand levels of multipart and of message/rfc822, and
every way the part budget can run out.

Needs Debian's dovecot-imapd; skipped without it unless CI=true.
"""

from __future__ import annotations

import imaplib
import tempfile
from pathlib import Path

import pytest

from gateway.mail.message import MAX_PARTS, parse_bytes
# Importing it skips this module where Dovecot is not installed (unless CI).
from tests.e2e.test_dovecot_migration import Dovecot

MIXED = b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
# Empty parts up to one short of the budget: the next part is the last.
FILLER = MIXED + b"--b\r\n\r\n" * (MAX_PARTS - 2)


def deep_multipart(levels: int) -> bytes:
    return b"MIME-Version: 1.0\r\n" + b"".join(
        b"Content-Type: multipart/mixed; boundary=%dz\r\n\r\n--%dz\r\n" % (n, n)
        for n in range(levels)) + b"\r\nneedle\r\n"


def deep_message(levels: int) -> bytes:
    return (b"Subject: top\r\n" + b"Content-Type: message/rfc822\r\n\r\n" * levels
            + b"Subject: inner\r\n\r\nneedle\r\n")


HOSTILE = {
    "a million sibling parts": MIXED + b"--b\r\n\r\n" * 1_000_000 + b"--b--\r\n",
    "a million delimiter lines": MIXED + b"--b\r\n" * 1_000_000,
    "ten thousand multipart levels": deep_multipart(10_000),
    "ten thousand message levels": deep_message(10_000),
    "multipart levels at the limit": deep_multipart(99),
    "multipart levels past the limit": deep_multipart(101),
    "message levels at the limit": deep_message(99),
    "message levels past the limit": deep_message(101),
    "the last part a multipart": FILLER + (
        b"--b\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\n--c\r\n\r\ninner\r\n"
        b"--c--\r\n--b\r\n\r\nafter\r\n--b--\r\n"),
    "the last part a message": FILLER + (
        b"--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nbody\r\n"
        b"--b\r\n\r\nafter\r\n--b--\r\n"),
    "the last part's header full of delimiters": FILLER + (
        b"--b\r\nX-A: 1\r\n--b\r\nX-B: 2\r\n\r\nafter\r\n--b--\r\nepilogue\r\n"),
    "a digest past the budget": (
        b"MIME-Version: 1.0\r\nContent-Type: multipart/digest; boundary=b\r\n\r\n"
        + b"--b\r\n\r\nSubject: s\r\n\r\nx\r\n" * 6000 + b"--b--\r\n"),
}


def fetched(response) -> bytes:
    """An imaplib FETCH response as the bytes on the wire, literals included."""
    out = b""
    for item in response:
        out += item[0] + b"\r\n" + item[1] if isinstance(item, tuple) else item
    return out


@pytest.fixture(scope="module")
def dovecot_with_hostile_mail():
    # Not tmp_path: Dovecot's unprivileged processes must reach the files.
    root = Path(tempfile.mkdtemp(prefix="gateway-dovecot-"))
    root.chmod(0o711)
    server = Dovecot(root)
    server.start()
    client = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=60)
    try:
        client.login("alice", "secret")
        for message in HOSTILE.values():
            assert client.append("INBOX", None, None, message)[0] == "OK"
        client.select("INBOX", readonly=True)
        yield client
    finally:
        client.logout()
        server.stop()


@pytest.mark.parametrize("number, name", list(enumerate(HOSTILE, 1)))
@pytest.mark.parametrize("item", ["BODYSTRUCTURE", "BODY", "ENVELOPE"])
def test_hostile_structures_match_dovecot(dovecot_with_hostile_mail, number, name, item):
    typ, response = dovecot_with_hostile_mail.fetch(str(number), f"({item})")
    assert typ == "OK"
    wire = fetched(response)
    prefix = b"%d (%s " % (number, item.encode())
    assert wire.startswith(prefix) and wire.endswith(b")")
    structure = parse_bytes(HOSTILE[name])
    assert getattr(structure, item.lower()) == wire[len(prefix):-1]
