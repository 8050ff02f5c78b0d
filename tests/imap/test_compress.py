"""
COMPRESS DEFLATE (RFC 4978) through the real protocol class: the RFC's
exchange byte for byte, then raw DEFLATE both ways from the octet after
the tagged OK, commands pipelined behind COMPRESS included.
"""

import zlib

from twisted.internet import defer

from gateway.store.sqlite.store import SQLiteStore
from tests.imap.test_server import Session


def deflater():
    return zlib.compressobj(6, zlib.DEFLATED, -15)


def compressed(session, compressor, data: bytes) -> None:
    session.server.dataReceived(compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))


def answers(session, inflater) -> bytes:
    # The session flushes its deflater at the end of the reactor turn.
    session.clock.advance(0)
    return inflater.decompress(session.read())


def test_the_rfc_exchange_then_compressed_both_ways(store):
    s = Session(store).login()
    # RFC 4978 3, the example.
    assert s.command(b"a002 COMPRESS DEFLATE") == [b"a002 OK DEFLATE active"]
    out, back = deflater(), zlib.decompressobj(-15)
    compressed(s, out, b"a003 NOOP\r\n")
    assert answers(s, back) == b"a003 OK NOOP completed\r\n"
    compressed(s, out, b"a004 CAPABILITY\r\n")
    lines = answers(s, back).split(b"\r\n")
    assert lines[0].startswith(b"* CAPABILITY IMAP4rev1 ") and b"COMPRESS=DEFLATE" not in lines[0]
    compressed(s, out, b"a005 COMPRESS DEFLATE\r\n")
    assert answers(s, back) == b"a005 NO [COMPRESSIONACTIVE] DEFLATE is active already\r\n"


def test_commands_pipelined_behind_compress_are_inflated(store):
    s = Session(store).login()
    out, back = deflater(), zlib.decompressobj(-15)
    tail = out.compress(b"b NOOP\r\nc SELECT INBOX\r\n") + out.flush(zlib.Z_SYNC_FLUSH)
    s.server.dataReceived(b"a COMPRESS DEFLATE\r\n" + tail)
    s.clock.advance(0)
    raw = s.read()
    assert raw.startswith(b"a OK DEFLATE active\r\n")
    lines = back.decompress(raw[len(b"a OK DEFLATE active\r\n"):]).split(b"\r\n")
    assert lines[0] == b"b OK NOOP completed"
    assert lines[-2] == b"c OK [READ-WRITE] SELECT completed"


def test_unknown_mechanism_and_before_login(store):
    s = Session(store)
    assert s.command(b"a COMPRESS DEFLATE")[0].startswith(b"a BAD")
    s.login()
    assert s.command(b"b COMPRESS LZ4") == [b"b BAD Unknown compression mechanism"]
    assert s.command(b"c NOOP") == [b"c OK NOOP completed"]


def test_a_corrupt_stream_ends_the_session(store):
    s = Session(store).login()
    s.command(b"a COMPRESS DEFLATE")
    s.server.dataReceived(b"\xff\xff\xff\xff garbage")
    s.clock.advance(0)
    assert zlib.decompressobj(-15).decompress(s.read()) == b"* BYE Compressed stream is corrupt\r\n"
    assert s.transport.disconnecting


def test_a_literal_and_what_follows_it_in_one_compressed_piece(store):
    # The literal's end hands the rest of the piece back to the line
    # reader (Twisted's setLineMode): plain bytes, not to be inflated again.
    s = Session(store).login()
    s.command(b"a COMPRESS DEFLATE")
    out, back = deflater(), zlib.decompressobj(-15)
    message = b"Subject: x\r\n\r\n" + b"body line\r\n" * 10_000
    compressed(s, out, b"b APPEND INBOX {%d+}\r\n" % len(message) + message + b"\r\nc NOOP\r\nd SELECT INBOX\r\n")
    lines = answers(s, back).split(b"\r\n")
    assert lines[0].startswith(b"b OK [APPENDUID ")
    assert lines[1] == b"c OK NOOP completed"
    assert lines[-2] == b"d OK [READ-WRITE] SELECT completed"


class LaterStore(SQLiteStore):
    """A store whose mailbox look-ups answer on a later reactor turn, as the real one's thread does."""

    clock = None

    def get_mailbox(self, *args):
        d = defer.Deferred()
        super().get_mailbox(*args).addBoth(lambda result: self.clock.callLater(0, d.callback, result))
        return d


def test_a_literal_read_after_the_session_paused(tmp_path):
    # A command waits for the store with input paused; the APPENDs behind it
    # are read from the line buffer on resume, each literal's end handing
    # on plain bytes.
    store = LaterStore(tmp_path / "store")
    try:
        s = Session(store).login()
        store.clock = s.clock
        s.command(b"a COMPRESS DEFLATE")
        out, back = deflater(), zlib.decompressobj(-15)
        message = b"Subject: y\r\n\r\n" + b"text\r\n" * 1000
        pipelined = b"".join(b"b%d APPEND INBOX {%d+}\r\n" % (n, len(message)) + message + b"\r\n" for n in range(3))
        compressed(s, out, b"c STATUS INBOX (MESSAGES)\r\n" + pipelined + b"d NOOP\r\n")
        for _ in range(10):
            s.clock.advance(0)
        lines = back.decompress(s.read()).split(b"\r\n")
        assert [line.split(b" ")[:2] for line in lines if line.startswith((b"b", b"d"))] == (
            [[b"b%d" % n, b"OK"] for n in range(3)] + [[b"d", b"OK"]])
    finally:
        store.close()
