"""
IMAP command failures that carry their tagged response (STYLE.md:
exceptions know their protocol answer; pymap's ``ResponseError``), as
``gateway/pop3/session.py``'s and ``gateway/lmtp/replies.py``'s do.

A handler raises one; the server writes it in one place
(``IMAPServer.fail``), whatever the failure was: ours, the store's
(``from_store``, by its type) or an unexpected one (logged, and answered
with fixed text).  No failure's own text ever reaches the wire.

No Twisted import here.
"""

from __future__ import annotations

from gateway.imap.responses import BAD, NO, Tagged
from gateway.store.interfaces import (
    InvalidMailboxName,
    MailboxExists,
    MessageExpunged,
    NoSuchMailbox,
    StoreError,
    TemporaryFailure,
)


class CommandError(Exception):
    """
    A command failed; its tagged response is ``status text``.  ``text`` is
    a class attribute for fixed answers, or given where the answer names
    something (a fixed string of ours, never the client's bytes).
    """

    status = NO
    text: bytes = b"Command failed"

    def __init__(self, text: bytes | None = None):
        if text is not None:
            self.text = text
        super().__init__(self.text)

    def response(self, tag: bytes) -> Tagged:
        return Tagged(tag, self.status, self.text)


class Bad(CommandError):
    """The command is not IMAP as we take it (RFC 3501 7.1.3): counts as a bad command."""

    status = BAD
    text = b"Invalid arguments"


def bad(text: bytes) -> Bad:
    return Bad(text)


# -- syntax and state -----------------------------------------------------------


class UnsupportedCommand(Bad):
    text = b"Unsupported command"


class TooManyArguments(Bad):
    # Twisted's own text names the client's bytes, which are not echoed.
    text = b"Too many arguments"


class MissingArgument(Bad):
    text = b"Missing argument"


class NotModifiedUtf7(CommandError):
    # NO as Dovecot: a name no mailbox can have, not a malformed command.
    text = b"Mailbox name is not modified UTF-7"


class NotUtf8(CommandError):
    # Under UTF8=ACCEPT (RFC 6855 3).
    text = b"Mailbox name is not UTF-8"


class InternalParseError(Bad):
    # An unexpected failure while reading a command: logged, never shown.
    text = b"Internal error"


class InternalError(CommandError):
    # An unexpected failure while running one (RFC 5530 3: SERVERBUG).
    text = b"[SERVERBUG] Internal error"


# -- login ------------------------------------------------------------------------


class PrivacyRequired(CommandError):
    # RFC 3501 6.2.3, RFC 5530 3; Dovecot's text.
    text = b"[PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) connections."


class TlsUnavailable(CommandError):
    text = b"[CANNOT] TLS not available"


class UnsupportedMechanism(CommandError):
    text = b"[CANNOT] Unsupported authentication mechanism"


class AuthenticateCancelled(Bad):
    # RFC 3501 6.2.2: the client cancelled with "*".
    text = b"AUTHENTICATE cancelled"


class MalformedPlain(Bad):
    text = b"Malformed PLAIN response"


class AuthorizationFailed(CommandError):
    # RFC 5530 3: the authorization identity is not the user's own.
    text = b"[AUTHORIZATIONFAILED] Cannot act as another user"


class AuthenticationFailed(CommandError):
    text = b"[AUTHENTICATIONFAILED] Authentication failed"


class LockedOut(CommandError):
    text = b"[UNAVAILABLE] Too many failed logins from your address; try again later"


class TooManySessions(CommandError):
    # RFC 5530 3: "an implementation limit"; UNAVAILABLE would invite a quick
    # retry, which cannot help until the user closes a session.
    text = b"[LIMIT] Too many connections for this user"


# -- mailboxes and messages ---------------------------------------------------------


class TryCreate(CommandError):
    # RFC 3501 6.3.11, 6.4.7: the destination does not exist.
    text = b"[TRYCREATE] No such mailbox"


class ReadOnly(CommandError):
    text = b"[READ-ONLY] Mailbox is read-only"


class BadCharset(CommandError):
    # RFC 3501 6.4.4, 7.1: BADCHARSET names the charsets SEARCH takes.
    text = b"[BADCHARSET (US-ASCII UTF-8)] Unsupported charset"


# -- the store's failures, by type --------------------------------------------------


class Nonexistent(CommandError):
    text = b"[NONEXISTENT] No such mailbox"


class AlreadyExists(CommandError):
    text = b"[ALREADYEXISTS] Mailbox exists already"


class UnacceptableName(CommandError):
    text = b"[CANNOT] Not an acceptable mailbox name"


class ExpungeIssued(CommandError):
    text = b"[EXPUNGEISSUED] Message was expunged"


class Unavailable(CommandError):
    text = b"[UNAVAILABLE] Temporary failure, try again later"


class StoreFailed(CommandError):
    text = b"Store error"


_STORE_ERRORS = (
    (NoSuchMailbox, Nonexistent),
    (MailboxExists, AlreadyExists),
    (InvalidMailboxName, UnacceptableName),
    (MessageExpunged, ExpungeIssued),
    (TemporaryFailure, Unavailable),
)


def from_store(error: StoreError) -> CommandError:
    """The answer to a store failure, chosen by its type (``store/interfaces.py``)."""
    return next((answer() for kind, answer in _STORE_ERRORS if isinstance(error, kind)), StoreFailed())
