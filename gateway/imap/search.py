"""
IMAP SEARCH evaluation: which messages a parsed key (``search_keys.py``)
matches (RFC 3501 6.4.4).  Pure: no Twisted.  Evaluation walks an explicit
stack, so the client's nesting never becomes Python recursion.

The parser's names are re-exported here, so that callers need one import.
"""

from __future__ import annotations

import datetime
import email
import email.policy
import email.utils
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable

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
    parse_search,
    tokenize_search,
)
from gateway.imap.sequence import SequenceSet
from gateway.mail.message import header_values


@attrs.frozen
class SearchMessage:
    """
    What evaluation may look at for one message.

    ``header`` is the top-level header block (from the index); ``body``
    returns the full stored message (CRLF).  Load them, and ``internaldate``
    and ``size``, only when ``needs`` says so.
    """

    seq: int
    uid: int
    flags: frozenset[str]
    internaldate: datetime.datetime | None
    size: int | None
    recent: bool
    header: bytes | None = None
    body: Callable[[], bytes] | None = None
    modseq: int | None = None


def uses_modseq(key: SearchKey) -> bool:
    """RFC 7162 3.1.5: a SEARCH with MODSEQ answers the highest mod-sequence found."""
    stack = [key]
    while stack:
        key = stack.pop()
        if isinstance(key, ModSeq):
            return True
        stack.extend(_children(key))
    return False


def _children(key: SearchKey) -> tuple[SearchKey, ...]:
    if isinstance(key, (And, Or)):
        return key.keys
    if isinstance(key, Not):
        return (key.key,)
    return ()


def needs(key: SearchKey) -> frozenset[str]:
    """
    Which of ``"record"`` (INTERNALDATE, size, modseq), ``"header"`` and ``"body"``
    must be loaded to evaluate ``key``.
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
        stack.extend(_children(key))
    return frozenset(wanted)


def matches(
    key: SearchKey, msg: SearchMessage, largest_seq: int, largest_uid: int
) -> bool:
    """
    Whether ``msg`` matches ``key`` when the mailbox's largest sequence
    number is ``largest_seq`` and its largest UID ``largest_uid``.
    """
    return _Evaluator(largest_seq, largest_uid).matches(key, msg)


def matcher(key: SearchKey, largest_seq: int, largest_uid: int) -> Callable[[SearchMessage], bool]:
    """
    L{matches} for many messages of one mailbox state: sequence sets are
    resolved once, not once per message.
    """
    evaluator = _Evaluator(largest_seq, largest_uid)
    return lambda msg: evaluator.matches(key, msg)


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
    evaluator = _Evaluator(0, 0)
    answers: dict[tuple[frozenset[str], bool], bool] = {}

    def match(flags: frozenset[str], recent: bool) -> bool:
        answer = answers.get((flags, recent))
        if answer is None:
            msg = SearchMessage(seq=0, uid=0, flags=flags, internaldate=None, size=None, recent=recent)
            answer = answers[flags, recent] = evaluator.matches(key, msg)
        return answer

    return match


def _flags_only(key: SearchKey) -> bool:
    stack = [key]
    while stack:
        key = stack.pop()
        if not isinstance(key, (All, Flag, Recent, And, Or, Not)):
            return False
        stack.extend(_children(key))
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
    evaluator = _Evaluator(largest_seq, largest_uid)
    return sorted(msg.seq for msg in messages if evaluator.matches(key, msg))


class _Evaluator:
    """
    Evaluates keys against messages of one mailbox state; resolves each
    sequence set once, not once per message.
    """

    def __init__(self, largest_seq: int, largest_uid: int) -> None:
        self.largest_seq = largest_seq
        self.largest_uid = largest_uid
        # Keyed by set and largest: "2:*" differs as sequence numbers and UIDs.
        self.resolved: dict[tuple[SequenceSet, int], tuple[list[int], list[int]]] = {}

    def matches(self, root: SearchKey, msg: SearchMessage) -> bool:
        text = _MessageText(msg.header, msg.body)
        # Each frame is [key, index of the next child to evaluate]; And and
        # Or stop at the first child that decides them.
        stack: list[list] = []
        key = root
        while True:
            if isinstance(key, (And, Or, Not)):
                stack.append([key, 1])
                key = _children(key)[0] if _children(key) else None
                if key is not None:
                    continue
                result = True  # an empty And; parse_search never builds one
                stack.pop()
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
            return any(
                needle in _squash(value.casefold())
                for value in text.header_values(key.field)
            )
        if isinstance(key, BodyContains):
            return text.body_contains(key.value.casefold())
        if isinstance(key, TextContains):
            needle = key.value.casefold()
            return _squash(needle) in text.header_text() or text.body_contains(needle)
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
    The decoded text of one message, worked out once and only if asked.

    Header values come from ``gateway.mail.message.header_values`` (unfolded,
    RFC 2047-decoded).  The body text is every text/* part, transfer- and
    charset-decoded (as Dovecot does; RFC 3501 6.4.4 lets us skip other
    media types), plus the header of each attached message/rfc822.
    """

    def __init__(self, header: bytes | None, body: Callable[[], bytes] | None):
        self._header = header
        self._body = body
        self._message: bytes | None = None
        self._values: dict[str, list[str]] = {}
        self._header_text: str | None = None
        self._body_texts: list[str] | None = None

    def message(self) -> bytes:
        if self._message is None:
            if self._body is None:
                raise ValueError("search needs the message body: see needs()")
            self._message = self._body()
        return self._message

    def header(self) -> bytes:
        if self._header is None:
            if self._body is None:
                raise ValueError("search needs the message header: see needs()")
            self._header = self.message().partition(b"\r\n\r\n")[0] + b"\r\n"
        return self._header

    def header_values(self, name: str) -> list[str]:
        name = name.casefold()
        if name not in self._values:
            self._values[name] = header_values(self.header(), name)
        return self._values[name]

    def header_text(self) -> str:
        if self._header_text is None:
            self._header_text = _squash(_header_text(self.header()).casefold())
        return self._header_text

    def body_contains(self, needle: str) -> bool:
        if self._body_texts is None:
            self._body_texts = [text.casefold() for text in _body_texts(self.message())]
        return any(needle in text for text in self._body_texts)


_FIELD_NAME = re.compile(rb"^([^\s:]+)[ \t]*:", re.MULTILINE)
_WHITESPACE = re.compile(r"\s+")


def _squash(text: str) -> str:
    """
    Runs of white space as one space: a value folded after "a," with a tab
    still matches a search for "a, b" (RFC 5322 2.2.3 unfolding keeps the
    tab).  Applied to the search string and the header text alike.
    """
    return _WHITESPACE.sub(" ", text)


def _header_text(header: bytes) -> str:
    """Every field as "name: decoded value", a line each, for TEXT."""
    names = dict.fromkeys(
        match[1].decode("latin-1").casefold()
        for match in _FIELD_NAME.finditer(header.partition(b"\r\n\r\n")[0])
    )
    return "\n".join(
        f"{name}: {value}" for name in names for value in header_values(header, name)
    )


def _body_texts(message: bytes) -> list[str]:
    texts = []
    for part in email.message_from_bytes(message, policy=email.policy.compat32).walk():
        if part.get_content_type() == "message/rfc822" and part.is_multipart():
            for attached in part.get_payload():
                header = "".join(f"{name}: {value}\r\n" for name, value in attached.items())
                texts.append(_header_text(header.encode("utf-8", "surrogateescape")))
        elif part.get_content_maintype() == "text" and not part.is_multipart():
            payload = part.get_payload(decode=True) or b""
            try:
                texts.append(payload.decode(part.get_content_charset() or "utf-8", "replace"))
            except (LookupError, ValueError, TypeError):
                texts.append(payload.decode("utf-8", "replace"))
    return texts
