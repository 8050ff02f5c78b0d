"""
Parse a message once, at delivery: IMAP ENVELOPE, BODY and BODYSTRUCTURE wire
forms and the byte offsets of every MIME part (DESIGN.md, "Performance rules").

Pure: no Twisted.  The rules follow Dovecot 2.3's lib-mail and lib-imap, so a
mailbox moved from Dovecot shows clients the same structures: the CRLF before
a boundary line belongs to the boundary, any enclosing boundary (longest
prefix match) ends a part, Content-* headers count only in MIME parts, header
values go out raw (RFC 2047 words not decoded), and broken input gives a
structure, never an exception.

Hostile mail is bounded as in Dovecot's message-parser: at most 100 levels of
nesting (a deeper multipart or message/rfc822 is an opaque leaf) and 10,000
parts; the part that reaches the budget runs to the end of the message, its
boundaries unread, so BODYSTRUCTURE stays small and every byte still belongs
to some part.

The message is read in chunks: only headers (the first megabyte of each) are
held in memory, bodies are only searched for boundary lines, and lines are
found by regular expressions over whole chunks, so the work per chunk is C
work, whatever the number of lines.  Header syntax (addresses, parameters,
IMAP strings) is in L{gateway.mail.header}.
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Iterable, Iterator

from gateway.mail.header import (
    MESSAGE_FIELDS,
    MIME_FIELDS,
    Rfc822Parser,
    envelope,
    first_fields,
    header_fields,
    header_values,
    languages,
    nstring,
    param,
    parameters,
)
from gateway.store.model import MessageStructure, Part

__all__ = [
    "MAX_DEPTH", "MAX_PARTS", "content_coding", "crlf_chunks", "find_part",
    "header_fields", "header_values", "parse", "parse_bytes", "section_range",
]

_CHUNK = 1 << 16
# A part keeps at most this many header bytes (whole lines) for parsing; the
# rest of a longer header is skipped.
_MAX_HEADER = 1 << 20
# Dovecot's message_parser limits (max_nested_mime_parts,
# max_total_mime_parts), counting the message itself as a part.
MAX_DEPTH = 100
MAX_PARTS = 10000


class _Bounds:
    """
    The boundaries in effect, outermost first, as one regular expression.
    Dovecot: any of them ends a part; the longest that prefixes the line
    wins, and of equal ones the innermost.
    """

    __slots__ = ("need", "search", "_index")

    def __init__(self, bounds: tuple[bytes, ...]) -> None:
        # Longest first, so the alternative that matches is the longest.
        alternatives = sorted(set(bounds), key=len, reverse=True)
        # Finds only lines that begin with a delimiter, so "--" lines of
        # other text cost nothing per line.
        self.search = re.compile(b"\n--(?:" + b"|".join(map(re.escape, alternatives)) + b")")
        # Bytes that decide a delimiter line: "--", the longest boundary, "--".
        self.need = 4 + len(alternatives[0])
        self._index = {bound: index for index, bound in enumerate(bounds)}

    def at(self, buf: bytes, line_start: int):
        """The delimiter match for the line at ``line_start`` (after an LF), or None."""
        if line_start and buf[line_start - 1] == 10:
            return self.search.match(buf, line_start - 1)
        return None

    def index(self, match) -> int:
        """Which boundary (index in the list) a match found."""
        return self._index[match[0][3:]]


@functools.lru_cache(maxsize=256)
def _bounds(bounds: tuple[bytes, ...]) -> _Bounds:
    return _Bounds(bounds)


_BLANK_LINE = re.compile(b"\n(\r?\n)")


class _Stop:
    """A delimiter line that ended a part: whose, and where."""

    __slots__ = ("index", "closing", "line_start", "lf", "newline")

    def __init__(self, index, closing, line_start, lf, newline):
        self.index = index
        self.closing = closing
        self.line_start = line_start
        self.lf = lf
        self.newline = newline


class _Reader:
    """
    Buffered reads over the message with a running count of LF bytes, so a
    part's line count is the difference of two counts.  Parts begin at line
    starts: after an LF, or at offset 0.
    """

    __slots__ = ("_file", "_buf", "_pos", "_base", "_eof", "lf")

    def __init__(self, fileobj):
        self._file = fileobj
        self._buf = b""
        self._pos = 0
        self._base = 0
        self._eof = False
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

    def _consume(self, end):
        self.lf += self._buf.count(b"\n", self._pos, end)
        self._pos = end

    def newline_before(self):
        """Length of the [CR]LF just before the current position (0-2)."""
        buf, pos = self._buf, self._pos
        if pos >= 1 and buf[pos - 1] == 10:
            return 2 if pos >= 2 and buf[pos - 2] == 13 else 1
        return 0

    def _undecided(self, line_start, need):
        """Whether a line that may be a delimiter needs more bytes to tell."""
        buf = self._buf
        avail = len(buf) - line_start
        return (avail < need and not self._eof
                and (avail < 2 or buf.startswith(b"--", line_start))
                and buf.find(b"\n", line_start) < 0)

    def _stop(self, patterns, match, newline):
        closing = self._buf.startswith(b"--", match.end())
        return _Stop(patterns.index(match), closing, self.offset, self.lf, newline)

    def read_header(self, bounds):
        """
        Read a header from a line start: through the blank line that ends it
        (consumed), up to a delimiter line of ``bounds`` (not consumed:
        returned as a _Stop) or to the end.  Returns (the header bytes kept,
        the _Stop or None): whole lines up to _MAX_HEADER bytes, then the
        blank line.
        """
        buf, pos = self._buf, self._pos
        if pos and buf.startswith(b"\r\n", pos):
            # No header at all, as in a part that is only "--b" and a blank
            # line: no search needed.
            self._pos = pos + 2
            self.lf += 1
            return b"\r\n", None
        patterns = _bounds(tuple(bounds)) if bounds else None
        need = patterns.need if patterns else 3
        kept = []
        kept_size = 0
        start = self.offset
        blank = delimiter = None
        while True:
            buf, pos = self._buf, self._pos
            if pos == 0 and self._base == 0:
                # The message's own first line has no LF before it.
                if len(buf) < 2 and self._more():
                    continue
                size = 2 if buf.startswith(b"\r\n") else 1 if buf.startswith(b"\n") else 0
                if size:
                    self._consume(size)
                    return buf[:size], None
                origin = 0
            else:
                origin = pos - 1
            # Look in a growing window: which comes first, a blank line or
            # a delimiter, is decided near the start of a short header,
            # and neither search may run to the end of the buffer each time
            # (a thousand empty parts would cost a thousand buffers).
            window = 512
            while True:
                limit = min(len(buf), origin + window)
                blank = _BLANK_LINE.search(buf, origin, limit)
                if patterns is not None:
                    delimiter = patterns.search.search(
                        buf, origin, limit if blank is None else blank.start() + 1)
                if blank is not None or delimiter is not None or limit == len(buf):
                    break
                window *= 16
            if delimiter is not None and self._undecided(delimiter.start() + 1, need):
                # Perhaps the start of a longer boundary: read on first.
                blank = delimiter = None
            if delimiter is not None:
                end = cut = delimiter.start() + 1
            elif blank is not None:
                cut, end = blank.start() + 1, blank.end()
            elif self._eof:
                cut = end = len(buf)
            else:
                # The end of the buffer may hold the start of a blank or
                # delimiter line.
                cut = end = max(pos, len(buf) - need)
            if kept_size < _MAX_HEADER and cut > pos:
                kept.append(buf[pos:cut])
                kept_size += cut - pos
            self._consume(end)
            if delimiter is not None or blank is not None or self._eof:
                break
            self._more()
        header = b"".join(kept)
        if kept_size > _MAX_HEADER:
            cut = header.rfind(b"\n", 0, _MAX_HEADER) + 1
            header = header[:cut or _MAX_HEADER]
        if delimiter is not None:
            newline = self.newline_before() if self.offset != start else 0
            return header, self._stop(patterns, delimiter, newline)
        if blank is not None:
            return header + blank[1], None
        return header, None

    def skip_line(self):
        """Skip the rest of the current line, however long, through its LF."""
        while True:
            j = self._buf.find(b"\n", self._pos)
            if j >= 0:
                self._consume(j + 1)
                return
            self._consume(len(self._buf))
            if not self._more():
                return

    def scan(self, bounds):
        """
        Consume body lines, from a line start, up to the next line that is
        a delimiter of one of ``bounds`` (boundaries without their "--").
        Return that delimiter's _Stop, positioned at its line start, or None
        at the end of the message.
        """
        if not bounds:
            while True:
                self._consume(len(self._buf))
                if not self._more():
                    return None
        patterns = _bounds(tuple(bounds))
        need = patterns.need
        origin = self.offset
        # A candidate line start to look at, or -1 when the current position
        # is inside a line.
        cand = self._pos
        while True:
            buf = self._buf
            if cand >= 0:
                if self._undecided(cand, need):
                    self._consume(cand)
                    self._more()
                    cand = self._pos
                    continue
                match = patterns.at(buf, cand)
                if match is not None:
                    self._consume(cand)
                    # On the first line the [CR]LF before it ended a
                    # header; otherwise it belongs to the delimiter.
                    newline = self.newline_before() if self.offset != origin else 0
                    return self._stop(patterns, match, newline)
                found = patterns.search.search(buf, cand)
            else:
                found = patterns.search.search(buf, self._pos)
            if found is not None:
                cand = found.start() + 1
                continue
            if self._eof:
                self._consume(len(buf))
                return None
            # The end of the buffer may hold the start of a delimiter line.
            self._consume(max(self._pos, len(buf) - need))
            self._more()
            cand = -1


class _Node:
    __slots__ = (
        "header_start", "body_start", "end", "lines", "kind", "children",
        "header", "envelope", "type", "subtype", "params", "id", "description",
        "encoding", "md5", "disposition", "disposition_params", "language",
        "location", "part",
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


class _Parser:
    def __init__(self, fileobj):
        self._reader = _Reader(fileobj)
        self._parts = 0

    def parse(self):
        root, _ = self._entity(0, [], 0, message=True, mime=False, digest=False)
        return root

    def _entity(self, start, bounds, depth, message, mime, digest):
        """Parse one entity (header and body) that begins at ``start``."""
        reader = self._reader
        self._parts += 1
        # Dovecot: once the budget is spent no boundary is recognised, so
        # this part's header and body run on to the end of the message.
        overflow = self._parts >= MAX_PARTS
        if overflow:
            bounds = []
        node = _Node(start)
        node.header, stop = reader.read_header(bounds)
        fields = first_fields(node.header, MESSAGE_FIELDS if message else MIME_FIELDS)
        if fields:
            _content(node, fields, mime)
        if message:
            node.envelope = fields
        if node.type is None and digest:
            # RFC 2046 5.1.5: in a digest the default is message/rfc822.
            node.type, node.subtype = "message", "rfc822"
        container = depth + 1 < MAX_DEPTH and not overflow
        ctype = node.content_type()
        if stop is not None:
            # The header was cut by a delimiter line; the [CR]LF before it
            # belongs to the delimiter (RFC 2046 5.1.1).
            node.body_start = max(start, stop.line_start - stop.newline)
        else:
            node.body_start = reader.offset
        body_lf = reader.lf
        if ctype.startswith("multipart/"):
            boundary = param(node.params, "boundary")
            if stop is None and boundary and container:
                node.kind = "multipart"
                stop = self._multipart(node, boundary.encode("latin-1"), bounds, depth,
                                       ctype == "multipart/digest")
            else:
                # Dovecot: too deep to open, it is a leaf of its own type;
                # without a boundary (or over the budget) a multipart with
                # no parts.
                if not (boundary and stop is None and not overflow):
                    node.kind = "multipart"
                if stop is None:
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
        node.part = Part(node.header_start, node.body_start, node.end, ctype,
                         tuple(child.part for child in node.children))
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
    """Fill the Content-* data of ``node`` from its first fields."""
    get = fields.get
    if "mime-version" in fields:
        mime = True
    value = get("content-type")
    if value is not None:
        mime = True
        _content_type(node, value)
    value = get("content-transfer-encoding")
    if value is not None:
        parser = Rfc822Parser(value)
        parser.skip_lwsp()
        node.encoding = parser.mime_token()[1] or None
    node.id = get("content-id")
    node.md5 = get("content-md5")
    node.description = get("content-description")
    node.location = get("content-location")
    value = get("content-language")
    if value is not None:
        node.language = languages(value)
    value = get("content-disposition")
    if value is not None:
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


def _write(node, body, structure):
    """
    Append the RFC 3501 7.4.2 BODY of ``node`` to the list ``body`` and its
    BODYSTRUCTURE to ``structure``: one walk, as the two share all but the
    extension data.
    """
    body.append("(")
    structure.append("(")
    if node.kind == "multipart":
        if node.children:
            for child in node.children:
                _write(child, body, structure)
        else:
            # No parts at all is not MIME; Dovecot shows one empty text part.
            body.append(_EMPTY_BODY + ")")
            structure.append(_EMPTY_BODY + " NIL NIL NIL NIL)")
        subtype = " " + nstring(node.subtype)
        body.append(subtype + ")")
        structure.append("%s %s %s)" % (subtype, _params(node.params, False), _extension(node)))
        return
    if node.kind == "message":
        text = False
        head = '"message" "rfc822"'
    elif node.type is None:
        text = True
        head = '"text" "plain"'
    elif node.content_type().startswith("multipart/") or node.content_type() == "message/rfc822":
        # Dovecot 2.3.19: a multipart or message left unopened (too deep,
        # or past the part budget) is opaque data that keeps its parameters.
        text = False
        head = '"application" "octet-stream"'
    else:
        text = node.type.lower() == "text"
        head = f"{nstring(node.type)} {nstring(node.subtype)}"
    head = "%s %s %s %s %s %d" % (
        head, _params(node.params, text), nstring(node.id), nstring(node.description),
        nstring(node.encoding or "7bit"), node.end - node.body_start)
    if text:
        head += " %d" % node.lines
    body.append(head)
    structure.append(head)
    if node.kind == "message":
        message = node.children[0]
        inner = " " + envelope(message.envelope) + " "
        body.append(inner)
        structure.append(inner)
        _write(message, body, structure)
        lines = " %d" % node.lines
        body.append(lines)
        structure.append(lines)
    body.append(")")
    structure.append(" %s %s)" % (nstring(node.md5), _extension(node)))


def content_coding(header: bytes) -> tuple[str | None, str | None]:
    """
    (Content-Transfer-Encoding, charset) of a leaf part, from its header
    block, to decode its body for SEARCH.  As Dovecot's message decoder
    (and unlike BODYSTRUCTURE), the transfer encoding counts even without
    MIME-Version: mail that says it is base64 is searched decoded.
    """
    node = _Node(0)
    _content(node, first_fields(header, MIME_FIELDS), True)
    return node.encoding, param(node.params, "charset")


def parse(fileobj) -> MessageStructure:
    """
    Parse the message in the binary file ``fileobj`` (positioned at its
    start, CRLF line endings) into its L{MessageStructure}.  Never raises on
    malformed input; reads the file once, in chunks.
    """
    root = _Parser(fileobj).parse()
    body, structure = [], []
    _write(root, body, structure)
    return MessageStructure(
        envelope=envelope(root.envelope).encode("latin-1"),
        body="".join(body).encode("latin-1"),
        bodystructure="".join(structure).encode("latin-1"),
        header=root.header,
        root=root.part,
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
