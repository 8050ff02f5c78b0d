"""
FETCH attributes (RFC 3501 6.4.5): parsing the request (``parse_fetch``),
planning the answer (``plan_fetch``: which items each message's answer
carries, in order, and what must be read for them) and naming the reply.

Pure: no Twisted.  Twisted's ``_FetchParser`` echoes a partial fetch as
``BODY[]<0.100>`` where RFC 3501 7.4.2 wants only the origin octet
(``BODY[]<0>``, Twisted issue 5613), answers parse errors with its exception
text, and cannot tell which items need the body file; this module replaces it.
"""

from __future__ import annotations

import functools
import re

import attrs

from gateway.imap import binary
from gateway.imap.sequence import MAX_NUMBER

SIMPLE = frozenset({
    "FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE",
    "BODY", "RFC822", "RFC822.HEADER", "RFC822.TEXT", "MODSEQ",
})

MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}

# Items that set \Seen when fetched (RFC 3501 6.4.5).
_SETS_SEEN = frozenset({"RFC822", "RFC822.TEXT"})


class FetchSyntaxError(ValueError):
    """The FETCH attribute list does not parse."""


@attrs.frozen
class Section:
    """
    ``BODY[part.text (fields)]<partial>``.  ``part`` holds 1-based part
    numbers; ``text`` is None, HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT
    or MIME.
    """

    peek: bool
    part: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()
    partial: tuple[int, int] | None = None

    def reply_name(self) -> bytes:
        """RFC 3501 7.4.2: the name echoed in the FETCH reply (no .PEEK)."""
        spec = ".".join(str(n) for n in self.part)
        if self.text:
            spec = (spec + "." if spec else "") + self.text
        if self.fields:
            spec += " (" + " ".join(self.fields) + ")"
        name = "BODY[" + spec + "]"
        if self.partial is not None:
            name += "<%d>" % self.partial[0]
        return name.encode("ascii")


# What a selected session knows of every message without the store.
_FROM_VIEW = frozenset({"UID", "FLAGS"})


def from_view(items) -> bool:
    """Whether the selected view alone answers ``items``: UID and FLAGS,
    each at most once (FETCH FLAGS of a whole mailbox, as clients resync)."""
    return len(set(items)) == len(items) and all(isinstance(i, str) and i in _FROM_VIEW for i in items)


def sets_seen(items) -> bool:
    # RFC 3516 4.1: BINARY[] as BODY[]; BINARY.SIZE reads without setting it.
    return any(
        (isinstance(i, Section) and not i.peek) or (isinstance(i, binary.BinarySection) and not i.peek)
        or i in _SETS_SEEN for i in items
    )


def needs_file(items) -> bool:
    """Whether answering ``items`` reads the message file (the stored header alone answers some)."""
    return any(section is not None and _reads_file(section[1]) for section in map(as_section, items))


def needs_structure(items) -> bool:
    # The whole message (BODY[], RFC822) is the file itself; BINARY finds
    # its part, even the whole message, in the structure.
    return any(
        (isinstance(i, Section) and (i.part or i.text)) or isinstance(i, binary.BinarySection)
        or i in ("ENVELOPE", "BODY", "BODYSTRUCTURE", "RFC822.HEADER", "RFC822.TEXT")
        for i in items
    )


_TOKEN = re.compile(rb"""\s*(\(|\)|"(?:[^"\\]|\\.)*"|[^\s()]+)""")
_BODY = re.compile(
    r"(BODY(?:\.PEEK)?)\[([0-9.]*?)\.?(HEADER\.FIELDS\.NOT|HEADER\.FIELDS|HEADER|TEXT|MIME)?\]"
    r"(?:<(\d+)\.(\d+)>)?$"
)


# Item lists parsed, and plans made, kept by what they came from: a client
# sends the same FETCH for every message it downloads.  Only small ones, so
# that what a process keeps stays small whatever clients send.
_KEPT = 256
_KEPT_SIZE = 1024


def parse_fetch(line: bytes) -> list:
    """
    The fetch-att list of FETCH: a list of names from L{SIMPLE} and
    L{Section}s; raises L{FetchSyntaxError}.
    """
    parse = _parse_fetch if len(line) <= _KEPT_SIZE else _parse_fetch.__wrapped__
    return list(parse(line))


@functools.lru_cache(maxsize=_KEPT)
def _parse_fetch(line: bytes) -> tuple:
    text = line.strip()
    if not text:
        raise FetchSyntaxError("missing fetch attributes")
    upper = text.upper().decode("ascii", "replace")
    if upper in MACROS:
        return tuple(MACROS[upper])
    if text.startswith(b"("):
        if not text.endswith(b")"):
            raise FetchSyntaxError("unbalanced parenthesis")
        text = text[1:-1]
    items = []
    position = 0
    while position < len(text):
        if text[position:position + 1].isspace():
            position += 1
            continue
        item, position = _parse_item(text, position)
        items.append(item)
    if not items:
        raise FetchSyntaxError("empty fetch attribute list")
    return tuple(items)


def _parse_item(text: bytes, position: int):
    match = re.compile(rb"[^\s\[\]()]+").match(text, position)
    if match is None:
        raise FetchSyntaxError("bad fetch attribute")
    name = match[0].decode("ascii", "replace").upper()
    position = match.end()
    if text[position:position + 1] != b"[":
        if name not in SIMPLE:
            raise FetchSyntaxError("unknown fetch attribute")
        return name, position
    if name in ("BINARY", "BINARY.PEEK", "BINARY.SIZE"):
        return _parse_binary(text, name, position)
    if name not in ("BODY", "BODY.PEEK"):
        raise FetchSyntaxError("unknown fetch attribute")
    close = text.find(b"]", position)
    if close < 0:
        raise FetchSyntaxError("missing ]")
    inside = text[position + 1:close]
    fields: tuple[str, ...] = ()
    paren = inside.find(b"(")
    if paren >= 0:
        if not inside.endswith(b")"):
            raise FetchSyntaxError("bad header field list")
        fields = tuple(_header_names(inside[paren + 1:-1]))
        if not fields:
            raise FetchSyntaxError("empty header field list")
        inside = inside[:paren].rstrip()
    end = close + 1
    partial = re.compile(rb"<(\d+)\.(\d+)>").match(text, end)
    if partial:
        end = partial.end()
    spec = (name + "[" + inside.decode("ascii", "replace").upper() + "]"
            + (partial[0].decode() if partial else ""))
    body = _BODY.fullmatch(spec)
    if body is None:
        raise FetchSyntaxError("bad section")
    if body[2] and not re.fullmatch(r"[1-9][0-9]{0,9}(\.[1-9][0-9]{0,9})*", body[2]):
        raise FetchSyntaxError("bad part number")
    part = tuple(_nz_number(n) for n in body[2].split(".")) if body[2] else ()
    section_text = body[3]
    if bool(fields) != (section_text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT")):
        raise FetchSyntaxError("header field list goes with HEADER.FIELDS")
    if section_text == "MIME" and not part:
        raise FetchSyntaxError("MIME needs a part number")
    length = None
    if body[4] is not None:
        length = (_number(body[4]), _number(body[5]))
        if length[1] == 0:
            raise FetchSyntaxError("partial length must be non-zero")
    return Section(
        peek=body[1] == "BODY.PEEK", part=part, text=section_text, fields=fields, partial=length
    ), end


def _parse_binary(text: bytes, name: str, position: int):
    """RFC 3516 2: ``BINARY[part]<partial>``, ``BINARY.PEEK[...]``, ``BINARY.SIZE[part]``."""
    match = re.compile(rb"\[[0-9.]*\](?:<[0-9]+\.[0-9]+>)?").match(text, position)
    if match is None:
        raise FetchSyntaxError("bad binary section")
    section = binary.parse_binary(name + match[0].decode("ascii"))
    if section is None:
        raise FetchSyntaxError("bad binary section")
    return section, match.end()


def _number(text: str) -> int:
    """RFC 3501 9: ``number`` is an unsigned 32-bit value."""
    if len(text) > 10 or int(text) > MAX_NUMBER:
        raise FetchSyntaxError("number out of range")
    return int(text)


def _nz_number(text: str) -> int:
    number = _number(text)
    if number == 0:
        raise FetchSyntaxError("bad part number")
    return number


def _header_names(text: bytes) -> list[str]:
    names = []
    for token in _TOKEN.findall(text):
        if token.startswith(b'"'):
            token = re.sub(rb"\\(.)", rb"\1", token[1:-1])
        if not re.fullmatch(rb"[!-9;-~]+", token):
            raise FetchSyntaxError("bad header field name")
        names.append(token.decode("ascii").upper())
    return names


def as_section(item) -> tuple[bytes, Section] | None:
    """(reply name, Section) for an item that carries message bytes, else None."""
    if item == "RFC822":
        return b"RFC822", Section(peek=False)
    if item == "RFC822.TEXT":
        return b"RFC822.TEXT", Section(peek=False, text="TEXT")
    if isinstance(item, Section):
        return item.reply_name(), item
    return None


def _reply_name(item):
    if isinstance(item, binary.BinarySection):
        return item.reply_name()
    section = as_section(item)
    return item if section is None else section[0]


def _reads_file(section: Section) -> bool:
    # The whole message's header, or fields of it, come from the stored structure.
    return not (section.part == () and section.text in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"))


def enables_condstore(items, changedsince: int | None) -> bool:
    """RFC 7162 3.1: FETCH of MODSEQ, or with CHANGEDSINCE, is a CONDSTORE enabling command."""
    return changedsince is not None or "MODSEQ" in items


@attrs.frozen
class FetchPlan:
    """
    The items each message's FETCH answer carries, in order; for each, the
    name its answer goes by and, for those that carry message bytes, its
    Section.  And what answering reads: the message's record, its stored
    structure, its file; whether it shows the flags, and any section.
    """

    items: tuple
    layout: tuple = attrs.field(init=False)
    wants_record: bool = attrs.field(init=False)
    wants_structure: bool = attrs.field(init=False)
    wants_file: bool = attrs.field(init=False)
    wants_flags: bool = attrs.field(init=False)
    wants_sections: bool = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        layout = []
        for item in self.items:
            section = as_section(item)
            if isinstance(item, binary.BinarySection):
                layout.append((item.reply_name(), item, None))
            elif section is None:
                layout.append((item.encode("ascii"), item, None))
            else:
                layout.append((section[0], item, section[1]))
        setattr_ = object.__setattr__
        setattr_(self, "layout", tuple(layout))
        setattr_(self, "wants_record", any(i in ("INTERNALDATE", "RFC822.SIZE", "MODSEQ") for i in self.items))
        setattr_(self, "wants_structure", needs_structure(self.items))
        binaries = any(isinstance(item, binary.BinarySection) for item in self.items)
        setattr_(self, "wants_file", binaries or any(
            section is not None and _reads_file(section) for _, _, section in layout))
        setattr_(self, "wants_flags", "FLAGS" in self.items)
        setattr_(self, "wants_sections", binaries or any(section is not None for _, _, section in layout))


def plan_fetch(
    items, *, by_uid: bool, condstore: bool, qresync: bool, changedsince: int | None = None,
    seen_set: bool = False,
) -> FetchPlan:
    """
    What a FETCH of ``items`` (``parse_fetch``) answers, by the RFCs' rules:

    - UID FETCH always answers with the UID (RFC 3501 6.4.8);
    - once CONDSTORE is on (``condstore``, after ``enables_condstore``),
      FLAGS go with their MODSEQ, as Dovecot does, and CHANGEDSINCE implies
      MODSEQ (RFC 7162 3.1.4.1);
    - a FETCH that set \\Seen (``seen_set``) answers with the new FLAGS
      (RFC 3501 6.4.5), and their MODSEQ under CONDSTORE;
    - under QRESYNC, a FETCH with MODSEQ carries the UID (RFC 7162 3.2.4);
    - an item asked for twice (``FLAGS UID FLAGS``, ``BODY[] BODY.PEEK[]``)
      is answered once: RFC 3501 7.4.2 names each data item of a response
      once, and clients keep one value per name.
    """
    items = tuple(items)
    # Header field names are the one part of an item of any size.
    small = len(items) <= _KEPT_SIZE and sum(len(name) for item in items
                                            for name in getattr(item, "fields", ())) <= _KEPT_SIZE
    plan = _plan_fetch if small else _plan_fetch.__wrapped__
    return plan(items, by_uid, condstore, qresync, changedsince is not None, seen_set)


@functools.lru_cache(maxsize=_KEPT)
def _plan_fetch(items: tuple, by_uid: bool, condstore: bool, qresync: bool, with_changedsince: bool,
                seen_set: bool) -> FetchPlan:
    once: dict = {}
    for item in items:
        once.setdefault(_reply_name(item), item)
    items = list(once.values())
    if by_uid and "UID" not in items:
        items.insert(0, "UID")
    if condstore and "MODSEQ" not in items and (with_changedsince or "FLAGS" in items):
        items.append("MODSEQ")
    if seen_set and "FLAGS" not in items:
        items.append("FLAGS")
        if condstore and "MODSEQ" not in items:
            items.append("MODSEQ")
    if qresync and "MODSEQ" in items and "UID" not in items:
        items.insert(0, "UID")
    return FetchPlan(tuple(items))
