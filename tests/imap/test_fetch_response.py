"""One message's FETCH response as a value (gateway/imap/fetch_response.py)."""

import os
import tempfile

import pytest

from gateway.imap import fetch_response
from gateway.imap.fetch import Section, parse_fetch, plan_fetch
from gateway.imap.fetch_response import FetchResponse, FileRange, answer
from gateway.mail.message import parse_bytes

MESSAGE = (
    b"From: Alice <alice@example.org>\r\n"
    b"Subject: hello\r\n"
    b"Content-Type: multipart/mixed; boundary=b\r\n"
    b"\r\n"
    b"--b\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"first\r\n"
    b"--b\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"second part\r\n"
    b"--b--\r\n"
)


class Record:
    uid = 7
    size = len(MESSAGE)
    modseq = 42
    internaldate = None


@pytest.fixture
def opened():
    with tempfile.TemporaryFile() as file:
        file.write(MESSAGE)
        file.flush()
        yield file


@pytest.fixture
def structure():
    return parse_bytes(MESSAGE)


def wire(response: FetchResponse, file) -> bytes:
    out = []
    for piece in response.pieces():
        if isinstance(piece, FileRange):
            file.seek(piece.start)
            piece = file.read(piece.end - piece.start)
        out.append(piece)
    return b"".join(out)


def plan(request: bytes):
    return plan_fetch(parse_fetch(request), by_uid=True, condstore=False, qresync=False)


def test_values_literals_and_nil(opened, structure):
    response = answer(3, 7, plan(b"(FLAGS RFC822.SIZE BODY.PEEK[2] BODY.PEEK[9])"), b"(\\Seen)", Record(), structure,
                      opened)
    assert response.attributes == [
        b"UID 7",
        b"FLAGS (\\Seen)",
        b"RFC822.SIZE %d" % len(MESSAGE),
        (b"BODY[2]", b"second part"),
        (b"BODY[9]", None),
    ]
    assert wire(response, opened) == (
        b"* 3 FETCH (UID 7 FLAGS (\\Seen) RFC822.SIZE %d BODY[2] {11}\r\nsecond part BODY[9] NIL)\r\n" % len(MESSAGE)
    )


def test_header_fields_come_from_the_stored_header(opened, structure):
    response = answer(1, 7, plan(b"BODY.PEEK[HEADER.FIELDS (SUBJECT)]"), None, None, structure, opened)
    assert response.attributes[1] == (b"BODY[HEADER.FIELDS (SUBJECT)]", b"Subject: hello\r\n\r\n")


def test_a_partial_fetch_names_its_origin_only(opened, structure):
    # RFC 3501 7.4.2
    response = answer(1, 7, plan(b"BODY.PEEK[]<6.5>"), None, None, structure, opened)
    assert wire(response, opened) == b"* 1 FETCH (UID 7 BODY[]<6> {5}\r\nAlice)\r\n"


def test_a_big_section_is_streamed_from_the_file(opened, structure, monkeypatch):
    monkeypatch.setattr(fetch_response, "IN_MEMORY", 10)
    response = answer(2, 7, plan(b"BODY.PEEK[]"), None, None, structure, opened)
    assert response.attributes[1] == (b"BODY[]", FileRange(0, os.fstat(opened.fileno()).st_size))
    pieces = response.pieces()
    assert pieces[0] == b"* 2 FETCH (UID 7 BODY[] {%d}\r\n" % len(MESSAGE)
    assert isinstance(pieces[1], FileRange) and pieces[2] == b")\r\n"
    assert wire(response, opened) == b"* 2 FETCH (UID 7 BODY[] {%d}\r\n" % len(MESSAGE) + MESSAGE + b")\r\n"


def test_modseq_and_rfc822_header(opened, structure):
    request = plan_fetch([Section(peek=True, text="HEADER"), "RFC822.HEADER", "MODSEQ"], by_uid=False,
                         condstore=True, qresync=False)
    response = answer(1, 7, request, None, Record(), structure, opened)
    assert response.attributes[1] == b"RFC822.HEADER {%d}\r\n" % len(structure.header) + structure.header
    assert response.attributes[2] == b"MODSEQ (42)"
