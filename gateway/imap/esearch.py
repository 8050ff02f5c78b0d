"""
ESEARCH (RFC 4731) and SEARCHRES (RFC 5182): ``SEARCH RETURN (...)``
parsed, the ESEARCH response built, and which messages ``$`` keeps.

IMAP4rev2 (RFC 9051 6.4.4) answers every SEARCH so, with ``RETURN (ALL)``
when the client asks for nothing.

Pure: no Twisted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import attrs

from gateway.imap.sequence import format_sequence_set

OPTIONS = ("MIN", "MAX", "ALL", "COUNT", "SAVE")
# RFC 5182 3: the saved result, as a sequence set.
SAVED = b"$"

_RETURN = re.compile(rb" *RETURN +\(([A-Za-z ]*)\) *", re.IGNORECASE)


class SearchReturnError(ValueError):
    """A RETURN list that is not ESEARCH's (tagged BAD)."""


@attrs.frozen
class SearchReturn:
    """The result options of one SEARCH (RFC 4731 3.1); none given is ALL."""

    options: frozenset[str] = frozenset({"ALL"})

    @property
    def answers(self) -> bool:
        """
        Whether an ESEARCH response goes out: SAVE alone suppresses it
        (RFC 5182 1).
        """
        return self.options != {"SAVE"}

    @property
    def saves(self) -> bool:
        return "SAVE" in self.options


def parse_search_return(line: bytes) -> tuple[SearchReturn | None, bytes]:
    """
    ``RETURN (options)`` at the start of SEARCH's arguments (RFC 4466 2.6):
    the options (None when there is no RETURN) and the rest of the line.
    """
    match = _RETURN.match(line or b"")
    if match is None:
        if re.match(rb" *RETURN\b", line or b"", re.IGNORECASE):
            raise SearchReturnError("RETURN needs a parenthesised list of result options")
        return None, line
    words = [word.decode("ascii").upper() for word in match[1].split()]
    unknown = [word for word in words if word not in OPTIONS]
    if unknown:
        raise SearchReturnError(f"unknown result option {unknown[0]}")
    # RFC 4731 3.1: "RETURN ()" is "RETURN (ALL)".
    return SearchReturn(frozenset(words) or frozenset({"ALL"})), line[match.end():]


def saved_numbers(search_return: SearchReturn, found: Sequence[int]) -> list[int]:
    """
    RFC 5182 2.4: what ``$`` holds after a SEARCH with SAVE: the MIN and/or
    MAX message when they are asked without ALL or COUNT, else every one.
    ``found`` is ascending.
    """
    options = search_return.options
    if not found or options & {"ALL", "COUNT"} or not options & {"MIN", "MAX"}:
        return list(found)
    kept = []
    if "MIN" in options:
        kept.append(found[0])
    if "MAX" in options and found[-1] not in kept:
        kept.append(found[-1])
    return kept


def esearch_response(tag: bytes, by_uid: bool, search_return: SearchReturn, found: Sequence[int],
                     modseq_of: Callable[[int], int] | None = None) -> bytes:
    """
    The ESEARCH response (without the leading ``* ``) to a SEARCH that
    found ``found`` (ascending sequence numbers or UIDs).  With
    ``modseq_of`` (a CONDSTORE search, RFC 4731 3.2) MODSEQ ends it: of
    the one message returned by MIN or MAX alone, of the two for MIN and
    MAX, else the highest of all found.
    """
    options = search_return.options
    out = [b'ESEARCH (TAG "%s")' % tag]
    if by_uid:
        out.append(b"UID")
    if found:
        if "MIN" in options:
            out.append(b"MIN %d" % found[0])
        if "MAX" in options:
            out.append(b"MAX %d" % found[-1])
        if "ALL" in options:
            out.append(b"ALL " + format_sequence_set(found).encode("ascii"))
    if "COUNT" in options:
        out.append(b"COUNT %d" % len(found))
    if modseq_of is not None and found:
        if options & {"ALL", "COUNT"} or not options & {"MIN", "MAX"}:
            returned: Sequence[int] = found
        else:
            returned = [number for option, number in (("MIN", found[0]), ("MAX", found[-1])) if option in options]
        out.append(b"MODSEQ %d" % max(modseq_of(number) for number in returned))
    return b" ".join(out)
