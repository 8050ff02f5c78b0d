"""
Parse a message once, at delivery: IMAP ENVELOPE, BODY and BODYSTRUCTURE wire
forms and the byte offsets of every MIME part (DESIGN.md, "Performance rules").

Pure: no Twisted.  The rules follow Dovecot 2.3's lib-mail and lib-imap, so a
mailbox moved from Dovecot shows clients the same structures: the CRLF before
a boundary line belongs to the boundary, any enclosing boundary (longest
prefix match) ends a part, Content-* headers count only in MIME parts, header
values go out raw (RFC 2047 words not decoded), and broken input gives a
structure, never an exception.

The message is read in chunks: only headers are held in memory, bodies are
only searched for boundary lines, so a 50 MB attachment costs a few chunks.
Header syntax (addresses, parameters, IMAP strings) is in
L{gateway.mail.header}.
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Iterable, Iterator

from gateway.mail.header import (
    Rfc822Parser,
    envelope,
    envelope_fields,
    header_fields,
    header_values,
    languages,
    nstring,
    param,
    parameters,
    parse_fields,
)
from gateway.store.model import MessageStructure, Part

__all__ = [
    "crlf_chunks", "find_part", "header_fields", "header_values", "parse",
    "parse_bytes", "section_range",
]

_CHUNK = 1 << 16
# A header line longer than this is read in pieces (and joined, up to
# _MAX_HEADER); a part keeps at most _MAX_HEADER header bytes for parsing.
_MAX_LINE = 1 << 16
_MAX_HEADER = 1 << 20
# Dovecot's message_parser limits: deeper or further parts are leaves.
_MAX_DEPTH = 100
_MAX_PARTS = 10000


class _Reader:
    """
    Buffered reads over the message with a running count of LF bytes, so a
    part's line count is the difference of two counts.
    """

    __slots__ = ("_file", "_buf", "_pos", "_base", "_eof", "_mid", "lf")

    def __init__(self, fileobj):
        self._file = fileobj
        self._buf = b""
        self._pos = 0
        self._base = 0
        self._eof = False
        self._mid = False
        self.lf = 0

    @property
    def offset(self):
        return self._base + self._pos

    def _more(self):
        if self._eof:
            return False
        chunk = self._file.read(_CHUNK)
        if not chunk:
            self._eof = True
            return False
        # Keep two consumed bytes: the [CR]LF before a boundary line.
        cut = self._pos - 2
        if cut > 0:
            self._base += cut
            self._buf = self._buf[cut:] + chunk
            self._pos -= cut
        else:
            self._buf += chunk
        return True

    def newline_before(self):
        """Length of the [CR]LF just before the current position (0-2)."""
        buf, pos = self._buf, self._pos
        if pos >= 1 and buf[pos - 1] == 10:
            return 2 if pos >= 2 and buf[pos - 2] == 13 else 1
        return 0

    def read_line(self):
        """
        Return (line, starts_a_line): the next line through its LF, a piece
        of at most _MAX_LINE bytes of a longer one, or b"" at the end.
        """
        at_start = not self._mid
        searched = 0
        while True:
            buf, pos = self._buf, self._pos
            j = buf.find(b"\n", pos + searched)
            if j >= 0:
                self._pos = j + 1
                self._mid = False
                self.lf += 1
                return buf[pos:j + 1], at_start
            searched = len(buf) - pos
            if searched >= _MAX_LINE or not self._more():
                self._pos = len(buf)
                self._mid = searched > 0
                return buf[pos:], at_start

    def unread(self, line):
        """Step back over ``line``, just returned by read_line at a line start."""
        self._pos -= len(line)
        self._mid = False
        if line.endswith(b"\n"):
            self.lf -= 1

    def skip_line(self):
        """Skip the rest of the current line, however long, through its LF."""
        while True:
            j = self._buf.find(b"\n", self._pos)
            if j >= 0:
                self._pos = j + 1
                self.lf += 1
                return
            self._pos = len(self._buf)
            if not self._more():
                return

    def scan(self, bounds):
        """
        Consume body lines, from a line start, up to the next line that is
        a delimiter of one of ``bounds`` (boundaries without their "--").
        Return that delimiter's _Stop, positioned at its line start, or None
        at the end of the message.
        """
        pos = self._pos
        cand = pos
        origin = self.offset
        if bounds:
            need = 4 + max(map(len, bounds))
            delimiter = _delimiter_pattern(tuple(bounds))
        while True:
            buf = self._buf
            size = len(buf)
            if cand >= 0 and bounds:
                avail = size - cand
                if (avail < need and not self._eof
                        and (avail < 2 or buf.startswith(b"--", cand))
                        and buf.find(b"\n", cand) < 0):
                    self.lf += buf.count(b"\n", pos, cand)
                    self._pos = cand
                    self._more()
                    pos = cand = self._pos
                    continue
                if buf.startswith(b"--", cand):
                    index = _match(buf, cand + 2, bounds)
                    if index is not None:
                        self.lf += buf.count(b"\n", pos, cand)
                        self._pos = cand
                        closing = buf.startswith(b"--", cand + 2 + len(bounds[index]))
                        # On the first line the [CR]LF before it ended a
                        # header; otherwise it belongs to the delimiter.
                        newline = self.newline_before() if self.offset != origin else 0
                        return _Stop(index, closing, self.offset, self.lf, newline)
                found = delimiter.search(buf, cand)
            else:
                found = delimiter.search(buf, pos) if bounds else None
            if found is not None:
                cand = found.start() + 1
                continue
            if self._eof:
                self.lf += buf.count(b"\n", pos)
                self._pos = size
                return None
            # The end of the buffer may hold the start of a delimiter line.
            keep = max(pos, size - need) if bounds else size
            self.lf += buf.count(b"\n", pos, keep)
            self._pos = keep
            self._more()
            pos = self._pos
            cand = -1


@functools.lru_cache(maxsize=256)
def _delimiter_pattern(bounds):
    # Finds only lines that begin with a delimiter, so "--" lines of other
    # text cost nothing per line.
    return re.compile(b"\n--(?:" + b"|".join(map(re.escape, bounds)) + b")")


def _match(buf, at, bounds):
    # Dovecot: innermost first; a longer boundary beats a shorter prefix.
    best = None
    best_len = -1
    for index in range(len(bounds) - 1, -1, -1):
        boundary = bounds[index]
        if len(boundary) > best_len and buf.startswith(boundary, at):
            best, best_len = index, len(boundary)
    return best


class _Stop:
    """A delimiter line that ended a part: whose, and where."""

    __slots__ = ("index", "closing", "line_start", "lf", "newline")

    def __init__(self, index, closing, line_start, lf, newline):
        self.index = index
        self.closing = closing
        self.line_start = line_start
        self.lf = lf
        self.newline = newline


class _Node:
    __slots__ = (
        "header_start", "body_start", "end", "lines", "kind", "children",
        "header", "envelope", "type", "subtype", "params", "id", "description",
        "encoding", "md5", "disposition", "disposition_params", "language",
        "location",
    )

    def __init__(self, header_start):
        self.header_start = header_start
        self.kind = "leaf"
        self.children = []
        self.envelope = None
        self.type = self.subtype = self.params = None
        self.id = self.description = self.encoding = self.md5 = None
        self.disposition = self.disposition_params = None
        self.language = self.location = None

    def content_type(self):
        if self.kind == "message":
            return "message/rfc822"
        if self.type is None:
            return "text/plain"
        return f"{self.type}/{self.subtype}".lower()

    def to_part(self):
        return Part(
            header_start=self.header_start,
            body_start=self.body_start,
            end=self.end,
            content_type=self.content_type(),
            children=tuple(child.to_part() for child in self.children),
        )


class _Parser:
    def __init__(self, fileobj):
        self._reader = _Reader(fileobj)
        self._parts = 0

    def parse(self):
        root, _ = self._entity(0, [], 0, message=True, mime=False, digest=False)
        return root

    def _read_header(self, bounds):
        """Header lines up to the blank line (consumed), a delimiter line
        (not consumed: returned as a _Stop) or the end."""
        reader = self._reader
        lines = []
        kept = 0
        while True:
            line, at_start = reader.read_line()
            if not line:
                return lines, None
            if at_start:
                if line == b"\r\n" or line == b"\n":
                    lines.append(line)
                    return lines, None
                if bounds and line.startswith(b"--"):
                    index = _match(line, 2, bounds)
                    if index is not None:
                        reader.unread(line)
                        closing = line.startswith(b"--", 2 + len(bounds[index]))
                        newline = reader.newline_before() if lines else 0
                        return lines, _Stop(index, closing, reader.offset, reader.lf,
                                            newline)
            if kept < _MAX_HEADER:
                kept += len(line)
                if at_start or not lines:
                    lines.append(line)
                else:
                    lines[-1] += line

    def _entity(self, start, bounds, depth, message, mime, digest):
        """Parse one entity (header and body) that begins at ``start``."""
        reader = self._reader
        self._parts += 1
        node = _Node(start)
        lines, stop = self._read_header(bounds)
        node.header = b"".join(lines)
        fields = parse_fields(lines)
        _content(node, fields, mime)
        if message:
            node.envelope = envelope_fields(fields)
        if node.type is None and digest:
            # RFC 2046 5.1.5: in a digest the default is message/rfc822.
            node.type, node.subtype = "message", "rfc822"
        container = depth < _MAX_DEPTH and self._parts < _MAX_PARTS
        ctype = node.content_type()
        if stop is not None:
            # The header was cut by a delimiter line; the [CR]LF before it
            # belongs to the delimiter (RFC 2046 5.1.1).
            node.body_start = max(start, stop.line_start - stop.newline)
            body_lf = reader.lf
        else:
            node.body_start = reader.offset
            body_lf = reader.lf
        if ctype.startswith("multipart/"):
            node.kind = "multipart"
            boundary = param(node.params, "boundary")
            if stop is None and boundary and container:
                stop = self._multipart(node, boundary.encode("latin-1"), bounds, depth,
                                       ctype == "multipart/digest")
            elif stop is None:
                stop = reader.scan(bounds)
        elif ctype == "message/rfc822" and container:
            node.kind = "message"
            child, stop = self._entity(node.body_start, bounds, depth + 1,
                                       message=True, mime=False, digest=False)
            node.children.append(child)
        elif stop is None:
            stop = reader.scan(bounds)
        if stop is None:
            node.end, end_lf = reader.offset, reader.lf
        else:
            node.end = stop.line_start - stop.newline
            end_lf = stop.lf - (1 if stop.newline else 0)
        if node.end <= node.body_start:
            node.end, end_lf = node.body_start, body_lf
        node.lines = end_lf - body_lf
        return node, stop

    def _multipart(self, node, boundary, bounds, depth, digest):
        reader = self._reader
        mine = len(bounds)
        bounds.append(boundary)
        stop = reader.scan(bounds)  # the preamble
        while stop is not None and stop.index == mine and not stop.closing:
            reader.skip_line()
            child, stop = self._entity(reader.offset, bounds, depth + 1,
                                       message=False, mime=True, digest=digest)
            node.children.append(child)
        del bounds[mine:]
        if stop is not None and stop.index == mine:
            reader.skip_line()
            stop = reader.scan(bounds)  # the epilogue
        return stop


def _content(node, fields, mime):
    """Fill the Content-* data of ``node``, first occurrence of each."""
    seen = set()
    for name, value in fields:
        if name == "mime-version":
            mime = True
            continue
        if not name.startswith("content-") or name in seen:
            continue
        seen.add(name)
        key = name[8:]
        if key == "type":
            mime = True
            _content_type(node, value)
        elif key == "transfer-encoding":
            parser = Rfc822Parser(value)
            parser.skip_lwsp()
            node.encoding = parser.mime_token()[1] or None
        elif key == "id":
            node.id = value
        elif key == "md5":
            node.md5 = value
        elif key == "description":
            node.description = value
        elif key == "location":
            node.location = value
        elif key == "language":
            node.language = languages(value)
        elif key == "disposition":
            parser = Rfc822Parser(value)
            parser.skip_lwsp()
            ret, token = parser.mime_token()
            if ret >= 0 and token:
                node.disposition = token
                node.disposition_params = parameters(parser)
    if not mime:
        # Dovecot: without Mime-Version (or Content-Type) the Content-*
        # headers are not MIME and are ignored.
        node.id = node.description = node.encoding = node.md5 = None
        node.disposition = node.disposition_params = None
        node.language = node.location = None


def _content_type(node, value):
    parser = Rfc822Parser(value)
    if parser.skip_lwsp() <= 0:
        return
    ret, main = parser.mime_token()
    if ret <= 0 or parser.peek() != "/":
        return
    parser.i += 1
    if parser.skip_lwsp() <= 0:
        return
    ret, sub = parser.mime_token()
    if ret < 0 or not main or not sub:
        return
    node.type, node.subtype = main, sub
    node.params = parameters(parser)


_DEFAULT_PARAMS = '("charset" "us-ascii")'
_EMPTY_BODY = '("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0'


def _params(params, text):
    if not params:
        return _DEFAULT_PARAMS if text else "NIL"
    pairs = [f"{nstring(key)} {nstring(value)}" for key, value in params]
    if text and param(params, "charset") is None:
        pairs.append('"charset" "us-ascii"')
    return "(" + " ".join(pairs) + ")"


def _extension(node):
    if node.disposition is None:
        disposition = "NIL"
    else:
        disposition = "(%s %s)" % (
            nstring(node.disposition), _params(node.disposition_params, False))
    if node.language is None:
        language = "NIL"
    else:
        language = "(" + " ".join(map(nstring, node.language)) + ")"
    return f"{disposition} {language} {nstring(node.location)}"


def _write(node, extended, out):
    """Append the RFC 3501 7.4.2 body structure of ``node`` to ``out``."""
    out.append("(")
    if node.kind == "multipart":
        if node.children:
            for child in node.children:
                _write(child, extended, out)
        else:
            # No parts at all is not MIME; Dovecot shows one empty text part.
            out.append(_EMPTY_BODY + (" NIL NIL NIL NIL)" if extended else ")"))
        out.append(" " + nstring(node.subtype))
        if extended:
            out.append(" %s %s" % (_params(node.params, False), _extension(node)))
        out.append(")")
        return
    if node.kind == "message":
        text = False
        out.append('"message" "rfc822"')
    elif node.type is None:
        text = True
        out.append('"text" "plain"')
    else:
        text = node.type.lower() == "text"
        if node.content_type() == "message/rfc822":
            # Too deep to parse as a message: show it as opaque data.
            out.append('"application" "octet-stream"')
        else:
            out.append(f"{nstring(node.type)} {nstring(node.subtype)}")
    out.append(" %s %s %s %s %d" % (
        _params(node.params, text), nstring(node.id), nstring(node.description),
        nstring(node.encoding or "7bit"), node.end - node.body_start))
    if text:
        out.append(" %d" % node.lines)
    elif node.kind == "message":
        message = node.children[0]
        out.append(" " + envelope(message.envelope) + " ")
        _write(message, extended, out)
        out.append(" %d" % node.lines)
    if extended:
        out.append(" %s %s" % (nstring(node.md5), _extension(node)))
    out.append(")")


def _wire(node, extended):
    out = []
    _write(node, extended, out)
    return "".join(out).encode("latin-1")


def parse(fileobj) -> MessageStructure:
    """
    Parse the message in the binary file ``fileobj`` (positioned at its
    start, CRLF line endings) into its L{MessageStructure}.  Never raises on
    malformed input; reads the file once, in chunks.
    """
    root = _Parser(fileobj).parse()
    return MessageStructure(
        envelope=envelope(root.envelope).encode("latin-1"),
        body=_wire(root, False),
        bodystructure=_wire(root, True),
        header=root.header,
        root=root.to_part(),
    )


def parse_bytes(data: bytes) -> MessageStructure:
    return parse(io.BytesIO(data))


def find_part(root: Part, section: tuple[int, ...]) -> Part | None:
    """
    The part that an IMAP section number names (RFC 3501 6.4.5): ``()`` is
    the message; part 1 of a non-multipart message is its body (the message
    Part itself); the parts of a message/rfc822 part are those of the
    message it encapsulates.
    """
    node = root
    is_message = True
    for depth, number in enumerate(section):
        if depth:
            if node.content_type == "message/rfc822":
                if not node.children:
                    return None
                node = node.children[0]
                is_message = True
            elif not node.content_type.startswith("multipart/"):
                return None
        if node.content_type.startswith("multipart/"):
            if not 1 <= number <= len(node.children):
                return None
            node = node.children[number - 1]
        elif not (is_message and number == 1):
            return None
        is_message = False
    return node


def section_range(root: Part, section: tuple[int, ...],
                  text: str | None) -> tuple[int, int] | None:
    """
    Byte range (start, end) in the stored message of FETCH BODY[section]
    (RFC 3501 6.4.5), or None if there is no such section.

    ``text`` is None (the part's body; the whole message for ``()``),
    ``"HEADER"`` or ``"TEXT"`` (of the message, or of the message a
    message/rfc822 part holds), or ``"MIME"`` (the MIME header of a
    numbered part).  ``"HEADER.FIELDS"`` and ``"HEADER.FIELDS.NOT"`` give
    the HEADER range, for L{header_fields} to filter.
    """
    part = find_part(root, section)
    if part is None:
        return None
    if text is None:
        if not section:
            return part.header_start, part.end
        return part.body_start, part.end
    text = text.upper()
    if text == "MIME":
        if not section:
            return None
        return part.header_start, part.body_start
    if text not in ("HEADER", "TEXT", "HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        return None
    if section:
        # RFC 3501 6.4.5: only a message/rfc822 part has a HEADER and TEXT.
        if part.content_type != "message/rfc822" or not part.children:
            return None
        part = part.children[0]
    if text == "TEXT":
        return part.body_start, part.end
    return part.header_start, part.body_start


def crlf_chunks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """
    Turn chunks with LF, CRLF or lone CR line endings into CRLF ones.  A CR
    that ends one chunk is held back until the next shows whether an LF
    follows it.
    """
    held_cr = False
    for chunk in chunks:
        if not chunk:
            continue
        if held_cr:
            chunk = b"\r" + chunk
        held_cr = chunk.endswith(b"\r")
        if held_cr:
            chunk = chunk[:-1]
        line_feeds = chunk.count(b"\n")
        if line_feeds == chunk.count(b"\r") == chunk.count(b"\r\n"):
            # Already CRLF throughout, as from LMTP and most MUAs: counting is
            # far cheaper than three copying replaces.
            if chunk:
                yield chunk
            continue
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        chunk = chunk.replace(b"\n", b"\r\n")
        if chunk:
            yield chunk
    if held_cr:
        yield b"\r\n"
