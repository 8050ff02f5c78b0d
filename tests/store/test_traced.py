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
from gateway.store.traced import TracedMessage, WholeCopy, read_again

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


@pytest.fixture(params=["memory", "file"])
def spool(request, tmp_path):
    data = b"body\r\n" * 3
    if request.param == "memory":
        f = io.BytesIO(data)
    else:
        f = open(tmp_path / "spool", "w+b")
        f.write(data)
        f.flush()
    f.seek(3)  # the listener leaves it anywhere
    yield f
    f.close()


def test_reads_its_fields_then_the_message_from_its_start(spool):
    for fields in (b"Field: x\r\n", b"Other: y\r\n"):
        traced = TracedMessage(fields, spool)
        chunks = []
        while chunk := traced.read(4):
            chunks.append(chunk)
        assert b"".join(chunks) == fields + b"body\r\n" * 3
    assert TracedMessage(b"F: 1\r\n", spool).read() == b"F: 1\r\n" + b"body\r\n" * 3
    assert TracedMessage.from_start(spool).read() == b"body\r\n" * 3


def test_copies_sharing_a_message_read_it_at_once_each_from_its_start(spool):
    # Copies that reach the store in different groups are read on several
    # threads at once: one copy's reads never move another's position.
    copies = [TracedMessage(b"To: %d\r\n" % n, spool) for n in range(3)] + [TracedMessage.from_start(spool)]
    read = [[] for _ in copies]
    for _ in range(10):
        for copy, chunks in zip(copies, read):
            chunks.append(copy.read(5))
    assert [b"".join(chunks) for chunks in read] == [
        copy.fields + b"body\r\n" * 3 for copy in copies
    ]


def test_a_copy_read_to_its_end_is_read_again_whole(spool):
    # A delivery the store refused (a user with no INBOX yet) goes again
    # once the mailboxes are made: with every byte, not what was left.
    for source in (TracedMessage(b"F: 1\r\n", spool), WholeCopy(spool, b"", normalised=True)):
        first = source.read()
        assert source.read() == b""
        assert read_again(source).read() == first
    assert read_again(b"Subject: x\r\n\r\n") == b"Subject: x\r\n\r\n"
    assert read_again(WholeCopy(spool, b"", normalised=True)).normalised
    assert read_again(io.BytesIO(b"a stream")) is None


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
