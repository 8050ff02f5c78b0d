"""One message's FETCH response as a value (gateway/imap/fetch_response.py)."""

import datetime
import os
import tempfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.imap import fetch_response
from gateway.imap.wire import format_datetime
from gateway.imap.fetch import Section, parse_fetch, plan_fetch
from gateway.imap.fetch_response import FetchResponse, FileRange, answer, line_writer
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


# -- line_writer: the same bytes as answer, for plans without the file --------

_HEADER_NAMES = st.sampled_from(["From", "To", "Subject", "Date", "X-Folded", "Cc", "Message-ID", "x-none"])
_FIELD = st.tuples(_HEADER_NAMES, st.text(alphabet="abc <>@.\"=?", max_size=20), st.booleans())


@st.composite
def messages(draw) -> bytes:
    lines = []
    for name, value, folded in draw(st.lists(_FIELD, max_size=6)):
        lines.append(f"{name}: {value}" + ("\r\n\tcontinued" if folded else ""))
    body = draw(st.sampled_from([b"plain body\r\n", MESSAGE.split(b"\r\n\r\n", 1)[1]]))
    kind = b"Content-Type: multipart/mixed; boundary=b\r\n" if body.startswith(b"--b") else b""
    return "\r\n".join(lines).encode("latin-1") + (b"\r\n" if lines else b"") + kind + b"\r\n" + body


_SIMPLE_ITEMS = ["UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "MODSEQ", "ENVELOPE", "BODYSTRUCTURE", "BODY",
                 "RFC822.HEADER"]


@st.composite
def header_sections(draw) -> bytes:
    text = draw(st.sampled_from(["HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"]))
    fields = draw(st.lists(_HEADER_NAMES, min_size=1, max_size=3)) if text != "HEADER" else []
    spec = text + (" (" + " ".join(fields) + ")" if fields else "")
    partial = draw(st.one_of(st.none(), st.tuples(st.integers(0, 80), st.integers(1, 80))))
    return ("BODY.PEEK[" + spec + "]" + ("" if partial is None else "<%d.%d>" % partial)).encode("ascii")


@given(message=messages(),
       items=st.lists(st.one_of(st.sampled_from([i.encode() for i in _SIMPLE_ITEMS]), header_sections()),
                      min_size=1, max_size=6),
       by_uid=st.booleans(), condstore=st.booleans(), seq=st.integers(1, 10**6), uid=st.integers(1, 2**32 - 1),
       minutes=st.integers(-720, 840), when=st.integers(0, 2**31))
def test_line_writer_gives_the_bytes_of_the_general_answer(message, items, by_uid, condstore, seq, uid, minutes,
                                                           when):
    planned = plan_fetch(parse_fetch(b"(" + b" ".join(items) + b")"), by_uid=by_uid, condstore=condstore,
                         qresync=False)
    record = Record()
    record.size = len(message)
    record.internaldate = datetime.datetime.fromtimestamp(
        when, datetime.timezone(datetime.timedelta(minutes=minutes)))
    structure = parse_bytes(message)
    flags = b"(\\Seen $Label1)" if planned.wants_flags else None
    line = line_writer(planned)
    assert line is not None
    expected = b"".join(answer(seq, uid, planned, flags, record, structure, None).pieces())
    assert line.line(seq, flags, store_row(uid, line.columns, record, structure)) == expected
    if "MODSEQ" in planned.items:
        assert store_row(uid, line.columns, record, structure)[line.modseq_at] == record.modseq
    # What never changes, kept rendered (gateway/imap/fetch_cache.py), gives the same.
    cached = line.cached
    if "MODSEQ" in planned.items or set(planned.items) <= {"UID", "FLAGS"}:
        assert cached is None
    else:
        parts = cached.render([store_row(uid, line.columns, record, structure)])[uid]
        assert cached.lines([seq, seq + 1], [uid, uid], [flags, flags], [parts, parts]) == [
            expected, expected.replace(b"* %d " % seq, b"* %d " % (seq + 1), 1)]
        assert cached.key == planned.items


def store_row(uid, columns, record, structure) -> tuple:
    """What the store's fetch_rows gives for the message (tests/store/contract.py shows it does)."""
    values = {
        "size": record.size, "internaldate": format_datetime(record.internaldate), "modseq": record.modseq,
        "envelope": structure.envelope, "body": structure.body, "bodystructure": structure.bodystructure,
        "header": structure.header,
    }
    return (uid, *(values[name] for name in columns))


def test_line_writer_asks_the_store_for_what_the_plan_shows():
    line = line_writer(plan(b"(UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE)"))
    assert line.columns == ("size", "internaldate", "envelope", "bodystructure")
    assert line.modseq_at is None
    row = (7, 120, b'"17-Jul-1996 02:44:25 -0700"', b"(NIL)", b'("text" "plain")')
    assert line.line(3, b"(\\Seen)", row) == (
        b'* 3 FETCH (UID 7 FLAGS (\\Seen) RFC822.SIZE 120 INTERNALDATE "17-Jul-1996 02:44:25 -0700"'
        b' ENVELOPE (NIL) BODYSTRUCTURE ("text" "plain"))\r\n'
    )
    # Thunderbird's header fetch: the header once, for both its sections.
    line = line_writer(plan(b"(UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (From)] BODY.PEEK[HEADER]<0.4>)"))
    assert line.columns == ("size", "header")
    assert line.line(1, None, (9, 30, b"From: a\r\nTo: b\r\n\r\n")) == (
        b"* 1 FETCH (UID 9 RFC822.SIZE 30 BODY[HEADER.FIELDS (FROM)] {11}\r\nFrom: a\r\n\r\n"
        b" BODY[HEADER]<0> {4}\r\nFrom)\r\n"
    )


def test_no_line_writer_where_the_file_is_read():
    assert line_writer(plan(b"(UID BODY.PEEK[])")) is None
    assert line_writer(plan(b"(UID BODY.PEEK[1.HEADER])")) is None
    assert line_writer(plan(b"(UID BINARY.SIZE[1])")) is None
    assert line_writer(plan(b"(UID RFC822.TEXT)")) is None
