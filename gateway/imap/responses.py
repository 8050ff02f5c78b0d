"""
IMAP server responses as values (RFC 3501 7): what a command decided to
say, apart from the bytes that say it.

Handlers and errors make these; the server's ``send`` is the one writer
(``encode`` gives the line without its CRLF), and it is there that a BAD
is counted against ``[limits] max_bad_commands`` and a command's time
ends: by the response chosen, never by reading bytes back.  FETCH, whose
answers stream message bodies, is ``gateway.imap.fetch_response``'s.

Pure: no Twisted.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from gateway.imap import wire
from gateway.imap.mailbox_names import encode_name

OK = b"OK"
NO = b"NO"
BAD = b"BAD"
BYE = b"BYE"


@attrs.frozen
class Tagged:
    """``tag OK|NO|BAD text``: a command's end (RFC 3501 7.1); ``text`` may open with a ``[code]``."""

    tag: bytes
    status: bytes
    text: bytes

    def encode(self) -> bytes:
        return self.tag + b" " + self.status + b" " + self.text


@attrs.frozen
class Condition:
    """``* OK|NO|BAD|BYE text`` (RFC 3501 7.1): a status not tied to a command."""

    status: bytes
    text: bytes

    def encode(self) -> bytes:
        return b"* " + self.status + b" " + self.text


def answer(tag: bytes | None, status: bytes, text: bytes) -> Tagged | Condition:
    """A command's status response; untagged when its tag could not be read."""
    return Condition(status, text) if tag is None else Tagged(tag, status, text)


@attrs.frozen
class Continuation:
    """``+ text``: the server waits for more from the client (RFC 3501 7.5)."""

    text: bytes = b""

    def encode(self) -> bytes:
        return b"+ " + self.text


@attrs.frozen
class Data:
    """
    Untagged data (``* ...``) a pure module already formatted: the selected
    view's EXISTS, EXPUNGE, VANISHED, FLAGS and FETCH (FLAGS) lines.
    """

    data: bytes

    def encode(self) -> bytes:
        return b"* " + self.data


@attrs.frozen
class Capability:
    """``* CAPABILITY ...`` (RFC 3501 7.2.1)."""

    capabilities: bytes

    def encode(self) -> bytes:
        return b"* CAPABILITY " + self.capabilities


@attrs.frozen
class Enabled:
    """``* ENABLED ...``: what this ENABLE turned on (RFC 5161 3.2)."""

    names: tuple[bytes, ...]

    def encode(self) -> bytes:
        return b"* ENABLED" + b"".join(b" " + name for name in self.names)


@attrs.frozen
class Namespace:
    """``* NAMESPACE``: one personal namespace, no others (RFC 2342 5)."""

    def encode(self) -> bytes:
        return b'* NAMESPACE (("" "/")) NIL NIL'


@attrs.frozen
class Id:
    """``* ID (...)``: the server's own identification (RFC 2971 3.2)."""

    fields: tuple[tuple[bytes, bytes], ...]

    def encode(self) -> bytes:
        return b"* ID (" + b" ".join(wire.quote(k) + b" " + wire.quote(v) for k, v in self.fields) + b")"


@attrs.frozen
class Exists:
    count: int

    def encode(self) -> bytes:
        return b"* %d EXISTS" % self.count


@attrs.frozen
class Recent:
    count: int

    def encode(self) -> bytes:
        return b"* %d RECENT" % self.count


@attrs.frozen
class Search:
    """``* SEARCH n...`` with CONDSTORE's ``(MODSEQ m)`` when asked (RFC 7162 3.1.6)."""

    numbers: Iterable[int]
    modseq: int | None = None

    def encode(self) -> bytes:
        numbers = " ".join(map(str, self.numbers)).encode("ascii")
        line = b"* SEARCH " + numbers if numbers else b"* SEARCH"
        if self.modseq is not None:
            line += b" (MODSEQ %d)" % self.modseq
        return line


@attrs.frozen
class Status:
    """``* STATUS mailbox (item value ...)`` (RFC 3501 7.2.4)."""

    mailbox: str
    items: tuple[tuple[bytes, int], ...]
    # UTF-8 names once the client enabled UTF8=ACCEPT (RFC 6855 3).
    utf8: bool = False

    def encode(self) -> bytes:
        values = b" ".join(b"%s %d" % item for item in self.items)
        return b"* STATUS %s (%s)" % (encode_name(self.mailbox, self.utf8), values)


@attrs.frozen
class Listed:
    """``* LIST|LSUB|XLIST (attributes) "/" mailbox`` (RFC 3501 7.2.2, 7.2.3)."""

    command: bytes
    attributes: tuple[str, ...]
    mailbox: str | None
    utf8: bool = False

    def encode(self) -> bytes:
        # RFC 3501 6.3.8: no mailbox is the hierarchy delimiter's answer, "".
        name = b'""' if self.mailbox is None else encode_name(self.mailbox, self.utf8)
        return b'* %s (%s) "/" %s' % (self.command, " ".join(self.attributes).encode("ascii"), name)


@attrs.frozen
class Vanished:
    """``* VANISHED (EARLIER) uid-set``: expunged before the client knew them (RFC 7162 3.2.10)."""

    uids: str

    def encode(self) -> bytes:
        return b"* VANISHED (EARLIER) " + self.uids.encode("ascii")


@attrs.frozen
class FetchModseq:
    """``* n FETCH (UID u MODSEQ (m))``: a .SILENT STORE's answer under CONDSTORE (RFC 7162 3.1.3)."""

    seq: int
    uid: int
    modseq: int

    def encode(self) -> bytes:
        return b"* %d FETCH (UID %d MODSEQ (%d))" % (self.seq, self.uid, self.modseq)
