"""
SORT (RFC 5256 3) with the DISPLAYFROM and DISPLAYTO keys of RFC 5957: the
sort program parsed from the command line, each message's sort values
worked out once from its stored header and record, and the ordering.

Strings collate by i;unicode-casemap (RFC 5256 7, RFC 5051); the empty
string first.  Equal messages keep mailbox order: the implicit last key is
the sequence number, which REVERSE never reverses.

Pure: no Twisted.
"""

from __future__ import annotations

import datetime
import email.utils
import functools
import re
import unicodedata
from collections.abc import Iterable, Sequence

import attrs

from gateway.mail.fields import decode_2047, first_fields, header_values
from gateway.mail.header import addresses
from gateway.mail.subject import base_subject

KEYS = ("ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO")

# The header fields each key reads.
_FIELDS = {"CC": "cc", "FROM": "from", "TO": "to", "DISPLAYFROM": "from", "DISPLAYTO": "to"}


class SortSyntaxError(ValueError):
    """The sort program is malformed (tagged BAD)."""


@attrs.frozen
class SortCriterion:
    key: str
    reverse: bool = False


_PROGRAM = re.compile(rb" *\(([^()]*)\)")


def parse_sort_program(line: bytes) -> tuple[tuple[SortCriterion, ...], bytes]:
    """
    ``sort-criteria`` at the start of ``line`` (RFC 5256 5): the criteria
    and the rest of the line (charset and search keys).
    """
    match = _PROGRAM.match(line or b"")
    if match is None:
        raise SortSyntaxError("expected a parenthesised list of sort criteria")
    words = match[1].upper().split()
    if not words:
        raise SortSyntaxError("empty list of sort criteria")
    criteria = []
    reverse = False
    for word in words:
        name = word.decode("ascii", "replace")
        if name == "REVERSE":
            if reverse:
                raise SortSyntaxError("REVERSE REVERSE")
            reverse = True
            continue
        if name not in KEYS:
            raise SortSyntaxError("unknown sort key")
        criteria.append(SortCriterion(name, reverse))
        reverse = False
    if reverse:
        raise SortSyntaxError("REVERSE at the end of the sort criteria")
    return tuple(criteria), line[match.end():]


# -- collation ----------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _titlecase(char: str) -> str:
    # The simple (one character) titlecase mapping RFC 5051 asks for;
    # Python's title() applies the full one (ß -> Ss), kept out.
    mapped = char.title()
    if len(mapped) == 1:
        return mapped
    mapped = char.upper()
    return mapped if len(mapped) == 1 else char


def casemap(text: str) -> str:
    """
    The i;unicode-casemap form of ``text`` (RFC 5051 2): titlecased, then
    NFKD.  Comparing these as strings compares their UTF-8 octets.
    """
    if text.isascii():
        return text.upper()
    return unicodedata.normalize("NFKD", "".join(_titlecase(char) for char in text))


# -- one message's sort values --------------------------------------------------


def sent_date(header: bytes, internaldate: datetime.datetime) -> float:
    """
    RFC 5256 2.2: the Date field in UTC seconds (an invalid zone counts as
    UTC); INTERNALDATE when there is no Date field or it cannot be read.
    """
    values = header_values(header, "date")
    if values:
        parsed = email.utils.parsedate_tz(values[0])
        if parsed is not None:
            try:
                return float(email.utils.mktime_tz(parsed if parsed[9] is not None else (*parsed[:9], 0)))
            except (OverflowError, ValueError):
                pass
    return internaldate.timestamp()


def _first_address(header: bytes, field: str):
    raw = first_fields(header, (field,)).get(field)
    for name, _, mailbox, domain in addresses(raw) or ():
        if domain is not None:  # not a group's start or end
            return name, mailbox, domain
    return None


def address_value(header: bytes, field: str) -> str:
    """RFC 5256 3: the addr-mailbox of the first address of ``field``."""
    first = _first_address(header, field)
    return casemap(_as_text(first[1])) if first is not None and first[1] is not None else ""


def display_value(header: bytes, field: str) -> str:
    """RFC 5957 3: the decoded display name of the first address, else mailbox@host."""
    first = _first_address(header, field)
    if first is None:
        return ""
    name, mailbox, domain = first
    if name is not None:
        decoded = decode_2047(name.encode("latin-1"))
        if decoded:
            return casemap(decoded)
    if mailbox is None:
        return ""
    return casemap(_as_text(mailbox) + ("@" + _as_text(domain) if domain is not None else ""))


def _as_text(latin1: str) -> str:
    # Header bytes arrive as latin-1 text; 8-bit addresses are UTF-8 (RFC 6532).
    return latin1.encode("latin-1").decode("utf-8", "replace")


def subject_value(header: bytes) -> str:
    values = header_values(header, "subject")
    return casemap(base_subject(values[0] if values else None).text)


def sort_values(criteria: Iterable[SortCriterion], header: bytes | None,
                internaldate: datetime.datetime | None, size: int | None) -> dict[str, object]:
    """Each key of ``criteria`` -> this message's value for it."""
    values: dict[str, object] = {}
    for criterion in criteria:
        key = criterion.key
        if key in values:
            continue
        if key == "ARRIVAL":
            values[key] = internaldate.timestamp()
        elif key == "SIZE":
            values[key] = size
        elif key == "DATE":
            values[key] = sent_date(header, internaldate)
        elif key == "SUBJECT":
            values[key] = subject_value(header)
        elif key.startswith("DISPLAY"):
            values[key] = display_value(header, _FIELDS[key])
        else:
            values[key] = address_value(header, _FIELDS[key])
    return values


def needs(criteria: Iterable[SortCriterion]) -> frozenset[str]:
    """What must be loaded: ``"record"`` (INTERNALDATE, size), ``"header"``."""
    wanted = set()
    for criterion in criteria:
        if criterion.key in ("ARRIVAL", "SIZE", "DATE"):
            wanted.add("record")
        if criterion.key not in ("ARRIVAL", "SIZE"):
            wanted.add("header")
    return frozenset(wanted)


def sort_numbers(criteria: Sequence[SortCriterion], entries: Iterable[tuple[int, dict[str, object]]]) -> list[int]:
    """
    ``entries`` are (sequence number or UID, sort values) in mailbox order;
    the numbers in SORT order.  One stable sort per criterion, the last
    first, so that each REVERSE turns its own key only.
    """
    ordered = list(entries)
    for criterion in reversed(criteria):
        ordered.sort(key=lambda entry: entry[1][criterion.key], reverse=criterion.reverse)
    return [number for number, _ in ordered]


def format_sort(numbers: Iterable[int]) -> bytes:
    """The untagged SORT response, without the leading ``* ``."""
    return b"SORT" + b"".join(b" %d" % number for number in numbers)
