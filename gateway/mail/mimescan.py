"""
Reading a message in chunks for the MIME parser (L{gateway.mail.message}):
header blocks, and the delimiter lines of the boundaries in effect that end
parts, with a running count of line feeds.

Lines are found by regular expressions over whole chunks, so the work per
chunk is C work however many lines it holds; nothing is held but the
current chunk and the first megabyte of a header.  Pure: no Twisted.
"""

from __future__ import annotations

import functools
import re

_CHUNK = 1 << 16
# A part keeps at most this many header bytes (whole lines) for parsing; the
# rest of a longer header is skipped.
MAX_HEADER = 1 << 20


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


class Stop:
    """A delimiter line that ended a part: whose, and where."""

    __slots__ = ("index", "closing", "line_start", "lf", "newline")

    def __init__(self, index, closing, line_start, lf, newline):
        self.index = index
        self.closing = closing
        self.line_start = line_start
        self.lf = lf
        self.newline = newline


class Reader:
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
        return Stop(patterns.index(match), closing, self.offset, self.lf, newline)

    def read_header(self, bounds):
        """
        Read a header from a line start: through the blank line that ends it
        (consumed), up to a delimiter line of ``bounds`` (not consumed:
        returned as a Stop) or to the end.  Returns (the header bytes kept,
        the Stop or None): whole lines up to MAX_HEADER bytes, then the
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
            if kept_size < MAX_HEADER and cut > pos:
                kept.append(buf[pos:cut])
                kept_size += cut - pos
            self._consume(end)
            if delimiter is not None or blank is not None or self._eof:
                break
            self._more()
        header = b"".join(kept)
        if kept_size > MAX_HEADER:
            cut = header.rfind(b"\n", 0, MAX_HEADER) + 1
            header = header[:cut or MAX_HEADER]
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
        Return that delimiter's Stop, positioned at its line start, or None
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
