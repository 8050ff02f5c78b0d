"""
The arguments CONDSTORE and QRESYNC (RFC 7162) add to IMAP commands:
SELECT/EXAMINE parameters (RFC 4466 2.1) and FETCH modifiers.

Pure: no Twisted.
"""

from __future__ import annotations

import re

import attrs

from gateway.imap.sequence import SequenceSet, SequenceSetError, parse_sequence_set

# RFC 7162 7: mod-sequence-value is a positive 63-bit number.
MAX_MODSEQ = 2**63 - 1


class ParameterError(ValueError):
    """The parameters or modifiers do not parse (tagged BAD)."""


@attrs.frozen
class Resync:
    """QRESYNC's ``(uidvalidity modseq [known-uids [seq-match-data]])``."""

    uidvalidity: int
    modseq: int
    # None: every UID below UIDNEXT (RFC 7162 3.2.5.1).
    known_uids: SequenceSet | None = None


@attrs.frozen
class SelectParameters:
    condstore: bool = False
    qresync: Resync | None = None


_SET = rb"[0-9:,]+"
_PARAMETER = re.compile(
    rb"(CONDSTORE)|QRESYNC \(([0-9]{1,10}) ([0-9]{1,19})(?: (" + _SET + rb")(?: \((" + _SET + rb") (" + _SET
    + rb")\))?)?\)",
    re.IGNORECASE,
)


def parse_select_parameters(line: bytes) -> SelectParameters:
    """
    ``[SP "(" param *(SP param) ")"]`` after the mailbox name; CONDSTORE
    and QRESYNC are the ones we know.  The sequence match data of QRESYNC
    is checked and ignored: we remember every expunge, so it saves nothing.
    """
    line = line.strip()
    if not line:
        return SelectParameters()
    if not (line.startswith(b"(") and line.endswith(b")")):
        raise ParameterError("expected a parenthesised parameter list")
    inner = line[1:-1]
    condstore, qresync = False, None
    position = 0
    while True:
        match = _PARAMETER.match(inner, position)
        if match is None:
            raise ParameterError("unknown or malformed SELECT parameter")
        if match[1] is not None:
            condstore = True
        else:
            if qresync is not None:
                raise ParameterError("QRESYNC given twice")
            qresync = _resync(match)
        position = match.end()
        if position == len(inner):
            return SelectParameters(condstore, qresync)
        if inner[position:position + 1] != b" ":
            raise ParameterError("parameters are separated by one space")
        position += 1


def _resync(match) -> Resync:
    uidvalidity, modseq = int(match[2]), int(match[3])
    if not 1 <= uidvalidity <= 0xFFFFFFFF or not 1 <= modseq <= MAX_MODSEQ:
        raise ParameterError("UIDVALIDITY or mod-sequence out of range")
    known = None
    try:
        if match[4] is not None:
            known = parse_sequence_set(match[4])
        if match[5] is not None:
            parse_sequence_set(match[5])
            parse_sequence_set(match[6])
    except SequenceSetError as e:
        raise ParameterError(str(e)) from None
    return Resync(uidvalidity, modseq, known)


@attrs.frozen
class FetchModifiers:
    changedsince: int | None = None
    vanished: bool = False


_MODIFIER = rb"(?:CHANGEDSINCE +[0-9]{1,19}|VANISHED)"
_MODIFIERS = re.compile(rb"(.+?) +\((" + _MODIFIER + rb"(?: +" + _MODIFIER + rb")*)\) *", re.IGNORECASE | re.DOTALL)


def split_fetch_modifiers(rest: bytes) -> tuple[bytes, FetchModifiers]:
    """
    FETCH's attributes and its modifiers (RFC 4466 2.4): CHANGEDSINCE
    (RFC 7162 3.1.4) and VANISHED (3.2.6, which needs CHANGEDSINCE).
    """
    match = _MODIFIERS.fullmatch(rest)
    if match is None:
        return rest, FetchModifiers()
    words = match[2].upper().split()
    changedsince, vanished = None, False
    while words:
        word = words.pop(0)
        if word == b"VANISHED" and not vanished:
            vanished = True
        elif word == b"CHANGEDSINCE" and changedsince is None:
            changedsince = int(words.pop(0))
            if changedsince > MAX_MODSEQ:
                raise ParameterError("CHANGEDSINCE out of range")
        else:
            raise ParameterError("FETCH modifier given twice")
    if vanished and changedsince is None:
        raise ParameterError("VANISHED needs CHANGEDSINCE")
    return match[1], FetchModifiers(changedsince, vanished)
