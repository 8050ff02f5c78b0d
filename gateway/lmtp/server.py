"""
The LMTP delivery listener (RFC 2033): how the MTA hands us mail.

Twisted has no LMTP server, so this subclasses ``twisted.mail.smtp.SMTP`` and
keeps its engine: command dispatch (``lineReceived`` -> ``state_COMMAND`` ->
``do_<VERB>``), the idle timeout, reply formatting (``sendCode``) and address
parsing (``Address``, ``mail_re``, ``rcpt_re``).  Where the stock server does
not fit LMTP it is replaced, each in one place:

- line framing (``dataReceived``): ``LineOnlyReceiver``'s over-long line
  handler drops an open DATA back to command mode, after which the rest of
  the message body is read as commands.  Ours passes message data to the
  spool in bulk (no per-line call for a 50 MB message) and has no
  line-length limit inside DATA, only the message size limit.  Commands may
  end in LF or CRLF; message lines too (a stuffed dot is removed after
  either), but only ``<CRLF>.<CRLF>`` ends DATA (RFC 5321 4.1.1.4): a lone
  dot after a bare LF, or followed by one, is kept as message data, so that
  an upstream MTA that passes bare LFs through cannot be made to end one
  message early and start a forged one ("SMTP smuggling").
- DATA: the stock server fans every line out to one ``IMessage`` per
  recipient and answers once; LMTP spools once and answers once per accepted
  recipient, in RCPT order (RFC 2033 4.2).  Every recipient, and what other
  sessions deliver in the same reactor turn, is stored under one index
  commit (``gateway.lmtp.delivery.GroupCommit``); no reply goes out before it.
  The recipients of one message share one body, stored (and parsed) once.
- replies: every 2xx/4xx/5xx reply carries an RFC 3463 enhanced status code,
  as advertising ENHANCEDSTATUSCODES requires (RFC 2034 3); the stock texts
  have none.

Limits (``SessionLimits``, from ``[lmtp]`` and ``[limits]``): message size
(552), recipients per transaction (452 4.5.3), command line length, bad
commands per session (then 421 and close), and an absolute deadline from
connecting, or from the end of the last transaction, to DATA: a client that
trickles commands a byte at a time cannot hold a session open.  Inside DATA
the idle timeout applies.  The DATA spool is an anonymous file in the store's
own ``tmp/`` (same filesystem: a full disk shows during DATA, and a killed
server leaves no file behind).

Recipients are users of the users file: ``user``, ``user@any.domain``, and
``user+folder@any.domain``, which delivers into ``folder`` when it exists and
into INBOX otherwise (Dovecot's ``recipient_delimiter``).
"""

from __future__ import annotations

import errno
import re
import tempfile
from time import monotonic
from pathlib import Path

import attrs
from twisted.internet import defer, protocol
from twisted.internet.interfaces import ITCPTransport
from twisted.logger import Logger
from twisted.mail import smtp

from gateway.net import metrics
from gateway.lmtp.delivery import GroupCommit
from gateway.store.interfaces import StoreFull, TemporaryFailure

log = Logger()

# RFC 5321 4.5.3.1.1: a local part has at most 64 octets; so do our users.
MAX_LOCAL_PART = 64
# RFC 5321 4.5.3.1.3: a path has at most 256 octets, brackets included; so
# every reply that names an accepted recipient stays under 512 (4.5.3.1.5).
MAX_ADDRESS = 254
_ESMTP_KEYWORD = re.compile(rb"[A-Za-z0-9][A-Za-z0-9-]{0,63}")

_COMMAND = smtp.COMMAND
_DATA = smtp.DATA

# Dots searched for one at a time before a plain two-byte search takes over;
# see _find_dot_line.
_DOT_PROBES = 32


def _find_dot_line(buffer: bytes, start: int) -> int:
    """
    ``buffer.find(b"\n.", start)``, faster: a one-byte find is a memchr,
    while CPython runs a byte loop for a two-byte needle, and most message
    bytes (base64 attachments) hold no dot at all.  After a few dots that
    start no line, the plain search takes over, so text full of dots costs
    about what it did.
    """
    find = buffer.find
    dot = find(b".", start + 1)
    for _ in range(_DOT_PROBES):
        if dot < 0:
            return -1
        if buffer[dot - 1] == 0x0A:
            return dot - 1
        dot = find(b".", dot + 1)
    return -1 if dot < 0 else find(b"\n.", dot - 1)


@attrs.frozen
class SessionLimits:
    """What one LMTP session may use; defaults are the config's."""

    # What SIZE advertises (RFC 1870) and DATA enforces.
    max_message_size: int = 52428800
    max_recipients: int = 100
    max_line_length: int = 8192
    max_bad_commands: int = 20
    # Seconds from connecting, or from the end of a transaction, to DATA.
    transaction_deadline: int = 60
    # RFC 5321 4.5.3.2.7 advises that a server not time out in under 5 minutes.
    idle_timeout: int = 600

    @classmethod
    def from_config(cls, config) -> SessionLimits:
        return cls(
            max_message_size=config.lmtp.max_message_size,
            max_recipients=config.lmtp.max_recipients,
            max_line_length=config.limits.max_line_length,
            max_bad_commands=config.limits.max_bad_commands,
            transaction_deadline=config.limits.prelogin_timeout,
        )


@attrs.frozen
class Recipient:
    """One accepted RCPT: the address as given, and where it delivers."""

    address: bytes
    user: str
    mailbox: str


def resolve_recipient(local_part: str, users, domain: str | None = None) -> tuple[str, str] | None:
    """
    The (user, mailbox) a recipient delivers to, or None when it names no
    user.  A user named by the whole address (``alice@example.org``, as in a
    Dovecot passwd-file of virtual users) is matched before one named by the
    local part alone, and a user whose name contains ``+`` before a detail.
    """
    for suffix in ([f"@{domain}"] if domain else []) + [""]:
        if local_part + suffix in users:
            return local_part + suffix, "INBOX"
        user, delimiter, detail = local_part.partition("+")
        if delimiter and detail and user + suffix in users:
            return user + suffix, detail
    return None


class _PrefixedMessage:
    """
    The trace headers followed by the spooled message, read by the store in
    chunks (on a thread of its own); nothing is copied per recipient.  With
    group commit the recipients of one message share one such object, which
    the store reads once; otherwise each has its own, and each rewinds the
    spool when it starts reading: the store reads them one after the other.
    """

    def __init__(self, prefix: bytes, spool):
        self._prefix = prefix
        self._spool = spool
        self._started = False

    def read(self, size: int = -1) -> bytes:
        if not self._started:
            self._started = True
            self._spool.seek(0)
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


def _disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError):
        # The DATA spool's own disk.
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(error, StoreFull)


def _temporary_failure(error: BaseException) -> tuple[int, bytes, bytes]:
    """The reply to a delivery the store could not take now."""
    # RFC 3463 3.4: X.3.1 "Mail system full", not X.2.2 (a user's quota):
    # the store's disk is full for every recipient.  The MTA keeps the
    # message and retries.
    if _disk_full(error):
        return 452, b"4.3.1", b"Mail system full, try again later"
    return 451, b"4.3.0", b"Temporary failure, try again later"


def _discard(spool):
    """Close a spool file whose data is no longer wanted."""
    try:
        spool.close()
    except OSError:
        # On a full disk closing flushes what is still buffered and fails
        # again; the file is anonymous, so closing it frees it all the same.
        pass


class LMTPServer(smtp.SMTP):
    """
    One LMTP session.  Transaction state is ``_sender`` (the reverse-path
    bytes, None before MAIL) and ``_recipients``; during DATA the message goes
    to ``_spool``; while it is being stored (``_delivering``) further input is
    held, so that pipelined commands are answered after the DATA replies.
    """

    def __init__(self, deliveries: GroupCommit, users, hostname: str, reactor, limits: SessionLimits,
                 spool_dir: Path | None):
        super().__init__()
        self.host = hostname
        self._deliveries = deliveries
        self._users = users
        self._reactor = reactor
        self._limits = limits
        self._spool_dir = spool_dir
        self.MAX_LENGTH = limits.max_line_length
        self.timeout = limits.idle_timeout
        self._buffer = b""
        self._greeted = False
        self._sender: bytes | None = None
        self._recipients: list[Recipient] = []
        self._spool = None
        self._spooled = 0
        self._spool_error: OSError | None = None
        # The last two bytes of message data seen: where the lines end.
        self._tail = b""
        self._delivering = False
        self._draining = False
        self._open = False
        self._bad_commands = 0
        self._deadline = None

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
        self._arm_deadline()

    def connectionLost(self, reason):
        self._open = False
        # A spool being delivered is closed by the delivery when it is done.
        if self.mode == _DATA:
            self._close_spool()
        self.setTimeout(None)
        self._disarm_deadline()

    def greeting(self):
        return self.host + b" LMTP ready"

    def timeoutConnection(self):
        self._close_with(421, b"4.4.2 " + self.host + b" Idle timeout, closing connection")

    def _arm_deadline(self):
        """Absolute: unlike the idle timeout, traffic does not push it back."""
        self._disarm_deadline()
        self._deadline = self._reactor.callLater(self._limits.transaction_deadline, self._deadline_passed)

    def _disarm_deadline(self):
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _deadline_passed(self):
        self._deadline = None
        self._close_with(421, b"4.4.2 " + self.host + b" No message within the time allowed, closing connection")

    def _close_with(self, code: int, text: bytes):
        self.sendCode(code, text)
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
                    self._bad_command(500, b"5.5.2 Line too long")
                    continue
                self.lineReceived(line.removesuffix(b"\r"))
        finally:
            self._buffer = buffer[pos:]
            self._draining = False
        idle = self.mode == _COMMAND and not self._delivering and not self.transport.disconnecting
        if idle and len(self._buffer) > self.MAX_LENGTH:
            # No line end in sight: no way to find the next command.
            self._buffer = b""
            self._close_with(500, b"5.5.2 Line too long, closing connection")

    def _receive_message_data(self, buffer: bytes, pos: int) -> int:
        """
        Spool message data from ``buffer[pos:]`` up to the end-of-data line,
        undoing dot-stuffing (RFC 5321 4.5.2).  Returns the position after
        what was consumed; leaves DATA mode when the final dot was seen.
        """
        while pos < len(buffer):
            if buffer[pos] == ord(".") and self._tail[-1:] in (b"", b"\n"):
                line = buffer[pos:pos + 3]
                if line == b".\r\n" and self._tail in (b"", b"\r\n"):
                    self._end_of_data()
                    return pos + 3
                if len(line) < 3 and b".\r\n".startswith(line):
                    return pos  # "." or ".\r": wait for the rest of the line
                if not (line == b".\r\n" or line.startswith(b".\n")):
                    pos += 1  # a stuffed dot; the rest of the line is data
                # else a lone dot next to a bare LF: data, not the end.
            # Everything up to the next line that starts with a dot is data.
            next_dot = _find_dot_line(buffer, pos)
            end = len(buffer) if next_dot < 0 else next_dot + 1
            self._spool_write(buffer[pos:end])
            pos = end
        return pos

    def _spool_write(self, chunk: bytes):
        self._tail = (self._tail + chunk)[-2:]
        self._spooled += len(chunk)
        if self._spool_error is not None or self._spooled > self._limits.max_message_size:
            return
        try:
            self._spool.write(chunk)
        except OSError as e:
            log.warn("Cannot spool LMTP message data: {error}", error=e.strerror)
            self._spool_error = e

    def _close_spool(self):
        if self._spool is not None:
            _discard(self._spool)
            self._spool = None

    # -- replies ------------------------------------------------------------

    def _bad_command(self, code: int, text: bytes):
        """Refuse a command the client should not have sent, and count it."""
        self.sendCode(code, text)
        self._bad_commands += 1
        if self._bad_commands >= self._limits.max_bad_commands:
            self._close_with(421, b"4.7.0 " + self.host + b" Too many bad commands, closing connection")

    def lookupMethod(self, command):
        # The stock lookup decodes the verb as ASCII and raises on other bytes.
        if not (command.isascii() and command.isalpha()):
            return None
        return super().lookupMethod(command)

    def state_COMMAND(self, line):
        started = monotonic()
        super().state_COMMAND(line)
        if self.mode == _DATA:
            # 354 is not DATA's final answer; _deliver_message times it.
            return
        # The whole line: metrics.command_label takes its first word.
        metrics.observe_command("lmtp", line, monotonic() - started)

    def sendSyntaxError(self):
        self._bad_command(500, b"5.5.2 Syntax error")

    def do_UNKNOWN(self, rest):
        self._bad_command(500, b"5.5.1 Command unrecognized")

    # -- commands -----------------------------------------------------------

    def do_HELO(self, rest):
        # RFC 2033 4.1: HELO and EHLO must not succeed on LMTP.
        self._bad_command(500, b"5.5.1 This is an LMTP server: use LHLO")

    do_EHLO = do_HELO

    def do_LHLO(self, rest):
        if not rest:
            self._bad_command(501, b"5.5.4 Syntax: LHLO hostname")
            return
        self._greeted = True
        self._reset_transaction()
        extensions = [
            b"PIPELINING",
            b"ENHANCEDSTATUSCODES",
            b"8BITMIME",
            b"SIZE %d" % self._limits.max_message_size,
        ]
        self.sendCode(250, b"\n".join([self.host, *extensions]))

    def do_MAIL(self, rest):
        if not self._greeted:
            self._bad_command(503, b"5.5.1 Send LHLO first")
            return
        if self._sender is not None:
            self._bad_command(503, b"5.5.1 Sender already given")
            return
        match = self.mail_re.match(rest)
        if not match:
            self._bad_command(501, b"5.5.4 Syntax: MAIL FROM:<address>")
            return
        try:
            sender = bytes(smtp.Address(match.group("path"), self.host))
            _check_header_safe(sender)
        except smtp.AddressError:
            self._bad_command(553, b"5.1.7 Invalid sender address")
            return
        for parameter in (match.group("opts") or b"").split():
            keyword, _, value = parameter.partition(b"=")
            keyword = keyword.upper()
            if keyword == b"SIZE" and value.isdigit():
                # RFC 1870 6: refuse at once what DATA would refuse later.
                if int(value) > self._limits.max_message_size:
                    self.sendCode(552, b"5.3.4 Message size exceeds fixed maximum message size")
                    return
            elif keyword == b"BODY" and value.upper() in (b"7BIT", b"8BITMIME"):
                pass
            else:
                # Named only when it is a keyword: no client bytes echoed raw.
                named = b" " + keyword if _ESMTP_KEYWORD.fullmatch(keyword) else b""
                self._bad_command(555, b"5.5.4 Unsupported parameter" + named)
                return
        self._sender = sender
        self.sendCode(250, b"2.1.0 Sender OK")

    def do_RCPT(self, rest):
        if self._sender is None:
            self._bad_command(503, b"5.5.1 MAIL first")
            return
        match = self.rcpt_re.match(rest)
        if not match:
            self._bad_command(501, b"5.5.4 Syntax: RCPT TO:<address>")
            return
        if match.group("opts"):
            self._bad_command(555, b"5.5.4 Unsupported parameter")
            return
        if len(self._recipients) >= self._limits.max_recipients:
            # RFC 5321 4.5.3.1.10: the client sends the rest in a new transaction.
            self.sendCode(452, b"4.5.3 Too many recipients")
            return
        try:
            address = smtp.Address(match.group("path"), self.host)
            _check_header_safe(bytes(address))
            local_part = address.local.decode("utf-8")
            domain = address.domain.decode("utf-8")
        except (smtp.AddressError, UnicodeDecodeError):
            self._bad_command(501, b"5.1.3 Invalid recipient address")
            return
        if len(address.local) > MAX_LOCAL_PART:
            # No user has such a name, and a reply naming it would be too long.
            self.sendCode(550, b"5.1.1 Local part longer than %d octets: no such user" % MAX_LOCAL_PART)
            return
        if len(bytes(address)) > MAX_ADDRESS:
            self._bad_command(501, b"5.1.3 Recipient address longer than %d octets" % MAX_ADDRESS)
            return
        try:
            target = resolve_recipient(local_part, self._users, domain)
        except Exception:
            log.failure("While looking up recipient {address}", address=bytes(address))
            self.sendCode(451, b"4.3.0 Temporary failure looking up the recipient")
            return
        if target is None:
            # Quoted local parts may carry 8-bit bytes: echoed only if ASCII.
            named = b"<" + bytes(address) + b"> " if bytes(address).isascii() else b""
            self.sendCode(550, b"5.1.1 " + named + b"User doesn't exist")
            return
        self._recipients.append(Recipient(bytes(address), *target))
        self.sendCode(250, b"2.1.5 OK")

    def do_DATA(self, rest):
        if self._sender is None:
            self._bad_command(503, b"5.5.1 MAIL first")
        elif not self._recipients:
            # RFC 2033 4.2: no successful RCPT, DATA must fail with 503.
            self._bad_command(503, b"5.5.1 No valid recipients")
        elif rest:
            self._bad_command(501, b"5.5.4 Syntax: DATA")
        else:
            try:
                # Anonymous (O_TMPFILE where the OS has it): nothing is left
                # behind whatever happens to this process.
                self._spool = tempfile.TemporaryFile(dir=self._spool_dir, prefix="lmtp.")
            except OSError as e:
                log.warn("Cannot create an LMTP spool file: {error}", error=e.strerror)
                code, status, text = _temporary_failure(e)
                self.sendCode(code, b"%s %s" % (status, text))
                return
            self._spooled = 0
            self._spool_error = None
            self._tail = b""
            self.mode = _DATA
            # The idle timeout covers DATA; the message size bounds it.
            self._disarm_deadline()
            self.sendCode(354, b"Start mail input; end with <CRLF>.<CRLF>")

    def do_RSET(self, rest):
        self._reset_transaction()
        self.sendCode(250, b"2.0.0 OK")

    def do_NOOP(self, rest):
        self.sendCode(250, b"2.0.0 OK")

    def do_VRFY(self, rest):
        self.sendCode(252, b"2.3.3 Try RCPT instead")

    def do_QUIT(self, rest):
        self._close_with(221, b"2.0.0 " + self.host + b" closing connection")

    def _reset_transaction(self):
        self._sender = None
        self._recipients = []

    # -- delivery -----------------------------------------------------------

    def _end_of_data(self):
        self.mode = _COMMAND
        spool, self._spool = self._spool, None
        sender, recipients = self._sender, self._recipients
        self._reset_transaction()
        if self._spooled > self._limits.max_message_size:
            refusal = (552, b"5.3.4", b"Message size exceeds fixed maximum message size")
        else:
            if self._spool_error is None:
                try:
                    # A full disk can surface only when the buffer is written.
                    spool.flush()
                except OSError as e:
                    self._spool_error = e
            refusal = None if self._spool_error is None else _temporary_failure(self._spool_error)
        self._delivering = True
        self.transport.pauseProducing()
        defer.Deferred.fromCoroutine(self._deliver_message(spool, sender, recipients, refusal, monotonic()))

    async def _deliver_message(self, spool, sender: bytes, recipients, refusal, started: float):
        """
        RFC 2033 4.2: one reply per accepted recipient, in RCPT order.  DATA
        is timed from the final dot to the last of them: the store's work,
        not how fast the client sent the message.
        """
        try:
            started_together = None
            if refusal is None and self._deliveries.batching:
                # Every recipient at once, with one message object: one body
                # spooled, fsynced and parsed, one index commit for them all.
                message = self._message(spool, sender, recipients)
                started_together = [self._start_delivery(message, r) for r in recipients]
            for index, recipient in enumerate(recipients):
                if refusal is not None:
                    code, status, text = refusal
                else:
                    delivery = (
                        started_together[index]
                        if started_together is not None
                        else self._start_delivery(self._message(spool, sender, recipients), recipient)
                    )
                    code, status, text = await self._reply_for(recipient, delivery)
                self.sendCode(code, b"%s <%s> %s" % (status, recipient.address, text))
        finally:
            _discard(spool)
            metrics.observe_command("lmtp", b"DATA", monotonic() - started)
            self._delivered()

    @staticmethod
    def _message(spool, sender: bytes, recipients) -> _PrefixedMessage:
        # Trace headers as Dovecot's LMTP writes them: Delivered-To only for
        # a single recipient (Dovecot's lmtp_hdr_delivery_address is "none"
        # with several), so that every recipient gets the same body.
        trace = b"Return-Path: <%s>\r\n" % sender
        if len(recipients) == 1:
            trace += b"Delivered-To: %s\r\n" % recipients[0].address
        return _PrefixedMessage(trace, spool)

    def _start_delivery(self, message: _PrefixedMessage, recipient: Recipient) -> defer.Deferred:
        return defer.Deferred.fromCoroutine(self._deliveries.deliver(recipient.user, message, recipient.mailbox))

    async def _reply_for(self, recipient: Recipient, delivery: defer.Deferred) -> tuple[int, bytes, bytes]:
        """The reply a recipient gets once its delivery is stored or refused."""
        try:
            record = await delivery
        except TemporaryFailure as e:
            log.warn("Delivery to {user} deferred: {error}", user=recipient.user, error=str(e))
            metrics.count_delivery("tempfail")
            metrics.count_store_error("deliver")
            return _temporary_failure(e)
        except Exception:
            log.failure("While delivering to {user}", user=recipient.user)
            metrics.count_delivery("error")
            metrics.count_store_error("deliver")
            return 451, b"4.3.0", b"Temporary internal error"
        metrics.count_delivery("ok")
        return 250, b"2.0.0", b"Saved as UID %d" % record.uid

    def _delivered(self):
        self._delivering = False
        if not self._open:
            return
        self._arm_deadline()
        self.transport.resumeProducing()
        if not self._draining:
            self._drain()


class LMTPFactory(protocol.ServerFactory):
    """
    Builds L{LMTPServer} sessions over one store and users file.  DATA is
    spooled in ``spool_dir`` (the system's temporary directory when None).
    """

    def __init__(self, store, users, hostname: str, reactor, limits: SessionLimits = SessionLimits(),
                 spool_dir: Path | None = None):
        self.store = store
        self.users = users
        self.hostname = hostname
        self.reactor = reactor
        self.limits = limits
        self.spool_dir = spool_dir
        # One for every session: concurrent deliveries share a commit.
        self.deliveries = GroupCommit(store, reactor)

    def buildProtocol(self, addr):
        server = LMTPServer(self.deliveries, self.users, self.hostname, self.reactor, self.limits, self.spool_dir)
        server.factory = self
        return server


def build_factory(store, users, config, reactor) -> LMTPFactory:
    """
    The LMTP listener's factory for ``service.py``.  DATA is spooled in the
    store's ``spool_directory`` (its own disk, where it has one).
    """
    return LMTPFactory(
        store, users, config.hostname, reactor, SessionLimits.from_config(config), store.spool_directory
    )
