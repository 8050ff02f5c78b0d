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
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from collections.abc import Iterable, Iterator

from gateway.store.model import MessageStructure, Part

_CHUNK = 1 << 16
# A header line longer than this is read in pieces (and joined, up to
# _MAX_HEADER); a part keeps at most _MAX_HEADER header bytes for parsing.
_MAX_LINE = 1 << 16
_MAX_HEADER = 1 << 20
# Dovecot's message_parser limits: deeper or further parts are leaves.
_MAX_DEPTH = 100
_MAX_PARTS = 10000

_ENVELOPE_HEADERS = frozenset(
    {"date", "subject", "from", "sender", "reply-to", "to", "cc", "bcc",
     "in-reply-to", "message-id"}
)


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
        need = 4 + max(map(len, bounds)) if bounds else 0
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
                j = buf.find(b"\n--", cand if cand >= pos else pos)
            else:
                j = buf.find(b"\n--", pos) if bounds else -1
            if j >= 0:
                cand = j + 1
                continue
            if self._eof:
                self.lf += buf.count(b"\n", pos)
                self._pos = size
                return None
            # A "\n-" at the very end may begin a delimiter line: keep it.
            keep = max(pos, size - 2) if bounds else size
            self.lf += buf.count(b"\n", pos, keep)
            self._pos = keep
            self._more()
            pos = self._pos
            cand = -1


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
        fields = _fields(lines)
        _content(node, fields, mime)
        if message:
            node.envelope = _envelope_fields(fields)
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
            boundary = _param(node.params, "boundary")
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


def _unfold(raw):
    return raw.replace(b"\r\n", b"").replace(b"\n", b"")


def _fields(lines):
    """(lower-case name, unfolded value) pairs; values as latin-1 text so
    that every byte survives to the wire unchanged."""
    fields = []
    name = None
    value = []
    for line in lines:
        if line[:1] in (b" ", b"\t") and name is not None:
            value.append(line)
            continue
        if name is not None:
            fields.append((name, _unfold(b"".join(value)).decode("latin-1")))
        colon = line.find(b":")
        if colon < 0:
            name = None
            continue
        name = line[:colon].strip().decode("latin-1").lower()
        value = [line[colon + 1:].lstrip(b" \t")]
    if name is not None:
        fields.append((name, _unfold(b"".join(value)).decode("latin-1")))
    return fields


def _envelope_fields(fields):
    envelope = {}
    for name, value in fields:
        if name in _ENVELOPE_HEADERS and name not in envelope:
            envelope[name] = value
    return envelope


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
            parser = _Rfc822(value)
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
            node.language = _languages(value)
        elif key == "disposition":
            parser = _Rfc822(value)
            parser.skip_lwsp()
            ret, token = parser.mime_token()
            if ret >= 0 and token:
                node.disposition = token
                node.disposition_params = _parameters(parser)
    if not mime:
        # Dovecot: without Mime-Version (or Content-Type) the Content-*
        # headers are not MIME and are ignored.
        node.id = node.description = node.encoding = node.md5 = None
        node.disposition = node.disposition_params = None
        node.language = node.location = None


def _content_type(node, value):
    parser = _Rfc822(value)
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
    node.params = _parameters(parser)


def _param(params, key):
    for name, value in params or ():
        if name.lower() == key:
            return value
    return None


def _languages(value):
    parser = _Rfc822(value)
    parser.skip_lwsp()
    tags = []
    while True:
        ret, atom = parser.atom()
        if ret < 0:
            break
        tags.append(atom)
        if parser.peek() != ",":
            break
        parser.i += 1
        parser.skip_lwsp()
    return tags or None


def _parameters(parser):
    """Content-Type/-Disposition parameters, RFC 2231 continuations merged
    the way Dovecot's rfc2231_parse does."""
    plain = []
    split = []
    while True:
        ret, key, value = parser.content_param()
        if ret == 0:
            break
        if ret < 0:
            if parser.i >= parser.n:
                break
            parser.i += 1
            continue
        star = key.find("*")
        if star >= 0:
            rest = key[star + 1:] or "*"
            digits = len(rest) - len(rest.lstrip("0123456789"))
            index = int(rest[:digits]) if digits else 0
            tail = rest[digits:]
            if tail in ("", "*"):
                split.append((key[:star], index, tail == "*", value))
                continue
        plain.append((key, value))
    split.sort(key=lambda p: (p[0], p[1]))
    i = 0
    while i < len(split):
        j = i
        while j < len(split) and split[j][0].lower() == split[i][0].lower():
            j += 1
        group = split[i:j]
        extended = any(p[2] for p in group)
        if [p[1] for p in group] != list(range(len(group))):
            for key, index, ext, value in group:
                plain.append((f"{key}*{index}*" if ext else f"{key}*{index}", value))
        else:
            pieces = ["''"] if extended and not group[0][2] else []
            for _, _, ext, value in group:
                pieces.append(value.replace("%", "%25") if extended and not ext else value)
            plain.append((group[0][0] + ("*" if extended else ""), "".join(pieces)))
        i = j
    return plain or None


# RFC 5322 atext, and the MIME token characters (atext less "/", "=", "?")
# plus ".", as Dovecot's rfc822_atext_chars table has them; 8-bit is atext.
_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\x80-\xff]*")
_ATEXT_OR_DOT = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\x80-\xff.]*")
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-^_`{|}~\x80-\xff.]*")


class _Rfc822:
    """
    Dovecot's rfc822-parser over latin-1 text: each method returns -1 on a
    syntax error, 0 at the end of the data, 1 when more data follows.
    """

    __slots__ = ("s", "i", "n", "comment")

    def __init__(self, text):
        self.s = text
        self.i = 0
        self.n = len(text)
        self.comment = ""

    def peek(self):
        return self.s[self.i:self.i + 1]

    def _skip_comment(self):
        s, n = self.s, self.n
        self.comment = ""
        pieces = []
        level = 1
        self.i += 1
        start = self.i
        while self.i < n:
            ch = s[self.i]
            if ch == "(":
                level += 1
            elif ch == ")":
                level -= 1
                if level == 0:
                    pieces.append(s[start:self.i])
                    self.comment = "".join(pieces)
                    self.i += 1
                    return 1 if self.i < n else 0
            elif ch == "\\":
                pieces.append(s[start:self.i])
                start = self.i + 1
                self.i += 1
                if self.i >= n:
                    return -1
            self.i += 1
        return -1

    def skip_lwsp(self):
        s, n = self.s, self.n
        while self.i < n:
            ch = s[self.i]
            if ch in " \t\r\n":
                self.i += 1
            elif ch == "(":
                if self._skip_comment() < 0:
                    return -1
            else:
                break
        return 1 if self.i < n else 0

    def _run(self, pattern):
        start = self.i
        self.i = pattern.match(self.s, start).end()
        text = self.s[start:self.i]
        return (self.skip_lwsp() if self.i < self.n else 0), text

    def mime_token(self):
        return self._run(_TOKEN)

    def atom(self):
        if self.i >= self.n or not _ATEXT.match(self.s, self.i).end() > self.i:
            return -1, ""
        return self._run(_ATEXT)

    def dot_atom(self):
        if self.i >= self.n or not _ATEXT.match(self.s, self.i).end() > self.i:
            return -1, ""
        pieces = []
        while True:
            ret, text = self._run(_ATEXT)
            pieces.append(text)
            if ret <= 0 or self.s[self.i] != ".":
                return ret, "".join(pieces)
            self.i += 1
            pieces.append(".")
            ret = self.skip_lwsp()
            if ret <= 0:
                return ret, "".join(pieces)

    def quoted_string(self):
        s, n = self.s, self.n
        self.i += 1
        pieces = []
        start = self.i
        while self.i < n:
            ch = s[self.i]
            if ch == '"':
                pieces.append(s[start:self.i])
                self.i += 1
                return self.skip_lwsp(), "".join(pieces)
            if ch == "\n":
                end = self.i - 1 if self.i > start and s[self.i - 1] == "\r" else self.i
                pieces.append(s[start:end])
                start = self.i + 1
            elif ch == "\\":
                self.i += 1
                if self.i >= n:
                    return -1, "".join(pieces)
                pieces.append(s[start:self.i - 1])
                start = self.i
            self.i += 1
        return -1, "".join(pieces)

    def phrase(self):
        if self.i >= self.n:
            return 0, ""
        if self.s[self.i] == ".":
            return -1, ""
        words = []
        while True:
            if self.s[self.i] == '"':
                ret, word = self.quoted_string()
            else:
                ret, word = self._run(_ATEXT_OR_DOT)
            words.append(word)
            if ret <= 0:
                return ret, " ".join(words)
            ch = self.s[self.i]
            if ch != '"' and ch != "." and not _ATEXT.match(self.s, self.i).end() > self.i:
                break
        return self.skip_lwsp(), " ".join(words)

    def parse_domain(self):
        self.i += 1  # the "@"
        if self.skip_lwsp() <= 0:
            return -1, ""
        if self.s[self.i] != "[":
            return self.dot_atom()
        start = self.i
        while self.i < self.n:
            ch = self.s[self.i]
            if ch == "\\":
                self.i += 1
            elif ch == "]":
                self.i += 1
                text = self.s[start:self.i]
                return self.skip_lwsp(), text
            self.i += 1
        return -1, ""

    def content_param(self):
        if self.i >= self.n:
            return 0, None, None
        if self.s[self.i] != ";":
            return -1, None, None
        self.i += 1
        if self.skip_lwsp() <= 0:
            return -1, None, None
        ret, key = self.mime_token()
        if ret <= 0 or self.peek() != "=":
            return -1, None, None
        self.i += 1
        value = ""
        ret = self.skip_lwsp()
        if ret > 0:
            ch = self.s[self.i]
            if ch == '"':
                ret, value = self.quoted_string()
            elif ch == "=":
                # Dovecot's workaround for name==?utf-8?b?...?=
                start = self.i
                while self.i < self.n and self.s[self.i] not in "; \t\r\n":
                    self.i += 1
                value = self.s[start:self.i]
            else:
                ret, value = self.mime_token()
        return (-1 if ret < 0 else 1), key, value


class _Addresses(_Rfc822):
    """
    Dovecot's message-address parser: RFC 5322 address lists, groups and the
    obsolete route syntax, with MISSING_MAILBOX / MISSING_DOMAIN /
    SYNTAX_ERROR filled in where the header is broken.  Each address is a
    (name, route, mailbox, domain) tuple; a group opens with
    (None, None, group name, None) and closes with all None (RFC 3501 7.4.2).
    """

    __slots__ = ("found", "name", "route", "mailbox", "domain")

    def __init__(self, text):
        super().__init__(text)
        self.found = []
        self._reset()

    def _reset(self):
        self.name = self.route = self.mailbox = self.domain = None

    def _add(self):
        self.found.append((self.name, self.route, self.mailbox, self.domain))
        self._reset()

    def _add_fixed(self):
        if self.mailbox is None:
            self.mailbox = "MISSING_MAILBOX"
        if self.domain is None:
            self.domain = "MISSING_DOMAIN"
        self._add()

    def parse(self):
        if self.skip_lwsp() <= 0:
            return None
        while True:
            ret = self._address()
            if ret == 0:
                break
            if self.peek() != ",":
                break
            self.i += 1
            ret = self.skip_lwsp()
            if ret <= 0:
                if ret < 0:
                    self._add_fixed()
                break
        return self.found

    def _address(self):
        start = self.i
        ret = self._group()
        if ret < 0:
            self.i = start
            ret = self._mailbox()
        return ret

    def _group(self):
        ret, phrase = self.phrase()
        if ret <= 0 or self.peek() != ":":
            return -1
        self.i += 1
        ret = self.skip_lwsp()
        self.mailbox = phrase
        self._add()
        if ret > 0 and self.peek() != ";":
            while True:
                if self._mailbox() <= 0:
                    ret = -1
                    break
                if self.peek() != ",":
                    break
                self.i += 1
                if self.skip_lwsp() <= 0:
                    ret = -1
                    break
        if ret >= 0:
            if self.peek() != ";":
                ret = -1
            else:
                self.i += 1
                ret = self.skip_lwsp()
        self._add()
        return 0 if ret == 0 else 1

    def _mailbox(self):
        start = self.i
        ret = self._name_addr()
        if ret < 0:
            self.i = start
            ret = self._addr_spec()
        self._add_fixed()
        return ret

    def _name_addr(self):
        ret, phrase = self.phrase()
        if ret <= 0 or self.peek() != "<":
            return -1
        self.name = phrase or None
        if self._angle_addr() < 0:
            self.domain = "SYNTAX_ERROR"
        return 1 if self.i < self.n else 0

    def _angle_addr(self):
        self.i += 1  # the "<"
        ret = self.skip_lwsp()
        if ret <= 0:
            return ret
        if self.peek() == "@":
            if self._route() <= 0 or self.peek() != ":":
                self.route = "INVALID_ROUTE"
                return -1
            self.i += 1
            ret = self.skip_lwsp()
            if ret <= 0:
                return ret
        ret = self._local_part()
        if ret <= 0:
            return ret
        if self.peek() == "@":
            ret, self.domain = self.domain_part()
            if ret <= 0:
                return ret
        if self.peek() != ">":
            return -1
        self.i += 1
        return self.skip_lwsp()

    def domain_part(self):
        ret, domain = self.parse_domain()
        return ret, (domain if ret >= 0 else None)

    def _route(self):
        hops = []
        while True:
            if self.i >= self.n:
                return 0
            if self.peek() != "@":
                break
            ret, domain = self.parse_domain()
            if ret <= 0:
                return ret
            hops.append("@" + domain)
            while self.skip_lwsp() > 0 and self.peek() == ",":
                self.i += 1
        self.route = ",".join(hops)
        return 1

    def _local_part(self):
        if self.i >= self.n:
            return -1
        if self.peek() == '"':
            ret, text = self.quoted_string()
        else:
            ret, text = self.dot_atom()
        if ret < 0:
            return -1
        self.mailbox = text
        return ret

    def _addr_spec(self):
        self.comment = ""
        ret = self._local_part()
        if ret != 0 and self.peek() == "@":
            ret2, self.domain = self.domain_part()
            if ret2 <= 0:
                ret = ret2
        if self.comment:
            self.name = self.comment
        return ret


def _addresses(value):
    if value is None:
        return None
    return _Addresses(value).parse() or None


_NEEDS_LITERAL = re.compile(r"[\r\n\x80-\xff]")
_HUMAN_FAST = re.compile(r"[^\x00\t\r\n\"\\\x80-\xff]*")


def _nstring(text):
    """IMAP nstring as Dovecot writes it: quoted unless CR, LF, 8-bit or more
    than four quoted-specials make a literal shorter or necessary."""
    if text is None:
        return "NIL"
    text = text.replace("\x00", "\x80")
    if _NEEDS_LITERAL.search(text) or text.count('"') + text.count("\\") > 4:
        return "{%d}\r\n%s" % (len(text), text)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _human(text):
    """Dovecot's imap_append_string_for_humans (Subject, display names):
    whitespace runs become one space, ends trimmed; a literal if changed."""
    if (_HUMAN_FAST.match(text).end() == len(text) and "  " not in text
            and not text.startswith(" ") and not text.endswith(" ")):
        return '"' + text + '"'
    out = []
    last_lwsp = True
    for ch in text:
        if ch == " " or ch == "\t":
            if not last_lwsp:
                out.append(" ")
            last_lwsp = True
        elif ch == "\r" or ch == "\n":
            continue
        else:
            out.append("\x80" if ch == "\x00" else ch)
            last_lwsp = False
    if out and last_lwsp:
        out.pop()
    if not out:
        return '""'
    cleaned = "".join(out)
    return "{%d}\r\n%s" % (len(cleaned), cleaned)


def _address_list(addresses):
    if not addresses:
        return "NIL"
    out = ["("]
    for name, route, mailbox, domain in addresses:
        out.append("(%s %s %s %s)" % (
            "NIL" if name is None else _human(name),
            _nstring(route), _nstring(mailbox), _nstring(domain)))
    out.append(")")
    return "".join(out)


def _envelope(fields):
    """RFC 3501 7.4.2 ENVELOPE; Sender and Reply-To default to From."""
    get = fields.get
    sender = _addresses(get("from"))
    subject = get("subject")
    return "(%s %s %s %s %s %s %s %s %s %s)" % (
        _nstring(get("date")),
        "NIL" if subject is None else _human(subject),
        _address_list(sender),
        _address_list(_addresses(get("sender")) or sender),
        _address_list(_addresses(get("reply-to")) or sender),
        _address_list(_addresses(get("to"))),
        _address_list(_addresses(get("cc"))),
        _address_list(_addresses(get("bcc"))),
        _nstring(get("in-reply-to")),
        _nstring(get("message-id")),
    )


_DEFAULT_PARAMS = '("charset" "us-ascii")'
_EMPTY_BODY = '("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0'


def _params(params, text):
    if not params:
        return _DEFAULT_PARAMS if text else "NIL"
    pairs = [f"{_nstring(key)} {_nstring(value)}" for key, value in params]
    if text and _param(params, "charset") is None:
        pairs.append('"charset" "us-ascii"')
    return "(" + " ".join(pairs) + ")"


def _extension(node):
    if node.disposition is None:
        disposition = "NIL"
    else:
        disposition = "(%s %s)" % (
            _nstring(node.disposition), _params(node.disposition_params, False))
    if node.language is None:
        language = "NIL"
    else:
        language = "(" + " ".join(map(_nstring, node.language)) + ")"
    return f"{disposition} {language} {_nstring(node.location)}"


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
        out.append(" " + _nstring(node.subtype))
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
            out.append(f"{_nstring(node.type)} {_nstring(node.subtype)}")
    out.append(" %s %s %s %s %d" % (
        _params(node.params, text), _nstring(node.id), _nstring(node.description),
        _nstring(node.encoding or "7bit"), node.end - node.body_start))
    if text:
        out.append(" %d" % node.lines)
    elif node.kind == "message":
        message = node.children[0]
        out.append(" " + _envelope(message.envelope) + " ")
        _write(message, extended, out)
        out.append(" %d" % node.lines)
    if extended:
        out.append(" %s %s" % (_nstring(node.md5), _extension(node)))
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
        envelope=_envelope(root.envelope).encode("latin-1"),
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


def _header_fields_raw(header):
    """Split a header block into (lower-case name, raw bytes) per field."""
    fields = []
    for line in header.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1][1].append(line)
            continue
        colon = line.find(b":")
        name = (line[:colon] if colon >= 0 else line).strip().lower()
        fields.append((name, [line]))
    return fields


def header_fields(header: bytes, names: list[str], exclude: bool) -> bytes:
    """
    BODY[HEADER.FIELDS (names)] (or .NOT when ``exclude``): the matching
    fields with their continuation lines, in order, then the blank line
    (RFC 3501 6.4.5 includes it).  Matching is case-insensitive, exact.
    """
    wanted = {name.lower().encode("latin-1", "replace") for name in names}
    out = [
        b"".join(lines)
        for name, lines in _header_fields_raw(header)
        if (name in wanted) != exclude
    ]
    out.append(b"\r\n")
    return b"".join(out)


_ENCODED_WORD = re.compile(rb"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_QP_HEX = re.compile(rb"=([0-9A-Fa-f]{2})")


def _decode_word(match):
    charset, encoding, payload = match.groups()
    charset = charset.split(b"*", 1)[0].decode("ascii", "replace")
    try:
        if encoding in b"bB":
            raw = base64.b64decode(payload + b"=" * (-len(payload) % 4))
        else:
            raw = _QP_HEX.sub(lambda m: bytes([int(m.group(1), 16)]),
                              payload.replace(b"_", b" "))
        return raw.decode(charset, "replace")
    except (binascii.Error, LookupError, ValueError):
        return None


def _decode_2047(raw):
    """RFC 2047: decode encoded-words; whitespace between two of them goes
    (6.2); undecodable words and the text around stay as they are."""
    out = []
    pos = 0
    last_was_word = False
    for match in _ENCODED_WORD.finditer(raw):
        between = raw[pos:match.start()]
        decoded = _decode_word(match)
        if decoded is None:
            out.append((between + match.group(0)).decode("utf-8", "replace"))
            last_was_word = False
        else:
            if not (last_was_word and not between.strip(b" \t")):
                out.append(between.decode("utf-8", "replace"))
            out.append(decoded)
            last_was_word = True
        pos = match.end()
    out.append(raw[pos:].decode("utf-8", "replace"))
    return "".join(out)


def header_values(header: bytes, name: str) -> list[str]:
    """
    Every value of the header field ``name``, unfolded, trimmed and with
    RFC 2047 encoded-words decoded: what header SEARCH matches against.
    """
    wanted = name.lower().encode("latin-1", "replace")
    values = []
    for field, lines in _header_fields_raw(header):
        if field == wanted:
            raw = _unfold(b"".join(lines))
            value = raw[raw.find(b":") + 1:].strip(b" \t")
            values.append(_decode_2047(value))
    return values


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
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        chunk = chunk.replace(b"\n", b"\r\n")
        if chunk:
            yield chunk
    if held_cr:
        yield b"\r\n"
