"""
POP3 (RFC 1939, 2449, 3206, 5034): a static view of INBOX per session.

``twisted.mail.pop3.POP3`` is the engine: the AUTHORIZATION / TRANSACTION
split and the idle timer; its framing, command queue and dispatch are
replaced in ``gateway/pop3/engine.py`` (pipelined commands, RFC 2449
PIPELINING, run in order, and a bad one in the queue cannot stall the
rest).  ``Pop3Server`` adds the commands, overriding, one method each, the
places where Twisted falls short of the RFCs or of DESIGN.md:

- message numbers are digits only; ``DELE 0`` does not reach the last message;
- STAT, LIST and UIDL leave out deleted messages, ``LIST n``/``UIDL n`` on one
  answer ``-ERR``, and ``UIDL n`` says ``+OK n uidl`` (Twisted issue 9104);
- CAPA lists what we do (Twisted issue 6755); APOP, RPOP and LAST are gone;
- AUTH PLAIN with an initial response (RFC 5034);
- errors get fixed texts; exceptions are logged, never sent to the client;
- dot-stuffing keeps state across file chunks, so a ``.`` at the start of a
  chunk or of the message is stuffed too;
- the idle timer comes from the config (RFC 1939 3: at least 10 minutes);
- TCP_NODELAY on every connection (DESIGN.md, performance rules;
  ``gateway.net.connection``);
- STLS (RFC 2595 4) through ``gateway.net.tls.start_tls_discarding_buffer``, so
  nothing pipelined behind it in plain text runs;
- outside TLS, USER/PASS and AUTH PLAIN are refused and left out of CAPA
  but from the networks ``auth.plaintext_without_tls`` names (this machine
  by default; DESIGN.md; ``gateway.policy.plaintext``);
- limits (``[limits]``, as they are when the session connects): an
  over-long line is answered and discarded, not buffered, and the session
  goes on; too many bad commands close it; an absolute deadline from
  connect to login (``resetTimeout`` on every line would let a client
  trickling bytes stay for ever); the last two are
  ``gateway.policy.session``'s, as for IMAP and LMTP;
- logins run ``gateway.policy.login``'s sequence, shared with IMAP: the
  failure delay per address, the lockout per user at an address, the
  sessions per user, and the auth log; ``alice#phone`` is alice there, on
  a view of the device's own (``gateway/pop3/devices.py``);
- RETR writes a message in one write (big ones in SEND_CHUNK pieces) and
  waits only while the transport's buffer is full; the \\Seen flags RETR
  sets are saved in one index write once the pipelined commands are all
  answered (or at QUIT, or when the connection drops); once a message has
  gone out whole the next one is opened, for the RETR that follows, and
  read and dot-stuffed too while the session downloads alone in its
  process (``Maildrop.open_ahead``, ``Maildrop.take_prepared``);

The session snapshot and the byte transforms are pure code in
``gateway/pop3/session.py``; the avatar over the store, with the delete
policy, is ``gateway/pop3/maildrop.py``.
"""

from __future__ import annotations

from time import monotonic

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from zope.interface import implementer

from gateway.net.connection import peer_address, set_no_delay, under_tls
from gateway.net.tls import start_tls_discarding_buffer
from gateway.policy import authlog, login as login_policy, sasl
from gateway.policy.login import LoginPolicy
from gateway.policy.plaintext import plaintext_allowed
from gateway.policy.session import Deadline, session_config
# service.py builds the realm from pop3.avatar_factory; the avatar lives apart.
from gateway.pop3.devices import InvalidDevice, split_login
from gateway.pop3.engine import LINE_TOO_LONG, Pop3Engine
from gateway.pop3.maildrop import IMailbox, MaildropLocked, Pop3Mind, avatar_factory  # noqa: F401
from gateway.pop3.session import (
    AuthenticationCancelled,
    AuthenticationFailed,
    BadDeviceName,
    DotStuffer,
    LineTooLong,
    LoginsBlocked,
    PlaintextDisallowed,
    Pop3Error,
    TlsActive,
    TooManyDevices,
    TooManySessions,
    TopFilter,
    UnknownCommand,
    UnsupportedMechanism,
    UserRequired,
    capabilities,
    parse_line_count,
    parse_message_number,
    parse_sasl_plain,
    sasl_mechanisms,
)

log = Logger()

# Dovecot's text at its login timeout, which is absolute from connect, too.
_PRELOGIN_TIMEOUT = b"[SYS/TEMP] Disconnected for inactivity"

# The shared login sequence's refusals, as POP3 answers them.
_LOGIN_REFUSALS = {
    login_policy.BadCredentials: AuthenticationFailed,
    login_policy.LockedOut: LoginsBlocked,
    login_policy.TooManySessions: TooManySessions,
}

# The realm's own refusals, as the auth log names them.
_REALM_REFUSALS = {MaildropLocked: "in-use", TooManyDevices: "too-many-devices"}

# Bytes of a message read and written at once: most messages go out in one
# write; a big one in pieces, so a session's memory stays flat.
SEND_CHUNK = 256 * 1024


@implementer(IPushProducer)
class _SendWindow:
    """
    Registered on the transport while a message is sent: the transport
    pauses it when its buffer holds more than it wants (64 KB for TCP), and
    resumes it when the buffer has gone to the socket.  The sender writes a
    chunk, and waits only when paused, so a session holds at most one chunk
    beyond the transport's buffer, whatever the message size or the number
    of pipelined RETRs.
    """

    def __init__(self):
        self.paused = False
        self.stopped = False
        self._waiting: Deferred | None = None

    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.callback(None)

    def stopProducing(self):
        self.stopped = True
        self.resumeProducing()

    def drained(self) -> Deferred:
        self._waiting = Deferred()
        return self._waiting


class _Transfer:
    """
    One message going out: read, transformed (TOP's lines, dot-stuffing)
    and written a chunk at a time, under a ``_SendWindow`` registered on the
    transport until ``close``.

    Reading stops at the first short read, which for a regular file is its
    end: asking for one octet more than the message holds, its one read
    comes back short, with no extra read() to see EOF.  The read buffer is
    the message's size, not SEND_CHUNK: glibc serves a buffer over its mmap
    threshold (128 KiB until a big one is freed) with a fresh mapping each
    time, page faults and all.
    """

    def __init__(self, transport, file, size: int, status: bytes, top: TopFilter | None,
                 prepared: bytes | None = None):
        self.transport = transport
        self.file = file
        self.want = min(size + 1, SEND_CHUNK)
        self.top = top
        self.stuffer = DotStuffer()
        self.pieces = [b"+OK " + status + b"\r\n"]
        self.written = False
        if prepared is not None:
            # Read and stuffed ahead (``Maildrop.take_prepared``), no file.
            self.pieces.append(prepared)
        self.window = _SendWindow()
        transport.registerProducer(self.window, True)

    def send_while_taken(self) -> bool:
        """
        Write chunks while the transport takes them; whether the message is
        out whole and the transport wants more.  When not: the connection
        is going (``window.stopped``), or the transport's buffer is full and
        this is to be called again once ``window.drained()`` fires.
        """
        window = self.window
        if self.file is None and not (self.written or window.stopped):
            self.transport.writeSequence(self.pieces)
            self.written = True
        while not (self.written or window.paused or window.stopped):
            chunk = self.file.read(self.want)
            last = len(chunk) < self.want
            if self.top is not None:
                chunk = self.top.transform(chunk)
                last = last or self.top.done
            pieces, self.pieces = self.pieces, []
            pieces.append(self.stuffer.transform(chunk))
            if last:
                pieces.append(self.stuffer.terminator())
                self.written = True
            self.transport.writeSequence(pieces)
        return self.written and not (window.paused or window.stopped)

    def close(self) -> None:
        if not self.window.stopped:
            self.transport.unregisterProducer()
        if self.file is not None:
            self.file.close()


class Pop3Server(Pop3Engine):
    """One POP3 connection; see the module docstring for what differs."""

    AUTH_CMDS = [b"CAPA", b"USER", b"PASS", b"AUTH", b"STLS", b"QUIT"]

    do_APOP = None  # no timestamp in the greeting, so no APOP (RFC 1939 7)
    do_RPOP = None
    do_LAST = None  # removed from POP3 by RFC 1725

    def __init__(
        self,
        portal,
        config,
        reactor,
        *,
        logins: LoginPolicy,
        context_factory=None,
    ):
        super().__init__(reactor, config.limits)
        self.portal = portal
        self.config = config
        self.logins = logins
        self.context_factory = context_factory
        self.timeOut = config.pop3.idle_timeout
        self._tls_started = False
        self._prelogin = Deadline(reactor, config.limits.prelogin_timeout, self._prelogin_expired)
        self._login_attempt: Deferred | None = None
        # The name USER gave, waiting for PASS.
        self._user_given: bytes | None = None
        # Called once when the session ends after a login.
        self._end_session = None

    # Connection

    def connectionMade(self):
        set_no_delay(self.transport)
        self.successResponse(self.config.hostname.encode("ascii", "replace") + b" POP3 gateway ready")
        self.setTimeout(self.timeOut)
        self._prelogin.start()

    def connectionLost(self, reason):
        # Replaces POP3.connectionLost: the session's end may wait for QUIT.
        self.connection_gone = True
        self.setTimeout(None)
        self._prelogin.cancel()
        if self._login_attempt is not None:
            # A login queued for its password check leaves the queue.
            self._login_attempt.cancel()
        end, self._end_session = self._end_session, None
        if end is None:
            return
        if self.in_progress is None:
            end()
        else:
            # A QUIT may still be expunging: the lock stays until it is done.
            self.in_progress.addBoth(lambda result: end())

    def _prelogin_expired(self):
        self.failResponse(_PRELOGIN_TIMEOUT)
        self.transport.loseConnection()

    def _peer_ip(self) -> str:
        return peer_address(self.transport)

    def _secure(self) -> bool:
        return under_tls(self.transport, self._tls_started)

    def _plaintext_allowed(self) -> bool:
        return plaintext_allowed(self._peer_ip(), self._secure(), self.config.plaintext_networks)

    def capabilities(self) -> list[bytes]:
        stls = self.context_factory is not None and self.mbox is None and not self._secure()
        return capabilities(stls, self._plaintext_allowed())

    def commands_answered(self):
        """
        The client's pipelined commands are all answered: flag \\Seen what
        RETR sent meanwhile (``Maildrop.mark_seen``) within
        ``maildrop.SEEN_DELAY``, in one index write with what later RETRs
        send before then.  The write is not waited for: the next command is
        answered at once, and QUIT's deletions come after it
        (``Maildrop.save_seen``).
        """
        if self.mbox is not None:
            self.mbox.save_seen_soon()

    # AUTHORIZATION state

    def do_CAPA(self):
        self.multiline_response(b"Capability list follows", [line + b"\r\n" for line in self.capabilities()])

    def do_STLS(self):
        if self.context_factory is None:
            raise UnknownCommand()
        if self._secure():
            raise TlsActive()
        self.successResponse(b"Begin TLS negotiation")
        self._tls_started = True
        # RFC 2595 4: forget what the client said before TLS.
        self._user_given = None
        start_tls_discarding_buffer(self, self.context_factory)

    def _check_plaintext(self):
        if not self._plaintext_allowed():
            authlog.login_failed("pop3", None, self._peer_ip(), "plaintext-disallowed")
            raise PlaintextDisallowed()

    def do_USER(self, user):
        if not self._plaintext_allowed():
            raise PlaintextDisallowed()
        self._user_given = user
        self.successResponse(b"Send PASS")

    def do_PASS(self, password, *words):
        self._check_plaintext()
        if self._user_given is None:
            raise UserRequired()
        user, self._user_given = self._user_given, None
        return self._login(user, b" ".join((password,) + words))

    def do_AUTH(self, mechanism=None, initial_response=None):
        if mechanism is None:
            # Not in RFC 5034, but clients of RFC 1734 list mechanisms so.
            mechanisms = sasl_mechanisms(self._plaintext_allowed())
            self.multiline_response(b"Supported mechanisms follow", [m + b"\r\n" for m in mechanisms])
            return None
        if mechanism.upper() != b"PLAIN":
            raise UnsupportedMechanism()
        self._check_plaintext()
        if initial_response is None:
            self.state = "AUTH"
            self.sendLine(b"+ ")
            return None
        return self._login_plain(parse_sasl_plain(initial_response))

    def state_AUTH(self, line):
        self.state = "COMMAND"
        try:
            if line is LINE_TOO_LONG:
                raise LineTooLong()
            if line == sasl.CANCEL:
                raise AuthenticationCancelled()
            response = parse_sasl_plain(line)
        except Pop3Error as e:
            self.refuse(e)
            return
        self.run(self._login_plain(response), b"AUTH", monotonic())

    def _login_plain(self, response: sasl.PlainResponse):
        return self._login(response.user.encode("utf-8"), response.password)

    async def _login(self, name: bytes, password: bytes):
        # alice#phone: alice's password, locked out and counted as alice, so
        # that device names cannot multiply a guesser's tries.
        try:
            login = split_login(name, self.config.pop3.device_views)
        except InvalidDevice:
            authlog.login_failed("pop3", name, self._peer_ip(), "bad-device")
            raise BadDeviceName() from None
        # A failure's delay keeps the command running: later commands wait
        # in the queue.
        attempt = self.logins.login(
            self.portal, "pop3", self._peer_ip(), login.user, password, IMailbox,
            refusals=_REALM_REFUSALS, mind=Pop3Mind(login.device),
        )
        self._login_attempt = attempt
        try:
            granted = await attempt
        except CancelledError:
            return  # the connection is gone; nobody reads the answer
        except tuple(_LOGIN_REFUSALS) as refusal:
            raise _LOGIN_REFUSALS[type(refusal)]() from None
        finally:
            self._login_attempt = None
        if self.connection_gone or self.transport.disconnecting:
            granted.end()
            return

        def end_session():
            # The maildrop stays locked until its \Seen flags are saved, so
            # the next session's snapshot shows them.
            saved = Deferred.fromCoroutine(maildrop.save_seen())
            saved.addErrback(lambda failure: log.failure("POP3 could not flag messages \\Seen", failure))
            return saved.addBoth(lambda _: granted.end())

        maildrop = self.mbox = granted.avatar
        self._end_session = end_session
        self._prelogin.cancel()
        count, octets = maildrop.view.stat()
        self.successResponse(b"Maildrop has %d messages (%d octets)" % (count, octets))

    # TRANSACTION state

    def do_STAT(self):
        self.successResponse(b"%d %d" % self.mbox.view.stat())

    def do_LIST(self, number=None):
        view = self.mbox.view
        if number is not None:
            number = parse_message_number(number)
            self.successResponse(b"%d %d" % (number, view.visible(number).size))
            return
        count, octets = view.stat()
        lines = [b"%d %d\r\n" % (n, entry.size) for n, entry in view.listing()]
        self.multiline_response(b"%d messages (%d octets)" % (count, octets), lines)

    def do_UIDL(self, number=None):
        view = self.mbox.view
        if number is not None:
            number = parse_message_number(number)
            # RFC 1939 7: "+OK 2 QhdPYR:00WBw1Ph7x7", with the number.
            self.successResponse(b"%d %s" % (number, view.visible(number).uidl))
            return
        lines = [b"%d %s\r\n" % (n, entry.uidl) for n, entry in view.listing()]
        self.multiline_response(b"Unique-ID listing follows", lines)

    def do_RETR(self, number):
        number = parse_message_number(number)
        size = self.mbox.view.readable(number).size
        return self._send_message(number, size, b"%d octets" % (size,), None, self.mbox.mark_seen)

    def do_TOP(self, number, lines):
        number = parse_message_number(number)
        lines = parse_line_count(lines)
        size = self.mbox.view.readable(number).size
        # RFC 1939 7: more lines than the body has, the entire message.  A
        # message has fewer lines than octets, so TOP n 99999999, which
        # fetchmail keeping mail sends for every message, is sent as RETR
        # sends it, without looking for lines.
        top = TopFilter(lines) if lines < size else None
        return self._send_message(number, size, b"Top of message follows", top, None)

    def _send_message(self, number: int, size: int, status: bytes, top: TopFilter | None, sent):
        """
        Send message ``number`` of ``size`` octets after ``+OK status``;
        ``sent(number)``, if given, once it is out whole (not if the
        connection goes first).

        Most messages need no wait: the store has the file at hand and the
        transport takes the message in one write.  Those are sent here and
        None returned, so that the command ends without a coroutine or a
        Deferred (eight clients downloading: 10 us less server CPU a
        message, 10% more messages a second, paired runs); the others get
        the coroutine that finishes them, which the engine runs as any
        command that waits.
        """
        prepared = self.mbox.take_prepared(number) if top is None else None
        if prepared is not None:
            transfer = _Transfer(self.transport, None, size, status, None, prepared)
        else:
            file = self.mbox.open_message_now(number)
            if file is None:
                return self._open_and_send(number, size, status, top, sent)
            transfer = _Transfer(self.transport, file, size, status, top)
        try:
            if not transfer.send_while_taken():
                return self._send_rest(transfer, number, top, sent)
        except BaseException:
            transfer.close()
            raise
        transfer.close()
        self._out_whole(number, top, sent)
        return None

    async def _open_and_send(self, number: int, size: int, status: bytes, top: TopFilter | None, sent):
        file = await self.mbox.open_message(number)
        await self._send_rest(_Transfer(self.transport, file, size, status, top), number, top, sent)

    async def _send_rest(self, transfer: _Transfer, number: int, top: TopFilter | None, sent):
        try:
            while not transfer.send_while_taken():
                if transfer.window.stopped:
                    # The connection is going, and after "+OK" there is
                    # nothing to tell the client.
                    return
                await transfer.window.drained()
                self.resetTimeout()
        finally:
            transfer.close()
        self._out_whole(number, top, sent)

    def _out_whole(self, number: int, top: TopFilter | None, sent) -> None:
        """Message ``number`` has gone out whole (all of it unless ``top``)."""
        if sent is not None:
            sent(number)
        if top is None:
            self.mbox.open_ahead(number)

    async def do_DELE(self, number):
        number = parse_message_number(number)
        await self.mbox.delete(number)
        self.successResponse(b"Message %d deleted" % (number,))

    def do_RSET(self):
        self.mbox.view.reset()
        self.successResponse(b"Maildrop has %d messages (%d octets)" % self.mbox.view.stat())

    async def do_QUIT(self):
        if self.mbox is None:
            self.successResponse(b"Bye")
            self.transport.loseConnection()
            return
        try:
            removed = await self.mbox.apply_deletions()
        except Exception:
            log.failure("POP3 QUIT could not expunge")
            # RFC 1939 6: "-ERR some deleted messages not removed"
            self.failResponse(b"[SYS/TEMP] Some deleted messages not removed")
        else:
            # Unlocked before the answer: a client that connects again the
            # moment it reads it (on this process or another) gets in.
            end, self._end_session = self._end_session, None
            if end is not None:
                await end()
            self.successResponse(b"Bye, %d messages deleted" % (removed,))
        self.transport.loseConnection()


class Pop3Factory(ServerFactory):
    def __init__(self, portal, config, reactor, context_factory, logins: LoginPolicy):
        self.portal = portal
        self.config = config
        self.reactor = reactor
        self.context_factory = context_factory
        self.logins = logins

    def buildProtocol(self, addr):
        # A session keeps the config it connected under (gateway.policy.session).
        protocol = Pop3Server(
            self.portal, session_config(self.config), self.reactor, logins=self.logins,
            context_factory=self.context_factory,
        )
        protocol.factory = self
        return protocol


def build_factory(portal, config, reactor, *, context_factory=None, logins: LoginPolicy | None = None) -> ServerFactory:
    """
    The POP3 listener's factory.  With ``context_factory`` (TLS, from
    ``CertificateStore.context_factory()``) sessions offer STLS.  Pass the
    ``logins`` IMAP uses so that failed logins and
    ``limits.max_connections_per_user`` count both protocols; without one,
    POP3 counts alone.
    """
    if logins is None:
        logins = LoginPolicy(config, reactor)
    return Pop3Factory(portal, config, reactor, context_factory, logins)
