"""Tests for gateway.imap.binary: FETCH BINARY, BINARY.PEEK and BINARY.SIZE (RFC 3516)."""

import base64
import io
import quopri

import pytest
from hypothesis import given, strategies as st

from gateway.imap.binary import (
    BinarySection,
    UnknownTransferEncoding,
    decoded_chunks,
    decoded_range,
    decoded_size,
    locate,
    parse_binary,
)
from gateway.mail.message import crlf_chunks, parse_bytes


def stored(raw: bytes) -> bytes:
    return b"".join(crlf_chunks([raw]))


PAYLOAD = bytes(range(256)) * 40 + b"\x00end"


def message(payload: bytes = PAYLOAD) -> bytes:
    encoded = base64.encodebytes(payload)
    return stored(
        b"From: a@example.org\nSubject: parts\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="b"\n\n'
        b"--b\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n"
        + quopri.encodestring("caf\u00e9 =\u00e0 la carte".encode("utf-8")) + b"\n"
        b"--b\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
        + encoded
        + b"--b\nContent-Type: application/x-thing\nContent-Transfer-Encoding: x-uuencode\n\nbegin 644 x\n"
        b"--b\nContent-Type: text/plain\n\nplain 8bit \xe9\n"
        b"--b--\n"
    )


def fetch(raw: bytes, item: str) -> bytes | int:
    section = parse_binary(item)
    file = io.BytesIO(raw)
    decoding = locate(parse_bytes(raw).root, section, file)
    if decoding is None:
        return None
    if section.size:
        return decoded_size(file, decoding)
    return b"".join(decoded_range(file, decoding, section.partial))


def test_parse_binary():
    assert parse_binary("BINARY[1.2]") == BinarySection(peek=False, part=(1, 2))
    assert parse_binary("binary.peek[3]<10.20>") == BinarySection(peek=True, part=(3,), partial=(10, 20))
    assert parse_binary("BINARY.SIZE[2]") == BinarySection(peek=True, part=(2,), size=True)
    assert parse_binary("BINARY[]") == BinarySection(peek=False)
    for item in ("BINARY[0]", "BINARY[1.TEXT]", "BINARY.SIZE[1]<0.5>", "BINARY[1]<0.0>", "BODY[1]", "BINARY"):
        assert parse_binary(item) is None


def test_reply_names():
    # RFC 3516 4.2: no .PEEK, the partial's origin only.
    assert parse_binary("BINARY.PEEK[1.2]<100.20>").reply_name() == b"BINARY[1.2]<100>"
    assert parse_binary("BINARY.SIZE[2]").reply_name() == b"BINARY.SIZE[2]"
    assert parse_binary("BINARY[]").reply_name() == b"BINARY[]"


def test_each_encoding_is_undone():
    raw = message()
    # The line break before a boundary belongs to the boundary (RFC 2046 5.1.1).
    assert fetch(raw, "BINARY[1]") == "caf\u00e9 =\u00e0 la carte".encode("utf-8")
    assert fetch(raw, "BINARY[2]") == PAYLOAD
    assert fetch(raw, "BINARY.SIZE[2]") == len(PAYLOAD)
    assert fetch(raw, "BINARY[4]") == b"plain 8bit \xe9"
    assert fetch(raw, "BINARY.SIZE[4]") == len(b"plain 8bit \xe9")
    # BINARY[] is the whole stored message.
    assert fetch(raw, "BINARY[]") == raw
    assert fetch(raw, "BINARY[9]") is None


def test_an_unknown_encoding_is_unknown_cte():
    with pytest.raises(UnknownTransferEncoding) as raised:
        fetch(message(), "BINARY[3]")
    assert raised.value.text.startswith(b"[UNKNOWN-CTE]")


def test_a_big_part_is_decoded_in_chunks():
    payload = bytes(range(256)) * 8000
    raw = message(payload)
    file = io.BytesIO(raw)
    decoding = locate(parse_bytes(raw).root, parse_binary("BINARY[2]"), file)
    pieces = list(decoded_chunks(file, decoding, chunk=4096))
    assert len(pieces) > 100 and max(map(len, pieces)) <= 4096
    assert b"".join(pieces) == payload


@given(st.binary(max_size=3000), st.integers(0, 3500), st.integers(1, 3500))
def test_partial_is_a_slice_of_the_decoded_octets(payload, origin, length):
    raw = message(payload)
    assert fetch(raw, f"BINARY[2]<{origin}.{length}>") == payload[origin:origin + length]
