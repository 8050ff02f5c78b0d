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
  commit (``gateway.lmtp.delivery.GroupCommit``); no reply goes out before it
  (``gateway.lmtp.replying``).
- replies: every 2xx/4xx/5xx reply carries an RFC 3463 enhanced status code,
  as advertising ENHANCEDSTATUSCODES requires (RFC 2034 3); the stock texts
  have none.  Refusals are the classes of ``gateway.lmtp.replies``, raised
  by the commands and written by ``_refuse`` alone.
- trace: each copy gets ``Return-Path``, ``Delivered-To`` and ``Received``
  (``gateway.lmtp.trace``), as Dovecot's LMTP writes them.

Limits (``SessionLimits``, from ``[lmtp]`` and ``[limits]`` as they are
when the session connects: a reload applies to the next session): message
size (552), recipients per transaction (452 4.5.3), command line length,
bad commands per session (then 421 and close; ``gateway.policy.session``
counts, as for POP3 and IMAP), and an absolute deadline from connecting, or
from the end of the last transaction, to DATA: a client that trickles
commands a byte at a time cannot hold a session open.  Inside DATA
the idle timeout applies.  The DATA spool (``gateway.lmtp.spool``) keeps
the message in memory, which the store writes, fsyncs and parses on its own
threads: the reactor thread makes no file and writes none for it.  A
message too big for memory spills, as it arrives, to an anonymous file in
the store's own ``tmp/`` made and written on a thread
(``gateway.lmtp.spill``; same filesystem: a killed server leaves no file
behind, and the copy of a transaction with one recipient becomes the stored
body without being written again).

Recipients are resolved by ``gateway.lmtp.recipients``; a ``+detail``
selects a folder only under ``[lmtp] save_to_detail_mailbox``.  A copy that
would take its user over quota (``gateway.policy.quota``) is refused for
that recipient alone: 552 5.2.2, or 452 4.2.2 under ``[quota]
full_tempfail``.
"""

from __future__ import annotations

import ipaddress
import re
from functools import partial
from time import monotonic
from pathlib import Path

import attrs
from twisted.internet import defer, protocol, threads
from twisted.logger import Logger
from twisted.mail import smtp

from gateway.lmtp import replies
from gateway.lmtp.delivery import GroupCommit
from gateway.lmtp.replying import DeliveryReplies
from gateway.lmtp.spill import SpillFile
from gateway.lmtp.spool import DataSpool
from gateway.lmtp.recipients import MAX_ADDRESS, MAX_LOCAL_PART, Recipient, header_safe, resolve_recipient
from gateway.lmtp.trace import Transaction, helo_domain, trace_fields, transaction_id
from gateway.net import metrics
from gateway.net.dotlines import find_dot_line
from gateway.net.connection import set_no_delay
from gateway.policy.quota import Quotas
from gateway.policy.session import BadCommands, Deadline, session_config

log = Logger()

_ESMTP_KEYWORD = re.compile(rb"[A-Za-z0-9][A-Za-z0-9-]{0,63}")

_COMMAND = smtp.COMMAND
_DATA = smtp.DATA


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
        """A session's limits, from the config in force when it connects."""
        return cls(
            max_message_size=config.lmtp.max_message_size,
            max_recipients=config.lmtp.max_recipients,
            max_line_length=config.limits.max_line_length,
            max_bad_commands=config.limits.max_bad_commands,
            transaction_deadline=config.limits.prelogin_timeout,
        )


def _peer_ip(address) -> str | None:
    """The peer's IP address, or None for a peer that has none (a UNIX socket)."""
    host = getattr(address, "host", None)
    try:
        return str(ipaddress.ip_address(host)) if isinstance(host, str) else None
    except ValueError:
        return None


class LMTPServer(DeliveryReplies, smtp.SMTP):
    """
    One LMTP session.  Transaction state is ``_transaction`` (None before
    MAIL) and ``_recipients``; during DATA the message goes to ``_spool``;
    while it is being stored (``_delivering``) further input is held, so that
    pipelined commands are answered after the DATA replies.
    """

    def __init__(self, deliveries: GroupCommit, users, hostname: str, reactor, limits: SessionLimits,
                 spool_dir: Path | None, save_to_detail_mailbox: bool = False, new_transaction_id=transaction_id,
                 quotas: Quotas | None = None):
        super().__init__()
        self._quotas = quotas
        # The size of the message being delivered, for its quota check.
        self._size = 0
        self.host = hostname
        self._deliveries = deliveries
        self._users = users
        self._reactor = reactor
        self._limits = limits
        self._spool_dir = spool_dir
        self._save_to_detail_mailbox = save_to_detail_mailbox
        self._new_transaction_id = new_transaction_id
        self.MAX_LENGTH = limits.max_line_length
        self.timeout = limits.idle_timeout
        # Input not yet handled (smtp.SMTP's LineReceiver buffer is unused).
        self._input = b""
        self._greeted = False
        self._client_name: bytes | None = None
        self._peer: str | None = None
        self._transaction: Transaction | None = None
        self._recipients: list[Recipient] = []
        self._spool: DataSpool | None = None
        # The last two bytes of message data seen: where the lines end.
        self._tail = b""
        self._delivering = False
        self._draining = False
        # Whether input that came during a delivery, or a spool file behind
        # with its writes, stopped further reading.
        self._paused = False
        self._behind_the_disk = False
        # Replies to the input of one drain, sent together when it ends.
        self._replies: list[bytes] = []
        self._open = False
        self._bad_commands = BadCommands(limits.max_bad_commands)
        # From connecting, or from the end of a transaction, to DATA.
        self._deadline = Deadline(reactor, limits.transaction_deadline, self._deadline_passed)

    # -- connection ---------------------------------------------------------

    def callLater(self, period, func):
        return self._reactor.callLater(period, func)

    def connectionMade(self):
        self._open = True
        self._peer = _peer_ip(self.transport.getPeer())
        set_no_delay(self.transport)
        super().connectionMade()
        self._deadline.start()

    def connectionLost(self, reason):
        self._open = False
        # A spool being delivered is closed by the delivery when it is done.
        if self.mode == _DATA:
            self._close_spool()
        self.setTimeout(None)
        self._deadline.cancel()

    def greeting(self):
        return self.host + b" LMTP ready"

    def timeoutConnection(self):
        self._refuse(replies.IdleTimeout(self.host))

    def _deadline_passed(self):
        self._refuse(replies.NoMessageInTime(self.host))

    # -- framing ------------------------------------------------------------

    def dataReceived(self, data):
        self._input += data
        if self._delivering:
            # Pipelined behind a message being stored: it waits for that
            # message's replies, and nothing more is read meanwhile.
            self._pause()
            return
        self._drain()

    def _pause(self):
        if not self._paused:
            self._paused = True
            self.transport.pauseProducing()

    def _drain(self):
        """
        Handle buffered input until it runs out, the connection closes, or a
        delivery starts (then the rest waits for ``_delivered``).
        """
        self._draining = True
        buffer, pos = self._input, 0
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
                    self._refuse(replies.LineTooLong())
                    continue
                self.lineReceived(line.removesuffix(b"\r"))
        finally:
            self._input = buffer[pos:]
            self._draining = False
            self._send_replies()
        if self._delivering and self._input:
            # Commands pipelined behind the final dot: held (see dataReceived).
            self._pause()
        idle = self.mode == _COMMAND and not self._delivering and not self.transport.disconnecting
        if idle and len(self._input) > self.MAX_LENGTH:
            self._input = b""
            self._refuse(replies.UnendingLine())

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
            next_dot = find_dot_line(buffer, pos)
            end = len(buffer) if next_dot < 0 else next_dot + 1
            self._spool_write(buffer[pos:end])
            pos = end
        return pos

    def _spool_write(self, chunk: bytes):
        # Not tail + chunk: that copies a whole chunk for its last two bytes.
        self._tail = chunk[-2:] if len(chunk) >= 2 else (self._tail + chunk)[-2:]
        self._spool.write(chunk)
        if not self._behind_the_disk and (room := self._spool.room()) is not None:
            # A spool file that the disk has not caught up with: read no
            # more until it has.
            self._behind_the_disk = True
            self._pause()
            room.addCallback(self._caught_up_with_the_disk)

    def _caught_up_with_the_disk(self, _):
        self._behind_the_disk = False
        if self._open and self._paused and not self._delivering:
            self._paused = False
            self.transport.resumeProducing()

    def _close_spool(self):
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    # -- replies ------------------------------------------------------------

    def sendLine(self, line):
        """
        One reply line.  While input is being handled the lines are held
        and go out in one write when it ends (RFC 2920 3.2: a server may
        answer pipelined commands together); else at once.  Either way
        ``write`` is given whole bytes, which a write-through connection
        (``gateway.net.writethrough``) sends in the call rather than on
        the reactor's next turn.
        """
        if self._draining:
            self._replies.append(line + b"\r\n")
        else:
            self.transport.write(line + b"\r\n")

    def _send_replies(self):
        if self._replies:
            replies_, self._replies = self._replies, []
            self.transport.write(b"".join(replies_))

    def _close(self):
        """End the session once every reply written so far is sent."""
        self._send_replies()
        self.transport.loseConnection()

    def _refuse(self, error: replies.LmtpError, recipient: bytes | None = None):
        """
        The one place a refusal is written.  A bad command is counted, and
        the one that reaches the limit ends the session.
        """
        self.sendCode(error.code, error.reply(recipient))
        if error.closes:
            self._close()
        elif isinstance(error, replies.BadCommand) and self._bad_commands.bad():
            self._refuse(replies.TooManyBadCommands(self.host))

    def lookupMethod(self, command):
        # The stock lookup decodes the verb as ASCII and raises on other bytes.
        if not (command.isascii() and command.isalpha()):
            return None
        return super().lookupMethod(command)

    def state_COMMAND(self, line):
        started = monotonic()
        try:
            super().state_COMMAND(line)
        except replies.LmtpError as error:
            self._refuse(error)
        if self.mode == _DATA:
            # 354 is not DATA's final answer; _deliver_message times it.
            return
        # The whole line: metrics.command_label takes its first word.
        metrics.observe_command("lmtp", line, monotonic() - started)

    def sendSyntaxError(self):
        raise replies.CommandSyntax()

    def do_UNKNOWN(self, rest):
        raise replies.UnknownCommand()

    # -- commands -----------------------------------------------------------

    def do_HELO(self, rest):
        raise replies.UseLHLO()

    do_EHLO = do_HELO

    def do_LHLO(self, rest):
        if not rest:
            raise replies.LhloSyntax()
        self._greeted = True
        # What the Received field will call the client (Dovecot: "unknown"
        # when the name is not a domain or address literal).
        self._client_name = helo_domain(rest)
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
            raise replies.LhloFirst()
        if self._transaction is not None:
            raise replies.SenderGiven()
        match = self.mail_re.match(rest)
        if not match:
            raise replies.MailSyntax()
        try:
            sender = bytes(smtp.Address(match.group("path"), self.host))
        except smtp.AddressError:
            raise replies.InvalidSender() from None
        if not header_safe(sender):
            raise replies.InvalidSender()
        if len(sender) > MAX_ADDRESS:
            raise replies.SenderTooLong(MAX_ADDRESS)
        for parameter in (match.group("opts") or b"").split():
            keyword, _, value = parameter.partition(b"=")
            keyword = keyword.upper()
            if keyword == b"SIZE" and value.isdigit():
                # RFC 1870 6: refuse at once what DATA would refuse later.
                if int(value) > self._limits.max_message_size:
                    raise replies.MessageTooBig()
            elif keyword == b"BODY" and value.upper() in (b"7BIT", b"8BITMIME"):
                pass
            else:
                raise replies.UnsupportedParameter(keyword if _ESMTP_KEYWORD.fullmatch(keyword) else None)
        self._transaction = Transaction(
            helo=self._client_name,
            peer_ip=self._peer,
            hostname=self.host,
            id=self._new_transaction_id(),
            sender=sender,
            started=self._reactor.seconds(),
        )
        self.sendCode(250, b"2.1.0 Sender OK")

    def do_RCPT(self, rest):
        if self._transaction is None:
            raise replies.MailFirst()
        match = self.rcpt_re.match(rest)
        if not match:
            raise replies.RcptSyntax()
        if match.group("opts"):
            raise replies.UnsupportedParameter()
        if len(self._recipients) >= self._limits.max_recipients:
            raise replies.TooManyRecipients()
        try:
            address = smtp.Address(match.group("path"), self.host)
            local_part = address.local.decode("utf-8")
            domain = address.domain.decode("utf-8")
        except (smtp.AddressError, UnicodeDecodeError):
            raise replies.InvalidRecipient() from None
        if not header_safe(bytes(address)):
            raise replies.InvalidRecipient()
        if len(address.local) > MAX_LOCAL_PART:
            raise replies.LocalPartTooLong(MAX_LOCAL_PART)
        if len(bytes(address)) > MAX_ADDRESS:
            raise replies.RecipientTooLong(MAX_ADDRESS)
        try:
            target = resolve_recipient(local_part, self._users, domain)
        except Exception:
            log.failure("While looking up recipient {address}", address=bytes(address))
            raise replies.LookupFailed() from None
        if target is None:
            raise replies.NoSuchUser(bytes(address))
        user, mailbox = target
        detail = self._save_to_detail_mailbox and mailbox != "INBOX"
        self._recipients.append(Recipient(bytes(address), user, mailbox if detail else "INBOX", detail))
        self.sendCode(250, b"2.1.5 OK")

    def do_DATA(self, rest):
        if self._transaction is None:
            raise replies.MailFirst()
        if not self._recipients:
            raise replies.NoValidRecipients()
        if rest:
            raise replies.DataSyntax()
        # One recipient: the spool is the whole copy, fields first.
        fields = trace_fields(self._transaction, self._recipients[0].address) if len(self._recipients) == 1 else b""
        spill = partial(SpillFile, self.factory.run_off_reactor, self._spool_dir)
        self._spool = DataSpool(fields, self._limits.max_message_size, spill)
        self._tail = b""
        self.mode = _DATA
        # The idle timeout covers DATA; the message size bounds it.
        self._deadline.cancel()
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
        self._close()

    def _reset_transaction(self):
        self._transaction = None
        self._recipients = []

    # -- delivery -----------------------------------------------------------

    def _end_of_data(self):
        self.mode = _COMMAND
        spool, self._spool = self._spool, None
        transaction, recipients = self._transaction, self._recipients
        self._size = spool.size
        self._reset_transaction()
        self._delivering = True
        defer.Deferred.fromCoroutine(self._deliver_message(spool, transaction, recipients, monotonic()))

    def _delivered(self):
        self._delivering = False
        if not self._open:
            return
        self._deadline.start()
        if self._paused:
            self._paused = False
            self.transport.resumeProducing()
        if not self._draining:
            self._drain()


class LMTPFactory(protocol.ServerFactory):
    """
    Builds L{LMTPServer} sessions over one store and users file.  Each
    session runs under the config in force when it connects (``config`` may
    be a ``LiveConfig``, which a reload swaps): its hostname, ``[lmtp]`` and
    ``[limits]``.  DATA is spooled in ``spool_dir`` (the system's temporary
    directory when None).  ``new_transaction_id`` makes the id each MAIL
    gets in ``Received``.
    """

    def __init__(self, store, users, config, reactor, spool_dir: Path | None = None,
                 new_transaction_id=transaction_id, quotas: Quotas | None = None):
        self.store = store
        self.users = users
        self.config = config
        self.reactor = reactor
        self.spool_dir = spool_dir
        self.new_transaction_id = new_transaction_id
        self.quotas = quotas
        # One for every session: concurrent deliveries share a commit.
        self.deliveries = GroupCommit(store, reactor)

    def run_off_reactor(self, work, *args) -> defer.Deferred:
        """``work(*args)`` in the reactor's thread pool (at once where the reactor has none, as a test's clock)."""
        pool = getattr(self.reactor, "getThreadPool", None)
        if pool is None:
            return defer.maybeDeferred(work, *args)
        return threads.deferToThreadPool(self.reactor, pool(), work, *args)

    def buildProtocol(self, addr):
        config = session_config(self.config)
        server = LMTPServer(self.deliveries, self.users, config.hostname, self.reactor,
                            SessionLimits.from_config(config), self.spool_dir,
                            config.lmtp.save_to_detail_mailbox, self.new_transaction_id, self.quotas)
        server.factory = self
        return server


def build_factory(store, users, config, reactor, quotas: Quotas | None = None) -> LMTPFactory:
    """
    The LMTP listener's factory for ``service.py``; ``config`` is read at
    every connection (pass the ``LiveConfig``).  DATA is spooled in the
    store's ``spool_directory`` (its own disk, where it has one).  Without
    ``quotas``, the config's ``[quota]`` and the users file's rules.
    """
    if quotas is None:
        quotas = Quotas(config, getattr(users, "quota_limits", lambda name: None))
    return LMTPFactory(store, users, config, reactor, store.spool_directory, quotas=quotas)
