"""
Incremental decoding of MIME bodies to text: the transfer encodings of
RFC 2045 6 (base64, quoted-printable) and then the charset, fed a piece at a
time, so that decoding a body of any size holds only the current piece.

Pure: no Twisted.  Broken input decodes to what can be read (U+FFFD for
bytes the charset refuses), never to an exception.
"""

from __future__ import annotations

import binascii
import codecs
import functools
import re

# Names Python decodes that are no MIME charset: asking for them in a
# message must not run them.
_NOT_CHARSETS = frozenset({
    "idna", "punycode", "raw_unicode_escape", "unicode_escape", "undefined",
    "charmap",
})


@functools.lru_cache(maxsize=256)
def text_codec(charset: str) -> str | None:
    """
    The Python codec that decodes the MIME charset ``charset`` (any case),
    or None if there is none.  US-ASCII reads as UTF-8, its superset, as in
    Dovecot: mail labelled us-ascii often holds UTF-8.
    """
    name = charset.strip().strip('"').lower()
    if not name or not name.isascii():
        return None
    try:
        codec = codecs.lookup(name).name
        # bytes.decode refuses codecs that do not make text (base64, rot13).
        b"a".decode(codec, "replace")
    except (LookupError, ValueError):
        return None
    if codec.replace("-", "_") in _NOT_CHARSETS:
        return None
    return "utf-8" if codec == "ascii" else codec


_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_BASE64 = bytes(sorted(set(range(256)) - set(_BASE64_ALPHABET) - {ord("=")}))


class _Base64:
    """
    RFC 2045 6.8 leniently, as ``base64.b64decode`` without validation:
    characters outside the alphabet are skipped, and padding that completes
    a quantum ("xx==", "xxx=") ends the data; other "=" are skipped.
    """

    __slots__ = ("_held", "_done")

    def __init__(self) -> None:
        self._held = b""
        self._done = False

    def feed(self, data: bytes) -> bytes:
        if self._done:
            return b""
        data = self._held + data.translate(None, _NOT_BASE64)
        kept = []
        count = 0
        position = 0
        for run in _PADDING.finditer(data):
            kept.append(data[position:run.start()])
            count += run.start() - position
            position = run.end()
            quantum = count % 4
            if quantum < 2:
                continue
            if quantum + len(run[0]) >= 4:
                self._done = True
                self._held = b""
                return binascii.a2b_base64(b"".join(kept) + b"==")
            if position == len(data):
                # "xx=" at the end: the next piece may complete it.
                whole = b"".join(kept)
                self._held = whole[len(whole) - quantum:] + run[0]
                return binascii.a2b_base64(whole[:len(whole) - quantum])
        kept.append(data[position:])
        whole = b"".join(kept)
        usable = len(whole) - len(whole) % 4
        self._held = whole[usable:]
        return binascii.a2b_base64(whole[:usable])

    def finish(self) -> bytes:
        held = self._held.rstrip(b"=")
        self._held = b""
        # One character of a quantum makes no byte.
        if len(held) < 2:
            return b""
        return binascii.a2b_base64(held + b"==")


_PADDING = re.compile(b"=+")


class _QuotedPrintable:
    """
    RFC 2045 6.7 as ``quopri.decodestring``: whole lines are decoded at once;
    a line that never ends is cut anywhere but inside an "=XX" escape.
    """

    __slots__ = ("_held",)

    _LONGEST_HELD = 1 << 16

    def __init__(self) -> None:
        self._held = b""

    def feed(self, data: bytes) -> bytes:
        data = self._held + data
        cut = data.rfind(b"\n") + 1
        if cut == 0 and len(data) > self._LONGEST_HELD:
            cut = len(data) - 2
            escape = data.find(b"=", cut - 2, cut)
            if escape >= 0:
                cut = escape
        self._held = data[cut:]
        return binascii.a2b_qp(data[:cut])

    def finish(self) -> bytes:
        held, self._held = self._held, b""
        return binascii.a2b_qp(held)


_TRANSFER = {"base64": _Base64, "quoted-printable": _QuotedPrintable}
# RFC 2045 6.1: the encodings that leave the octets as they are.
IDENTITY_ENCODINGS = frozenset({"7bit", "8bit", "binary"})


def transfer_decoder(transfer_encoding: str):
    """
    A fresh decoder (``feed(bytes) -> bytes``, ``finish() -> bytes``) that
    undoes a Content-Transfer-Encoding, base64 or quoted-printable; None
    for the identity encodings and any other (the caller decides what an
    unknown one means).
    """
    transfer = _TRANSFER.get(transfer_encoding.lower())
    return transfer() if transfer is not None else None


class BodyDecoder:
    """
    One MIME body as text: undo its Content-Transfer-Encoding (identity
    for 7bit, 8bit, binary and any unknown one), then its charset (UTF-8
    when absent or unknown).  ``feed`` pieces in order, then ``finish``.
    """

    __slots__ = ("_transfer", "_text")

    def __init__(self, transfer_encoding: str | None, charset: str | None) -> None:
        transfer = _TRANSFER.get((transfer_encoding or "").lower())
        self._transfer = transfer() if transfer is not None else None
        codec = text_codec(charset) if charset else None
        self._text = codecs.getincrementaldecoder(codec or "utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        if self._transfer is not None:
            data = self._transfer.feed(data)
        return self._text.decode(data)

    def finish(self) -> str:
        tail = self._transfer.finish() if self._transfer is not None else b""
        return self._text.decode(tail, final=True)
