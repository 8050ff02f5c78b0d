"""
COMPRESS=DEFLATE (RFC 4978) end to end: imaplib, taught to deflate what it
sends and inflate what it reads once the server said OK, against the real
server; the bytes on the wire are counted.
"""

from __future__ import annotations

import imaplib
import zlib

import pytest

from tests.serverproc import imap_gateway

imaplib.Commands.setdefault("COMPRESS", ("AUTH", "SELECTED"))

# Mail as people write it compresses well; a test of the wire, not of zlib.
TEXT = b"".join(b"Line %d of a message about the quarterly report, with some numbers %d.\r\n" % (n, n * 7)
                for n in range(20_000))
MESSAGE = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: report\r\n\r\n" + TEXT


class DeflateIMAP4(imaplib.IMAP4):
    """imaplib with RFC 4978 compression: counts the raw bytes both ways."""

    _deflater = _inflater = None
    _plain = b""
    wire_in = wire_out = plain_in = 0

    def compress(self):
        typ, data = self._simple_command("COMPRESS", "DEFLATE")
        assert typ == "OK", data
        self._deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
        self._inflater = zlib.decompressobj(-15)
        return typ, data

    def send(self, data):
        if self._deflater is not None:
            data = self._deflater.compress(data) + self._deflater.flush(zlib.Z_SYNC_FLUSH)
        self.wire_out += len(data)
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise imaplib.IMAP4.abort("connection closed")
        self.wire_in += len(chunk)
        plain = self._inflater.decompress(chunk)
        self.plain_in += len(plain)
        self._plain += plain

    def read(self, size):
        if self._inflater is None:
            return super().read(size)
        while len(self._plain) < size:
            self._fill()
        data, self._plain = self._plain[:size], self._plain[size:]
        return data

    def readline(self):
        if self._inflater is None:
            return super().readline()
        while b"\n" not in self._plain:
            self._fill()
        end = self._plain.index(b"\n") + 1
        line, self._plain = self._plain[:end], self._plain[end:]
        return line


@pytest.fixture
def server(tmp_path):
    with imap_gateway(tmp_path / "data") as process:
        yield process


def connect(server) -> DeflateIMAP4:
    client = DeflateIMAP4("127.0.0.1", server.port("imap"), timeout=30)
    client.login("alice", "pw")
    return client


def test_compressed_session_with_imaplib(server):
    client = connect(server)
    assert b"COMPRESS=DEFLATE" in client.capability()[1][0].split()
    assert client.compress() == ("OK", [b"DEFLATE active"])
    # RFC 4978 3: offered no more, and a second one is refused.
    typ, data = client.capability()
    assert typ == "OK" and b"COMPRESS=DEFLATE" not in data[0].split()
    typ, data = client._simple_command("COMPRESS", "DEFLATE")
    assert typ == "NO" and data == [b"[COMPRESSIONACTIVE] DEFLATE is active already"]
    assert client.append("INBOX", r"(\Seen $Report)", None, MESSAGE)[0] == "OK"
    assert client.select("INBOX") == ("OK", [b"1"])
    before_in, before_out = client.wire_in, client.plain_in
    typ, data = client.fetch("1", "(FLAGS BODY.PEEK[])")
    assert typ == "OK" and data[0][1] == MESSAGE
    assert b"$Report" in data[0][0]
    # What crossed the wire for the FETCH, against what it said.
    wire, plain = client.wire_in - before_in, client.plain_in - before_out
    assert plain > len(MESSAGE)
    assert wire * 10 < plain, (wire, plain)
    # The upload was compressed too: far fewer bytes than the message.
    assert client.wire_out * 10 < len(MESSAGE)
    assert client.logout()[0] == "BYE"


def test_many_big_answers_in_flight_keep_their_order(server):
    client = connect(server)
    for n in range(5):
        client.append("INBOX", None, None, MESSAGE + b"%d\r\n" % n)
    client.compress()
    client.select("INBOX")
    # A slow reader: the server waits for the socket, nothing is lost or reordered.
    for round_ in range(2):
        typ, data = client.fetch("1:5", "(UID BODY.PEEK[])")
        assert typ == "OK"
        bodies = [item[1] for item in data if isinstance(item, tuple)]
        assert bodies == [MESSAGE + b"%d\r\n" % n for n in range(5)]
    assert client.noop()[0] == "OK"
    client.logout()
