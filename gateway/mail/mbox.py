"""
Reading an mbox file: messages split on ``From `` postmark lines, with
mboxrd/mboxo ``>From `` unquoting.  Pure: no Twisted, no store.

A ``Content-Length:`` header is not trusted (writers disagree on what it
counts); a message ends where the next postmark begins.  A postmark after the
first must follow an empty line and carry an asctime date, so that an
unquoted ``From `` line in a body (mboxo writers leave some) rarely splits a
message.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Iterator
from typing import BinaryIO

import attrs

_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1)}
# "Wed Jan  3 01:05:34 1996", optionally with a zone before or after the year.
_ASCTIME = re.compile(
    rb"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)\s+(?P<month>Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
    rb"\s+(?P<day>\d{1,2})\s+(?P<hour>\d{1,2}):(?P<minute>\d{2})(?::(?P<second>\d{2}))?"
    rb"(?:\s+(?P<zone1>[+-]\d{4}|UTC|GMT))?\s+(?P<year>\d{4})(?:\s+(?P<zone2>[+-]\d{4}|UTC|GMT))?"
)
_QUOTED_FROM = re.compile(rb"^>+From ")

# Status/X-Status letters as mutt, Dovecot and UW-IMAP write them.
_STATUS_FLAGS = {b"R": "\\Seen"}
_X_STATUS_FLAGS = {b"A": "\\Answered", b"F": "\\Flagged", b"T": "\\Draft", b"D": "\\Deleted"}


class NotAnMbox(ValueError):
    """The file does not start with a ``From `` postmark line."""


@attrs.frozen
class MboxMessage:
    """
    One message: its bytes (unquoted, postmark removed), the date of its
    postmark (None when the line has none), flags from its Status and
    X-Status headers, and the line number of its postmark.
    """

    source: bytes
    internaldate: datetime.datetime | None
    flags: frozenset[str]
    line: int

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.source).hexdigest()


def postmark_date(line: bytes) -> datetime.datetime | None:
    """
    The date of a ``From sender date`` line.  Without a zone it is local time,
    as the delivery agents that write it use.
    """
    match = _ASCTIME.search(line, 5)
    if match is None:
        return None
    try:
        when = datetime.datetime(
            int(match["year"]), _MONTHS[match["month"].decode()], int(match["day"]),
            int(match["hour"]), int(match["minute"]), int(match["second"] or 0),
        )
    except ValueError:
        return None
    zone = match["zone1"] or match["zone2"]
    if zone is None:
        return when.astimezone()
    if zone in (b"UTC", b"GMT"):
        return when.replace(tzinfo=datetime.timezone.utc)
    minutes = int(zone[1:3]) * 60 + int(zone[3:5])
    sign = -1 if zone.startswith(b"-") else 1
    return when.replace(tzinfo=datetime.timezone(datetime.timedelta(minutes=sign * minutes)))


def _is_blank(line: bytes) -> bool:
    return line in (b"\n", b"\r\n")


def _flags(source: bytes) -> frozenset[str]:
    end = source.find(b"\n\n")
    crlf_end = source.find(b"\r\n\r\n")
    ends = [e for e in (end, crlf_end) if e >= 0]
    header = source[: min(ends)] if ends else source
    flags = set()
    for line in header.split(b"\n"):
        name, _, value = line.partition(b":")
        table = {b"status": _STATUS_FLAGS, b"x-status": _X_STATUS_FLAGS}.get(name.strip().lower())
        if table:
            flags.update(flag for letter, flag in table.items() if letter in value)
    return frozenset(flags)


def _message(lines: list[bytes], postmark: bytes, line_number: int) -> MboxMessage:
    # The empty line before the next postmark belongs to the mbox, not to
    # the message.
    if lines and _is_blank(lines[-1]):
        lines.pop()
    source = b"".join(lines)
    return MboxMessage(source, postmark_date(postmark), _flags(source), line_number)


def read_mbox(f: BinaryIO) -> Iterator[MboxMessage]:
    """
    The messages of an mbox, in file order.  Raises L{NotAnMbox} when the
    first line is not a postmark (an empty file has no messages).
    """
    first = f.readline()
    if not first:
        return
    if not first.startswith(b"From "):
        raise NotAnMbox("not an mbox file (it does not start with a 'From ' line)")
    postmark, postmark_line = first, 1
    lines: list[bytes] = []
    previous_blank = False
    for number, line in enumerate(f, start=2):
        if previous_blank and line.startswith(b"From ") and _ASCTIME.search(line, 5):
            yield _message(lines, postmark, postmark_line)
            postmark, postmark_line, lines = line, number, []
            previous_blank = False
            continue
        previous_blank = _is_blank(line)
        # mboxrd: one ">" less on every ">...>From " line; for mboxo that
        # also restores the ">From " lines it quoted.
        lines.append(line[1:] if _QUOTED_FROM.match(line) else line)
    yield _message(lines, postmark, postmark_line)
