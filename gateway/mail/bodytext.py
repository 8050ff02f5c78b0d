"""
The text of a stored message that SEARCH BODY and TEXT look at (RFC 3501
6.4.4), read piece by piece from the message file along the part tree
the store keeps, so that SEARCH and BODYSTRUCTURE agree on every part
boundary, and no step decodes more than one piece.

Pure: no Twisted.  As in Dovecot, the body text is every text/* and
message/* part, transfer- and charset-decoded (RFC 3501 lets a server skip
other media types), and the MIME headers of the parts are header text, for
TEXT.  The header fields of an attached message (message/rfc822) are body
text too, so BODY finds a forwarded message by its Subject.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from typing import BinaryIO

from gateway.mail.decode import BodyDecoder
from gateway.mail.fields import header_text
from gateway.mail.message import content_coding
from gateway.mail.mimescan import MAX_HEADER
from gateway.store.model import Part

# Bytes read per step; a step decodes and searches one piece.
PIECE = 1 << 16
# The most of one message a search reads: past this its text is not searched.
MAX_TEXT = 16 << 20


class Kind(enum.Enum):
    """What a piece of text is: body text, or a MIME part's header."""

    BODY = "body"
    MIME_HEADER = "mime header"


class _Reader:
    """Reads ranges of the message file within a budget of bytes."""

    __slots__ = ("_file", "left")

    def __init__(self, file: BinaryIO, budget: int) -> None:
        self._file = file
        self.left = budget

    def read(self, start: int, end: int) -> bytes:
        size = min(end - start, self.left)
        if size <= 0:
            return b""
        self._file.seek(start)
        data = self._file.read(size)
        self.left -= len(data)
        return data

    def header(self, part: Part) -> bytes:
        # No further than the parser read for the part's Content-* fields.
        return self.read(part.header_start, min(part.body_start, part.header_start + MAX_HEADER))


def _is_text(part: Part) -> bool:
    # Dovecot's message-search: text/* and message/*; an attached message
    # that was parsed is searched as its parts instead.
    kind = part.content_type
    if kind.startswith("text/"):
        return True
    return kind.startswith("message/") and not (kind == "message/rfc822" and part.children)


def body_text(root: Part, file: BinaryIO, mime_headers: bool = True,
              budget: int = MAX_TEXT) -> Iterator[tuple[Kind, str | None]]:
    """
    The searchable text of the message whose part tree is ``root``, read
    from the seekable binary ``file`` (the stored message), in message
    order, as (kind, piece) pairs: decoded pieces of one text, then (kind,
    None) where that text ends, so that no match spans two texts.  The
    message's own header is not included (the index holds it); the MIME
    headers of its parts are, unless ``mime_headers`` is false.

    Reads at most ``budget`` bytes of the file, however many parts there
    are.  The walk is a loop over an explicit stack: no recursion however
    deep the tree.
    """
    reader = _Reader(file, budget)
    # (part, whether its header is a message header rather than a MIME one)
    stack = [(root, True)]
    while stack and reader.left > 0:
        part, message = stack.pop()
        header = None
        if not message and mime_headers:
            header = reader.header(part)
            yield Kind.MIME_HEADER, header_text(header)
            yield Kind.MIME_HEADER, None
        if part.content_type.startswith("multipart/"):
            stack.extend((child, False) for child in reversed(part.children))
        elif part.content_type == "message/rfc822" and part.children:
            inner = part.children[0]
            yield Kind.BODY, header_text(reader.header(inner))
            yield Kind.BODY, None
            stack.append((inner, True))
        elif _is_text(part):
            if header is None:
                header = reader.header(part)
            decoder = BodyDecoder(*content_coding(header))
            position = part.body_start
            while position < part.end:
                data = reader.read(position, min(part.end, position + PIECE))
                if not data:
                    break
                position += len(data)
                yield Kind.BODY, decoder.feed(data)
            yield Kind.BODY, decoder.finish()
            yield Kind.BODY, None
