"""
POP3 (RFC 1939, 2449, 3206, 5034): a static view of INBOX per session.

``twisted.mail.pop3.POP3`` is the engine: line framing, the AUTHORIZATION /
TRANSACTION split and the idle timer.  ``Pop3Server`` overrides, one method
each, the places where Twisted falls short of the RFCs or of DESIGN.md:

- commands are queued as raw lines while one is in progress (login included),
  so pipelined commands (RFC 2449 PIPELINING) run in order and a bad one in
  the queue cannot stall the rest;
- message numbers are digits only; ``DELE 0`` does not reach the last message;
- STAT, LIST and UIDL leave out deleted messages, ``LIST n``/``UIDL n`` on one
  answer ``-ERR``, and ``UIDL n`` says ``+OK n uidl`` (Twisted issue 9104);
- CAPA lists what we do (Twisted issue 6755); APOP, RPOP and LAST are gone;
- AUTH PLAIN with an initial response (RFC 5034);
- errors get fixed texts; exceptions are logged, never sent to the client;
- dot-stuffing keeps state across file chunks, so a ``.`` at the start of a
  chunk or of the message is stuffed too;
- the idle timer comes from the config (RFC 1939 3: at least 10 minutes);
- TCP_NODELAY on every connection (DESIGN.md, performance rules);
- STLS (RFC 2595 4) through ``gateway.net.tls.start_tls_discarding_buffer``, so
  nothing pipelined behind it in plain text runs;
- outside TLS, USER/PASS and AUTH PLAIN are refused and left out of CAPA
  but from the networks ``auth.plaintext_without_tls`` names (this machine
  by default; DESIGN.md; ``gateway.policy.plaintext``);
- limits (``[limits]``): an over-long line is answered and discarded, not
  buffered, and the session goes on; too many bad commands close it; an
  absolute deadline from connect to login (``resetTimeout`` on every line
  would let a client trickling bytes stay for ever);
- logins run ``gateway.policy.login``'s sequence, shared with IMAP: the
  failure delay per address, the lockout per user at an address, the
  sessions per user, and the auth log; ``alice#phone`` is alice there, on
  a view of the device's own (``gateway/pop3/devices.py``);
- RETR writes a message in one write (big ones in SEND_CHUNK pieces) and
  waits only while the transport's buffer is full; the \\Seen flags RETR
  sets are saved in one index write once the pipelined commands are all
  answered (or at QUIT, or when the connection drops);

The session snapshot and the byte transforms are pure code in
``gateway/pop3/session.py``; the avatar over the store, with the delete
policy, is ``gateway/pop3/maildrop.py``.
"""

from __future__ import annotations

import inspect
from time import monotonic

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IPushProducer, ISSLTransport
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.mail import pop3 as twisted_pop3
from twisted.python.failure import Failure
from zope.interface import implementer

from gateway.net import metrics
from gateway.policy import authlog, login as login_policy, sasl
from gateway.policy.addresses import normalise_ip
from gateway.policy.login import LoginPolicy
from gateway.policy.plaintext import plaintext_allowed
# service.py builds the realm from pop3.avatar_factory; the avatar lives apart.
from gateway.pop3.devices import InvalidDevice, split_login
from gateway.pop3.maildrop import IMailbox, MaildropLocked, Pop3Mind, avatar_factory  # noqa: F401
from gateway.pop3.session import (
    AuthenticationCancelled,
    AuthenticationFailed,
    BadCommand,
    BadDeviceName,
    DotStuffer,
    InvalidSyntax,
    LineTooLong,
    LoginsBlocked,
    PlaintextDisallowed,
    Pop3Error,
    TlsActive,
    TooManyBadCommands,
    TooManyDevices,
    TooManySessions,
    TopFilter,
    UnknownCommand,
    UnsupportedMechanism,
    UserRequired,
    WrongState,
    capabilities,
    parse_line_count,
    parse_message_number,
    parse_sasl_plain,
    sasl_mechanisms,
)
from gateway.net.tls import start_tls_discarding_buffer

log = Logger()

# RFC 3206 4: SYS/TEMP for failures that may go away if retried.
_INTERNAL_ERROR = b"[SYS/TEMP] Internal server error, try again later"

# Dovecot's text at its login timeout, which is absolute from connect, too.
_PRELOGIN_TIMEOUT = b"[SYS/TEMP] Disconnected for inactivity"

# Pipelined lines queued behind a running command before the connection
# stops being read: input stays bounded whatever the client sends.
MAX_QUEUED_LINES = 100

# Stands in the line stream for a line longer than the limit, so that its
# answer keeps its place among pipelined commands; never equal to real input.
_LINE_TOO_LONG = object()

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


_ARITIES: dict = {}


def _arity(handler) -> tuple[int, float]:
    """How many arguments a ``do_`` method takes: (fewest, most)."""
    function = getattr(handler, "__func__", handler)
    arity = _ARITIES.get(function)
    if arity is None:
        parameters = inspect.signature(handler).parameters.values()
        positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        fewest = sum(p.default is p.empty for p in positional)
        spread = any(p.kind == p.VAR_POSITIONAL for p in parameters)
        arity = _ARITIES[function] = (fewest, float("inf") if spread else len(positional))
    return arity


class Pop3Server(twisted_pop3.POP3):
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
        self.portal = portal
        self.config = config
        self.reactor = reactor
        self.logins = logins
        self.context_factory = context_factory
        self.timeOut = config.pop3.idle_timeout
        # RFC 1939 3 allows 40 octets of argument, but AUTH continuation
        # lines (RFC 5034 4) carry long passwords.
        self.MAX_LENGTH = config.limits.max_line_length
        self._connection_gone = False
        self._in_progress: Deferred | None = None
        self._reading_paused = False
        self._discarding_line = False
        self._bad_commands = 0
        self._tls_started = False
        self._prelogin_deadline = None
        self._login_attempt: Deferred | None = None

    def callLater(self, period, func):
        return self.reactor.callLater(period, func)

    # Connection

    def connectionMade(self):
        # Nagle's algorithm holds back the short replies of a pipelined
        # session: 200 times slower (DESIGN.md).
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        self.successResponse(self.config.hostname.encode("ascii", "replace") + b" POP3 gateway ready")
        self.setTimeout(self.timeOut)
        self._prelogin_deadline = self.reactor.callLater(self.config.limits.prelogin_timeout, self._prelogin_expired)

    def connectionLost(self, reason):
        self._connection_gone = True
        self.setTimeout(None)
        self._end_prelogin_deadline()
        if self._login_attempt is not None:
            # A login queued for its password check leaves the queue.
            self._login_attempt.cancel()
        logout, self._onLogout = self._onLogout, None
        if logout is None:
            return
        if self._in_progress is None:
            logout()
        else:
            # A QUIT may still be expunging: the lock stays until it is done.
            self._in_progress.addBoth(lambda result: logout())

    def _prelogin_expired(self):
        self._prelogin_deadline = None
        self.failResponse(_PRELOGIN_TIMEOUT)
        self.transport.loseConnection()

    def _end_prelogin_deadline(self):
        deadline, self._prelogin_deadline = self._prelogin_deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def successResponse(self, message=b""):
        if not isinstance(message, bytes):
            message = str(message).encode("utf-8")
        self.sendLine(b"+OK " + message if message else b"+OK")

    def _peer_ip(self) -> str:
        host = getattr(self.transport.getPeer(), "host", None)
        return normalise_ip(host) if isinstance(host, str) else "local"

    def _secure(self) -> bool:
        return self._tls_started or ISSLTransport.providedBy(self.transport)

    def _plaintext_allowed(self) -> bool:
        return plaintext_allowed(self._peer_ip(), self._secure(), self.config.plaintext_networks)

    def capabilities(self) -> list[bytes]:
        stls = self.context_factory is not None and self.mbox is None and not self._secure()
        return capabilities(stls, self._plaintext_allowed())

    # Framing and command dispatch

    def dataReceived(self, data):
        """
        LineOnlyReceiver's framing, but an over-long line is answered and
        skipped up to its end: never buffered past the limit, and the
        session goes on (its own drops the connection and the rest of the
        packet).  ``self.lineReceived`` is looked up per line, and the rest
        is kept in ``_buffer`` first, because STLS replaces both.
        """
        lines = (self._buffer + data).split(self.delimiter)
        self._buffer = lines.pop()
        for line in lines:
            if self.transport.disconnecting:
                return
            if self._discarding_line:
                self._discarding_line = False
            elif len(line) > self.MAX_LENGTH:
                self.lineReceived(_LINE_TOO_LONG)
            else:
                self.lineReceived(line)
        if self.transport.disconnecting:
            return
        if not self._discarding_line and len(self._buffer) > self.MAX_LENGTH:
            self._discarding_line = True
            self.lineReceived(_LINE_TOO_LONG)
        if self._discarding_line:
            # Keep a CR: it may be half of the CRLF that ends the line.
            self._buffer = self._buffer[-1:] if self._buffer.endswith(b"\r") else b""
        if self.blocked is None:
            self._save_seen()

    def lineReceived(self, line):
        if self.blocked is not None:
            self.blocked.append(line)
            if len(self.blocked) >= MAX_QUEUED_LINES and not self._reading_paused:
                self._reading_paused = True
                self.transport.pauseProducing()
            return
        self.resetTimeout()
        getattr(self, "state_" + self.state)(line)

    def _unblock(self, _=None):
        lines, self.blocked = self.blocked, None
        while lines and self.blocked is None and not self.transport.disconnecting and not self._connection_gone:
            self.lineReceived(lines.pop(0))
        if self.blocked is not None:
            self.blocked.extend(lines)
        else:
            self._save_seen()
        if self._reading_paused and (self.blocked is None or len(self.blocked) < MAX_QUEUED_LINES):
            self._reading_paused = False
            self.transport.resumeProducing()

    def _save_seen(self):
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

    def state_COMMAND(self, line):
        if line is _LINE_TOO_LONG:
            self._refuse(LineTooLong())
            return
        self.processCommand(*line.split(b" "))

    def processCommand(self, command, *args):
        started = monotonic()
        command = command.upper()
        try:
            result = self._dispatch(command, args)
        except Pop3Error as e:
            self._refuse(e)
        except Exception:
            log.failure("POP3 command {command} failed", command=command)
            self.failResponse(_INTERNAL_ERROR)
        else:
            if inspect.iscoroutine(result):
                self._run(result, command, started)
                return
            if self.state == "AUTH":
                # Only the challenge went out; state_AUTH times the login.
                return
        metrics.observe_command("pop3", command, monotonic() - started)

    def _dispatch(self, command: bytes, args):
        handler = getattr(self, "do_" + command.decode("ascii", "replace"), None)
        if handler is None:
            raise UnknownCommand()
        authenticated = self.mbox is not None
        if authenticated == (command in self.AUTH_CMDS) and command not in (b"CAPA", b"QUIT"):
            raise WrongState()
        fewest, most = _arity(handler)
        if not fewest <= len(args) <= most:
            raise InvalidSyntax()
        return handler(*args)

    def _refuse(self, error: Pop3Error):
        self.failResponse(error.text)
        if isinstance(error, BadCommand):
            self._bad_commands += 1
            if self._bad_commands >= self.config.limits.max_bad_commands:
                self.failResponse(TooManyBadCommands.text)
                self.transport.loseConnection()

    def _run(self, coroutine, command: bytes, started: float):
        """
        Run a command that may wait on the store or the socket.

        Its first step runs here: a Deferred that has already fired (a
        store read answers at once) does not suspend an ``await``, so most
        commands end in that step, with no Deferred of their own.  One that
        waits goes on under ``Deferred.fromCoroutine``, which resumes it at
        the same ``await``, and later lines queue meanwhile.
        """
        try:
            coroutine.send(None)
        except StopIteration:
            metrics.observe_command("pop3", command, monotonic() - started)
            return
        except Exception:
            self._answer_failure(Failure())
            metrics.observe_command("pop3", command, monotonic() - started)
            return
        self.blocked = []
        done = Deferred.fromCoroutine(coroutine)
        done.addErrback(self._answer_failure)
        if done.called:
            metrics.observe_command("pop3", command, monotonic() - started)
            self._unblock()
            return
        self._in_progress = done

        def finished(result):
            self._in_progress = None
            metrics.observe_command("pop3", command, monotonic() - started)
            self._unblock()
            return result

        done.addCallback(finished)

    def _answer_failure(self, failure):
        if failure.check(Pop3Error):
            self._refuse(failure.value)
        else:
            log.failure("POP3 command failed", failure)
            self.failResponse(_INTERNAL_ERROR)

    # AUTHORIZATION state

    def do_CAPA(self):
        self.successResponse(b"Capability list follows")
        self.transport.writeSequence([line + b"\r\n" for line in self.capabilities()] + [b".\r\n"])

    def do_STLS(self):
        if self.context_factory is None:
            raise UnknownCommand()
        if self._secure():
            raise TlsActive()
        self.successResponse(b"Begin TLS negotiation")
        self._tls_started = True
        # RFC 2595 4: forget what the client said before TLS.
        self._userIs = None
        start_tls_discarding_buffer(self, self.context_factory)

    def _check_plaintext(self):
        if not self._plaintext_allowed():
            authlog.login_failed("pop3", None, self._peer_ip(), "plaintext-disallowed")
            raise PlaintextDisallowed()

    def do_USER(self, user):
        if not self._plaintext_allowed():
            raise PlaintextDisallowed()
        self._userIs = user
        self.successResponse(b"Send PASS")

    def do_PASS(self, password, *words):
        self._check_plaintext()
        if self._userIs is None:
            raise UserRequired()
        user, self._userIs = self._userIs, None
        return self._login(user, b" ".join((password,) + words))

    def do_AUTH(self, mechanism=None, initial_response=None):
        if mechanism is None:
            # Not in RFC 5034, but clients of RFC 1734 list mechanisms so.
            self.successResponse(b"Supported mechanisms follow")
            mechanisms = sasl_mechanisms(self._plaintext_allowed())
            self.transport.writeSequence([m + b"\r\n" for m in mechanisms] + [b".\r\n"])
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
            if line is _LINE_TOO_LONG:
                raise LineTooLong()
            if line == sasl.CANCEL:
                raise AuthenticationCancelled()
            response = parse_sasl_plain(line)
        except Pop3Error as e:
            self._refuse(e)
            return
        self._run(self._login_plain(response), b"AUTH", monotonic())

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
        if self._connection_gone or self.transport.disconnecting:
            granted.end()
            return

        def end_session():
            # The maildrop stays locked until its \Seen flags are saved, so
            # the next session's snapshot shows them.
            saved = Deferred.fromCoroutine(maildrop.save_seen())
            saved.addErrback(lambda failure: log.failure("POP3 could not flag messages \\Seen", failure))
            saved.addBoth(lambda _: granted.end())

        maildrop = self.mbox = granted.avatar
        self._onLogout = end_session
        self._end_prelogin_deadline()
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
        self.successResponse(b"%d messages (%d octets)" % (count, octets))
        self.transport.writeSequence(lines + [b".\r\n"])

    def do_UIDL(self, number=None):
        view = self.mbox.view
        if number is not None:
            number = parse_message_number(number)
            # RFC 1939 7: "+OK 2 QhdPYR:00WBw1Ph7x7", with the number.
            self.successResponse(b"%d %s" % (number, view.visible(number).uidl))
            return
        lines = [b"%d %s\r\n" % (n, entry.uidl) for n, entry in view.listing()]
        self.successResponse(b"Unique-ID listing follows")
        self.transport.writeSequence(lines + [b".\r\n"])

    async def do_RETR(self, number):
        number = parse_message_number(number)
        size = self.mbox.view.readable(number).size
        if await self._send_message(number, b"%d octets" % (size,), None):
            self.mbox.mark_seen(number)

    async def do_TOP(self, number, lines):
        number = parse_message_number(number)
        top = TopFilter(parse_line_count(lines))
        self.mbox.view.readable(number)
        await self._send_message(number, b"Top of message follows", top)

    async def _send_message(self, number: int, status: bytes, top: TopFilter | None) -> bool:
        """
        Stream the message; False if the connection went away meanwhile.

        A message up to SEND_CHUNK goes out in one write with its status
        line and terminator.  Reading stops at the first short read, which
        for a regular file is its end: no extra read() to see EOF.
        """
        file = await self.mbox.open_message(number)
        window = _SendWindow()
        self.transport.registerProducer(window, True)
        try:
            stuffer = DotStuffer()
            pieces = [b"+OK " + status + b"\r\n"]
            while not window.stopped:
                chunk = file.read(SEND_CHUNK)
                last = len(chunk) < SEND_CHUNK
                if top is not None:
                    chunk = top.transform(chunk)
                    last = last or top.done
                pieces.append(stuffer.transform(chunk))
                if last:
                    pieces.append(stuffer.terminator())
                self.transport.writeSequence(pieces)
                pieces = []
                self.resetTimeout()
                if window.paused:
                    await window.drained()
                if last:
                    return not window.stopped
            # The transport stopped the transfer: the connection is going,
            # and after "+OK" there is nothing to tell the client.
            return False
        finally:
            if not window.stopped:
                self.transport.unregisterProducer()
            file.close()

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
        protocol = Pop3Server(
            self.portal, self.config, self.reactor, logins=self.logins, context_factory=self.context_factory
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
