"""
IMAP SEARCH evaluation: which messages a parsed key (``search_keys.py``)
matches (RFC 3501 6.4.4).  Pure: no Twisted.  Evaluation walks an explicit
stack, so the client's nesting never becomes Python recursion.

Evaluating one message is a generator of bounded steps (L{stepper}): BODY
and TEXT read the stored message a piece at a time along its stored part
tree (L{gateway.mail.bodytext}), so the caller can give the
reactor a turn between steps however big or deep the message.

The parser's names are re-exported here, so that callers need one import.
"""

from __future__ import annotations

import datetime
import email.utils
import re
from bisect import bisect_right
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import BinaryIO

import attrs

from gateway.imap.search_keys import (  # noqa: F401  (re-exported)
    SUPPORTED_CHARSETS,
    All,
    And,
    BodyContains,
    Flag,
    HeaderContains,
    InternalDate,
    Larger,
    ModSeq,
    Not,
    Or,
    Recent,
    SearchKey,
    SearchSyntaxError,
    SentDate,
    SequenceNumbers,
    Smaller,
    TextContains,
    Uids,
    children,
    parse_search,
    search_codec,
    tokenize_search,
)
from gateway.imap.sequence import SequenceSet
from gateway.mail.bodytext import Kind, body_text
from gateway.mail.address_text import ADDRESS_FIELDS, address_text
from gateway.mail.fields import header_text, header_values, raw_header_values
from gateway.mail.mimescan import MAX_HEADER
from gateway.store.model import Part

# A step of TEXT's header matching decodes about this much of the header.
_HEADER_SLICE = 1 << 16


@attrs.frozen
class SearchMessage:
    """
    What evaluation may look at for one message.

    ``header`` is the top-level header block (from the index).  ``body`` is
    the stored message (CRLF), a seekable binary file, and ``parts`` its
    part tree from the index: BODY and TEXT read the file along the tree.
    Load them, and ``internaldate``, ``size`` and ``modseq``, only when
    ``needs`` says so.
    """

    seq: int
    uid: int
    flags: frozenset[str]
    internaldate: datetime.datetime | None
    size: int | None
    recent: bool
    header: bytes | None = None
    body: BinaryIO | None = None
    parts: Part | None = None
    modseq: int | None = None


def uses_modseq(key: SearchKey) -> bool:
    """RFC 7162 3.1.5: a SEARCH with MODSEQ answers the highest mod-sequence found."""
    stack = [key]
    while stack:
        key = stack.pop()
        if isinstance(key, ModSeq):
            return True
        stack.extend(children(key))
    return False


def needs(key: SearchKey) -> frozenset[str]:
    """
    Which of ``"record"`` (INTERNALDATE, size, modseq), ``"header"`` and
    ``"body"`` (the message file and its part tree) must be loaded to
    evaluate ``key``.
    """
    wanted: set[str] = set()
    stack = [key]
    while stack:
        key = stack.pop()
        if isinstance(key, (InternalDate, Larger, Smaller, ModSeq)):
            wanted.add("record")
        elif isinstance(key, SentDate):
            # Without a usable Date: header it falls back to INTERNALDATE.
            wanted.update(("header", "record"))
        elif isinstance(key, HeaderContains):
            wanted.add("header")
        elif isinstance(key, BodyContains):
            wanted.add("body")
        elif isinstance(key, TextContains):
            wanted.update(("header", "body"))
        stack.extend(children(key))
    return frozenset(wanted)


def matches(
    key: SearchKey, msg: SearchMessage, largest_seq: int, largest_uid: int
) -> bool:
    """
    Whether ``msg`` matches ``key`` when the mailbox's largest sequence
    number is ``largest_seq`` and its largest UID ``largest_uid``; all
    steps at once.
    """
    return run(stepper(key, largest_seq, largest_uid)(msg))


def run(steps: Generator[None, None, bool]) -> bool:
    """Take every step of an evaluation; its answer."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def stepper(
    key: SearchKey, largest_seq: int, largest_uid: int
) -> Callable[[SearchMessage], Generator[None, None, bool]]:
    """
    For many messages of one mailbox state: the evaluation of ``key`` on
    one message as a generator that yields between bounded steps (a piece
    of a body, a slice of a header) and returns whether it matches.
    Sequence sets are resolved once, not once per message.
    """
    evaluator = _Evaluator(key, largest_seq, largest_uid)
    return evaluator.steps


def flag_matcher(key: SearchKey) -> Callable[[frozenset[str], bool], bool] | None:
    """
    For a key that looks at flags and \\Recent alone (``SEARCH UNSEEN
    FLAGGED``), a predicate on (flags, recent) that evaluates the key once
    per distinct pair, so that a mailbox of thousands of messages with a
    handful of flag lists costs a handful of evaluations; None for any other
    key.
    """
    if not _flags_only(key):
        return None
    evaluator = _Evaluator(key, 0, 0)
    answers: dict[tuple[frozenset[str], bool], bool] = {}

    def match(flags: frozenset[str], recent: bool) -> bool:
        answer = answers.get((flags, recent))
        if answer is None:
            msg = SearchMessage(seq=0, uid=0, flags=flags, internaldate=None, size=None, recent=recent)
            answer = answers[flags, recent] = run(evaluator.steps(msg))
        return answer

    return match


def _flags_only(key: SearchKey) -> bool:
    stack = [key]
    while stack:
        key = stack.pop()
        if not isinstance(key, (All, Flag, Recent, And, Or, Not)):
            return False
        stack.extend(children(key))
    return True


def evaluate(
    key: SearchKey,
    messages: Iterable[SearchMessage],
    largest_seq: int,
    largest_uid: int,
) -> list[int]:
    """
    The sequence numbers of the matching messages, ascending.
    """
    steps = stepper(key, largest_seq, largest_uid)
    return sorted(msg.seq for msg in messages if run(steps(msg)))


def _text_needles(key: SearchKey) -> tuple[frozenset[str], frozenset[str]]:
    """
    The case-folded strings of every BODY and TEXT key in ``key``, for the
    body text, and of the TEXT keys, white space squashed, for the MIME
    headers.
    """
    body, header = set(), set()
    stack = [key]
    while stack:
        key = stack.pop()
        if isinstance(key, (BodyContains, TextContains)):
            body.add(key.value.casefold())
        if isinstance(key, TextContains):
            header.add(_squash(key.value.casefold()))
        stack.extend(children(key))
    return frozenset(body), frozenset(header)


class _Evaluator:
    """
    Evaluates one key against messages of one mailbox state; resolves each
    sequence set once, not once per message.
    """

    def __init__(self, key: SearchKey, largest_seq: int, largest_uid: int) -> None:
        self.key = key
        self.largest_seq = largest_seq
        self.largest_uid = largest_uid
        # One pass over a body answers every BODY and TEXT key at once.
        self.body_needles, self.header_needles = _text_needles(key)
        # Keyed by set and largest: "2:*" differs as sequence numbers and UIDs.
        self.resolved: dict[tuple[SequenceSet, int], tuple[list[int], list[int]]] = {}

    def steps(self, msg: SearchMessage) -> Generator[None, None, bool]:
        text = _MessageText(msg, self.body_needles, self.header_needles)
        # Each frame is [key, index of the next child to evaluate]; And and
        # Or stop at the first child that decides them.
        stack: list[list] = []
        key = self.key
        while True:
            if isinstance(key, (And, Or, Not)):
                stack.append([key, 1])
                key = children(key)[0] if children(key) else None
                if key is not None:
                    continue
                result = True  # an empty And; parse_search never builds one
                stack.pop()
            elif isinstance(key, BodyContains):
                result = yield from text.contains(Kind.BODY, key.value.casefold())
            elif isinstance(key, TextContains):
                # RFC 3501 6.4.4: the header or the body; as in Dovecot, the
                # MIME headers of the parts are header text too.
                needle = key.value.casefold()
                result = ((yield from text.header_contains(_squash(needle)))
                          or (yield from text.contains(Kind.BODY, needle))
                          or (yield from text.contains(Kind.MIME_HEADER, _squash(needle))))
            else:
                result = self.leaf(key, msg, text)
            while stack:
                frame = stack[-1]
                parent, index = frame
                if isinstance(parent, Not):
                    result = not result
                elif (
                    result == isinstance(parent, And)
                    and index < len(parent.keys)
                ):
                    frame[1] = index + 1
                    key = parent.keys[index]
                    break
                stack.pop()
            else:
                return result

    def leaf(self, key: SearchKey, msg: SearchMessage, text: _MessageText) -> bool:
        if isinstance(key, All):
            return True
        if isinstance(key, Flag):
            wanted = key.name.casefold()
            return any(flag.casefold() == wanted for flag in msg.flags)
        if isinstance(key, Recent):
            return msg.recent
        if isinstance(key, HeaderContains):
            needle = _squash(key.value.casefold())
            if any(needle in _squash(value.casefold()) for value in text.header_values(key.field)):
                return True
            # An address field also matches on its parsed form: comments
            # and CFWS inside an addr-spec (RFC 5322 3.4.1) hide nothing.
            return key.field.casefold() in ADDRESS_FIELDS and any(
                needle in _squash(value.casefold()) for value in text.address_values(key.field)
            )
        if isinstance(key, InternalDate):
            return _compare(msg.internaldate.date(), key.comparison, key.date)
        if isinstance(key, SentDate):
            sent = _sent_date(text.header_values("Date"))
            if sent is None:
                # Like Dovecot: no usable Date: header, use INTERNALDATE.
                sent = msg.internaldate.date()
            return _compare(sent, key.comparison, key.date)
        if isinstance(key, Larger):
            return msg.size > key.size
        if isinstance(key, Smaller):
            return msg.size < key.size
        if isinstance(key, ModSeq):
            return msg.modseq >= key.modseq
        if isinstance(key, SequenceNumbers):
            return self.contains(key.numbers, msg.seq, self.largest_seq)
        if isinstance(key, Uids):
            return self.contains(key.uids, msg.uid, self.largest_uid)
        raise TypeError(f"not a search key: {key!r}")

    def contains(self, numbers: SequenceSet, number: int, largest: int) -> bool:
        if (numbers, largest) not in self.resolved:
            ranges = numbers.resolve(largest)
            self.resolved[numbers, largest] = (
                [low for low, _ in ranges], [high for _, high in ranges],
            )
        lows, highs = self.resolved[numbers, largest]
        index = bisect_right(lows, number) - 1
        return index >= 0 and number <= highs[index]


def _compare(date: datetime.date, comparison: str, wanted: datetime.date) -> bool:
    if comparison == "before":
        return date < wanted
    if comparison == "on":
        return date == wanted
    return date >= wanted


def _sent_date(values: list[str]) -> datetime.date | None:
    """The date of the first Date: header, as written (no zone shift)."""
    for value in values[:1]:
        try:
            parsed = email.utils.parsedate_tz(value)
            if parsed is None:
                return None
            return datetime.date(parsed[0], parsed[1], parsed[2])
        except (ValueError, TypeError, IndexError, OverflowError):
            return None
    return None


class _MessageText:
    """
    The text of one message, worked out once and only if asked.

    Header values are unfolded and RFC 2047-decoded
    (L{gateway.mail.header.header_values}); TEXT reads the header a slice of
    fields per step.  The rest of the message is searched once for every
    BODY and TEXT string of the key, a piece per step
    (L{gateway.mail.bodytext.body_text}): ``body_needles`` in the body
    text, ``header_needles`` (TEXT's, white space squashed) in the MIME
    headers of the parts.
    """

    def __init__(self, msg: SearchMessage, body_needles: frozenset[str],
                 header_needles: frozenset[str]):
        self._msg = msg
        self._body_needles = body_needles
        self._header_needles = header_needles
        self._header = msg.header
        self._values: dict[str, list[str]] = {}
        self._header_text: str | None = None
        self._found: dict[Kind, frozenset[str]] | None = None

    def header(self) -> bytes:
        if self._header is None:
            msg = self._msg
            if msg.body is None or msg.parts is None:
                raise ValueError("search needs the message header: see needs()")
            msg.body.seek(0)
            self._header = msg.body.read(min(msg.parts.body_start, MAX_HEADER))
        return self._header

    def header_values(self, name: str) -> list[str]:
        name = name.casefold()
        if name not in self._values:
            self._values[name] = header_values(self.header(), name)
        return self._values[name]

    def address_values(self, name: str) -> list[str]:
        """The values of an address field in their parsed form (``address_text``)."""
        return [address_text(raw.decode("latin-1")) for raw in raw_header_values(self.header(), name)]

    def header_contains(self, needle: str) -> Generator[None, None, bool]:
        if self._header_text is None:
            pieces = []
            for piece in _slices(self.header()):
                pieces.append(_squash(header_text(piece).casefold()))
                yield
            self._header_text = "\n".join(pieces)
        return needle in self._header_text

    def contains(self, kind: Kind, needle: str) -> Generator[None, None, bool]:
        """Whether ``needle`` is in the body text or the MIME headers."""
        if self._found is None:
            msg = self._msg
            if msg.body is None or msg.parts is None:
                raise ValueError("search needs the message body and parts: see needs()")
            pieces = body_text(msg.parts, msg.body, mime_headers=bool(self._header_needles))
            self._found = yield from _find(
                {Kind.BODY: self._body_needles, Kind.MIME_HEADER: self._header_needles}, pieces)
        return needle in self._found[kind]


def _find(needles: dict[Kind, frozenset[str]], pieces) -> Generator[None, None, dict[Kind, frozenset[str]]]:
    """
    Which ``needles`` (case-folded) of each kind occur in the texts of that
    kind in ``pieces`` (L{body_text}), a piece per step; MIME header text
    is matched with its white space squashed.  The empty string occurs in
    every message.
    """
    found = {kind: {needle for needle in wanted if not needle} for kind, wanted in needles.items()}
    wanted = {kind: set(needles[kind]) - found[kind] for kind in needles}
    # A match may straddle two pieces of one text: keep enough of the last.
    overlap = max((len(needle) for each in wanted.values() for needle in each), default=1) - 1
    tail = ""
    for kind, piece in pieces:
        if not any(wanted.values()):
            break
        if piece is None:
            tail = ""
            continue
        if wanted[kind]:
            text = piece.casefold()
            window = tail + (_squash(text) if kind is Kind.MIME_HEADER else text)
            hits = {needle for needle in wanted[kind] if needle in window}
            found[kind] |= hits
            wanted[kind] -= hits
            tail = window[max(0, len(window) - overlap):] if overlap else ""
        yield
    return {kind: frozenset(each) for kind, each in found.items()}


def _slices(header: bytes) -> Iterator[bytes]:
    """The header in slices of whole fields, about _HEADER_SLICE each."""
    start = 0
    while start < len(header):
        # A slice ends before a line that starts a field, not inside one.
        found = _FIELD_START.search(header, start + _HEADER_SLICE)
        end = len(header) if found is None else found.start() + 1
        yield header[start:end]
        start = end


_FIELD_START = re.compile(rb"\n(?![ \t])")


_WHITESPACE = re.compile(r"\s+")


def _squash(text: str) -> str:
    """
    Runs of white space as one space: a value folded after "a," with a tab
    still matches a search for "a, b" (RFC 5322 2.2.3 unfolding keeps the
    tab).  Applied to the search string and the header text alike.
    """
    return _WHITESPACE.sub(" ", text)
