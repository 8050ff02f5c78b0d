"""
FETCH BINARY (RFC 3516): ``BINARY[section]<partial>``, ``BINARY.PEEK`` and
``BINARY.SIZE[section]``: a part's content with its Content-Transfer-Encoding
undone, read from the stored message a chunk at a time.

The decoded size must be known before its literal8 (``~{n}``) is sent, so a
large part is decoded twice, once to count and once to send: memory stays
at a chunk whatever the part's size.  An encoding we cannot undo is
``NO [UNKNOWN-CTE]`` (RFC 3516 4.3).

Pure: no Twisted.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import BinaryIO

import attrs

from gateway.mail.decode import IDENTITY_ENCODINGS, transfer_decoder
from gateway.mail.message import content_coding, find_part
from gateway.mail.mimescan import MAX_HEADER
from gateway.store.model import Part

CHUNK = 256 * 1024

_BINARY = re.compile(r"(BINARY(?:\.PEEK|\.SIZE)?)\[((?:[1-9][0-9]*)(?:\.[1-9][0-9]*)*)?\](?:<(\d+)\.(\d+)>)?",
                     re.IGNORECASE)
_MAX_NUMBER = 4294967295


class UnknownTransferEncoding(ValueError):
    """A part in an encoding we cannot undo: RFC 3516 4.3's UNKNOWN-CTE."""

    text = b"[UNKNOWN-CTE] Cannot decode the content transfer encoding of that part"


@attrs.frozen
class BinarySection:
    """One BINARY, BINARY.PEEK or BINARY.SIZE item (``size``) of FETCH."""

    peek: bool
    part: tuple[int, ...] = ()
    partial: tuple[int, int] | None = None
    size: bool = False

    def reply_name(self) -> bytes:
        """RFC 3516 4.2: the name in the FETCH reply (without .PEEK, the partial's origin only)."""
        spec = ".".join(str(number) for number in self.part)
        name = ("BINARY.SIZE[" if self.size else "BINARY[") + spec + "]"
        if self.partial is not None:
            name += "<%d>" % self.partial[0]
        return name.encode("ascii")


def parse_binary(item: str) -> BinarySection | None:
    """The item ``item`` (one fetch-att) as a BinarySection, or None when it is not one."""
    match = _BINARY.fullmatch(item)
    if match is None:
        return None
    kind = match[1].upper()
    part = tuple(int(number) for number in match[2].split(".")) if match[2] else ()
    partial = None
    if match[3] is not None:
        if kind == "BINARY.SIZE":
            return None
        origin, length = int(match[3]), int(match[4])
        if length == 0 or origin > _MAX_NUMBER or length > _MAX_NUMBER:
            return None
        partial = (origin, length)
    if any(number > _MAX_NUMBER for number in part):
        return None
    return BinarySection(peek=kind != "BINARY", part=part, partial=partial, size=kind == "BINARY.SIZE")


@attrs.frozen
class Decoding:
    """Where a section lies in the stored message and how to decode it (None: as it is)."""

    start: int
    end: int
    encoding: str | None


def locate(root: Part, section: BinarySection, message: BinaryIO) -> Decoding | None:
    """
    The range and encoding of ``section`` in ``message``, or None when the
    part does not exist.  ``BINARY[]`` is the whole message, never decoded.
    Raises L{UnknownTransferEncoding}.
    """
    part = find_part(root, section.part)
    if part is None:
        return None
    if not section.part:
        return Decoding(part.header_start, part.end, None)
    message.seek(part.header_start)
    header = message.read(min(part.body_start - part.header_start, MAX_HEADER))
    encoding = (content_coding(header)[0] or "7bit").lower()
    if encoding in IDENTITY_ENCODINGS:
        return Decoding(part.body_start, part.end, None)
    if transfer_decoder(encoding) is None:
        raise UnknownTransferEncoding(encoding)
    return Decoding(part.body_start, part.end, encoding)


def decoded_chunks(message: BinaryIO, decoding: Decoding, chunk: int = CHUNK) -> Iterator[bytes]:
    """The section's decoded octets, a chunk of the stored message at a time."""
    decoder = transfer_decoder(decoding.encoding) if decoding.encoding is not None else None
    message.seek(decoding.start)
    left = decoding.end - decoding.start
    while left > 0:
        data = message.read(min(chunk, left))
        if not data:
            break
        left -= len(data)
        yield decoder.feed(data) if decoder is not None else data
    if decoder is not None:
        yield decoder.finish()


def decoded_size(message: BinaryIO, decoding: Decoding) -> int:
    """BINARY.SIZE (RFC 3516 4.2): the octets the section decodes to."""
    if decoding.encoding is None:
        return decoding.end - decoding.start
    return sum(len(piece) for piece in decoded_chunks(message, decoding))


def decoded_range(message: BinaryIO, decoding: Decoding, partial: tuple[int, int] | None) -> Iterator[bytes]:
    """The decoded octets ``partial`` (origin, length) asks for, or all of them."""
    if partial is None:
        yield from decoded_chunks(message, decoding)
        return
    origin, length = partial
    position = 0
    for piece in decoded_chunks(message, decoding):
        low, high = max(origin - position, 0), min(origin + length - position, len(piece))
        if low < high:
            yield piece[low:high]
        position += len(piece)
        if position >= origin + length:
            return
