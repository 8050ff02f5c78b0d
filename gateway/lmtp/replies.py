"""
LMTP refusals, each a small class that carries its whole reply.

Every refusal knows its reply code (RFC 5321 4.2), its RFC 3463 enhanced
status code (ENHANCEDSTATUSCODES is advertised, so every 2xx/4xx/5xx reply
carries one, RFC 2034 3) and its text; the session writes them in one place
(``LMTPServer._refuse``).  A ``BadCommand`` is one the client should not have
sent and counts towards ``limits.max_bad_commands``; one that ``closes``
ends the session once written.  After DATA a refusal names the recipient it
answers (RFC 2033 4.2), as Dovecot's ``<address> text`` does.

No Twisted import here.
"""

from __future__ import annotations


class LmtpError(Exception):
    """
    A refused command or delivery.  ``code``, ``status`` and ``text`` are
    class attributes for fixed replies, set in ``__init__`` where the reply
    names something.
    """

    code: int
    status: bytes
    text: bytes
    closes = False

    def reply(self, recipient: bytes | None = None) -> bytes:
        """What follows the code on the wire, naming ``recipient`` if given."""
        named = b"<" + recipient + b"> " if recipient is not None else b""
        return self.status + b" " + named + self.text


class BadCommand(LmtpError):
    """A command that is not LMTP as we speak it; counts to limits.max_bad_commands."""


class Closing(LmtpError):
    """421: the session ends; the text names this server (RFC 5321 3.8)."""

    code = 421
    closes = True

    def __init__(self, host: bytes):
        super().__init__(host)
        self.text = host + b" " + self.reason

    reason: bytes


# -- command syntax and order (RFC 5321 4.2.4: 500/501/503) ---------------------


class UnknownCommand(BadCommand):
    code, status, text = 500, b"5.5.1", b"Command unrecognized"


class CommandSyntax(BadCommand):
    code, status, text = 500, b"5.5.2", b"Syntax error"


class LineTooLong(BadCommand):
    code, status, text = 500, b"5.5.2", b"Line too long"


class UseLHLO(BadCommand):
    # RFC 2033 4.1: HELO and EHLO must not succeed on LMTP.
    code, status, text = 500, b"5.5.1", b"This is an LMTP server: use LHLO"


class LhloSyntax(BadCommand):
    code, status, text = 501, b"5.5.4", b"Syntax: LHLO hostname"


class MailSyntax(BadCommand):
    code, status, text = 501, b"5.5.4", b"Syntax: MAIL FROM:<address>"


class RcptSyntax(BadCommand):
    code, status, text = 501, b"5.5.4", b"Syntax: RCPT TO:<address>"


class DataSyntax(BadCommand):
    code, status, text = 501, b"5.5.4", b"Syntax: DATA"


class LhloFirst(BadCommand):
    code, status, text = 503, b"5.5.1", b"Send LHLO first"


class SenderGiven(BadCommand):
    code, status, text = 503, b"5.5.1", b"Sender already given"


class MailFirst(BadCommand):
    code, status, text = 503, b"5.5.1", b"MAIL first"


class NoValidRecipients(BadCommand):
    # RFC 2033 4.2: DATA without a successful RCPT must fail with 503.
    code, status, text = 503, b"5.5.1", b"No valid recipients"


class UnsupportedParameter(BadCommand):
    code, status = 555, b"5.5.4"

    def __init__(self, keyword: bytes | None = None):
        super().__init__(keyword)
        # Named only when it is a keyword: no client bytes echoed raw.
        self.text = b"Unsupported parameter" + (b" " + keyword if keyword else b"")


# -- addresses ------------------------------------------------------------------


class InvalidSender(BadCommand):
    code, status, text = 553, b"5.1.7", b"Invalid sender address"


class SenderTooLong(BadCommand):
    # RFC 5321 4.5.3.1.3: a path is at most 256 octets with its brackets.
    code, status = 501, b"5.1.7"

    def __init__(self, limit: int):
        super().__init__(limit)
        self.text = b"Sender address longer than %d octets" % limit


class InvalidRecipient(BadCommand):
    code, status, text = 501, b"5.1.3", b"Invalid recipient address"


class RecipientTooLong(BadCommand):
    code, status = 501, b"5.1.3"

    def __init__(self, limit: int):
        super().__init__(limit)
        self.text = b"Recipient address longer than %d octets" % limit


class LocalPartTooLong(LmtpError):
    # RFC 5321 4.5.3.1.1: no user has such a name, and a reply naming it
    # would be too long.
    code, status = 550, b"5.1.1"

    def __init__(self, limit: int):
        super().__init__(limit)
        self.text = b"Local part longer than %d octets: no such user" % limit


class NoSuchUser(LmtpError):
    code, status = 550, b"5.1.1"

    def __init__(self, address: bytes):
        super().__init__(address)
        # Quoted local parts may carry 8-bit bytes: echoed only if ASCII.
        self.text = (b"<" + address + b"> " if address.isascii() else b"") + b"User doesn't exist"


class LookupFailed(LmtpError):
    code, status, text = 451, b"4.3.0", b"Temporary failure looking up the recipient"


class TooManyRecipients(LmtpError):
    # RFC 5321 4.5.3.1.10: the client sends the rest in a new transaction.
    code, status, text = 452, b"4.5.3", b"Too many recipients"


# -- the message ----------------------------------------------------------------


class MessageTooBig(LmtpError):
    # RFC 1870 6.
    code, status, text = 552, b"5.3.4", b"Message size exceeds fixed maximum message size"


class MailSystemFull(LmtpError):
    # RFC 3463 3.4: X.3.1 "Mail system full", not X.2.2 (one user's quota):
    # the store's disk is full for every recipient.  The MTA keeps the
    # message and retries.
    code, status, text = 452, b"4.3.1", b"Mail system full, try again later"


class OverQuota(LmtpError):
    # RFC 3463 3.3: X.2.2 "Mailbox full"; for good, as Dovecot's default.
    code, status, text = 552, b"5.2.2", b"Mailbox full: quota exceeded"


class OverQuotaForNow(LmtpError):
    # [quota] full_tempfail, as Dovecot's quota_full_tempfail: the MTA retries.
    code, status, text = 452, b"4.2.2", b"Mailbox full: quota exceeded, try again later"


class TryLater(LmtpError):
    code, status, text = 451, b"4.3.0", b"Temporary failure, try again later"


class InternalError(LmtpError):
    code, status, text = 451, b"4.3.0", b"Temporary internal error"


# -- the session ends -----------------------------------------------------------


class IdleTimeout(Closing):
    status, reason = b"4.4.2", b"Idle timeout, closing connection"


class NoMessageInTime(Closing):
    status, reason = b"4.4.2", b"No message within the time allowed, closing connection"


class TooManyBadCommands(Closing):
    status, reason = b"4.7.0", b"Too many bad commands, closing connection"


class UnendingLine(LmtpError):
    # No line end in sight: no way to find the next command.
    code, status, text = 500, b"5.5.2", b"Line too long, closing connection"
    closes = True
