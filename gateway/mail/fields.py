"""
The fields of a header block, as stored: finding fields by name with their
continuation lines (FETCH BODY[HEADER.FIELDS], ENVELOPE and Content-*
fields at delivery), unfolding (RFC 5322 2.2.3) and RFC 2047 decoding for
SEARCH.

Fields are found by regular expressions over the whole block, lower-cased
(ASCII only, as IMAP and RFC 5322 compare names), so a header of a million
small fields costs a scan, not a million Python steps.  A line
that begins with a blank continues the field before it, as in Dovecot's
header parser.

Pure: no Twisted.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Sequence

from gateway.mail.decode import text_codec

ENVELOPE_HEADERS = frozenset(
    {"date", "subject", "from", "sender", "reply-to", "to", "cc", "bcc",
     "in-reply-to", "message-id"}
)


def unfold(raw):
    """RFC 5322 2.2.3: drop the line breaks, keep the whitespace after them."""
    return raw.replace(b"\r\n", b"").replace(b"\n", b"")


# What ENVELOPE and BODYSTRUCTURE read: of a message header, and of a MIME
# part header (RFC 2045 3: only Content-* fields and MIME-Version count).
MIME_FIELDS = (
    "content-type", "content-transfer-encoding", "content-id", "content-md5",
    "content-description", "content-location", "content-language",
    "content-disposition", "mime-version",
)
MESSAGE_FIELDS = tuple(sorted(ENVELOPE_HEADERS)) + MIME_FIELDS

# A field's value: the rest of its first line after the colon and the
# blanks that follow it, then every continuation line (RFC 5322 2.2.3).
_VALUE = re.compile(rb"[ \t]*([^\n]*\n?(?:[ \t][^\n]*\n?)*)")


def _lowered(names):
    """``names`` as bytes, lower-cased: fields are matched in a lower-cased
    copy of the header, which is what ASCII case-insensitive matching
    means, and lets the engine skip from line break to line break."""
    return [name.lower().encode("latin-1", "replace").lower() for name in names]


@functools.lru_cache(maxsize=64)
def _named(names):
    """Field lines, in "\n" + the lower-cased block, whose name is one of
    ``names``; group N is names[N-1]."""
    return re.compile(
        rb"\n(?:" + b"|".join(b"(%s)" % re.escape(name) for name in _lowered(names)) + rb")[ \t]*:")


@functools.lru_cache(maxsize=64)
def _spanned(names):
    """
    Over "\n" + the lower-cased header: the blank line that ends the
    fields, or a field line whose name is one of ``names`` (as they came:
    lower-casing and duplicates are settled here, once per set), with
    group 1 its value up to the line break that ends it.  A name holding
    a blank line never names a field, and would reach past the fields.
    """
    wanted = [name for name in _lowered(dict.fromkeys(name.lower() for name in names))
              if b"\n\n" not in name and b"\n\r\n" not in name]
    # No names: no field matches (and "" is a name, of lines starting ":").
    alternatives = b"|".join(map(re.escape, wanted)) if wanted else rb"(?!)"
    value = rb"([^\n]*(?:\n[ \t][^\n]*)*)"
    if any(name[:1] in b" \t" for name in wanted):
        # A name that a continuation line can start with (one beginning
        # with a blank, or "") finds fields inside another field's value:
        # the scan goes on after the colon, the value is only looked at.
        value = rb"(?=" + value + rb")"
    # The blank line takes the rest, so that the scan ends there; it is
    # tried first, and spelled as two literals, which the engine rejects
    # at a glance on every other line.
    return re.compile(rb"\n(?:\r\n[\s\S]*|\n[\s\S]*|(?:" + alternatives + rb")[ \t]*:" + value + rb")")


_BLANK_LINE = re.compile(rb"\n\r?\n")


def _fields_part(header):
    """The header up to the blank line that ends it: the first line that
    is "\r\n" or "\n"."""
    blank = _BLANK_LINE.search(b"\n" + header)
    return header if blank is None else header[:blank.start()]


def first_fields(header, names, folded=()):
    """
    The first value of each field of ``names`` (lower-case names) in the
    header block ``header``: unfolded, leading blanks dropped, as latin-1
    text so that every byte survives to the wire unchanged.  The values of
    the names in ``folded`` keep their line breaks (but not the last).

    A line that begins with a blank continues the field before it (RFC 5322
    2.2.3), as in Dovecot's header parser.  Fields are found by one regular
    expression over the block, so a header of a million small fields costs
    a scan, not a million Python steps.
    """
    if len(header) <= 2:
        return {}  # a blank line: no fields
    fields = _fields_part(header)
    found = {}
    # Offsets in the text searched are one past those in ``fields``.
    for match in _named(names).finditer(b"\n" + fields.lower()):
        name = names[match.lastindex - 1]
        if name not in found:
            value = _VALUE.match(fields, match.end() - 1)[1]
            value = value.rstrip(b"\r\n") if name in folded else unfold(value)
            found[name] = value.decode("latin-1")
            if len(found) == len(names):
                break
    return found


def _field_spans(header, names):
    """
    The fields of ``header`` named in ``names``, as matches whose start()
    and end(1) are where the field and its continuation lines are in
    ``header``; and where the fields end (the blank line).
    """
    # Offsets in the text searched are one past those in ``header``: the
    # "\n" a match starts with stands where the line does, and the value
    # ends where the line break after it does (one past the end of
    # ``header`` when its last line has none, which slicing forgives).
    matches = list(_spanned(names).finditer(b"\n" + header.lower()))
    if matches and matches[-1].end(1) < 0:
        return matches, matches.pop().start()
    return matches, len(header)


def header_fields(header: bytes, names: Sequence[str], exclude: bool) -> bytes:
    """
    BODY[HEADER.FIELDS (names)] (or .NOT when ``exclude``): the matching
    fields with their continuation lines, in order, then the blank line
    (RFC 3501 6.4.5 includes it).  Matching is case-insensitive, exact.
    """
    matches, end = _field_spans(header, tuple(names))
    if exclude:
        out, pos = [], 0
        for match in matches:
            out.append(header[pos:match.start()])
            pos = match.end(1)
        out.append(header[pos:end])
    else:
        out = [header[match.start():match.end(1)] for match in matches]
    out.append(b"\r\n")
    return b"".join(out)


_ENCODED_WORD = re.compile(rb"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_QP_HEX = re.compile(rb"=([0-9A-Fa-f]{2})")


def _decode_word(match):
    charset, encoding, payload = match.groups()
    # RFC 2231 5: a language may follow the charset after "*".
    codec = text_codec(charset.split(b"*", 1)[0].decode("ascii", "replace"))
    if codec is None:
        return None
    try:
        if encoding in b"bB":
            raw = base64.b64decode(payload + b"=" * (-len(payload) % 4))
        else:
            raw = _QP_HEX.sub(lambda m: bytes([int(m.group(1), 16)]),
                              payload.replace(b"_", b" "))
    except (binascii.Error, ValueError):
        return None
    return raw.decode(codec, "replace")


def decode_2047(raw: bytes) -> str:
    """RFC 2047: decode encoded-words; whitespace between two of them goes
    (6.2); undecodable words and the text around stay as they are (8-bit
    text as UTF-8)."""
    out = []
    pos = 0
    last_was_word = False
    for match in _ENCODED_WORD.finditer(raw):
        between = raw[pos:match.start()]
        decoded = _decode_word(match)
        if decoded is None:
            out.append((between + match.group(0)).decode("utf-8", "replace"))
            last_was_word = False
        else:
            if not (last_was_word and not between.strip(b" \t")):
                out.append(between.decode("utf-8", "replace"))
            out.append(decoded)
            last_was_word = True
        pos = match.end()
    out.append(raw[pos:].decode("utf-8", "replace"))
    return "".join(out)


def header_values(header: bytes, name: str) -> list[str]:
    """
    Every value of the header field ``name``, unfolded, trimmed and with
    RFC 2047 encoded-words decoded: what header SEARCH matches against.
    """
    return [decode_2047(raw) for raw in raw_header_values(header, name)]


def raw_header_values(header: bytes, name: str) -> list[bytes]:
    """Every value of the header field ``name``, unfolded and trimmed, not decoded."""
    values = []
    for match in _field_spans(header, (name,))[0]:
        raw = unfold(header[match.start():match.end(1)])
        values.append(raw[raw.find(b":") + 1:].strip(b" \t"))
    return values


_CONTINUATION = re.compile(rb"\r?\n(?=[ \t])")


def header_text(header: bytes) -> str:
    """
    The fields of a header block as text, for SEARCH TEXT (RFC 3501 6.4.4):
    each field on a line of its own, unfolded, RFC 2047 words decoded.
    """
    return decode_2047(_CONTINUATION.sub(b"", _fields_part(header)))
