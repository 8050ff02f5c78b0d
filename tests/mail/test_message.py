"""
gateway.mail.message: the structure the store keeps, byte for byte as an
IMAP client receives it (RFC 3501 7.4.2), and the section offsets FETCH uses.

Expected wire forms follow Dovecot 2.3; the first test is Dovecot's own
test-imap-bodystructure.c message and answer.
"""

import io
import pathlib
import re
import subprocess
import sys
import time
import tracemalloc
from unittest import mock

import pytest
from hypothesis import given, settings, strategies as st

from gateway.mail import message as message_module
from gateway.mail.mimescan import MAX_HEADER
from gateway.mail.message import (
    crlf_chunks,
    crlf_throughout,
    find_part,
    header_fields,
    header_values,
    parse,
    parse_bytes,
    section_range,
)

CORPUS = pathlib.Path(__file__).parent / "corpus"


def crlf(text: bytes) -> bytes:
    return b"".join(crlf_chunks([text]))


def corpus(name: str) -> bytes:
    return crlf((CORPUS / f"{name}.eml").read_bytes())


def section_bytes(message: bytes, section, text=None):
    found = section_range(parse_bytes(message).root, section, text)
    return None if found is None else message[found[0]:found[1]]


# --- Dovecot's reference message -------------------------------------------

DOVECOT_MESSAGE = crlf(
    b'From: user@domain.org\n'
    b'Date: Sat, 24 Mar 2007 23:00:00 +0200\n'
    b'Mime-Version: 1.0\n'
    b'Content-Type: multipart/mixed; boundary="foo\n'
    b' bar"\n'
    b'\n'
    b'Root MIME prologue\n'
    b'\n'
    b'--foo bar\n'
    b'Content-Type: text/x-myown; charset=us-ascii; foo="quoted\\"string"\n'
    b'Content-ID: <foo@example.com>\n'
    b'Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\n'
    b'Content-Disposition: inline; foo=bar\n'
    b'Content-Description: hellodescription\n'
    b'Content-Language: en, fi, se\n'
    b'Content-Location: http://example.com/test.txt\n'
    b'\n'
    b'hello\n'
    b'\n'
    b'--foo bar\n'
    b'Content-Type: message/rfc822\n'
    b'\n'
    b'From: sub@domain.org\n'
    b'To: sub-to1@domain.org, sub-to2@domain.org\n'
    b'Date: Sun, 12 Aug 2012 12:34:56 +0300\n'
    b'Subject: submsg\n'
    b'Content-Type: multipart/alternative; boundary="sub1"\n'
    b'\n'
    b'Sub MIME prologue\n'
    b'--sub1\n'
    b'Content-Type: text/html\n'
    b'Content-Transfer-Encoding: 8bit\n'
    b'\n'
    b'<p>Hello world</p>\n'
    b'\n'
    b'--sub1\n'
    b'Content-Type: text/plain\n'
    b'Content-Transfer-Encoding: ?invalid\n'
    b'\n'
    b'Hello another world\n'
    b'\n'
    b'--sub1--\n'
    b'Sub MIME epilogue\n'
    b'\n'
    b'--foo bar--\n'
    b'Root MIME epilogue\n'
)

SUB_ENVELOPE = (
    b'("Sun, 12 Aug 2012 12:34:56 +0300" "submsg" ((NIL NIL "sub" "domain.org")) '
    b'((NIL NIL "sub" "domain.org")) ((NIL NIL "sub" "domain.org")) '
    b'((NIL NIL "sub-to1" "domain.org")(NIL NIL "sub-to2" "domain.org")) '
    b'NIL NIL NIL NIL)'
)


def test_dovecot_reference_bodystructure():
    structure = parse_bytes(DOVECOT_MESSAGE)
    assert structure.bodystructure == (
        b'(("text" "x-myown" ("charset" "us-ascii" "foo" "quoted\\"string") '
        b'"<foo@example.com>" "hellodescription" "7bit" 7 1 '
        b'"Q2hlY2sgSW50ZWdyaXR5IQ==" ("inline" ("foo" "bar")) ("en" "fi" "se") '
        b'"http://example.com/test.txt")'
        b'("message" "rfc822" NIL NIL NIL "7bit" 412 ' + SUB_ENVELOPE + b' '
        b'(("text" "html" ("charset" "us-ascii") NIL NIL "8bit" 20 1 NIL NIL NIL NIL)'
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 21 1 NIL NIL NIL NIL) '
        b'"alternative" ("boundary" "sub1") NIL NIL NIL) 21 NIL NIL NIL NIL) '
        b'"mixed" ("boundary" "foo bar") NIL NIL NIL)'
    )
    assert structure.body == (
        b'(("text" "x-myown" ("charset" "us-ascii" "foo" "quoted\\"string") '
        b'"<foo@example.com>" "hellodescription" "7bit" 7 1)'
        b'("message" "rfc822" NIL NIL NIL "7bit" 412 ' + SUB_ENVELOPE + b' '
        b'(("text" "html" ("charset" "us-ascii") NIL NIL "8bit" 20 1)'
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 21 1) '
        b'"alternative") 21) "mixed")'
    )
    assert structure.envelope == (
        b'("Sat, 24 Mar 2007 23:00:00 +0200" NIL ((NIL NIL "user" "domain.org")) '
        b'((NIL NIL "user" "domain.org")) ((NIL NIL "user" "domain.org")) '
        b'NIL NIL NIL NIL NIL)'
    )


# --- corpus messages ----------------------------------------------------------


def test_simple_text_message():
    message = corpus("simple")
    structure = parse_bytes(message)
    assert structure.envelope == (
        b'("Mon, 7 Feb 1994 21:52:25 -0800" "Hello" '
        b'(("Alice Example" NIL "alice" "example.org")) '
        b'(("Alice Example" NIL "alice" "example.org")) '
        b'(("Alice Example" NIL "alice" "example.org")) '
        b'((NIL NIL "bob" "example.com")) NIL NIL NIL "<B27397-0100000@example.org>")'
    )
    assert structure.body == b'("text" "plain" ("charset" "UTF-8") NIL NIL "7bit" 26 2)'
    assert structure.bodystructure == (
        b'("text" "plain" ("charset" "UTF-8") NIL NIL "7bit" 26 2 NIL NIL NIL NIL)'
    )
    assert structure.header == message[:message.index(b"\r\n\r\n") + 4]
    assert structure.header.endswith(b"charset=UTF-8\r\n\r\n")
    assert structure.root.content_type == "text/plain"
    assert structure.root.end == len(message)


def test_no_content_type_defaults_to_us_ascii_text():
    structure = parse_bytes(crlf(b"From: bob@example.com\nSubject: plain\n\nJust text.\n"))
    assert structure.bodystructure == (
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 12 1 NIL NIL NIL NIL)'
    )


def test_content_headers_without_mime_version_are_ignored():
    # Dovecot: no Mime-Version and no Content-Type means not MIME at all.
    structure = parse_bytes(crlf(
        b"Content-Transfer-Encoding: base64\nContent-ID: <x@y>\n\naGVsbG8=\n"))
    assert structure.body == b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 10 1)'


def test_multipart_alternative():
    message = corpus("alternative")
    structure = parse_bytes(message)
    assert structure.bodystructure == (
        b'(("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 15 0 NIL NIL NIL NIL)'
        b'("text" "html" ("charset" "utf-8") NIL NIL "7bit" 19 0 NIL NIL NIL NIL) '
        b'"alternative" ("boundary" "alt-1") NIL NIL NIL)'
    )
    assert structure.body == (
        b'(("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 15 0)'
        b'("text" "html" ("charset" "utf-8") NIL NIL "7bit" 19 0) "alternative")'
    )
    assert section_bytes(message, (1,)) == b"Hello =E2=82=AC"
    assert section_bytes(message, (2,)) == b"<p>Hello &euro;</p>"


def test_nested_mixed_with_alternative_and_base64_attachment():
    message = corpus("nested")
    structure = parse_bytes(message)
    assert structure.bodystructure == (
        b'((("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 13 0 NIL NIL NIL NIL)'
        b'("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 20 0 NIL NIL NIL NIL) '
        b'"alternative" ("boundary" "inner") NIL NIL NIL)'
        b'("application" "pdf" ("name" "report.pdf") NIL NIL "base64" 110 NIL '
        b'("attachment" ("filename" "report.pdf")) NIL NIL) '
        b'"mixed" ("boundary" "outer") NIL NIL NIL)'
    )
    assert structure.body == (
        b'((("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 13 0)'
        b'("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 20 0) "alternative")'
        b'("application" "pdf" ("name" "report.pdf") NIL NIL "base64" 110) "mixed")'
    )
    assert section_bytes(message, (1, 1)) == b"See attached."
    assert section_bytes(message, (1, 2)) == b"<p>See attached.</p>"
    attachment = section_bytes(message, (2,))
    assert attachment.startswith(b"JVBERi0xLjQK") and attachment.endswith(b"bmRvYmoK")
    assert [p.content_type for p in structure.root.children] == [
        "multipart/alternative", "application/pdf"]


FORWARD_INNER_ENVELOPE = (
    b'("Tue, 1 Jul 2025 10:00:00 +0000" "Alternative" '
    b'((NIL NIL "alice" "example.org")) ((NIL NIL "alice" "example.org")) '
    b'((NIL NIL "alice" "example.org")) ((NIL NIL "bob" "example.com")) '
    b'NIL NIL NIL "<alt@example.org>")'
)


def test_message_rfc822_attachment_with_multipart_inside():
    # "--fwd--" follows "--alt-1--" at once: a delimiter on the first line
    # after another takes no CRLF (Dovecot), so part 2 ends with
    # "--alt-1--\r\n": 318 octets, 17 lines.
    structure = parse_bytes(corpus("forward"))
    assert structure.bodystructure == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 10 0 NIL NIL NIL NIL)'
        b'("message" "rfc822" NIL NIL "forwarded message" "7bit" 318 '
        + FORWARD_INNER_ENVELOPE + b' '
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0 NIL NIL NIL NIL)'
        b'("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 12 0 NIL NIL NIL NIL) '
        b'"alternative" ("boundary" "alt-1") NIL NIL NIL) 17 NIL NIL NIL NIL) '
        b'"mixed" ("boundary" "fwd") NIL NIL NIL)'
    )
    assert structure.body == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 10 0)'
        b'("message" "rfc822" NIL NIL "forwarded message" "7bit" 318 '
        + FORWARD_INNER_ENVELOPE + b' '
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0)'
        b'("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 12 0) "alternative") 17) '
        b'"mixed")'
    )


def test_encoded_words_stay_raw_in_envelope_and_decode_for_search():
    structure = parse_bytes(corpus("encoded"))
    assert structure.envelope == (
        # The Subject is folded: a literal, its line break removed (a real
        # Dovecot 2.3.19 sends these bytes).
        b'(NIL {103}\r\n=?ISO-8859-1?B?SWYgeW91IGNhbiByZWFkIHRoaXMgeW8=?= '
        b'=?ISO-8859-2?B?dSB1bmRlcnN0YW5kIHRoZSBleGFtcGxlLg==?= '
        b'(("=?UTF-8?Q?Andr=C3=A9?= Pirard" NIL "PIRARD" "vm1.ulg.ac.be")) '
        b'(("=?UTF-8?Q?Andr=C3=A9?= Pirard" NIL "PIRARD" "vm1.ulg.ac.be")) '
        b'(("=?UTF-8?Q?Andr=C3=A9?= Pirard" NIL "PIRARD" "vm1.ulg.ac.be")) '
        # RFC 3501 7.4.2 group syntax: (NIL NIL name NIL) ... (NIL NIL NIL NIL)
        b'((NIL NIL "Undisclosed recipients" NIL)(NIL NIL NIL NIL)'
        b'("Doe, John" NIL "john" "example.com")) '
        b'((NIL NIL "friends" NIL)(NIL NIL "ann" "example.com")'
        b'(NIL NIL "bill" "example.com")(NIL NIL NIL NIL)) '
        b'NIL NIL '
        # Four quoted-specials still go quoted (Dovecot switches at five).
        b'"<\\"quoted\\\\\\"id\\"@example.com>")'
    )
    header = structure.header
    # RFC 2047 6.2: the space between two encoded-words disappears.
    assert header_values(header, "subject") == [
        "If you can read this you understand the example."]
    assert header_values(header, "FROM") == [
        "André Pirard <PIRARD@vm1.ulg.ac.be>"]
    assert header_values(header, "X-Missing") == []


def test_a_folded_subject_goes_out_as_dovecot_sends_it():
    # Dovecot keeps the Subject as it came and removes its line breaks for
    # the ENVELOPE: the string changed, so it is sent as a literal.
    structure = parse_bytes(crlf(
        b"Subject: a long subject that was\n folded by the sender\nFrom: Alice\n"
        b" Example <alice@example.org>\n\nbody\n"))
    subject = b"a long subject that was folded by the sender"
    assert structure.envelope.startswith(b"(NIL {%d}\r\n%s ((\"Alice Example\" NIL " % (len(subject), subject))


def test_missing_date_and_from_give_nil():
    structure = parse_bytes(crlf(b"To: a@b.example\nSubject: s\n\nx\n"))
    assert structure.envelope == (
        b'(NIL "s" NIL NIL NIL ((NIL NIL "a" "b.example")) NIL NIL NIL NIL)')


def test_literal_when_quoting_is_not_enough():
    structure = parse_bytes(crlf(
        'Subject: Caf\u00e9  "menu"\n'
        'Message-ID: <"a\\\\b\\"c"@x>\n'
        'From: "J\u00fcrgen" <j@example.de>\n'
        'Date: Mon, 1 Jan 2024 00:00:00 +0000\n\n'.encode("utf-8")))
    envelope = structure.envelope
    # Subject: 8-bit (and a doubled space, collapsed) -> literal.
    subject = 'Caf\u00e9 "menu"'.encode("utf-8")
    assert b' {%d}\r\n%s ' % (len(subject), subject) in envelope
    # Five quoted-specials: a literal is as short as the escapes.
    assert b'{13}\r\n<"a\\\\b\\"c"@x>' in envelope
    name = "J\u00fcrgen".encode("utf-8")
    assert b'(({%d}\r\n%s NIL "j" "example.de"))' % (len(name), name) in envelope
    assert envelope.startswith(b'("Mon, 1 Jan 2024 00:00:00 +0000" {')


def test_broken_addresses_are_filled_in_as_dovecot_does():
    structure = parse_bytes(crlf(b"From: justaname\nTo: <broken@\n\n"))
    assert structure.envelope == (
        b'(NIL NIL ((NIL NIL "justaname" "MISSING_DOMAIN")) '
        b'((NIL NIL "justaname" "MISSING_DOMAIN")) '
        b'((NIL NIL "justaname" "MISSING_DOMAIN")) '
        b'((NIL NIL "broken" "SYNTAX_ERROR")) NIL NIL NIL NIL)'
    )


def test_rfc2231_parameters_are_merged():
    structure = parse_bytes(crlf(
        b"MIME-Version: 1.0\n"
        b"Content-Type: application/octet-stream;\n"
        b" name*0=\"long\"; name*1=\"name.txt\"\n"
        b"Content-Disposition: attachment; filename*=utf-8''%E2%82%AC.txt\n\nx\n"))
    assert structure.bodystructure == (
        b'("application" "octet-stream" ("name" "longname.txt") NIL NIL "7bit" 3 NIL '
        b'("attachment" ("filename*" "utf-8\'\'%E2%82%AC.txt")) NIL NIL)'
    )


def test_multipart_without_parts_shows_one_empty_text_part():
    structure = parse_bytes(crlf(
        b"MIME-Version: 1.0\nContent-Type: multipart/mixed\n\nno boundary here\n"))
    assert structure.body == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) "mixed")')
    assert structure.root.children == ()


def test_digest_parts_default_to_message_rfc822():
    message = crlf(
        b"MIME-Version: 1.0\nContent-Type: multipart/digest; boundary=d\n\n"
        b"--d\n\nFrom: a@b.example\nSubject: one\n\nfirst\n--d--\n")
    structure = parse_bytes(message)
    assert structure.root.children[0].content_type == "message/rfc822"
    assert structure.body.startswith(b'(("message" "rfc822" NIL NIL NIL "7bit" 40 (NIL "one" ')
    assert section_bytes(message, (1, 1)) == b"first"


def test_outer_boundary_ends_inner_parts():
    # The inner multipart never closes; the outer delimiter ends it.
    message = crlf(
        b"Content-Type: multipart/mixed; boundary=out\n\n"
        b"--out\nContent-Type: multipart/alternative; boundary=in\n\n"
        b"--in\n\ninner text\n"
        b"--out\n\nsecond\n--out--\n")
    structure = parse_bytes(message)
    assert [c.content_type for c in structure.root.children] == [
        "multipart/alternative", "text/plain"]
    assert section_bytes(message, (1, 1)) == b"inner text"
    assert section_bytes(message, (2,)) == b"second"


# --- sections (RFC 3501 6.4.5) ----------------------------------------------


def test_section_ranges_of_every_kind():
    message = corpus("forward")
    root = parse_bytes(message).root
    assert section_bytes(message, ()) == message
    assert section_bytes(message, (), "HEADER") == message[:message.index(b"\r\n\r\n") + 4]
    assert section_bytes(message, (), "TEXT").startswith(b"--fwd\r\n")
    assert section_bytes(message, (1,)) == b"See below."
    assert section_bytes(message, (1,), "MIME") == b"Content-Type: text/plain\r\n\r\n"
    inner = section_bytes(message, (2,))
    assert inner.startswith(b"From: alice@example.org\r\n")
    assert inner.endswith(b"<p>Hello</p>\r\n--alt-1--\r\n")
    assert section_bytes(message, (2,), "MIME") == (
        b"Content-Type: message/rfc822\r\n"
        b"Content-Description: forwarded message\r\n\r\n")
    assert section_bytes(message, (2,), "HEADER").endswith(b"boundary=\"alt-1\"\r\n\r\n")
    assert section_bytes(message, (2,), "HEADER").startswith(b"From: alice@example.org")
    assert section_bytes(message, (2,), "TEXT").startswith(b"--alt-1\r\nContent-Type: text/plain")
    assert section_bytes(message, (2, 1)) == b"Hello"
    assert section_bytes(message, (2, 2)) == b"<p>Hello</p>"
    assert section_bytes(message, (2, 2), "MIME") == b"Content-Type: text/html\r\n\r\n"
    assert section_range(root, (2,), "header.fields") == section_range(root, (2,), "HEADER")
    assert find_part(root, (2, 1)).content_type == "text/plain"


def test_invalid_sections():
    message = corpus("forward")
    root = parse_bytes(message).root
    assert section_range(root, (), "MIME") is None
    assert section_range(root, (1,), "HEADER") is None
    assert section_range(root, (1,), "TEXT") is None
    assert section_range(root, (3,), None) is None
    assert section_range(root, (0,), None) is None
    assert section_range(root, (1, 1), None) is None
    assert section_range(root, (2, 3), None) is None
    assert section_range(root, (2, 1, 1), None) is None
    assert section_range(root, (1,), "BOGUS") is None


def test_single_part_message_has_only_part_one():
    message = corpus("simple")
    assert section_bytes(message, (1,)) == b"Hello Bob,\r\nhow are you?\r\n"
    assert section_bytes(message, (1,), "MIME") == section_bytes(message, (), "HEADER")
    assert section_bytes(message, (2,)) is None
    assert section_bytes(message, (1, 1)) is None


def test_message_rfc822_with_single_part_body():
    message = crlf(
        b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\nfirst\n"
        b"--b\nContent-Type: message/rfc822\n\nSubject: inner\n\ninner body\n--b--\n")
    assert section_bytes(message, (2, 1)) == b"inner body"
    assert section_bytes(message, (2,), "TEXT") == b"inner body"
    assert section_bytes(message, (2, 1), "MIME") == b"Subject: inner\r\n\r\n"
    assert section_bytes(message, (2, 2)) is None


# --- header fields ------------------------------------------------------------

HEADER = crlf(
    b"Subject: a\n continued\nFrom: x@example.org\nX-Long: one\n\ttwo\nTo: y@example.org\n\n")


def test_header_fields_keeps_continuations_and_order():
    assert header_fields(HEADER, ["x-long", "SUBJECT"], False) == crlf(
        b"Subject: a\n continued\nX-Long: one\n\ttwo\n\n")


def test_header_fields_not():
    assert header_fields(HEADER, ["Subject", "X-Long"], True) == crlf(
        b"From: x@example.org\nTo: y@example.org\n\n")


def test_header_fields_without_matches_is_the_blank_line():
    assert header_fields(HEADER, ["Cc"], False) == b"\r\n"


def test_header_values_unfold():
    assert header_values(HEADER, "subject") == ["a continued"]
    assert header_values(HEADER, "x-long") == ["one\ttwo"]


# --- CRLF normalisation -------------------------------------------------------


def test_crlf_chunks_with_cr_at_chunk_boundary():
    chunks = [b"a\r", b"\nb\r", b"c\n", b"", b"d\r", b"\r", b"\n", b"e\r"]
    assert b"".join(crlf_chunks(chunks)) == b"a\r\nb\r\nc\r\nd\r\n\r\ne\r\n"


@given(st.lists(st.text(alphabet="ab\r\n", max_size=12).map(str.encode)))
def test_crlf_chunks_does_not_depend_on_chunking(chunks):
    whole = b"".join(chunks)
    expected = re.sub(rb"\r\n|\r|\n", b"\r\n", whole)
    assert b"".join(crlf_chunks(chunks)) == expected


@given(st.text(alphabet="a\r\n\0", max_size=16).map(str.encode))
def test_crlf_throughout_is_every_line_ending_in_crlf(data):
    bare = re.search(rb"\r(?!\n)|(?<!\r)\n", data)
    assert crlf_throughout(data) is (bare is None)


# --- robustness and offsets ---------------------------------------------------


def walk(part, parent=None):
    yield part, parent
    for child in part.children:
        yield from walk(child, part)


def assert_offsets_sane(structure, size):
    for part, parent in walk(structure.root):
        assert 0 <= part.header_start <= part.body_start <= part.end <= size
        if parent is not None:
            assert parent.body_start <= part.header_start
            assert part.end <= parent.end
    for part, _ in walk(structure.root):
        ends = [(c.header_start, c.end) for c in part.children]
        for (_, end), (start, _) in zip(ends, ends[1:]):
            assert end <= start


INTERESTING_LINES = [
    b"Content-Type: multipart/mixed; boundary=a\r\n",
    b"Content-Type: multipart/digest; boundary=ab\r\n",
    b"Content-Type: message/rfc822\r\n",
    b"Content-Type: text/plain; charset=\"x\r\n",
    b"From: \"a\\\" <(b@c\r\n",
    b"To: g: a@b, ;\r\n",
    b"--a\r\n", b"--a--\r\n", b"--ab\r\n", b"--ab--\r\n",
    b"\r\n", b" folded\r\n", b"\r", b"\n", b"--a", b"text\r\n",
]


@settings(max_examples=300)
@given(st.lists(st.one_of(st.sampled_from(INTERESTING_LINES), st.binary(max_size=20)),
                max_size=40))
def test_parse_never_raises_and_offsets_are_monotone(pieces):
    data = b"".join(pieces)
    structure = parse_bytes(data)
    assert structure.body.startswith(b"(") and structure.envelope.startswith(b"(")
    assert structure.root.header_start == 0 and structure.root.end == len(data)
    assert_offsets_sane(structure, len(data))
    assert parse(TrickleFile(data, 3)) == structure


@given(st.binary(max_size=300))
def test_parse_arbitrary_bytes(data):
    assert_offsets_sane(parse_bytes(data), len(data))


def test_header_line_longer_than_a_read_chunk():
    references = b"References:" + b" <id@example.org>" * 12000 + b"\r\n"
    message = (b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n"
               + references + b"\r\n--b\r\n" + b"X-Long: " + b"y" * 150000
               + b"\r\n\r\npart\r\n--b--\r\n")
    structure = parse_bytes(message)
    assert structure.header == message[:structure.root.body_start]
    assert structure.header.endswith(b"<id@example.org>\r\n\r\n")
    assert section_bytes(message, (1,)) == b"part"
    assert section_bytes(message, (1,), "MIME").startswith(b"X-Long: yyy")


def test_deep_nesting_is_bounded():
    depth = 300
    head = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
        for i in range(depth))
    structure = parse_bytes(head + b"\r\nleaf\r\n")
    assert_offsets_sane(structure, len(head) + 8)


# --- hostile mail: Dovecot's limits (message_parser_settings) ----------------
#
# Dovecot 2.3's message-parser stops at max_nested_mime_parts (100) and
# max_total_mime_parts (10000).  The first four tests are its own
# test-message-parser.c cases (LF line endings, sizes as there), with its
# small limits patched in.

LIMIT_MESSAGE = (
    b'Content-Type: multipart/mixed; boundary="1"\n'
    b'\n'
    b'--1\n'
    b'Content-Type: multipart/mixed; boundary="2"\n'
    b'\n'
    b'--2\n'
    b'Content-Type: text/plain\n'
    b'\n'
    b'1\n'
    b'--2\n'
    b'Content-Type: text/plain\n'
    b'\n'
    b'22\n'
    b'--1\n'
    b'Content-Type: text/plain\n'
    b'\n'
    b'333\n'
)

RFC822_LIMIT_MESSAGE = (
    b'Content-Type: multipart/mixed; boundary="1"\n'
    b'\n'
    b'--1\n'
    b'Content-Type: multipart/mixed; boundary="2"\n'
    b'\n'
    b'--2\n'
    b'Content-Type: message/rfc822\n'
    b'\n'
    b'Content-Type: text/plain\n'
    b'\n'
    b'1\n'
    b'--2\n'
    b'Content-Type: message/rfc822\n'
    b'\n'
    b'Content-Type: text/plain\n'
    b'\n'
    b'22\n'
    b'--1\n'
    b'Content-Type: message/rfc822\n'
    b'\n'
    b'Content-Type: text/plain\n'
    b'\n'
    b'333\n'
)


def sizes(part):
    """(header size, body size) as Dovecot's message_part counts them."""
    return part.body_start - part.header_start, part.end - part.body_start


def test_part_budget_runs_the_last_part_to_the_end():
    # test_message_parser_mime_part_limit: the fourth part is the last one;
    # "--1" is not read as a boundary any more, and every part above it
    # ends where the message ends.
    with mock.patch.object(message_module, "MAX_PARTS", 4):
        structure = parse_bytes(LIMIT_MESSAGE)
    root = structure.root
    inner = root.children[0]
    first, last = inner.children
    assert len(root.children) == 1 and len(inner.children) == 2
    assert sizes(root) == (45, 148) and sizes(inner) == (45, 99)
    assert sizes(first) == (26, 1) and sizes(last) == (26, 37)
    assert last.end == len(LIMIT_MESSAGE)
    assert structure.body == (
        b'((("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 1 0)'
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 37 5) "mixed") "mixed")')


def test_nesting_limit_leaves_a_deeper_multipart_unopened():
    # test_message_parser_mime_part_nested_limit: the inner multipart is a
    # leaf; the outer boundary still ends it.  Dovecot 2.3.19 shows it as
    # opaque data with its parameters.
    with mock.patch.object(message_module, "MAX_DEPTH", 2):
        structure = parse_bytes(LIMIT_MESSAGE)
    root = structure.root
    unopened, text = root.children
    assert sizes(root) == (45, 148)
    assert sizes(unopened) == (45, 64) and unopened.children == ()
    assert sizes(text) == (26, 4)
    assert structure.bodystructure == (
        b'(("application" "octet-stream" ("boundary" "2") NIL NIL "7bit" 64 NIL NIL NIL NIL)'
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 4 1 NIL NIL NIL NIL) '
        b'"mixed" ("boundary" "1") NIL NIL NIL)')


def test_nesting_limit_leaves_a_deeper_message_unopened():
    # test_message_parser_mime_part_nested_limit_rfc822, shown as Dovecot
    # 2.3.19 does.
    message = (b"Content-Type: message/rfc822\n\n"
               b"Content-Type: message/rfc822\n\n"
               b"Content-Type: text/plain\n\n1\n")
    with mock.patch.object(message_module, "MAX_DEPTH", 2):
        structure = parse_bytes(message)
    root = structure.root
    [inner] = root.children
    assert sizes(root) == (30, 58) and sizes(inner) == (30, 28) and inner.children == ()
    assert structure.bodystructure == (
        b'("message" "rfc822" NIL NIL NIL "7bit" 58 '
        b'(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) '
        b'("application" "octet-stream" NIL NIL NIL "7bit" 28 NIL NIL NIL NIL) '
        b'5 NIL NIL NIL NIL)')
    # Its body is one opaque part: nothing inside it has a section number.
    assert section_range(root, (1, 1), None) == (inner.body_start, inner.end)
    assert section_range(root, (1, 1, 1), None) is None
    assert section_range(root, (1, 1), "HEADER") is None


def test_part_budget_leaves_a_message_unopened():
    # test_message_parser_mime_part_limit_rfc822
    with mock.patch.object(message_module, "MAX_PARTS", 3):
        structure = parse_bytes(RFC822_LIMIT_MESSAGE)
    root = structure.root
    [inner] = root.children
    [unopened] = inner.children
    assert sizes(root) == (45, 238) and sizes(inner) == (45, 189)
    assert sizes(unopened) == (30, 155) and unopened.children == ()
    assert structure.body == (
        b'((("application" "octet-stream" NIL NIL NIL "7bit" 155) "mixed") "mixed")')


@settings(max_examples=150)
@given(st.lists(st.one_of(st.sampled_from(INTERESTING_LINES), st.binary(max_size=20)),
                max_size=40),
       st.integers(min_value=1, max_value=4), st.integers(min_value=1, max_value=4))
def test_small_limits_keep_offsets_sane(pieces, max_parts, max_depth):
    data = b"".join(pieces)
    with mock.patch.object(message_module, "MAX_PARTS", max_parts), \
            mock.patch.object(message_module, "MAX_DEPTH", max_depth):
        structure = parse_bytes(data)
        assert parse(TrickleFile(data, 3)) == structure
    assert sum(1 for _ in walk(structure.root)) <= max_parts
    assert structure.root.end == len(data)
    assert_offsets_sane(structure, len(data))


def sibling_parts(count: int) -> bytes:
    """A multipart of ``count`` empty parts, seven bytes each."""
    return (b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
            + b"--b\r\n\r\n" * count + b"--b--\r\n")


def timed_parse(data: bytes):
    """
    The structure, the CPU seconds parsing it took, and the peak bytes
    allocated (measured in a second parse: tracing slows the first).
    """
    started = time.process_time()
    structure = parse(io.BytesIO(data))
    spent = time.process_time() - started
    tracemalloc.start()
    try:
        parse(io.BytesIO(data))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return structure, spent, peak


@pytest.mark.parametrize("count", [1_000_000, 200_000])
def test_a_million_sibling_parts_cost_ten_thousand(count):
    # 7 MB, a million parts: Dovecot keeps 10,000 (a 740 KB BODYSTRUCTURE)
    # and serves the message; the parse is about a tenth of a second here,
    # the bound leaves room for a slow machine.
    data = sibling_parts(count)
    structure, spent, peak = timed_parse(data)
    root = structure.root
    assert len(root.children) == message_module.MAX_PARTS - 1
    assert root.children[-1].end == root.end == len(data)
    assert_offsets_sane(structure, len(data))
    assert len(structure.bodystructure) < 800_000
    assert spent < 2.0, spent
    assert peak < 32_000_000, peak


def test_a_million_delimiter_lines():
    # Each line ends an empty part whose header it also is.
    data = (b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
            + b"--b\r\n" * 1_400_000)
    structure, spent, _ = timed_parse(data)
    assert sum(1 for _ in walk(structure.root)) == message_module.MAX_PARTS
    assert_offsets_sane(structure, len(data))
    assert spent < 2.0, spent


@pytest.mark.parametrize("kind", ["multipart", "message"])
def test_ten_thousand_levels(kind):
    if kind == "multipart":
        data = b"MIME-Version: 1.0\r\n" + b"".join(
            b"Content-Type: multipart/mixed; boundary=%dz\r\n\r\n--%dz\r\n" % (i, i)
            for i in range(10_000)) + b"\r\nleaf\r\n"
    else:
        data = (b"Subject: top\r\n" + b"Content-Type: message/rfc822\r\n\r\n" * 10_000
                + b"Subject: inner\r\n\r\nleaf\r\n")
    structure, spent, _ = timed_parse(data)
    depth, part = 0, structure.root
    while part.children:
        depth, part = depth + 1, part.children[-1]
    assert depth == message_module.MAX_DEPTH - 1
    assert part.children == () and part.end == len(data)
    assert_offsets_sane(structure, len(data))
    assert spent < 2.0, spent


def test_seven_megabyte_header_line():
    data = b"Subject: " + b"x" * 7_000_000 + b"\r\nFrom: a@b.example\r\n\r\nbody\r\n"
    structure, spent, peak = timed_parse(data)
    # The first megabyte is kept for the index; the rest is skipped unread.
    assert structure.header.startswith(b"Subject: xxx") and structure.header.endswith(b"x\r\n")
    assert len(structure.header) == MAX_HEADER + 2
    assert structure.root.body_start == len(data) - 6
    assert section_bytes(data, (1,)) == b"body\r\n"
    assert spent < 1.0 and peak < 16_000_000, (spent, peak)


def test_a_million_header_fields():
    data = (b"From: first@example.org\r\nSubject: first\r\n" + b"X-A: b\r\n" * 1_000_000
            + b"Subject: last\r\n\r\nbody\r\n")
    structure, spent, _ = timed_parse(data)
    assert structure.envelope.startswith(b'(NIL "first" ((NIL NIL "first" "example.org"))')
    # Whole lines up to a megabyte, then the blank line.
    assert structure.header.endswith(b"X-A: b\r\n\r\n")
    assert len(structure.header) <= MAX_HEADER + 2
    assert structure.root.body_start == len(data) - 6
    assert spent < 1.0, spent


def test_mime_headers_full_of_content_fields():
    part = b"--b\r\n" + b"Content-Type: text/plain\r\n" * 40_000 + b"\r\nx\r\n"
    data = (b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
            + part * 7 + b"--b--\r\n")
    structure, spent, _ = timed_parse(data)
    assert len(structure.root.children) == 7
    assert all(section_bytes(data, (n,)) == b"x" for n in range(1, 8))
    assert spent < 1.0, spent


# Generated trees: every leaf body must come back exactly.

body_lines = st.lists(st.text(alphabet="abc xyz-", min_size=0, max_size=10)
                      .filter(lambda line: not line.startswith("--")), max_size=4)


def trees():
    leaf = st.builds(lambda lines: ("leaf", "\r\n".join(lines).encode()), body_lines)
    return st.recursive(
        leaf,
        lambda children: st.one_of(
            st.builds(lambda parts: ("multipart", parts), st.lists(children, min_size=1, max_size=4)),
            st.builds(lambda inner: ("message", inner), children),
        ),
        max_leaves=12,
    )


def render(tree, counter, expected, path):
    """Bytes of one entity (header + body) and the expected leaf bodies."""
    kind, value = tree
    if kind == "leaf":
        expected[path] = value
        return b"Content-Type: text/plain\r\n\r\n" + value
    if kind == "message":
        inner_path = path if value[0] == "multipart" else path + (1,)
        return b"Content-Type: message/rfc822\r\n\r\n" + render(value, counter, expected, inner_path)
    counter[0] += 1
    boundary = b"=_b%d" % counter[0]
    out = [b"Content-Type: multipart/mixed; boundary=\"%s\"\r\n\r\npreamble\r\n" % boundary]
    for number, child in enumerate(value, 1):
        out.append(b"\r\n--%s\r\n" % boundary if number > 1 else b"--%s\r\n" % boundary)
        out.append(render(child, counter, expected, path + (number,)))
    out.append(b"\r\n--%s--\r\nepilogue\r\n" % boundary)
    return b"".join(out)


@settings(max_examples=200)
@given(trees())
def test_generated_trees_slice_out_every_leaf_body(tree):
    expected = {}
    message = render(("multipart", [tree]), [0], expected, ())
    structure = parse_bytes(message)
    assert_offsets_sane(structure, len(message))
    for path, body in expected.items():
        assert section_bytes(message, path) == body, path
        # RFC 3501: text/* lines are the lines of the body.
        assert find_part(structure.root, path).content_type == "text/plain"


# --- size -------------------------------------------------------------------------


def test_large_attachment_is_not_held_in_memory(tmp_path):
    path = tmp_path / "big.eml"
    line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAx\r\n"
    block = line * 1000
    with path.open("wb") as out:
        out.write(b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n"
                  b"--zz\r\n\r\nsee attachment\r\n--zz\r\n"
                  b"Content-Type: application/octet-stream\r\n"
                  b"Content-Transfer-Encoding: base64\r\n\r\n")
        for _ in range(20 * 1024 * 1024 // len(block)):
            out.write(block)
        out.write(b"--zz--\r\n")
    size = path.stat().st_size
    with path.open("rb") as fileobj:
        tracemalloc.start()
        try:
            structure = parse(fileobj)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 1024 * 1024, peak
    attachment = structure.root.children[1]
    lines = 20 * 1024 * 1024 // len(block) * 1000
    assert structure.bodystructure.startswith(
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 14 0 NIL NIL NIL NIL)'
        b'("application" "octet-stream" NIL NIL NIL "base64" %d NIL' % (lines * len(line) - 2))
    assert attachment.end == size - len(b"\r\n--zz--\r\n")


class TrickleFile(io.BytesIO):
    """A file that returns at most ``step`` bytes per read, so that every
    delimiter and CRLF lands on a buffer boundary somewhere."""

    def __init__(self, data, step):
        super().__init__(data)
        self.step = step

    def read(self, size=-1):
        return super().read(self.step if size < 0 else min(size, self.step))


def test_results_do_not_depend_on_read_sizes():
    messages = [DOVECOT_MESSAGE] + [
        corpus(name) for name in ("simple", "alternative", "nested", "forward", "encoded")]
    for data in messages:
        expected = parse_bytes(data)
        for step in (1, 2, 3, 7, 64):
            assert parse(TrickleFile(data, step)) == expected, step


@settings(max_examples=100)
@given(trees(), st.integers(min_value=1, max_value=9))
def test_generated_trees_do_not_depend_on_read_sizes(tree, step):
    message = render(("multipart", [tree]), [0], {}, ())
    assert parse(TrickleFile(message, step)) == parse_bytes(message)


def test_pure_no_twisted_import():
    # DESIGN.md: mail/message.py imports nothing of Twisted.
    code = ("import sys, gateway.mail.message; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'twisted'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert result.stdout.strip() == b"[]"


def test_parse_reads_a_file_object():
    data = corpus("nested")
    assert parse(io.BytesIO(data)) == parse_bytes(data)
