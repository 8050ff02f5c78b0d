"""
gateway.mail.decode: transfer and charset decoding a piece at a time gives
what the standard library gives for the whole body at once, however the
body is cut into pieces, and broken input never raises.
"""

import base64
import binascii
import quopri

import pytest
from hypothesis import given, settings, strategies as st

from gateway.mail.decode import BodyDecoder, text_codec


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """``data`` cut at ``points`` (any order, any values)."""
    edges = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in zip(edges, edges[1:])]


def decode(encoding, charset, pieces) -> str:
    decoder = BodyDecoder(encoding, charset)
    return "".join(decoder.feed(piece) for piece in pieces) + decoder.finish()


points = st.lists(st.integers(min_value=0, max_value=5000), max_size=12)


@settings(max_examples=300)
@given(st.binary(max_size=3000), points)
def test_base64_in_pieces_is_base64(data, where):
    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
    assert decode("base64", "latin-1", cut(encoded, where)) == data.decode("latin-1")


@settings(max_examples=300)
@given(st.binary(max_size=3000), points)
def test_quoted_printable_in_pieces_is_quopri(data, where):
    encoded = quopri.encodestring(data).replace(b"\n", b"\r\n")
    assert decode("Quoted-Printable", "latin-1", cut(encoded, where)) == (
        quopri.decodestring(encoded).decode("latin-1"))


@settings(max_examples=300)
@given(st.binary(max_size=400), points)
def test_broken_quoted_printable_reads_as_quopri(data, where):
    # Stray "=", bad escapes, soft breaks cut between pieces.
    assert decode("quoted-printable", "latin-1", cut(data, where)) == (
        binascii.a2b_qp(data).decode("latin-1"))


@settings(max_examples=300)
@given(st.binary(max_size=400), points)
def test_broken_base64_reads_as_b64decode(data, where):
    # Characters outside the alphabet are skipped, padding that completes a
    # quantum ends the data, as base64.b64decode(validate=False) does.
    cleaned = bytes(b for b in data if b in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
    try:
        expected = base64.b64decode(data + b"==")
    except binascii.Error:
        # Nothing can make one char of a quantum into a byte: it is dropped.
        expected = base64.b64decode(cleaned.rstrip(b"=")[:-1] + b"==") if cleaned.strip(b"=") else b""
    assert decode("base64", "latin-1", cut(data, where)) == expected.decode("latin-1")


@settings(max_examples=200)
@given(st.text(max_size=500), points,
       st.sampled_from(["utf-8", "utf-16", "iso-2022-jp", "gb18030", "utf-7", "koi8-r"]))
def test_charsets_in_pieces(text, where, charset):
    try:
        encoded = text.encode(charset)
    except UnicodeEncodeError:
        encoded = text.encode(charset, "replace")
        text = encoded.decode(charset)
    try:
        encoded.decode(charset)
    except UnicodeDecodeError:
        # The codec cannot read back what it wrote (iso-2022-jp, a lone ESC):
        # read in pieces, it reads as it does whole.
        text = encoded.decode(charset, "replace")
    assert decode(None, charset, cut(encoded, where)) == text


def test_unknown_or_missing_charset_reads_as_utf8():
    assert decode("8bit", None, [b"na\xc3", b"\xafve"]) == "naïve"
    assert decode("8bit", "x-unknown", [b"caf\xc3\xa9 \xff"]) == "café \ufffd"
    # US-ASCII mail often holds UTF-8: read as its superset, as Dovecot does.
    assert decode("7bit", "us-ascii", [b"r\xc3\xa9sum\xc3\xa9"]) == "résumé"


def test_unknown_transfer_encoding_is_identity():
    assert decode("x-uuencode", "utf-8", [b"begin 644 x"]) == "begin 644 x"


@pytest.mark.parametrize("name, codec", [
    ("UTF-8", "utf-8"), ("us-ascii", "utf-8"), ('"iso-8859-1"', "iso8859-1"),
    ("Windows-1252", "cp1252"), ("KOI8-R", "koi8-r"), ("utf-16le", "utf-16-le"),
    # Python decodes these, but they are no charsets a message may name.
    ("base64", None), ("rot13", None), ("zlib", None), ("hex", None), ("idna", None),
    ("unicode-escape", None), ("raw_unicode_escape", None), ("punycode", None),
    ("undefined", None), ("", None), ("x-no-such", None), ("utf-8\x00", None), ("ütf-8", None),
])
def test_text_codec(name, codec):
    assert text_codec(name) == codec


def test_a_long_line_of_quoted_printable_is_not_held_whole():
    decoder = BodyDecoder("quoted-printable", "utf-8")
    line = b"=C3=A9" * 100_000
    out = decoder.feed(line[:300_001])  # cut inside an escape
    assert len(out) > 40_000 and "\ufffd" not in out
    assert out + decoder.feed(line[300_001:]) + decoder.finish() == "é" * 100_000
