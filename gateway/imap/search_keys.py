"""
IMAP SEARCH criteria: the key tree, and the tokenizer and parser that build
it from a command line (RFC 3501 6.4.4, RFC 7162 3.1.5).  Pure: no Twisted.

The input is the token list Twisted's ``IMAP4Server.arg_searchkeys`` builds
(``parseNestedParens``), or ``tokenize_search`` here: atoms, quoted strings
and literals all arrive as ``bytes`` (from Twisted ``NIL`` as ``None``), and
each parenthesised group as a nested ``list``.  ``CHARSET`` is taken off by
the SEARCH command table's ``search_charset`` before we see the tokens; the caller asks
``search_codec`` for it (``NO [BADCHARSET]`` when there is none) and hands
the codec to ``parse_search``, which decodes the strings with it.

Parsing does not recurse on the client's nesting: it walks explicit stacks,
so ``NOT NOT NOT ...`` or ``((((...))))`` ten thousand deep is refused with
``SearchSyntaxError`` rather than a ``RecursionError``.
"""

from __future__ import annotations

import datetime
import re
from typing import Union

import attrs

from gateway.imap.sequence import (
    MAX_NUMBER,
    SequenceSet,
    SequenceSetError,
    parse_sequence_set,
)
from gateway.imap.wire import BadDateTime, parse_date
from gateway.mail.decode import text_codec

# The charsets BADCHARSET lists (RFC 3501 6.4.4: US-ASCII must be there);
# any charset Python decodes is accepted, as Dovecot accepts any iconv knows.
SUPPORTED_CHARSETS = frozenset({"US-ASCII", "UTF-8"})


def search_codec(charset: bytes | str | None) -> str | None:
    """
    The codec that decodes the strings of ``SEARCH CHARSET charset``
    (UTF-8 without one, and for US-ASCII, its subset), or None when the
    charset is unknown.
    """
    if charset is None:
        return "utf-8"
    if isinstance(charset, bytes):
        charset = charset.decode("ascii", "replace")
    return text_codec(charset)


class SearchSyntaxError(ValueError):
    """
    The SEARCH criteria are malformed or exceed our limits (tagged BAD).
    """


@attrs.frozen
class All:
    """ALL: every message."""


@attrs.frozen
class Flag:
    """A system flag (``\\Seen``) or keyword is set; case-insensitive."""

    name: str


@attrs.frozen
class Recent:
    """The message is \\Recent in this session."""


@attrs.frozen
class HeaderContains:
    """A header field ``field`` whose decoded value contains ``value``."""

    field: str
    value: str


@attrs.frozen
class BodyContains:
    """The decoded text of the body contains ``value``."""

    value: str


@attrs.frozen
class TextContains:
    """The decoded header or body contains ``value``."""

    value: str


@attrs.frozen
class InternalDate:
    """BEFORE / ON / SINCE: the INTERNALDATE's date in its own zone."""

    comparison: str  # "before", "on" or "since"
    date: datetime.date


@attrs.frozen
class SentDate:
    """SENTBEFORE / SENTON / SENTSINCE: the Date: header's date as written."""

    comparison: str
    date: datetime.date


@attrs.frozen
class Larger:
    """RFC822.SIZE is larger than ``size``."""

    size: int


@attrs.frozen
class Smaller:
    """RFC822.SIZE is smaller than ``size``."""

    size: int


@attrs.frozen
class ModSeq:
    """MODSEQ (RFC 7162 3.1.5): the message's mod-sequence is at least ``modseq``."""

    modseq: int


@attrs.frozen
class SequenceNumbers:
    """A bare sequence set: ``*`` is the largest sequence number."""

    numbers: SequenceSet


@attrs.frozen
class Uids:
    """UID set: ``*`` is the largest UID in the mailbox."""

    uids: SequenceSet


@attrs.frozen
class And:
    """All of ``keys`` match (a key list, or a parenthesised group)."""

    keys: tuple[SearchKey, ...]


@attrs.frozen
class Or:
    """Any of ``keys`` matches."""

    keys: tuple[SearchKey, ...]


@attrs.frozen
class Not:
    """``key`` does not match."""

    key: SearchKey


SearchKey = Union[
    All, Flag, Recent, HeaderContains, BodyContains, TextContains,
    InternalDate, SentDate, Larger, Smaller, ModSeq, SequenceNumbers, Uids,
    And, Or, Not,
]


def children(key: SearchKey) -> tuple[SearchKey, ...]:
    """The keys ``key`` combines (none for a leaf)."""
    if isinstance(key, (And, Or)):
        return key.keys
    if isinstance(key, Not):
        return (key.key,)
    return ()


# Keys that take no argument, and what each stands for.
_SIMPLE_KEYS: dict[str, SearchKey] = {
    "ALL": All(),
    "ANSWERED": Flag("\\Answered"),
    "DELETED": Flag("\\Deleted"),
    "DRAFT": Flag("\\Draft"),
    "FLAGGED": Flag("\\Flagged"),
    "SEEN": Flag("\\Seen"),
    "RECENT": Recent(),
    "UNANSWERED": Not(Flag("\\Answered")),
    "UNDELETED": Not(Flag("\\Deleted")),
    "UNDRAFT": Not(Flag("\\Draft")),
    "UNFLAGGED": Not(Flag("\\Flagged")),
    "UNSEEN": Not(Flag("\\Seen")),
    # RFC 3501 6.4.4: NEW is (RECENT UNSEEN); OLD is NOT RECENT.
    "NEW": And((Recent(), Not(Flag("\\Seen")))),
    "OLD": Not(Recent()),
}

_ENVELOPE_FIELDS = {
    "BCC": "Bcc", "CC": "Cc", "FROM": "From", "SUBJECT": "Subject", "TO": "To",
}

_DATE_KEYS = {
    "BEFORE": (InternalDate, "before"),
    "ON": (InternalDate, "on"),
    "SINCE": (InternalDate, "since"),
    "SENTBEFORE": (SentDate, "before"),
    "SENTON": (SentDate, "on"),
    "SENTSINCE": (SentDate, "since"),
}


# RFC 3501 9: quoted = DQUOTE *QUOTED-CHAR DQUOTE, escapes only \\ and \".
_QUOTED = re.compile(rb'"((?:[^"\\\r\n]|\\["\\])*)"')
# A literal (RFC 7888 LITERAL+ too) with its data already in the line.
_LITERAL = re.compile(rb"\{([0-9]{1,10})\+?\}\r\n")
_ATOM = re.compile(rb'[^ ()"{\x00-\x1f\x7f]+')


def tokenize_search(line: bytes, max_depth: int = 100) -> list:
    """
    Split SEARCH criteria into tokens: ``bytes`` for atoms, quoted strings
    and literals (given inline as ``{n}\\r\\n`` and n octets), a nested
    ``list`` per parenthesised group: the shapes ``parse_search`` takes.

    A replacement for Twisted's ``parseNestedParens``, which recurses once
    per parenthesis (so deep nesting ends in ``RecursionError``), accepts
    ``{-1}`` and reads ``x"y"`` as two tokens.
    """
    stack: list[list] = [[]]
    position = 0
    while position < len(line):
        char = line[position:position + 1]
        if char == b" ":
            position += 1
            continue
        if char == b"(":
            # The same count as parse_search: the top level is the first.
            if len(stack) >= max_depth:
                raise SearchSyntaxError(f"search criteria nested deeper than {max_depth}")
            stack.append([])
            stack[-2].append(stack[-1])
            position += 1
            continue
        if char == b")":
            if len(stack) == 1:
                raise SearchSyntaxError("unbalanced ')'")
            stack.pop()
            position += 1
        elif char == b'"':
            match = _QUOTED.match(line, position)
            if match is None:
                raise SearchSyntaxError("unterminated or malformed quoted string")
            stack[-1].append(re.sub(rb'\\(["\\])', rb"\1", match[1]))
            position = match.end()
        elif char == b"{":
            match = _LITERAL.match(line, position)
            if match is None or match.end() + int(match[1]) > len(line):
                raise SearchSyntaxError("malformed literal")
            position = match.end() + int(match[1])
            stack[-1].append(line[match.end():position])
        else:
            match = _ATOM.match(line, position)
            if match is None:
                raise SearchSyntaxError(f"unexpected character {_show(char)}")
            stack[-1].append(match[0])
            position = match.end()
        if line[position:position + 1] not in (b"", b" ", b")"):
            raise SearchSyntaxError("search keys must be separated by spaces")
    if len(stack) != 1:
        raise SearchSyntaxError("unbalanced '('")
    return stack[0]


class _Tokens:
    """
    One token list (the whole query, or one parenthesised group), and the
    codec of its strings.
    """

    def __init__(self, tokens: list, codec: str, saved: SequenceSet | None = None) -> None:
        self.tokens = tokens
        self.codec = codec
        self.saved = saved
        self.position = 0

    def string(self, wanted: str) -> str:
        return _string(self.next(wanted), self.codec)

    def exhausted(self) -> bool:
        return self.position >= len(self.tokens)

    def next(self, wanted: str):
        if self.exhausted():
            raise SearchSyntaxError(f"missing {wanted}")
        token = self.tokens[self.position]
        self.position += 1
        return token


@attrs.define
class _Pending:
    """A key still collecting its operands while parsing."""

    kind: str  # "group", "not" or "or"
    tokens: _Tokens
    operands: list = attrs.Factory(list)


def parse_search(tokens, max_depth: int = 100, max_keys: int = 10_000, codec: str = "utf-8",
                 saved: SequenceSet | None = None) -> SearchKey:
    """
    Build the key tree for a SEARCH command's criteria, their strings
    decoded with ``codec`` (``search_codec``).  ``saved`` is the UIDs of
    SEARCHRES's ``$`` (RFC 5182 2.1), which stands for them as a key and
    after UID; without it ``$`` is a syntax error.

    ``max_depth`` bounds the nesting of groups, NOT and OR together;
    ``max_keys`` the number of keys.  Raises ``SearchSyntaxError`` for
    anything malformed: unknown key, missing or bad argument, empty group.
    """
    if not isinstance(tokens, list):
        raise SearchSyntaxError("search criteria must be a list of tokens")
    if not tokens:
        raise SearchSyntaxError("missing search key")
    stack = [_Pending("group", _Tokens(tokens, codec, saved))]
    keys = 0
    while True:
        pending = stack[-1]
        if pending.kind == "group" and pending.tokens.exhausted():
            stack.pop()
            if not pending.operands:
                raise SearchSyntaxError("empty parenthesised list")
            operands = pending.operands
            key = operands[0] if len(operands) == 1 else And(tuple(operands))
        elif pending.kind == "not" and len(pending.operands) == 1:
            stack.pop()
            key = Not(pending.operands[0])
        elif pending.kind == "or" and len(pending.operands) == 2:
            stack.pop()
            key = Or(tuple(pending.operands))
        else:
            token = pending.tokens.next(
                "search key" if pending.kind == "group"
                else f"search key after {pending.kind.upper()}"
            )
            keys += 1
            if keys > max_keys:
                raise SearchSyntaxError(f"more than {max_keys} search keys")
            if isinstance(token, list):
                kind, nested = "group", _Tokens(token, codec, pending.tokens.saved)
            else:
                name = _atom(token).upper()
                if name in ("NOT", "OR"):
                    kind, nested = name.lower(), pending.tokens
                else:
                    pending.operands.append(_leaf(name, pending.tokens))
                    continue
            if len(stack) >= max_depth:
                raise SearchSyntaxError(
                    f"search criteria nested deeper than {max_depth}"
                )
            stack.append(_Pending(kind, nested))
            continue
        if not stack:
            return key
        stack[-1].operands.append(key)


def _leaf(name: str, tokens: _Tokens) -> SearchKey:
    if name in _SIMPLE_KEYS:
        return _SIMPLE_KEYS[name]
    if name in _ENVELOPE_FIELDS:
        return HeaderContains(_ENVELOPE_FIELDS[name], tokens.string(f"string after {name}"))
    if name == "HEADER":
        field = tokens.string("field name after HEADER")
        return HeaderContains(field, tokens.string("string after HEADER"))
    if name == "BODY":
        return BodyContains(tokens.string("string after BODY"))
    if name == "TEXT":
        return TextContains(tokens.string("string after TEXT"))
    if name in ("KEYWORD", "UNKEYWORD"):
        keyword = _string(tokens.next(f"flag after {name}"))
        if not keyword:
            raise SearchSyntaxError(f"empty flag after {name}")
        return Flag(keyword) if name == "KEYWORD" else Not(Flag(keyword))
    if name in _DATE_KEYS:
        key_type, comparison = _DATE_KEYS[name]
        return key_type(comparison, _date(tokens.next(f"date after {name}")))
    if name == "LARGER":
        return Larger(_number(tokens.next("number after LARGER")))
    if name == "SMALLER":
        return Smaller(_number(tokens.next("number after SMALLER")))
    if name == "UID":
        uids = tokens.next("UID set after UID")
        if uids == b"$" and tokens.saved is not None:
            return Uids(tokens.saved)
        return Uids(_sequence_set(uids))
    if name == "$" and tokens.saved is not None:
        # RFC 5182 2.1: the saved messages, kept as UIDs.
        return Uids(tokens.saved)
    if name == "MODSEQ":
        return _modseq_key(tokens)
    if name[:1] == "*" or name[:1].isdigit():
        return SequenceNumbers(_sequence_set(name))
    raise SearchSyntaxError(f"unknown search key {_show(name)}")


# RFC 7162 7: mod-sequence-valzer is 0 to 2^63 - 1.
_MAX_MODSEQ = 2**63 - 1


def _modseq_key(tokens: _Tokens) -> ModSeq:
    """
    ``MODSEQ [entry-name entry-type-req] mod-sequence-valzer``: we keep one
    mod-sequence per message, so RFC 7162 3.1.5 has us ignore the entry.
    """
    token = tokens.next("mod-sequence after MODSEQ")
    if not (isinstance(token, (bytes, str)) and _ascii_digits(_atom(token, "bad mod-sequence"))):
        _string(token)
        entry_type = _atom(tokens.next("entry type after MODSEQ entry name"), "bad entry type")
        if entry_type.lower() not in ("priv", "shared", "all"):
            raise SearchSyntaxError(f"bad entry type {_show(entry_type)}")
        token = tokens.next("mod-sequence after MODSEQ entry type")
    text = _atom(token, "bad mod-sequence")
    if not (_ascii_digits(text) and len(text) <= 19 and int(text) <= _MAX_MODSEQ):
        raise SearchSyntaxError(f"bad mod-sequence {_show(text)}")
    return ModSeq(int(text))


def _atom(token, refusal: str = "unknown search key") -> str:
    """A token as text: key names, numbers, dates and sets are ASCII."""
    if token is None:
        return "NIL"
    if isinstance(token, bytes):
        if not token.isascii():
            raise SearchSyntaxError(f"{refusal} {_show(token)}")
        return token.decode("ascii")
    if isinstance(token, str):
        if not token.isascii():
            raise SearchSyntaxError(f"{refusal} {_show(token)}")
        return token
    raise SearchSyntaxError("unexpected parenthesised list"
                            if isinstance(token, list) else
                            f"unexpected token {_show(token)}")


def _string(token, codec: str = "utf-8") -> str:
    """An astring argument, decoded with the codec of the charset."""
    if token is None:
        return "NIL"
    if isinstance(token, str):
        return token
    if isinstance(token, bytes):
        try:
            return token.decode(codec)
        except UnicodeDecodeError:
            raise SearchSyntaxError(f"search string is not valid {codec.upper()}") from None
    raise SearchSyntaxError("expected a string, got a parenthesised list"
                            if isinstance(token, list) else
                            f"unexpected token {_show(token)}")


def _date(token) -> datetime.date:
    text = _atom(token, "bad date")
    try:
        return parse_date(text.encode("ascii"))
    except BadDateTime:
        raise SearchSyntaxError(
            f"bad date {_show(text)}: expected a date like 1-Feb-1994"
        ) from None


def _number(token) -> int:
    """RFC 3501 9: number = 1*DIGIT, an unsigned 32-bit value."""
    text = _atom(token, "bad number")
    if not (_ascii_digits(text) and len(text) <= 10 and int(text) <= MAX_NUMBER):
        raise SearchSyntaxError(f"bad number {_show(text)}")
    return int(text)


def _sequence_set(token) -> SequenceSet:
    try:
        return parse_sequence_set(_atom(token, "bad sequence set"))
    except SequenceSetError as error:
        raise SearchSyntaxError(str(error)) from None


def _ascii_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
