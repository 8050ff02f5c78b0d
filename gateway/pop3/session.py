"""
The POP3 view of INBOX for one session, as pure code.

RFC 1939 gives a POP3 session a fixed maildrop: the messages present at login,
numbered from 1, with deletions marked in the session and applied only at
QUIT.  This module holds that snapshot (and which messages the "hide" delete
policy keeps out of it), the parsing of command arguments, the byte
transforms of RETR/TOP (dot-stuffing, header plus n lines) and the CAPA list,
so that the protocol class in ``gateway/pop3/server.py`` only moves bytes.
Where a plain-text password may be sent and how AUTH PLAIN reads are the
shared rules of ``gateway/policy/``.

No Twisted import here.  Every error knows the text it answers with, and the
ones that count towards ``limits.max_bad_commands`` are ``BadCommand``s.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import attrs

from gateway.net.dotlines import find_dot_line
from gateway.policy import sasl

# RFC 2449 section 6.
CAPABILITIES = (
    b"TOP",
    b"UIDL",
    b"USER",
    b"SASL PLAIN",
    b"RESP-CODES",
    b"AUTH-RESP-CODE",
    b"PIPELINING",
    b"EXPIRE NEVER",
    b"IMPLEMENTATION gateway",
)
# What a client may not use while passwords would cross the network in clear.
_PLAINTEXT_CAPABILITIES = (b"USER", b"SASL PLAIN")

# A maildrop never holds 10**10 messages; bounding the digits keeps absurd
# numbers from becoming big integers and answers them like any other bad number.
_NUMBER = re.compile(rb"[0-9]{1,10}")


class Pop3Error(Exception):
    """
    A command failed in a way the client is told about.

    ``text`` is what follows ``-ERR `` on the wire: a class attribute for
    fixed texts, a property where it names the message.  Errors about a
    message number are also ValueErrors, as twisted.mail.pop3.IMailbox asks.
    """

    @property
    def text(self) -> bytes:
        raise NotImplementedError


class BadCommand(Pop3Error):
    """A command that is not POP3 as we speak it; counts to limits.max_bad_commands."""


class UnknownCommand(BadCommand):
    text = b"Unknown command"


class WrongState(BadCommand):
    text = b"Command not valid in this state"


class InvalidSyntax(BadCommand):
    text = b"Syntax error"


class LineTooLong(BadCommand):
    text = b"Line too long"


class UnsupportedMechanism(BadCommand):
    text = b"Unsupported authentication mechanism"


class UserRequired(BadCommand):
    text = b"USER required before PASS"


class TooManyBadCommands(Pop3Error):
    text = b"Too many bad commands"


class AuthenticationCancelled(Pop3Error):
    # RFC 5034 4: the client answered the challenge with "*".
    text = b"Authentication cancelled"


class AuthenticationFailed(Pop3Error):
    # RFC 3206 5: the credentials are the problem.
    text = b"[AUTH] Authentication failed"


class PlaintextDisallowed(Pop3Error):
    # Dovecot's text.  RFC 3206 5 counts "an attempt to authenticate in
    # violation of policy" as AUTH; the same answer for every user name, so
    # it reveals none (the RFC's worry about AUTH on USER).
    text = b"[AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections."


class LoginsBlocked(Pop3Error):
    # The user is locked out at this address.  Not AUTH: the credentials
    # were not even checked, and RFC 3206 5 makes a client with
    # AUTH-RESP-CODE treat AUTH as "the password is wrong".  The block lifts
    # as old failures leave the window: RFC 3206 4's SYS/TEMP.
    text = b"[SYS/TEMP] Too many failed logins, try again later"


class TooManySessions(Pop3Error):
    # RFC 2449 8.1.2: the credentials were right, the maildrop is busy.
    text = b"[IN-USE] Too many sessions for this user"


class TooManyDevices(Pop3Error):
    # RFC 3206 4: SYS/PERM, retrying will not help until a device is forgotten.
    text = b"[SYS/PERM] Too many devices for this user"


class BadDeviceName(Pop3Error):
    # RFC 3206 5: the user name as given cannot be right.
    text = b"[AUTH] Invalid device name (letters, digits, '.', '-', '_')"


class TlsActive(Pop3Error):
    text = b"TLS is already active"


class InvalidArgument(BadCommand, ValueError):
    def __init__(self, what: str):
        super().__init__(what)
        self.what = what

    @property
    def text(self) -> bytes:
        return b"Invalid " + self.what.encode("ascii")


class NoSuchMessage(Pop3Error, ValueError):
    def __init__(self, number: int, count: int):
        super().__init__(number, count)
        self.number = number
        self.count = count

    @property
    def text(self) -> bytes:
        return b"No such message, only %d messages in maildrop" % (self.count,)


class MessageDeleted(Pop3Error, ValueError):
    def __init__(self, number: int):
        super().__init__(number)
        self.number = number

    @property
    def text(self) -> bytes:
        # RFC 1939 section 5, DELE: "-ERR message 2 already deleted"
        return b"Message %d already deleted" % (self.number,)


class MessageExpunged(Pop3Error, ValueError):
    def __init__(self, number: int):
        super().__init__(number)
        self.number = number

    @property
    def text(self) -> bytes:
        return b"Message %d was expunged by another session" % (self.number,)


class MaildropLocked(Pop3Error):
    """Another session holds this maildrop (RFC 1939 section 8, RFC 3206)."""

    @property
    def text(self) -> bytes:
        return b"[IN-USE] Maildrop is locked by another session"


def capabilities(stls: bool, plaintext: bool) -> list[bytes]:
    """
    The CAPA list (RFC 2449 6): STLS while TLS can still start (RFC 2595 4),
    USER and SASL PLAIN only where a password may be sent.
    """
    listed = [b"STLS"] if stls else []
    listed.extend(c for c in CAPABILITIES if plaintext or c not in _PLAINTEXT_CAPABILITIES)
    return listed


def sasl_mechanisms(plaintext: bool) -> list[bytes]:
    return [b"PLAIN"] if plaintext else []


def parse_message_number(argument: bytes) -> int:
    """
    A message number as RFC 1939 section 3 writes it: decimal digits only.

    Python's int() would also take ``+1``, `` 1``, ``1_0`` and non-ASCII
    digits; a client that sends those gets an error, not some other message.
    """
    if not _NUMBER.fullmatch(argument) or int(argument) == 0:
        raise InvalidArgument("message number")
    return int(argument)


def parse_line_count(argument: bytes) -> int:
    """The second argument of TOP: a non-negative number of body lines."""
    if not _NUMBER.fullmatch(argument):
        raise InvalidArgument("line count")
    return int(argument)


# What ``-ERR Invalid ...`` names for each way a PLAIN response is refused.
_SASL_ERRORS = {
    sasl.NotBase64: "BASE64 encoding",
    sasl.MalformedPlain: "PLAIN response",
    sasl.AuthzidMismatch: "authorization identity",
}


def parse_sasl_plain(encoded: bytes) -> sasl.PlainResponse:
    """An AUTH PLAIN response (RFC 5034 4, ``gateway.policy.sasl``), or InvalidArgument."""
    try:
        return sasl.decode_plain(encoded)
    except sasl.SaslError as error:
        raise InvalidArgument(_SASL_ERRORS[type(error)]) from None


@attrs.frozen
class SnapshotEntry:
    """One message as the session saw it at login."""

    uid: int
    size: int
    uidl: bytes
    seen: bool


@attrs.define
class Snapshot:
    """
    The maildrop of one session: messages numbered from 1 as at login.

    Deleted messages keep their numbers (RFC 1939 section 5) and leave STAT,
    LIST and UIDL until RSET.  Messages another session expunged stay listed,
    since their numbers cannot move, but cannot be read or deleted.
    """

    entries: tuple[SnapshotEntry, ...]
    deleted: set[int] = attrs.field(factory=set)
    expunged: set[int] = attrs.field(factory=set)

    def entry(self, number: int) -> SnapshotEntry:
        if not 1 <= number <= len(self.entries):
            raise NoSuchMessage(number, len(self.entries))
        return self.entries[number - 1]

    def visible(self, number: int) -> SnapshotEntry:
        """The entry for LIST n / UIDL n: any message not deleted."""
        entry = self.entry(number)
        if number in self.deleted:
            raise MessageDeleted(number)
        return entry

    def readable(self, number: int) -> SnapshotEntry:
        """The entry for RETR/TOP/DELE: not deleted, not known expunged."""
        entry = self.visible(number)
        if number in self.expunged:
            raise MessageExpunged(number)
        return entry

    def mark_expunged(self, number: int) -> None:
        self.expunged.add(number)

    def delete(self, number: int) -> None:
        self.readable(number)
        self.deleted.add(number)

    def reset(self) -> None:
        self.deleted.clear()

    def listing(self) -> list[tuple[int, SnapshotEntry]]:
        """(number, entry) of every message not marked deleted."""
        return [
            (number, entry)
            for number, entry in enumerate(self.entries, 1)
            if number not in self.deleted
        ]

    def stat(self) -> tuple[int, int]:
        """RFC 1939 STAT: count and octets, deleted messages excluded."""
        listing = self.listing()
        return len(listing), sum(entry.size for _, entry in listing)

    def deleted_uids(self) -> list[int]:
        return sorted(self.entries[number - 1].uid for number in self.deleted)


def build_snapshot(
    records: Iterable, uidl: Callable[[int], bytes], hidden_flag: str, hidden_here: frozenset[int] = frozenset()
) -> Snapshot:
    """
    The maildrop of a session from INBOX's message records (ascending UID):
    each message not flagged ``hidden_flag`` (the "hide" delete policy; IMAP
    keywords compare case-insensitively, RFC 3501 2.3.2) and not among the
    UIDs ``hidden_here`` (what this device deleted), with its UIDL.
    """
    hidden = hidden_flag.lower()
    return Snapshot(
        tuple(
            SnapshotEntry(uid=record.uid, size=record.size, uidl=uidl(record.uid), seen="\\Seen" in record.flags)
            for record in records
            if record.uid not in hidden_here and not any(flag.lower() == hidden for flag in record.flags)
        )
    )


TRASH = "Trash"


def find_trash(mailboxes: Iterable):
    """
    Where the "trash" delete policy puts messages: the mailbox marked
    special-use ``\\Trash`` (RFC 6154), else the one named ``Trash``; None
    if the user has neither.
    """
    mailboxes = list(mailboxes)
    for mailbox in mailboxes:
        if mailbox.special_use == "\\Trash":
            return mailbox
    for mailbox in mailboxes:
        if mailbox.name == TRASH:
            return mailbox
    return None


class DotStuffer:
    """
    RFC 1939 section 3 byte-stuffing of a multi-line response, chunk by chunk.

    Keeps whether the next byte starts a line, so a ``.`` at the start of a
    chunk (or of the message) is stuffed too.
    """

    def __init__(self) -> None:
        self._at_line_start = True

    def transform(self, chunk: bytes) -> bytes:
        if not chunk:
            return chunk
        stuffed = chunk.replace(b"\n.", b"\n..") if find_dot_line(chunk) >= 0 else chunk
        if self._at_line_start and chunk[0] == 0x2E:
            stuffed = b"." + stuffed
        self._at_line_start = chunk.endswith(b"\n")
        return stuffed

    def terminator(self) -> bytes:
        """The end of the response, completing an unfinished last line."""
        return b".\r\n" if self._at_line_start else b"\r\n.\r\n"


def _blank_line_end(data: bytes, start: int) -> int:
    """Just past the first empty line (LF or CRLF alone) of ``data`` from ``start``, a line's start; -1 if none."""
    if data.startswith(b"\n", start):
        return start + 1
    if data.startswith(b"\r\n", start):
        return start + 2
    crlf = data.find(b"\n\r\n", start)
    lf = data.find(b"\n\n", start, len(data) if crlf == -1 else crlf + 2)
    if lf != -1:
        return lf + 2
    return crlf + 3 if crlf != -1 else -1


# Body lines of TOP found one by one at most; past that, a chunk's lines
# are counted first (a count of the whole chunk costs about as much).
_LINES_WALKED = 64


class TopFilter:
    """
    RFC 1939 TOP: the header, the blank line after it, then ``lines`` lines
    of the body, chunk by chunk and without buffering whole lines.

    ``done`` turns true once nothing more will pass, so the sender can stop
    reading the file.
    """

    def __init__(self, lines: int) -> None:
        self._body_lines_left = lines
        self._in_header = True
        # The first two bytes of the current line: enough to tell an empty
        # line (b"" or b"\r" before the LF) when it spans chunks.
        self._line_start = b""
        self.done = False

    def transform(self, chunk: bytes) -> bytes:
        position = 0
        if self._in_header and self._line_start:
            # The line the last chunk ended in the middle of.
            newline = chunk.find(b"\n")
            if newline == -1:
                self._line_start = (self._line_start + chunk[:2])[:2]
                return chunk
            empty = (self._line_start + chunk[: min(newline, 2)])[:2] in (b"", b"\r")
            self._line_start = b""
            position = newline + 1
            if empty:
                self._end_header()
        if self._in_header:
            end = _blank_line_end(chunk, position)
            if end == -1:
                # The blank line is in a later chunk: remember how the
                # last line here begins.
                last = chunk.rfind(b"\n", position)
                self._line_start = chunk[last + 1 if last != -1 else position :][:2]
                return chunk
            position = end
            self._end_header()
        if self.done:
            return chunk[:position]
        # A few body lines are walked; many are counted first, and a chunk
        # holding fewer passes whole.
        if self._body_lines_left > _LINES_WALKED:
            lines = chunk.count(b"\n", position)
            if lines < self._body_lines_left:
                self._body_lines_left -= lines
                return chunk
        end = position
        while self._body_lines_left:
            newline = chunk.find(b"\n", end)
            if newline == -1:
                return chunk
            end = newline + 1
            self._body_lines_left -= 1
        self.done = True
        return chunk[:end]

    def _end_header(self) -> None:
        self._in_header = False
        self.done = self._body_lines_left == 0
