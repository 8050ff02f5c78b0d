"""
The LMTP delivery listener (RFC 2033): how the MTA hands us mail.

Twisted has no LMTP server, so this subclasses ``twisted.mail.smtp.SMTP`` and
keeps its engine: command dispatch (``lineReceived`` -> ``state_COMMAND`` ->
``do_<VERB>``), the idle timeout, reply formatting (``sendCode``) and address
parsing (``Address``, ``mail_re``, ``rcpt_re``).  Where the stock server does
not fit LMTP it is replaced, each in one place:

- line framing (``dataReceived``): ``LineOnlyReceiver`` splits on CRLF only,
  so a client ending lines with a bare LF never ends DATA; and its over-long
  line handler drops an open DATA back to command mode, after which the rest
  of the message body is read as commands.  Ours accepts LF or CRLF, passes
  message data to the spool in bulk (no per-line call for a 50 MB message)
  and has no line-length limit inside DATA, only the message size limit.
- DATA: the stock server fans every line out to one ``IMessage`` per
  recipient and answers once; LMTP spools once and answers once per accepted
  recipient, in RCPT order (RFC 2033 4.2).
- replies: every 2xx/4xx/5xx reply carries an RFC 3463 enhanced status code,
  as advertising ENHANCEDSTATUSCODES requires (RFC 2034 3); the stock texts
  have none.

Recipients are users of the users file: ``user``, ``user@any.domain``, and
``user+folder@any.domain``, which delivers into ``folder`` when it exists and
into INBOX otherwise (Dovecot's ``recipient_delimiter``).
"""

from __future__ import annotations

import errno
import tempfile

import attrs
from twisted.internet import defer, protocol
from twisted.internet.interfaces import ITCPTransport
from twisted.logger import Logger
from twisted.mail import smtp

from gateway.delivery import deliver
from gateway.store.interfaces import TemporaryFailure

log = Logger()

# What SIZE advertises (RFC 1870) and DATA enforces.
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024
# RFC 5321 4.5.3.1.8 asks for at least 100 recipients per transaction.
MAX_RECIPIENTS = 1000
# RFC 5321 4.5.3.1.2 advises that a server not time out in under 5 minutes.
IDLE_TIMEOUT = 600

_COMMAND = smtp.COMMAND
_DATA = smtp.DATA


@attrs.frozen
class Recipient:
    """One accepted RCPT: the address as given, and where it delivers."""

    address: bytes
    user: str
    mailbox: str


def resolve_recipient(local_part: str, users) -> tuple[str, str] | None:
    """
    The (user, mailbox) a recipient local part delivers to, or None when it
    names no user.  A user whose name contains ``+`` is matched whole first.
    """
    if local_part in users:
        return local_part, "INBOX"
    user, delimiter, detail = local_part.partition("+")
    if delimiter and detail and user in users:
        return user, detail
    return None


class _PrefixedMessage:
    """
    The per-recipient trace headers followed by the spooled message, read by
    the store in chunks; nothing is copied per recipient.
    """

    def __init__(self, prefix: bytes, spool):
        self._prefix = prefix
        self._spool = spool
        spool.seek(0)

    def read(self, size: int = -1) -> bytes:
        if self._prefix:
            if size < 0:
                chunk, self._prefix = self._prefix + self._spool.read(), b""
                return chunk
            chunk, self._prefix = self._prefix[:size], self._prefix[size:]
            return chunk
        return self._spool.read(size)


def _check_header_safe(address: bytes) -> None:
    """Addresses go into trace headers: no control characters (no CR)."""
    if any(byte < 0x20 or byte == 0x7F for byte in address):
        raise smtp.AddressError("control character in address")


def _temporary_failure(error_number: int | None) -> tuple[int, bytes, bytes]:
    """The reply to a delivery the store could not take now."""
    # Dovecot answers a full disk or quota as a full mailbox (4.2.2).
    if error_number in (errno.ENOSPC, errno.EDQUOT):
        return 452, b"4.2.2", b"Mailbox is full, try again later"
    return 451, b"4.3.0", b"Temporary failure, try again later"


class LMTPServer(smtp.SMTP):
    """
    One LMTP session.  Transaction state is ``_sender`` (the reverse-path
    bytes, None before MAIL) and ``_recipients``; during DATA the message goes
    to ``_spool``; while it is being stored (``_delivering``) further input is
    held, so that pipelined commands are answered after the DATA replies.
    """

    # RFC 5321 4.5.3.1.4 allows 512 octets per command line; ESMTP parameters
    # can make a real one longer, so leave room but stay bounded.
    MAX_LENGTH = 4096
    timeout = IDLE_TIMEOUT

    def __init__(self, store, users, hostname: str, reactor, max_message_size: int):
        super().__init__()
        self.host = hostname
        self._store = store
        self._users = users
        self._reactor = reactor
        self._max_message_size = max_message_size
        self._buffer = b""
        self._greeted = False
        self._sender: bytes | None = None
        self._recipients: list[Recipient] = []
        self._spool = None
        self._spooled = 0
        self._spool_error: OSError | None = None
        self._mid_line = False
        self._delivering = False
        self._draining = False
        self._open = False

    # -- connection ---------------------------------------------------------

    def callLater(self, period, func):
        return self._reactor.callLater(period, func)

    def connectionMade(self):
        self._open = True
        # DESIGN.md: with Nagle's algorithm each reply waits for the client's
        # delayed ACK of the previous one.
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)
        super().connectionMade()

    def connectionLost(self, reason):
        self._open = False
        # A spool being delivered is closed by the delivery when it is done.
        if self.mode == _DATA:
            self._close_spool()
        self.setTimeout(None)

    def greeting(self):
        return self.host + b" LMTP ready"

    def timeoutConnection(self):
        self.sendCode(421, b"4.4.2 " + self.host + b" Idle timeout, closing connection")
        self.transport.loseConnection()

    # -- framing ------------------------------------------------------------

    def dataReceived(self, data):
        self._buffer += data
        self._drain()

    def _drain(self):
        """
        Handle buffered input until it runs out, the connection closes, or a
        delivery starts (then the rest waits for ``_delivered``).
        """
        self._draining = True
        buffer, pos = self._buffer, 0
        try:
            while not self._delivering and not self.transport.disconnecting:
                if self.mode == _DATA:
                    self.resetTimeout()
                    pos = self._receive_message_data(buffer, pos)
                    if self.mode == _DATA:
                        break
                    continue
                end = buffer.find(b"\n", pos)
                if end < 0:
                    break
                line, pos = buffer[pos:end], end + 1
                if len(line) > self.MAX_LENGTH:
                    self.sendCode(500, b"5.5.2 Line too long")
                    continue
                self.lineReceived(line.removesuffix(b"\r"))
        finally:
            self._buffer = buffer[pos:]
            self._draining = False
        idle = self.mode == _COMMAND and not self._delivering and not self.transport.disconnecting
        if idle and len(self._buffer) > self.MAX_LENGTH:
            # No line end in sight: no way to find the next command.
            self._buffer = b""
            self.sendCode(500, b"5.5.2 Line too long, closing connection")
            self.transport.loseConnection()

    def _receive_message_data(self, buffer: bytes, pos: int) -> int:
        """
        Spool message data from ``buffer[pos:]`` up to the end-of-data line,
        undoing dot-stuffing (RFC 5321 4.5.2).  Returns the position after
        what was consumed; leaves DATA mode when the final dot was seen.
        """
        while pos < len(buffer):
            if not self._mid_line and buffer[pos] == ord("."):
                for terminator in (b".\r\n", b".\n"):
                    if buffer.startswith(terminator, pos):
                        self._end_of_data()
                        return pos + len(terminator)
                if b".\r\n".startswith(buffer[pos:]):
                    return pos  # "." or ".\r": wait for the rest of the line
                pos += 1  # a stuffed dot; the rest of the line is data
                self._mid_line = True
            # Everything up to the next line that starts with a dot is data.
            next_dot = buffer.find(b"\n.", pos)
            end = len(buffer) if next_dot < 0 else next_dot + 1
            self._spool_write(buffer[pos:end])
            self._mid_line = buffer[end - 1] != ord("\n")
            pos = end
        return pos

    def _spool_write(self, chunk: bytes):
        self._spooled += len(chunk)
        if self._spool_error is not None or self._spooled > self._max_message_size:
            return
        try:
            self._spool.write(chunk)
        except OSError as e:
            log.warn("Cannot spool LMTP message data: {error}", error=e.strerror)
            self._spool_error = e

    def _close_spool(self):
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    # -- replies ------------------------------------------------------------

    def lookupMethod(self, command):
        # The stock lookup decodes the verb as ASCII and raises on other bytes.
        if not (command.isascii() and command.isalpha()):
            return None
        return super().lookupMethod(command)

    def sendSyntaxError(self):
        self.sendCode(500, b"5.5.2 Syntax error")

    def do_UNKNOWN(self, rest):
        self.sendCode(500, b"5.5.1 Command unrecognized")

    # -- commands -----------------------------------------------------------

    def do_HELO(self, rest):
        # RFC 2033 4.1: HELO and EHLO must not succeed on LMTP.
        self.sendCode(500, b"5.5.1 This is an LMTP server: use LHLO")

    do_EHLO = do_HELO

    def do_LHLO(self, rest):
        if not rest:
            self.sendCode(501, b"5.5.4 Syntax: LHLO hostname")
            return
        self._greeted = True
        self._reset_transaction()
        extensions = [
            b"PIPELINING",
            b"ENHANCEDSTATUSCODES",
            b"8BITMIME",
            b"SIZE %d" % self._max_message_size,
        ]
        self.sendCode(250, b"\n".join([self.host, *extensions]))

    def do_MAIL(self, rest):
        if not self._greeted:
            self.sendCode(503, b"5.5.1 Send LHLO first")
            return
        if self._sender is not None:
            self.sendCode(503, b"5.5.1 Sender already given")
            return
        match = self.mail_re.match(rest)
        if not match:
            self.sendCode(501, b"5.5.4 Syntax: MAIL FROM:<address>")
            return
        try:
            sender = bytes(smtp.Address(match.group("path"), self.host))
            _check_header_safe(sender)
        except smtp.AddressError:
            self.sendCode(553, b"5.1.7 Invalid sender address")
            return
        for parameter in (match.group("opts") or b"").split():
            keyword, _, value = parameter.partition(b"=")
            keyword = keyword.upper()
            if keyword == b"SIZE" and value.isdigit():
                # RFC 1870 6: refuse at once what DATA would refuse later.
                if int(value) > self._max_message_size:
                    self.sendCode(552, b"5.3.4 Message size exceeds fixed maximum message size")
                    return
            elif keyword == b"BODY" and value.upper() in (b"7BIT", b"8BITMIME"):
                pass
            else:
                self.sendCode(555, b"5.5.4 Unsupported parameter " + keyword)
                return
        self._sender = sender
        self.sendCode(250, b"2.1.0 Sender OK")

    def do_RCPT(self, rest):
        if self._sender is None:
            self.sendCode(503, b"5.5.1 MAIL first")
            return
        match = self.rcpt_re.match(rest)
        if not match:
            self.sendCode(501, b"5.5.4 Syntax: RCPT TO:<address>")
            return
        if match.group("opts"):
            self.sendCode(555, b"5.5.4 Unsupported parameter")
            return
        if len(self._recipients) >= MAX_RECIPIENTS:
            self.sendCode(452, b"4.5.3 Too many recipients")
            return
        try:
            address = smtp.Address(match.group("path"), self.host)
            _check_header_safe(bytes(address))
            local_part = address.local.decode("utf-8")
        except (smtp.AddressError, UnicodeDecodeError):
            self.sendCode(501, b"5.1.3 Invalid recipient address")
            return
        try:
            target = resolve_recipient(local_part, self._users)
        except Exception:
            log.failure("While looking up recipient {address}", address=bytes(address))
            self.sendCode(451, b"4.3.0 Temporary failure looking up the recipient")
            return
        if target is None:
            self.sendCode(550, b"5.1.1 <" + bytes(address) + b"> User doesn't exist")
            return
        self._recipients.append(Recipient(bytes(address), *target))
        self.sendCode(250, b"2.1.5 OK")

    def do_DATA(self, rest):
        if self._sender is None:
            self.sendCode(503, b"5.5.1 MAIL first")
        elif not self._recipients:
            # RFC 2033 4.2: no successful RCPT, DATA must fail with 503.
            self.sendCode(503, b"5.5.1 No valid recipients")
        elif rest:
            self.sendCode(501, b"5.5.4 Syntax: DATA")
        else:
            try:
                self._spool = tempfile.TemporaryFile()
            except OSError as e:
                log.warn("Cannot create an LMTP spool file: {error}", error=e.strerror)
                self.sendCode(451, b"4.3.0 Temporary failure, try again later")
                return
            self._spooled = 0
            self._spool_error = None
            self._mid_line = False
            self.mode = _DATA
            self.sendCode(354, b"Start mail input; end with <CRLF>.<CRLF>")

    def do_RSET(self, rest):
        self._reset_transaction()
        self.sendCode(250, b"2.0.0 OK")

    def do_NOOP(self, rest):
        self.sendCode(250, b"2.0.0 OK")

    def do_VRFY(self, rest):
        self.sendCode(252, b"2.3.3 Try RCPT instead")

    def do_QUIT(self, rest):
        self.sendCode(221, b"2.0.0 " + self.host + b" closing connection")
        self.transport.loseConnection()

    def _reset_transaction(self):
        self._sender = None
        self._recipients = []

    # -- delivery -----------------------------------------------------------

    def _end_of_data(self):
        self.mode = _COMMAND
        spool, self._spool = self._spool, None
        sender, recipients = self._sender, self._recipients
        self._reset_transaction()
        if self._spooled > self._max_message_size:
            refusal = (552, b"5.3.4", b"Message size exceeds fixed maximum message size")
        elif self._spool_error is not None:
            refusal = _temporary_failure(self._spool_error.errno)
        else:
            refusal = None
        self._delivering = True
        self.transport.pauseProducing()
        defer.Deferred.fromCoroutine(self._deliver_message(spool, sender, recipients, refusal))

    async def _deliver_message(self, spool, sender: bytes, recipients, refusal):
        """RFC 2033 4.2: one reply per accepted recipient, in RCPT order."""
        try:
            for recipient in recipients:
                code, status, text = refusal or await self._deliver_one(spool, sender, recipient)
                self.sendCode(code, b"%s <%s> %s" % (status, recipient.address, text))
        finally:
            spool.close()
            self._delivered()

    async def _deliver_one(self, spool, sender: bytes, recipient: Recipient) -> tuple[int, bytes, bytes]:
        """Store the message for one recipient; the reply it gets."""
        # Trace headers as Dovecot's LMTP writes them.
        trace = b"Return-Path: <%s>\r\nDelivered-To: %s\r\n" % (sender, recipient.address)
        try:
            record = await deliver(self._store, recipient.user, _PrefixedMessage(trace, spool), recipient.mailbox)
        except TemporaryFailure as e:
            log.warn("Delivery to {user} deferred: {error}", user=recipient.user, error=str(e))
            cause = e.__cause__
            return _temporary_failure(cause.errno if isinstance(cause, OSError) else None)
        except Exception:
            log.failure("While delivering to {user}", user=recipient.user)
            return 451, b"4.3.0", b"Temporary internal error"
        return 250, b"2.0.0", b"Saved as UID %d" % record.uid

    def _delivered(self):
        self._delivering = False
        if not self._open:
            return
        self.transport.resumeProducing()
        if not self._draining:
            self._drain()


class LMTPFactory(protocol.ServerFactory):
    """Builds L{LMTPServer} sessions over one store and users file."""

    def __init__(self, store, users, hostname: str, reactor, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE):
        self.store = store
        self.users = users
        self.hostname = hostname
        self.reactor = reactor
        self.max_message_size = max_message_size

    def buildProtocol(self, addr):
        server = LMTPServer(self.store, self.users, self.hostname, self.reactor, self.max_message_size)
        server.factory = self
        return server


def build_factory(store, users, config, reactor) -> LMTPFactory:
    """The LMTP listener's factory for ``service.py``."""
    return LMTPFactory(store, users, config.hostname, reactor)
