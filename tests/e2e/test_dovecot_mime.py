"""
Hostile MIME structures against a real Dovecot 2.3: the same messages
appended to Dovecot, and its BODYSTRUCTURE, BODY and ENVELOPE compared byte
for byte with what ``gateway.mail.message`` parses: a million
sibling parts, ten thousand levels of multipart and of message/rfc822,
every way the part budget can run out, and the ordinary corpus.  Then SEARCH BODY and TEXT over
ordinary and hostile mail: the same answers as Dovecot's.

Needs Debian's dovecot-imapd; skipped without it unless CI=true.
"""

from __future__ import annotations

import datetime
import functools
import imaplib
import io
import tempfile
from pathlib import Path

import pytest

from gateway.imap.search import SearchMessage, matches, parse_search, tokenize_search
from gateway.mail.message import MAX_PARTS, crlf_chunks, parse_bytes
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
    "a folded subject": (
        b"Subject: a long subject that was\r\n folded by the sender\r\nFrom: Alice\r\n"
        b" Example <alice@example.org>\r\nDate: Mon, 1 Jan 2024\r\n 00:00:00 +0000\r\n\r\nbody\r\n"),
    "a digest past the budget": (
        b"MIME-Version: 1.0\r\nContent-Type: multipart/digest; boundary=b\r\n\r\n"
        + b"--b\r\n\r\nSubject: s\r\n\r\nx\r\n" * 6000 + b"--b--\r\n"),
}


# Ordinary mail too: the corpus of tests/mail, byte for byte as Dovecot.
CORPUS = Path(__file__).resolve().parent.parent / "mail" / "corpus"
HOSTILE.update({
    f"corpus {path.stem}": b"".join(crlf_chunks([path.read_bytes()]))
    for path in sorted(CORPUS.glob("*.eml"))
})


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


# --- SEARCH BODY and TEXT: the same answers as Dovecot ----------------------------

SEARCHED = [
    b"Subject: outer\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
    b"--b\r\nContent-Type: text/plain\r\nX-Part: partheader\r\n\r\nfirst text\r\n"
    b"--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: attachedsubject\r\n\r\ninner body\r\n"
    b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"YmluYXJ5bmVlZGxl\r\n"
    b"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; statusneedle.example\r\n"
    b"--b--\r\n",
    b"Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nY2Fm6SBjcuhtZQ==\r\n",
    b"Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    b"na\xc3\xafve r\xc3\xa9sum\xc3\xa9\r\n",
    b"Subject: x\r\nContent-Transfer-Encoding: base64\r\n\r\naGlkZGVud29yZA==\r\n",
    b"Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\nsoft=\r\nbreak na=C3=AFve\r\n",
    b"Subject: =?utf-8?q?r=C3=A9sum=C3=A9?= =?utf-8?q?_final?=\r\n"
    b"From: =?iso-8859-1?q?J=FCrgen?= <j@example.de>\r\n\r\nbody\r\n",
    b"Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/html\r\n\r\n<p>Hello <b>bold</b> world</p>\r\n",
    b"Subject: a very\r\n long subject\r\nX-Folded: one,\r\n\ttwo\r\n\r\nline one\r\nline two\r\n",
    deep_message(10_000),
    deep_multipart(10_000),
    HOSTILE["a million sibling parts"],
    HOSTILE["the last part a message"],
]

CRITERIA = [
    b"TEXT attachedsubject", b"BODY partheader", b"TEXT partheader", b"BODY inner", b"TEXT inner",
    b"BODY binaryneedle", b"BODY statusneedle", b"TEXT outer", b"BODY outer", b'BODY "caf\xc3\xa9"',
    b'BODY "CR\xc3\x88ME"', b'BODY "na\xc3\xafve"', b"BODY hiddenword", b"BODY aGlkZGVud29yZA",
    b"BODY softbreak", b"BODY =C3", b'SUBJECT "r\xc3\xa9sum\xc3\xa9 final"', b'TEXT "r\xc3\xa9sum\xc3\xa9"',
    b'FROM "J\xc3\xbcrgen"', b'TEXT "J\xc3\xbcrgen"', b"BODY bold", b'BODY "<b>"', b'BODY ""', b'TEXT ""',
    b'SUBJECT "very long"', b'HEADER X-Folded "one, two"', b'TEXT "subject: a very"', b"BODY needle",
    b"TEXT needle", b"BODY after", b"TEXT content-type", b"BODY content-type",
]


@pytest.fixture(scope="module")
def dovecot_with_searched_mail():
    root = Path(tempfile.mkdtemp(prefix="gateway-dovecot-"))
    root.chmod(0o711)
    server = Dovecot(root)
    server.start()
    client = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=60)
    try:
        client.login("alice", "secret")
        for message in SEARCHED:
            assert client.append("INBOX", None, None, message)[0] == "OK"
        client.select("INBOX", readonly=True)
        yield client
    finally:
        client.logout()
        server.stop()


@functools.lru_cache(maxsize=None)
def parsed(number: int):
    return parse_bytes(SEARCHED[number - 1])


def gateway_search(line: bytes) -> list[int]:
    key = parse_search(tokenize_search(line))
    found = []
    for number, raw in enumerate(SEARCHED, 1):
        structure = parsed(number)
        message = SearchMessage(
            seq=number, uid=number, flags=frozenset(), size=len(raw), recent=False,
            internaldate=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
            header=structure.header, body=io.BytesIO(raw), parts=structure.root)
        if matches(key, message, len(SEARCHED), len(SEARCHED)):
            found.append(number)
    return found


def dovecot_search(client, line: bytes) -> list[int]:
    """Dovecot's answer to ``SEARCH CHARSET UTF-8 line``, sent as it is."""
    tag = client._new_tag()
    client.send(tag + b" SEARCH CHARSET UTF-8 " + line + b"\r\n")
    found = []
    while True:
        answer = client.readline()
        if answer.startswith(tag + b" "):
            assert answer.startswith(tag + b" OK"), answer
            return found
        if answer.startswith(b"* SEARCH"):
            found += [int(number) for number in answer.split()[2:]]


@pytest.mark.parametrize("line", CRITERIA)
def test_search_answers_as_dovecot(dovecot_with_searched_mail, line):
    assert gateway_search(line) == dovecot_search(dovecot_with_searched_mail, line)


def test_body_finds_an_attached_messages_header(dovecot_with_searched_mail):
    # The one difference, by design: RFC 3501 6.4.4 BODY is "the body of
    # the message", and an attached message's header is in it.  Dovecot
    # skips every header for BODY; we find a forwarded message by its
    # Subject (TEXT agrees with Dovecot either way).
    assert dovecot_search(dovecot_with_searched_mail, b"BODY attachedsubject") == []
    assert gateway_search(b"BODY attachedsubject") == [1]
