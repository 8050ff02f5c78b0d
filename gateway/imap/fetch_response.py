"""
One message's FETCH response (RFC 3501 7.4.2) as a value: its attributes
in the order ``fetch.plan_fetch`` chose, each a value in IMAP syntax, a
literal, or a range of the message file too big to hold in memory; and
``answer``, which builds it from what the store gave for the message.

``FetchResponse.pieces`` is what the writer sends: bytes, with the file
ranges between them for ``Output.write_file`` to stream.

No Twisted import here.
"""

from __future__ import annotations

import os

import attrs

from gateway.imap import wire
from gateway.imap.fetch import FetchPlan, Section
from gateway.mail import message

# A section up to this size is read and sent from memory; a bigger one is
# streamed from the file.
IN_MEMORY = 256 * 1024


@attrs.frozen
class FileRange:
    """Bytes ``start``..``end`` of the message file, sent as a literal."""

    start: int
    end: int


@attrs.frozen
class Literal:
    """A string sent as a literal (RFC 3501 4.3): it may hold any octet."""

    data: bytes


@attrs.frozen
class FetchResponse:
    """
    ``* seq FETCH (name value ...)``: each value is bytes as they go on the
    wire (a number, a flag list, an ENVELOPE), a ``Literal``, a
    ``FileRange`` or None for NIL.
    """

    seq: int
    attributes: tuple

    def pieces(self) -> list:
        """Bytes, and ``FileRange``s where the file is streamed."""
        pieces = []
        out = [b"* %d FETCH (" % self.seq]
        for index, (name, value) in enumerate(self.attributes):
            if index:
                out.append(b" ")
            if isinstance(value, bytes):
                out.append(name + b" " + value)
            elif value is None:
                out.append(name + b" NIL")
            elif isinstance(value, Literal):
                out.append(name + b" {%d}\r\n" % len(value.data))
                out.append(value.data)
            else:
                out.append(name + b" {%d}\r\n" % (value.end - value.start))
                pieces.append(b"".join(out))
                pieces.append(value)
                out = []
        out.append(b")\r\n")
        pieces.append(b"".join(out))
        return pieces


def answer(seq: int, uid: int, plan: FetchPlan, flags: bytes | None, record, structure, opened) -> FetchResponse:
    """
    The FETCH response of one message: ``flags`` is its formatted flag list
    (the selected view's; None unless ``plan.wants_flags``), ``record`` and ``structure`` what the store gave
    (None where ``plan`` wants neither), ``opened`` its file, read here for
    sections small enough to hold.
    """
    return FetchResponse(seq, tuple(
        (name, _simple(item, uid, flags, record, structure) if section is None else _section(section, structure, opened))
        for name, item, section in plan.layout
    ))


def _simple(item: str, uid: int, flags: bytes | None, record, structure):
    if item == "UID":
        return b"%d" % uid
    if item == "FLAGS":
        return flags
    if item == "INTERNALDATE":
        return wire.format_datetime(record.internaldate)
    if item == "RFC822.SIZE":
        return b"%d" % record.size
    if item == "MODSEQ":
        return b"(%d)" % record.modseq
    if item == "ENVELOPE":
        return structure.envelope
    if item == "BODYSTRUCTURE":
        return structure.bodystructure
    if item == "BODY":
        return structure.body
    return Literal(structure.header)


def _section(section: Section, structure, opened) -> Literal | FileRange | None:
    """A section's bytes, the range of the file for big ones, or None when the part does not exist."""
    if section.part == () and section.text is None:
        # The whole message: no structure needed.
        span = (0, os.fstat(opened.fileno()).st_size)
        content = None
    elif section.part == () and section.text in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        content = structure.header
    else:
        text = "HEADER" if section.text and section.text.startswith("HEADER") else section.text
        span = message.section_range(structure.root, section.part, text)
        if span is None:
            return None
        if section.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            opened.seek(span[0])
            content = opened.read(span[1] - span[0])
        else:
            content = None
    if section.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        content = message.header_fields(content, section.fields, section.text.endswith(".NOT"))
    if section.partial is not None:
        origin, length = section.partial
        if content is None:
            start = min(span[0] + origin, span[1])
            span = (start, min(start + length, span[1]))
        else:
            content = content[origin:origin + length]
    if content is not None:
        return Literal(content)
    if span[1] - span[0] <= IN_MEMORY:
        opened.seek(span[0])
        return Literal(opened.read(span[1] - span[0]))
    return FileRange(*span)
