"""
Parse a message once: IMAP ENVELOPE, BODY and BODYSTRUCTURE wire forms and
the byte offsets of every MIME part, which the store keeps in its index
(DESIGN.md, "Performance rules").

Pure: no Twisted.  The rules follow Dovecot 2.3's lib-mail and lib-imap, so a
mailbox moved from Dovecot shows clients the same structures: the CRLF before
a boundary line belongs to the boundary, any enclosing boundary (longest
prefix match) ends a part, Content-* headers count only in MIME parts, header
values go out raw (RFC 2047 words not decoded), and broken input gives a
structure, never an exception.

Hostile mail is bounded as in Dovecot's message-parser: at most 100 levels of
nesting (a deeper multipart or message/rfc822 is an opaque leaf) and 10,000
parts; the part that reaches the budget runs to the end of the message, its
boundaries unread, so BODYSTRUCTURE stays small and every byte still belongs
to some part.

The message is read in chunks: only headers (the first megabyte of each) are
held in memory, bodies are only searched for boundary lines, and lines are
found by regular expressions over whole chunks, so the work per chunk is C
work, whatever the number of lines (L{gateway.mail.mimescan}).  Header
syntax (addresses, parameters, IMAP strings) is in L{gateway.mail.header},
fields in L{gateway.mail.fields}.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator

from gateway.mail.fields import (
    MESSAGE_FIELDS,
    MIME_FIELDS,
    first_fields,
    header_fields,
    header_values,
)
from gateway.mail.header import (
    Rfc822Parser,
    envelope,
    languages,
    nstring,
    param,
    parameters,
)
from gateway.mail.mimescan import Reader
from gateway.store.model import MessageStructure, Part

__all__ = [
    "MAX_DEPTH", "MAX_PARTS", "content_coding", "crlf_chunks", "crlf_throughout", "find_part",
    "header_fields", "header_values", "parse", "parse_bytes", "section_range",
]

# Dovecot's message_parser limits (max_nested_mime_parts,
# max_total_mime_parts), counting the message itself as a part.
MAX_DEPTH = 100
MAX_PARTS = 10000


class _Node:
    __slots__ = (
        "header_start", "body_start", "end", "lines", "kind", "children",
        "header", "envelope", "type", "subtype", "params", "id", "description",
        "encoding", "md5", "disposition", "disposition_params", "language",
        "location", "part",
    )

    def __init__(self, header_start):
        self.header_start = header_start
        self.kind = "leaf"
        self.children = []
        self.envelope = None
        self.type = self.subtype = self.params = None
        self.id = self.description = self.encoding = self.md5 = None
        self.disposition = self.disposition_params = None
        self.language = self.location = None

    def content_type(self):
        if self.kind == "message":
            return "message/rfc822"
        if self.type is None:
            return "text/plain"
        return f"{self.type}/{self.subtype}".lower()


class _Parser:
    def __init__(self, fileobj):
        self._reader = Reader(fileobj)
        self._parts = 0

    def parse(self):
        root, _ = self._entity(0, [], 0, message=True, mime=False, digest=False)
        return root

    def _entity(self, start, bounds, depth, message, mime, digest):
        """Parse one entity (header and body) that begins at ``start``."""
        reader = self._reader
        self._parts += 1
        # Dovecot: once the budget is spent no boundary is recognised, so
        # this part's header and body run on to the end of the message.
        overflow = self._parts >= MAX_PARTS
        if overflow:
            bounds = []
        node = _Node(start)
        node.header, stop = reader.read_header(bounds)
        # Dovecot writes the Subject as it came: a folded one goes out as a
        # literal, its line breaks removed (imap_append_string_for_humans).
        fields = first_fields(node.header, MESSAGE_FIELDS if message else MIME_FIELDS,
                              folded=("subject",))
        if fields:
            _content(node, fields, mime)
        if message:
            node.envelope = fields
        if node.type is None and digest:
            # RFC 2046 5.1.5: in a digest the default is message/rfc822.
            node.type, node.subtype = "message", "rfc822"
        container = depth + 1 < MAX_DEPTH and not overflow
        ctype = node.content_type()
        if stop is not None:
            # The header was cut by a delimiter line; the [CR]LF before it
            # belongs to the delimiter (RFC 2046 5.1.1).
            node.body_start = max(start, stop.line_start - stop.newline)
        else:
            node.body_start = reader.offset
        body_lf = reader.lf
        if ctype.startswith("multipart/"):
            boundary = param(node.params, "boundary")
            if stop is None and boundary and container:
                node.kind = "multipart"
                stop = self._multipart(node, boundary.encode("latin-1"), bounds, depth,
                                       ctype == "multipart/digest")
            else:
                # Dovecot: too deep to open, it is a leaf of its own type;
                # without a boundary (or over the budget) a multipart with
                # no parts.
                if not (boundary and stop is None and not overflow):
                    node.kind = "multipart"
                if stop is None:
                    stop = reader.scan(bounds)
        elif ctype == "message/rfc822" and container:
            node.kind = "message"
            child, stop = self._entity(node.body_start, bounds, depth + 1,
                                       message=True, mime=False, digest=False)
            node.children.append(child)
        elif stop is None:
            stop = reader.scan(bounds)
        if stop is None:
            node.end, end_lf = reader.offset, reader.lf
        else:
            node.end = stop.line_start - stop.newline
            end_lf = stop.lf - (1 if stop.newline else 0)
        if node.end <= node.body_start:
            node.end, end_lf = node.body_start, body_lf
        node.lines = end_lf - body_lf
        node.part = Part(node.header_start, node.body_start, node.end, ctype,
                         tuple(child.part for child in node.children))
        return node, stop

    def _multipart(self, node, boundary, bounds, depth, digest):
        reader = self._reader
        mine = len(bounds)
        bounds.append(boundary)
        stop = reader.scan(bounds)  # the preamble
        while stop is not None and stop.index == mine and not stop.closing:
            reader.skip_line()
            child, stop = self._entity(reader.offset, bounds, depth + 1,
                                       message=False, mime=True, digest=digest)
            node.children.append(child)
        del bounds[mine:]
        if stop is not None and stop.index == mine:
            reader.skip_line()
            stop = reader.scan(bounds)  # the epilogue
        return stop


def _content(node, fields, mime):
    """Fill the Content-* data of ``node`` from its first fields."""
    get = fields.get
    if "mime-version" in fields:
        mime = True
    value = get("content-type")
    if value is not None:
        mime = True
        _content_type(node, value)
    value = get("content-transfer-encoding")
    if value is not None:
        parser = Rfc822Parser(value)
        parser.skip_lwsp()
        node.encoding = parser.mime_token()[1] or None
    node.id = get("content-id")
    node.md5 = get("content-md5")
    node.description = get("content-description")
    node.location = get("content-location")
    value = get("content-language")
    if value is not None:
        node.language = languages(value)
    value = get("content-disposition")
    if value is not None:
        parser = Rfc822Parser(value)
        parser.skip_lwsp()
        ret, token = parser.mime_token()
        if ret >= 0 and token:
            node.disposition = token
            node.disposition_params = parameters(parser)
    if not mime:
        # Dovecot: without Mime-Version (or Content-Type) the Content-*
        # headers are not MIME and are ignored.
        node.id = node.description = node.encoding = node.md5 = None
        node.disposition = node.disposition_params = None
        node.language = node.location = None


def _content_type(node, value):
    parser = Rfc822Parser(value)
    if parser.skip_lwsp() <= 0:
        return
    ret, main = parser.mime_token()
    if ret <= 0 or parser.peek() != "/":
        return
    parser.i += 1
    if parser.skip_lwsp() <= 0:
        return
    ret, sub = parser.mime_token()
    if ret < 0 or not main or not sub:
        return
    node.type, node.subtype = main, sub
    node.params = parameters(parser)


_DEFAULT_PARAMS = '("charset" "us-ascii")'
_EMPTY_BODY = '("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0'


def _params(params, text):
    if not params:
        return _DEFAULT_PARAMS if text else "NIL"
    pairs = [f"{nstring(key)} {nstring(value)}" for key, value in params]
    if text and param(params, "charset") is None:
        pairs.append('"charset" "us-ascii"')
    return "(" + " ".join(pairs) + ")"


def _extension(node):
    if node.disposition is None:
        disposition = "NIL"
    else:
        disposition = "(%s %s)" % (
            nstring(node.disposition), _params(node.disposition_params, False))
    if node.language is None:
        language = "NIL"
    else:
        language = "(" + " ".join(map(nstring, node.language)) + ")"
    return f"{disposition} {language} {nstring(node.location)}"


def _write(node, body, structure):
    """
    Append the RFC 3501 7.4.2 BODY of ``node`` to the list ``body`` and its
    BODYSTRUCTURE to ``structure``: one walk, as the two share all but the
    extension data.
    """
    body.append("(")
    structure.append("(")
    if node.kind == "multipart":
        if node.children:
            for child in node.children:
                _write(child, body, structure)
        else:
            # No parts at all is not MIME; Dovecot shows one empty text part.
            body.append(_EMPTY_BODY + ")")
            structure.append(_EMPTY_BODY + " NIL NIL NIL NIL)")
        subtype = " " + nstring(node.subtype)
        body.append(subtype + ")")
        structure.append("%s %s %s)" % (subtype, _params(node.params, False), _extension(node)))
        return
    if node.kind == "message":
        text = False
        head = '"message" "rfc822"'
    elif node.type is None:
        text = True
        head = '"text" "plain"'
    elif node.content_type().startswith("multipart/") or node.content_type() == "message/rfc822":
        # Dovecot 2.3.19: a multipart or message left unopened (too deep,
        # or past the part budget) is opaque data that keeps its parameters.
        text = False
        head = '"application" "octet-stream"'
    else:
        text = node.type.lower() == "text"
        head = f"{nstring(node.type)} {nstring(node.subtype)}"
    head = "%s %s %s %s %s %d" % (
        head, _params(node.params, text), nstring(node.id), nstring(node.description),
        nstring(node.encoding or "7bit"), node.end - node.body_start)
    if text:
        head += " %d" % node.lines
    body.append(head)
    structure.append(head)
    if node.kind == "message":
        message = node.children[0]
        inner = " " + envelope(message.envelope) + " "
        body.append(inner)
        structure.append(inner)
        _write(message, body, structure)
        lines = " %d" % node.lines
        body.append(lines)
        structure.append(lines)
    body.append(")")
    structure.append(" %s %s)" % (nstring(node.md5), _extension(node)))


def content_coding(header: bytes) -> tuple[str | None, str | None]:
    """
    (Content-Transfer-Encoding, charset) of a leaf part, from its header
    block, to decode its body for SEARCH.  As Dovecot's message decoder
    (and unlike BODYSTRUCTURE), the transfer encoding counts even without
    MIME-Version: mail that says it is base64 is searched decoded.
    """
    node = _Node(0)
    _content(node, first_fields(header, MIME_FIELDS), True)
    return node.encoding, param(node.params, "charset")


def parse(fileobj) -> MessageStructure:
    """
    Parse the message in the binary file ``fileobj`` (positioned at its
    start, CRLF line endings) into its L{MessageStructure}.  Never raises on
    malformed input; reads the file once, in chunks.
    """
    root = _Parser(fileobj).parse()
    body, structure = [], []
    _write(root, body, structure)
    return MessageStructure(
        envelope=envelope(root.envelope).encode("latin-1"),
        body="".join(body).encode("latin-1"),
        bodystructure="".join(structure).encode("latin-1"),
        header=root.header,
        root=root.part,
    )


def parse_bytes(data: bytes) -> MessageStructure:
    return parse(io.BytesIO(data))


def find_part(root: Part, section: tuple[int, ...]) -> Part | None:
    """
    The part that an IMAP section number names (RFC 3501 6.4.5): ``()`` is
    the message; part 1 of a non-multipart message is its body (the message
    Part itself); the parts of a message/rfc822 part are those of the
    message it encapsulates.
    """
    node = root
    is_message = True
    for depth, number in enumerate(section):
        if depth:
            if node.content_type == "message/rfc822":
                if not node.children:
                    return None
                node = node.children[0]
                is_message = True
            elif not node.content_type.startswith("multipart/"):
                return None
        if node.content_type.startswith("multipart/"):
            if not 1 <= number <= len(node.children):
                return None
            node = node.children[number - 1]
        elif not (is_message and number == 1):
            return None
        is_message = False
    return node


def section_range(root: Part, section: tuple[int, ...],
                  text: str | None) -> tuple[int, int] | None:
    """
    Byte range (start, end) in the stored message of FETCH BODY[section]
    (RFC 3501 6.4.5), or None if there is no such section.

    ``text`` is None (the part's body; the whole message for ``()``),
    ``"HEADER"`` or ``"TEXT"`` (of the message, or of the message a
    message/rfc822 part holds), or ``"MIME"`` (the MIME header of a
    numbered part).  ``"HEADER.FIELDS"`` and ``"HEADER.FIELDS.NOT"`` give
    the HEADER range, for L{header_fields} to filter.
    """
    part = find_part(root, section)
    if part is None:
        return None
    if text is None:
        if not section:
            return part.header_start, part.end
        return part.body_start, part.end
    text = text.upper()
    if text == "MIME":
        if not section:
            return None
        return part.header_start, part.body_start
    if text not in ("HEADER", "TEXT", "HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        return None
    if section:
        # RFC 3501 6.4.5: only a message/rfc822 part has a HEADER and TEXT.
        if part.content_type != "message/rfc822" or not part.children:
            return None
        part = part.children[0]
    if text == "TEXT":
        return part.body_start, part.end
    return part.header_start, part.body_start


def crlf_chunks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """
    Turn chunks with LF, CRLF or lone CR line endings into CRLF ones.  A CR
    that ends one chunk is held back until the next shows whether an LF
    follows it.
    """
    held_cr = False
    for chunk in chunks:
        if not chunk:
            continue
        if held_cr:
            chunk = b"\r" + chunk
        held_cr = chunk.endswith(b"\r")
        if held_cr:
            chunk = chunk[:-1]
        if crlf_throughout(chunk):
            # As from LMTP and most MUAs: checking is far cheaper than three
            # copying replaces.
            if chunk:
                yield chunk
            continue
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        chunk = chunk.replace(b"\n", b"\r\n")
        if chunk:
            yield chunk
    if held_cr:
        yield b"\r\n"


def crlf_throughout(data: bytes) -> bool:
    """
    Whether every CR in ``data`` is followed by an LF and every LF follows
    a CR.  Each CRLF holds one CR and one LF of its own, so that is when the
    CRs and LFs together are twice the CRLFs: two passes in C (a two-byte
    count and a one-pass delete) where counting CR, LF and CRLF takes three.
    """
    return len(data) - len(data.translate(None, b"\r\n")) == 2 * data.count(b"\r\n")
