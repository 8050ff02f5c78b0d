"""
One message's FETCH response (RFC 3501 7.4.2) as a value: its attributes
in the order ``fetch.plan_fetch`` chose, each in IMAP syntax or, for a
section, its content: bytes sent as a literal, or a range of the message
file too big to hold in memory; and ``answer``, which builds it from what the store
gave for the message.

``FetchResponse.pieces`` is what the writer sends: bytes, with the file
ranges between them for ``Output.write_file`` to stream.  ``line_writer``
answers the plans that need no message file (the list a client fetches
when it opens a mailbox) from the store's plain rows, with one formatting
of a bytes template a message, byte for byte what ``answer`` gives; its
``CachedLines`` do the same from parts rendered once and kept
(``fetch_cache``), with the session's UID and FLAGS between them.

No Twisted import here.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Callable, Iterable

import attrs

from gateway.imap import binary, wire
from gateway.imap.fetch import FetchPlan, Section
from gateway.mail import message

# A section up to this size is read and sent from memory; a bigger one is
# streamed from the file.
IN_MEMORY = 256 * 1024
# A section's bytes up to this size are joined into the answer's line; a
# bigger one goes to the transport as a piece of its own.
_JOINED = 4096


@attrs.frozen
class FileRange:
    """Bytes ``start``..``end`` of the message file, sent as a literal."""

    start: int
    end: int


@attrs.frozen
class Binary:
    """
    A BINARY section's decoded content (RFC 3516 4.2), sent as a literal8
    (``~{n}``): ``data`` when small, else the ``decoding`` of the file
    that ``binary.decoded_range`` streams, ``partial`` of it.
    """

    size: int
    data: bytes | None = None
    decoding: binary.Decoding | None = None
    partial: tuple[int, int] | None = None


@attrs.frozen
class FetchResponse:
    """
    ``* seq FETCH (...)``: each attribute either whole as it goes on the
    wire (``UID 7``, ``FLAGS (\\Seen)``, ``ENVELOPE (...)``), or a
    section's ``(name, content)``: its bytes, sent as a literal (RFC 3501
    4.3), a ``FileRange`` of the message file, or None for NIL.
    """

    seq: int
    attributes: list
    # Whether any attribute is a section's content (most answers have none).
    sections: bool = True

    def pieces(self) -> list:
        """Bytes, and ``FileRange``s where the file is streamed."""
        if not self.sections:
            return [b"* %d FETCH (%s)\r\n" % (self.seq, b" ".join(self.attributes))]
        pieces = []
        out = [b"* %d FETCH (" % self.seq]
        add = out.append
        separator = b""
        for attribute in self.attributes:
            if type(attribute) is bytes:
                add(separator + attribute)
            else:
                name, content = attribute
                if content is None:
                    add(separator + name + b" NIL")
                elif type(content) is Binary:
                    add(separator + name + b" ~{%d}\r\n" % content.size)
                    if content.data is not None:
                        add(content.data)
                    else:
                        pieces.append(b"".join(out))
                        pieces.append(content)
                        out.clear()
                elif type(content) is bytes:
                    add(separator + name + b" {%d}\r\n" % len(content))
                    if len(content) < _JOINED:
                        add(content)
                    else:
                        # Its own piece: the transport sends the pieces
                        # together, with no copy of a body into the answer.
                        pieces.append(b"".join(out))
                        pieces.append(content)
                        out.clear()
                else:
                    add(separator + name + b" {%d}\r\n" % (content.end - content.start))
                    pieces.append(b"".join(out))
                    pieces.append(content)
                    out.clear()
            separator = b" "
        add(b")\r\n")
        pieces.append(b"".join(out))
        return pieces


def answer(seq: int, uid: int, plan: FetchPlan, flags: bytes | None, record, structure, opened) -> FetchResponse:
    """
    The FETCH response of one message: ``flags`` is its formatted flag list
    (the selected view's; None unless ``plan.wants_flags``), ``record`` and
    ``structure`` what the store gave (None where ``plan`` wants neither),
    ``opened`` its file, read here for sections small enough to hold.
    """
    return FetchResponse(seq, [
        _binary(name, item, structure, opened) if type(item) is binary.BinarySection
        else _simple(item, uid, flags, record, structure) if section is None
        else (name, _section(section, structure, opened))
        for name, item, section in plan.layout
    ], plan.wants_sections)


@attrs.frozen
class CachedLines:
    """
    Whole ``* seq FETCH (...)`` lines from each message's parts that never
    change (``fetch_cache``) and what the session knows (its UID and
    FLAGS): ``key`` names the item list, ``render(rows)`` makes the
    parts of messages from their ``fetch_rows`` rows, by UID (bytes, or a
    tuple of them where UID or FLAGS come between), ``lines(seqs, uids,
    flags, parts)`` the lines of many messages, from a value of each for
    each.
    """

    key: tuple
    render: Callable[[list], dict]
    lines: Callable[[Iterable, Iterable, Iterable, Iterable], list[bytes]]


@attrs.frozen
class LineWriter:
    """
    What formats whole ``* seq FETCH (...)`` lines from the store's
    ``fetch_rows`` tuples: ``columns`` is what to ask it for,
    ``modseq_at`` where MODSEQ is in a row (None if not asked for), and
    ``line(seq, flags, row)`` the line of a message; ``cached`` the same
    from kept parts, when the items are all either kept or the session's.
    """

    columns: tuple[str, ...]
    modseq_at: int | None
    line: Callable[[int, bytes | None, tuple], bytes]
    cached: CachedLines | None = None


def line_writer(plan: FetchPlan) -> LineWriter | None:
    """
    For a plan answered without the message file (no BINARY, no section
    beyond the stored header): what formats each message's line, byte for
    byte what ``answer`` gives; else None.
    """
    if plan.wants_file or any(type(item) is binary.BinarySection for _, item, _ in plan.layout):
        return None
    columns: list[str] = []

    def column(name: str) -> int:
        if name not in columns:
            columns.append(name)
        # In (seq, flags, uid, *values).
        return 3 + columns.index(name)

    # Each item's format, its value's place in (seq, flags, uid, *values),
    # and what shapes the value first (or None).
    items = []
    for name, item, section in plan.layout:
        if section is not None:
            items.append((name + b" %s", column("header"), _header_shape(section)))
        elif item == "UID":
            items.append((b"UID %d", 2, None))
        elif item == "FLAGS":
            items.append((b"FLAGS %s", 1, None))
        elif item == "RFC822.HEADER":
            items.append((b"RFC822.HEADER %s", column("header"), _literal))
        else:
            form, name_of = _LINE_ITEMS[item]
            items.append((form, column(name_of), None))
    modseq_at = 1 + columns.index("modseq") if "modseq" in columns else None
    template = b"* %d FETCH (" + b" ".join(form for form, _, _ in items) + b")\r\n"
    # Picks the template's values out of (seq, flags, uid, *values).
    pick = operator.itemgetter(0, *(place for _, place, _ in items))
    shapes = [(at, shape) for at, (_, _, shape) in enumerate(items, 1) if shape is not None]

    def line(seq: int, flags: bytes | None, row: tuple) -> bytes:
        return template % pick((seq, flags, *row))

    def shaped_line(seq: int, flags: bytes | None, row: tuple) -> bytes:
        values = list(pick((seq, flags, *row)))
        for place, shape in shapes:
            values[place] = shape(values[place])
        return template % tuple(values)

    cached = None if modseq_at is not None else _cached_lines(plan.items, items)
    return LineWriter(tuple(columns), modseq_at, shaped_line if shapes else line, cached)


def _cached_lines(key: tuple, items: list) -> CachedLines | None:
    """
    ``CachedLines`` of ``items`` (from ``line_writer``, no MODSEQ): the
    kept items between UID and FLAGS rendered as runs, one format each.
    """
    # The line's formats, with each run of kept items as one "%s"; the
    # place of each value in (seq, uid, flags, *runs).
    forms, places, runs = [], [0], []
    for form, place, shape in items:
        if place in (1, 2):
            forms.append(form)
            places.append(2 if place == 1 else 1)
            continue
        if not runs or places[-1] != 2 + len(runs):
            forms.append(b"%s")
            runs.append([])
            places.append(2 + len(runs))
        runs[-1].append((form, place - 2, shape))
    if not runs:
        return None
    renders = [_run_render(run) for run in runs]
    template = b"* %d FETCH (" + b" ".join(forms) + b")\r\n"
    format_line = template.__mod__
    uid_of = operator.itemgetter(0)
    if len(renders) == 1:
        run = renders[0]

        def render(rows: list) -> dict:
            return dict(zip(map(uid_of, rows), run(rows)))

        def lines(seqs, uids, flags, parts) -> list[bytes]:
            sources = (seqs, uids, flags, parts)
            return list(map(format_line, zip(*[sources[place] for place in places])))
    else:
        def render(rows: list) -> dict:
            return dict(zip(map(uid_of, rows), zip(*[run(rows) for run in renders])))

        pick = operator.itemgetter(*places)

        def lines(seqs, uids, flags, parts) -> list[bytes]:
            return [format_line(pick((seq, uid, shown, *found)))
                    for seq, uid, shown, found in zip(seqs, uids, flags, parts)]

    return CachedLines(key, render, lines)


def _run_render(run: list) -> Callable[[list], list[bytes]]:
    """What renders kept items (format, place in the row, shape) from ``fetch_rows`` rows, a run each."""
    format_run = b" ".join(form for form, _, _ in run).__mod__
    pick = operator.itemgetter(*(place for _, place, _ in run))
    shapes = [(at, shape) for at, (_, _, shape) in enumerate(run) if shape is not None]
    if not shapes:
        return lambda rows: list(map(format_run, map(pick, rows)))
    if len(run) == 1:
        shape = shapes[0][1]
        return lambda rows: [format_run(shape(pick(row))) for row in rows]

    def render(row: tuple) -> bytes:
        values = list(pick(row))
        for at, shape in shapes:
            values[at] = shape(values[at])
        return format_run(tuple(values))

    return lambda rows: list(map(render, rows))


def _literal(content: bytes) -> bytes:
    return b"{%d}\r\n" % len(content) + content


# Each simple item's place in the line and the store's column that fills
# it (interfaces.FETCH_COLUMNS): as in _simple.
_LINE_ITEMS = {
    "INTERNALDATE": (b"INTERNALDATE %s", "internaldate"),
    "RFC822.SIZE": (b"RFC822.SIZE %d", "size"),
    "MODSEQ": (b"MODSEQ (%d)", "modseq"),
    "ENVELOPE": (b"ENVELOPE %s", "envelope"),
    "BODYSTRUCTURE": (b"BODYSTRUCTURE %s", "bodystructure"),
    "BODY": (b"BODY %s", "body"),
}


def _header_shape(section: Section):
    """A section of the stored header (HEADER, HEADER.FIELDS[.NOT]) from the header: a literal, as _section gives."""
    fields = section.fields
    exclude = section.text == "HEADER.FIELDS.NOT"
    filtered = section.text != "HEADER"
    partial = section.partial

    def shape(content: bytes) -> bytes:
        if filtered:
            content = message.header_fields(content, fields, exclude)
        if partial is not None:
            content = content[partial[0]:partial[0] + partial[1]]
        return _literal(content)

    return shape


def _binary(name: bytes, item: binary.BinarySection, structure, opened):
    """
    BINARY.SIZE's number, or BINARY's (name, Binary) (None for a part that
    does not exist).  Raises ``binary.UnknownTransferEncoding``.
    """
    decoding = binary.locate(structure.root, item, opened)
    if decoding is None:
        return name + b" NIL" if item.size else (name, None)
    if item.size:
        return name + b" %d" % binary.decoded_size(opened, decoding)
    if decoding.end - decoding.start <= IN_MEMORY:
        data = b"".join(binary.decoded_range(opened, decoding, item.partial))
        return name, Binary(len(data), data=data)
    size = binary.decoded_size(opened, decoding)
    if item.partial is not None:
        origin, length = item.partial
        size = min(length, max(0, size - origin))
    return name, Binary(size, decoding=decoding, partial=item.partial)


def _simple(item: str, uid: int, flags: bytes | None, record, structure) -> bytes:
    if item == "UID":
        return b"UID %d" % uid
    if item == "FLAGS":
        return b"FLAGS " + flags
    if item == "INTERNALDATE":
        return b"INTERNALDATE " + wire.format_datetime(record.internaldate)
    if item == "RFC822.SIZE":
        return b"RFC822.SIZE %d" % record.size
    if item == "MODSEQ":
        return b"MODSEQ (%d)" % record.modseq
    if item == "ENVELOPE":
        return b"ENVELOPE " + structure.envelope
    if item == "BODYSTRUCTURE":
        return b"BODYSTRUCTURE " + structure.bodystructure
    if item == "BODY":
        return b"BODY " + structure.body
    return b"RFC822.HEADER {%d}\r\n" % len(structure.header) + structure.header


def _section(section: Section, structure, opened) -> bytes | FileRange | None:
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
        return content
    if span[1] - span[0] <= IN_MEMORY:
        opened.seek(span[0])
        return opened.read(span[1] - span[0])
    return FileRange(*span)
