"""
IMAP wire forms that are not tied to one command: quoted strings, date-times
(RFC 3501 9 ``date-time``), and LIST/LSUB pattern matching (RFC 3501 6.3.8).
Mailbox names are modified UTF-7 (``gateway.mail.mutf7``).

Pure: no Twisted.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable

from gateway.store.model import HIERARCHY_SEPARATOR, SYSTEM_FLAGS
from gateway.store.names import canonical_name

_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


class BadDateTime(ValueError):
    """Not an RFC 3501 date-time."""


def quote(text: bytes) -> bytes:
    """An IMAP quoted string (the caller ensures no CR, LF or NUL)."""
    return b'"' + text.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def nstring(value: bytes | None) -> bytes:
    """NIL, a quoted string, or a literal when quoting cannot carry it."""
    if value is None:
        return b"NIL"
    if re.search(rb"[\r\n\x00\x80-\xff]", value) or len(value) > 1000:
        return b"{%d}\r\n" % len(value) + value
    return quote(value)


_MONTH_BYTES = [month.encode("ascii") for month in _MONTHS]
# FETCH INTERNALDATE of a thousand messages meets a handful of zones.
_zone_texts: dict[datetime.timedelta | None, bytes] = {}


def format_datetime(when: datetime.datetime) -> bytes:
    """RFC 3501 date-time, e.g. ``"17-Jul-1996 02:44:25 -0700"``."""
    offset = when.utcoffset()
    zone = _zone_texts.get(offset)
    if zone is None:
        minutes = int(offset.total_seconds()) // 60 if offset else 0
        sign = b"-" if minutes < 0 else b"+"
        minutes = abs(minutes)
        zone = _zone_texts[offset] = b'%s%02d%02d"' % (sign, minutes // 60, minutes % 60)
    return b'"%02d-%s-%04d %02d:%02d:%02d ' % (
        when.day, _MONTH_BYTES[when.month - 1], when.year, when.hour, when.minute, when.second,
    ) + zone


_DATE_TIME = re.compile(
    r"([ \d]?\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)"
)


def parse_datetime(text: bytes) -> datetime.datetime:
    """The inside of an RFC 3501 date-time (APPEND); raises L{BadDateTime}."""
    match = _DATE_TIME.fullmatch(text.decode("ascii", "replace"))
    if match is None:
        raise BadDateTime(text)
    day, month, year, hour, minute, second, sign, zone_h, zone_m = match.groups()
    try:
        month_number = [m.lower() for m in _MONTHS].index(month.lower()) + 1
        zone = datetime.timedelta(hours=int(zone_h), minutes=int(zone_m))
        return datetime.datetime(
            int(year), month_number, int(day.strip()), int(hour), int(minute), int(second),
            tzinfo=datetime.timezone(-zone if sign == "-" else zone),
        )
    except ValueError as e:
        raise BadDateTime(text) from e


def parse_date(text: bytes) -> datetime.date:
    """RFC 3501 ``date`` of SEARCH keys (``1-Feb-1994``)."""
    match = re.fullmatch(r"(\d{1,2})-([A-Za-z]{3})-(\d{4})", text.decode("ascii", "replace"))
    if match is None:
        raise BadDateTime(text)
    try:
        month = [m.lower() for m in _MONTHS].index(match[2].lower()) + 1
        return datetime.date(int(match[3]), month, int(match[1]))
    except ValueError as e:
        raise BadDateTime(text) from e


class MailboxPattern:
    """
    An RFC 3501 6.3.8 LIST pattern: ``*`` matches anything, ``%`` anything
    but the hierarchy separator.

    Matched by a bit-parallel NFA, one bit per pattern position, so a name
    costs a few integer operations per character whatever the pattern:
    translated to a regular expression, ``%*%*%*...x`` backtracks
    exponentially.  Store names never hold ``*`` or ``%``, so every one in
    the pattern is a wildcard.
    """

    def __init__(self, pattern: str) -> None:
        tokens: list[str] = []
        for char in pattern:
            if char in "*%" and tokens and tokens[-1] in "*%":
                # A run of wildcards matches what its widest member does.
                tokens[-1] = "*" if "*" in (char, tokens[-1]) else "%"
            else:
                tokens.append(char)
        self._accept = 1 << len(tokens)
        self._star = self._percent = 0
        self._chars: dict[str, int] = {}
        for position, token in enumerate(tokens):
            bit = 1 << position
            if token == "*":
                self._star |= bit
            elif token == "%":
                self._percent |= bit
            else:
                self._chars[token] = self._chars.get(token, 0) | bit
        self._wild = self._star | self._percent
        self._start = self._closure(1)

    def _closure(self, states: int) -> int:
        # A wildcard may match nothing; runs were merged, so one step does.
        return states | ((states & self._wild) << 1)

    def fullmatch(self, name: str) -> bool:
        states = self._start
        for char in name:
            stay = states & self._star
            if char != HIERARCHY_SEPARATOR:
                stay |= states & self._percent
            states = self._closure(stay | ((states & self._chars.get(char, 0)) << 1))
            if not states:
                return False
        return bool(states & self._accept)


def compile_pattern(reference: str, pattern: str) -> MailboxPattern:
    """The reference prefixed to the pattern, INBOX in any case as INBOX."""
    return MailboxPattern(canonical_name(reference + pattern))


def list_matches(
    existing: dict[str, str | None], reference: str, pattern: str
) -> list[tuple[str, tuple[str, ...]]]:
    """
    LIST answers: ``existing`` maps each mailbox name to its special-use
    attribute.  Levels that do not exist but have children are listed as
    ``\\Noselect`` so that ``%`` walks reach them (RFC 3501 6.3.8).
    """
    matcher = compile_pattern(reference, pattern)
    candidates = set(existing)
    for name in existing:
        levels = name.split(HIERARCHY_SEPARATOR)
        for depth in range(1, len(levels)):
            candidates.add(HIERARCHY_SEPARATOR.join(levels[:depth]))
    parents = set()
    for name in candidates:
        if HIERARCHY_SEPARATOR in name:
            parents.add(name.rsplit(HIERARCHY_SEPARATOR, 1)[0])
    answers = []
    for name in sorted(candidates, key=lambda n: (n != "INBOX", n)):
        if not matcher.fullmatch(name):
            continue
        attributes = ["\\HasChildren" if name in parents else "\\HasNoChildren"]
        if name not in existing:
            attributes.insert(0, "\\Noselect")
        elif existing[name]:
            attributes.append(existing[name])
        answers.append((name, tuple(attributes)))
    return answers


_KEYWORD = re.compile(r"[!#$&'+-Z^-z|~]+")


def parse_flags(tokens: Iterable[bytes]) -> frozenset[str]:
    """
    Flags a client may store (RFC 3501 2.3.2): the system flags in their
    canonical case, and keywords (atoms).  \\Recent cannot be stored and is
    dropped; any other backslash flag raises ValueError.
    """
    canonical = {flag.lower(): flag for flag in SYSTEM_FLAGS}
    flags = set()
    for token in tokens:
        text = token.decode("ascii", "replace")
        if text.startswith("\\"):
            if text.lower() == "\\recent":
                continue
            if text.lower() not in canonical:
                raise ValueError(f"unknown system flag {text}")
            flags.add(canonical[text.lower()])
        elif _KEYWORD.fullmatch(text):
            flags.add(text)
        else:
            raise ValueError(f"bad keyword {text!r}")
    return frozenset(flags)
