"""
Value types shared by the store, its backends and the protocol views.

Pure: no Twisted imports. Everything here is immutable so that a value handed
to one session can never be changed under another.
"""

from __future__ import annotations

import datetime

import attrs

# RFC 3501 2.3.2: the system flags a client may set.  \Recent is per session
# and never stored.
SYSTEM_FLAGS = frozenset({"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"})

# RFC 6154: the special-use folders every new user gets.
DEFAULT_SPECIAL_USE = (
    ("Drafts", "\\Drafts"),
    ("Sent", "\\Sent"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
)

HIERARCHY_SEPARATOR = "/"

# RFC 3501 2.3.1.1: UIDs and UIDVALIDITY are 32-bit.
UID_MAX = 0xFFFFFFFF


@attrs.frozen
class MailboxInfo:
    """
    One mailbox (folder) of one user, as the index knows it at one moment.
    """

    id: int
    user: str
    name: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    special_use: str | None = None


@attrs.frozen
class Inbox:
    """
    The INBOX of ``user``, as a delivery names it: the store finds it in the
    transaction that stores into it, so that naming it costs no read of its
    own and never names a mailbox renamed meanwhile.
    """

    user: str


@attrs.frozen
class MessageRecord:
    """
    What a session keeps per message: identity, flags and the cheap metadata.

    ``internaldate`` is timezone-aware (RFC 3501 2.3.3 keeps the zone).
    ``modseq`` is the mailbox modification sequence of the last change to this
    message (its delivery or a flag change).
    """

    uid: int
    flags: frozenset[str]
    internaldate: datetime.datetime
    size: int
    modseq: int


def new_flags(old: frozenset[str], flags: frozenset[str], mode: str) -> frozenset[str]:
    """What a STORE of ``flags`` (``mode`` "set", "add" or "remove") makes of a message's ``old`` flags."""
    if mode == "set":
        return flags
    if mode == "add":
        return old | flags
    return old - flags


@attrs.frozen
class Part:
    """
    Where one MIME part lies in the stored message (CRLF, byte offsets).

    ``header_start``..``body_start`` is the part's MIME header including the
    blank line that ends it; ``body_start``..``end`` is its body.  For a
    multipart, ``children`` are its parts in order.  For message/rfc822,
    ``children`` holds exactly one Part: the encapsulated message, whose
    ``header_start`` is this part's ``body_start``.
    """

    header_start: int
    body_start: int
    end: int
    content_type: str
    children: tuple[Part, ...] = ()


@attrs.frozen
class MessageStructure:
    """
    Everything parsed once from a message's body, kept in the index
    (DESIGN.md, "Performance rules").

    ``envelope``, ``body`` and ``bodystructure`` are the IMAP wire forms
    (RFC 3501 7.4.2), ready to send.  ``header`` is the top-level header block,
    kept in the index so that header SEARCH never opens the body file.
    """

    envelope: bytes
    body: bytes
    bodystructure: bytes
    header: bytes
    root: Part

    def with_fields_on_top(self, fields: bytes) -> MessageStructure:
        """
        The structure of this message with header ``fields`` (whole
        CRLF-ended lines, such as trace fields) put on top: every offset
        moves by their length and the header grows by them.  ENVELOPE and
        BODYSTRUCTURE stay: they come from the message's own fields and its
        body, not from lines put before them.
        """
        shift = len(fields)
        root = self.root
        moved = Part(root.header_start, root.body_start + shift, root.end + shift, root.content_type,
                     tuple(_moved(child, shift) for child in root.children))
        return attrs.evolve(self, header=fields + self.header, root=moved)


def _moved(part: Part, shift: int) -> Part:
    return Part(part.header_start + shift, part.body_start + shift, part.end + shift, part.content_type,
                tuple(_moved(child, shift) for child in part.children))


@attrs.frozen
class ChangeSet:
    """
    What happened in a mailbox after a modification sequence.

    ``updated`` lists messages delivered or whose flags changed after the
    asked-for modseq, ascending by UID; ``expunged`` the UIDs removed after it.
    A session that knew the mailbox at that modseq can derive EXISTS, EXPUNGE
    and FETCH (FLAGS) from this alone.
    """

    mailbox_id: int
    highestmodseq: int
    uidnext: int
    updated: tuple[MessageRecord, ...]
    expunged: tuple[int, ...]


@attrs.frozen
class QuotaUsage:
    """
    What one user's mailboxes hold, all of them together (RFC 9208 5: the
    STORAGE and MESSAGE resources of the user's quota root): ``storage``
    in octets (the sum of the messages' RFC822.SIZE), ``messages`` a count.
    """

    storage: int = 0
    messages: int = 0


@attrs.frozen
class CheckReport:
    """
    What a store's consistency check found: one line per problem still
    there, one per repair done (``IStoreMaintenance.check``).
    """

    problems: tuple[str, ...] = ()
    repairs: tuple[str, ...] = ()


@attrs.frozen
class MailboxState:
    """
    What a mailbox holds beside its messages and ``MailboxInfo`` (copying a
    store, ``IStoreDump``): the first UID no session has claimed as
    \\Recent, and the expunged UIDs with the modseq of their expunge
    (QRESYNC's VANISHED, RFC 7162 3.2.5), ascending by UID.
    """

    first_recent_uid: int
    expunged: tuple[tuple[int, int], ...] = ()


@attrs.frozen
class DeviceState:
    """A POP3 device of a mailbox: its last login (seconds since the epoch) and the UIDs it deleted."""

    name: str
    last_login: float
    deleted: frozenset[int] = frozenset()

