"""
A delivered copy's trace fields on top of a message the copies share
(gateway/store/traced.py), and the structure of such a copy computed from
the shared message's, parsed once (MessageStructure.with_fields_on_top).
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.mail import message
from gateway.store.traced import TracedMessage

CORPUS = Path(__file__).resolve().parent.parent / "mail" / "corpus"
FIELDS = (
    b"Return-Path: <sender@example.org>\r\n"
    b"Delivered-To: alice@example.org\r\n"
    b"Received: from client.example.org ([192.0.2.25])\r\n\tby mx.example.org with LMTP\r\n"
    b"\tid 3ZqkGrbd9mWzHgAAZ4D0yA\r\n\t(envelope-from <sender@example.org>)\r\n"
    b"\tfor <alice@example.org>; Tue, 05 Mar 2024 12:00:00 +0100\r\n"
)


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def test_reads_its_fields_then_the_rewound_message():
    class Spool:
        def __init__(self):
            self.data, self.position = b"body\r\n", 3

        def seek(self, position):
            self.position = position

        def read(self, size=-1):
            end = len(self.data) if size < 0 else self.position + size
            chunk, self.position = self.data[self.position:end], min(end, len(self.data))
            return chunk

    spool = Spool()
    for fields in (b"Field: x\r\n", b"Other: y\r\n"):
        traced = TracedMessage(fields, spool)
        chunks = []
        while chunk := traced.read(4):
            chunks.append(chunk)
        assert b"".join(chunks) == fields + b"body\r\n"
    assert TracedMessage(b"F: 1\r\n", spool).read() == b"F: 1\r\nbody\r\n"


@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.glob("*.eml")))
def test_fields_on_top_give_the_structure_of_the_whole_copy(name):
    shared = crlf((CORPUS / name).read_bytes())
    parsed_once = message.parse(io.BytesIO(shared)).with_fields_on_top(FIELDS)
    assert parsed_once == message.parse(io.BytesIO(FIELDS + shared))


@settings(max_examples=200, deadline=None)
@given(
    header=st.lists(
        st.sampled_from([b"Subject: hi", b"From: a@example.org", b" continued", b"Content-Type: text/plain",
                         b"Content-Type: multipart/mixed; boundary=b", b"To: b@example.org", b"X-Odd:"]),
        max_size=6,
    ),
    body=st.lists(st.sampled_from([b"--b", b"--b--", b"", b"text", b"Content-Type: message/rfc822", b"."]),
                  max_size=12),
    blank=st.booleans(),
)
def test_fields_on_top_for_any_shape(header, body, blank):
    shared = b"".join(line + b"\r\n" for line in header) + (b"\r\n" if blank else b"")
    shared += b"".join(line + b"\r\n" for line in body)
    assert message.parse(io.BytesIO(shared)).with_fields_on_top(FIELDS) == message.parse(io.BytesIO(FIELDS + shared))
