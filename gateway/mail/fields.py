"""
The fields of a header block, as stored: finding fields by name with their
continuation lines (FETCH BODY[HEADER.FIELDS], ENVELOPE and Content-*
fields at delivery), unfolding (RFC 5322 2.2.3) and RFC 2047 decoding for
SEARCH.

Fields are found by regular expressions over the whole block, so a header
of a million small fields costs a scan, not a million Python steps.  A line
that begins with a blank continues the field before it, as in Dovecot's
header parser.

Pure: no Twisted.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re

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
_BLANK_LINE = re.compile(rb"^\r?\n", re.MULTILINE)


@functools.lru_cache(maxsize=64)
def _named(names):
    """Field lines whose name is one of ``names``; group N is names[N-1]."""
    return re.compile(
        rb"^(?:" + b"|".join(b"(%s)" % re.escape(name.encode("latin-1", "replace")) for name in names)
        + rb")[ \t]*:",
        re.IGNORECASE | re.MULTILINE,
    )


def _fields_part(header):
    """The header up to the blank line that ends it."""
    blank = _BLANK_LINE.search(header)
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
    for match in _named(names).finditer(fields):
        name = names[match.lastindex - 1]
        if name not in found:
            value = _VALUE.match(fields, match.end())[1]
            value = value.rstrip(b"\r\n") if name in folded else unfold(value)
            found[name] = value.decode("latin-1")
            if len(found) == len(names):
                break
    return found


def _field_spans(header, names):
    """(start, end) of each field named in ``names``, with its continuation
    lines, in the fields part of ``header``."""
    fields = _fields_part(header)
    spans = []
    for match in _named(names).finditer(fields):
        spans.append((match.start(), _VALUE.match(fields, match.end()).end()))
    return fields, spans


def header_fields(header: bytes, names: list[str], exclude: bool) -> bytes:
    """
    BODY[HEADER.FIELDS (names)] (or .NOT when ``exclude``): the matching
    fields with their continuation lines, in order, then the blank line
    (RFC 3501 6.4.5 includes it).  Matching is case-insensitive, exact.
    """
    wanted = tuple(dict.fromkeys(name.lower() for name in names))
    if not wanted:
        fields, spans = _fields_part(header), []
    else:
        fields, spans = _field_spans(header, wanted)
    if exclude:
        out, pos = [], 0
        for start, end in spans:
            out.append(fields[pos:start])
            pos = end
        out.append(fields[pos:])
    else:
        out = [fields[start:end] for start, end in spans]
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
    fields, spans = _field_spans(header, (name.lower(),))
    values = []
    for start, end in spans:
        raw = unfold(fields[start:end])
        values.append(raw[raw.find(b":") + 1:].strip(b" \t"))
    return values


_CONTINUATION = re.compile(rb"\r?\n(?=[ \t])")


def header_text(header: bytes) -> str:
    """
    The fields of a header block as text, for SEARCH TEXT (RFC 3501 6.4.4):
    each field on a line of its own, unfolded, RFC 2047 words decoded.
    """
    return decode_2047(_CONTINUATION.sub(b"", _fields_part(header)))
