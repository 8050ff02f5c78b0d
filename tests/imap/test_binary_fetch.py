"""
FETCH BINARY, BINARY.PEEK and BINARY.SIZE (RFC 3516) through the real
protocol class (tests/e2e/test_imap_extensions.py runs them over a socket).
"""

import base64

from tests.deferreds import result_of
from tests.imap.test_server import Session

PAYLOAD = bytes(range(256)) * 4 + b"\x00end"
BIG = bytes(range(256)) * 2000  # 512 KB decoded: streamed, not held


def message(payload=PAYLOAD) -> bytes:
    return (
        b"From: a@example.org\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"caf=C3=A9 =3D ok\r\n"
        b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(payload).replace(b"\n", b"\r\n")
        + b"--b\r\nContent-Type: application/x-thing\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n"
        b"--b--\r\n"
    )


def selected(store, raw=None):
    s = Session(store).login()
    inbox = result_of(store.get_mailbox("alice", "INBOX"))
    result_of(store.append(inbox.id, raw or message()))
    assert s.command(b"s SELECT INBOX")[-1].startswith(b"s OK")
    return s


def test_binary_size_and_decoded_content(store):
    s = selected(store)
    assert s.command(b"a FETCH 1 (BINARY.SIZE[1] BINARY.SIZE[2])") == [
        b"* 1 FETCH (BINARY.SIZE[1] 10 BINARY.SIZE[2] %d)" % len(PAYLOAD), b"a OK FETCH completed"]
    # RFC 3516 4.2: literal8, the name without .PEEK; \Seen not set by PEEK.
    assert s.send(b"b FETCH 1 BINARY.PEEK[1]\r\n") == (
        b"* 1 FETCH (BINARY[1] ~{10}\r\ncaf\xc3\xa9 = ok)\r\nb OK FETCH completed\r\n")
    assert s.send(b"c FETCH 1 BINARY.PEEK[2]<1024.100>\r\n") == (
        b"* 1 FETCH (BINARY[2]<1024> ~{4}\r\n\x00end)\r\nc OK FETCH completed\r\n")
    assert s.command(b"d FETCH 1 FLAGS") == [b"* 1 FETCH (FLAGS (\\Recent))", b"d OK FETCH completed"]
    # BINARY (not PEEK) sets \Seen and says so.
    answer = s.send(b"e FETCH 1 BINARY[2]\r\n")
    assert answer.startswith(b"* 1 FETCH (BINARY[2] ~{%d}\r\n" % len(PAYLOAD) + PAYLOAD)
    assert b"FLAGS (\\Recent \\Seen)" in answer
    assert s.command(b"f FETCH 1 BINARY.PEEK[9]") == [b"* 1 FETCH (BINARY[9] NIL)", b"f OK FETCH completed"]


def test_unknown_cte_and_bad_syntax(store):
    s = selected(store)
    # RFC 3516 4.3
    assert s.command(b"a FETCH 1 BINARY.PEEK[3]") == [
        b"a NO [UNKNOWN-CTE] Cannot decode the content transfer encoding of that part"]
    for bad in (b"BINARY.SIZE[1]<0.5>", b"BINARY[1.TEXT]", b"BINARY[0]", b"BINARY"):
        assert s.command(b"b FETCH 1 " + bad)[-1].startswith(b"b BAD")


def test_big_binary_part_is_streamed(store):
    s = selected(store, message(BIG))
    answer = s.send(b"a FETCH 1 (BINARY.PEEK[2] BINARY.SIZE[2])\r\n")
    head = b"* 1 FETCH (BINARY[2] ~{%d}\r\n" % len(BIG)
    assert answer == head + BIG + b" BINARY.SIZE[2] %d)\r\na OK FETCH completed\r\n" % len(BIG)
    answer = s.send(b"b FETCH 1 BINARY.PEEK[2]<300000.100000>\r\n")
    assert answer == b"* 1 FETCH (BINARY[2]<300000> ~{100000}\r\n" + BIG[300000:400000] + (
        b")\r\nb OK FETCH completed\r\n")
