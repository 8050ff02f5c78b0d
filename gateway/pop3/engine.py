"""
Where the POP3 server meets Twisted's ``twisted.mail.pop3.POP3``: its line
framing, the queue of pipelined commands and command dispatch, replaced;
the one module that relies on names of Twisted's beyond its public API
(``tests/pop3/test_engine.py`` fails if Twisted changes one):

- ``_buffer``, ``LineOnlyReceiver``'s unparsed input: our ``dataReceived``
  keeps it there, because ``gateway.net.tls.start_tls_discarding_buffer``
  empties it at STLS;
- ``blocked``, the name of ``POP3``'s list of lines queued while a
  command runs (and of ``IMAP4Server``'s): STLS empties it too.

What Twisted's ``POP3`` did with ``_userIs`` and ``_onLogout`` is the
server's own now (its ``connectionLost`` replaces Twisted's).

Framing and dispatch, against Twisted's:

- an over-long line is answered in its place among pipelined commands and
  skipped up to its end, never buffered past the limit (Twisted's drops
  the connection and the rest of the packet);
- lines are queued while a command runs (login included) and run in
  order, so a bad one in the queue cannot stall the rest; past
  ``MAX_QUEUED_LINES`` the connection stops being read;
- a command with the wrong number of arguments is a syntax error, not a
  ``TypeError`` sent as text; every ``Pop3Error`` is answered by
  ``refuse`` alone, which counts bad commands (``gateway.policy.session``);
- a command that waits (``async def``) runs its first step at once, and
  only one that really waits holds the queue.
"""

from __future__ import annotations

import inspect
from time import monotonic

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.mail import pop3 as twisted_pop3

from gateway.net import metrics
from gateway.net.firststep import first_step_now
from gateway.policy.session import BadCommands
from gateway.pop3.session import (
    BadCommand,
    InvalidSyntax,
    LineTooLong,
    Pop3Error,
    TooManyBadCommands,
    UnknownCommand,
    WrongState,
)

log = Logger()

# RFC 3206 4: SYS/TEMP for failures that may go away if retried.
INTERNAL_ERROR = b"[SYS/TEMP] Internal server error, try again later"

# Pipelined lines queued behind a running command before the connection
# stops being read: input stays bounded whatever the client sends.
MAX_QUEUED_LINES = 100

# Stands in the line stream for a line longer than the limit, so that its
# answer keeps its place among pipelined commands; never equal to real input.
LINE_TOO_LONG = object()

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


class Pop3Engine(twisted_pop3.POP3):
    """
    Twisted's POP3 with the framing, queue and dispatch above.  The server
    adds the commands, and ``commands_answered`` for what waits until the
    client's pipelined commands are all answered.
    """

    def __init__(self, reactor, limits) -> None:
        self.reactor = reactor
        # RFC 1939 3 allows 40 octets of argument, but AUTH continuation
        # lines (RFC 5034 4) carry long passwords.
        self.MAX_LENGTH = limits.max_line_length
        self._bad_commands = BadCommands(limits.max_bad_commands)
        self.connection_gone = False
        # Lines waiting while a command runs; None when none runs.
        self.blocked: list | None = None
        self.in_progress: Deferred | None = None
        self._reading_paused = False
        self._discarding_line = False

    def callLater(self, period, func):
        # TimeoutMixin would take the global reactor.
        return self.reactor.callLater(period, func)

    def successResponse(self, message=b""):
        if not isinstance(message, bytes):
            message = str(message).encode("utf-8")
        self.sendLine(b"+OK " + message if message else b"+OK")

    def multiline_response(self, status: bytes, lines: list[bytes]) -> None:
        """
        ``+OK status``, then ``lines`` (each with its CRLF, none starting
        with a dot) and the terminating line (RFC 1939 3), in one write, so
        the client reads the whole answer at once.
        """
        self.transport.write(b"".join([b"+OK " + status + b"\r\n", *lines, b".\r\n"]))

    def commands_answered(self) -> None:
        """Every line received so far is answered."""

    # -- framing -----------------------------------------------------------

    def dataReceived(self, data):
        """
        LineOnlyReceiver's framing, but an over-long line is answered and
        skipped up to its end.  ``self.lineReceived`` is looked up per line,
        and the rest is kept in ``_buffer`` first, because STLS replaces both.
        """
        lines = (self._buffer + data).split(self.delimiter)
        self._buffer = lines.pop()
        for line in lines:
            if self.transport.disconnecting:
                return
            if self._discarding_line:
                self._discarding_line = False
            elif len(line) > self.MAX_LENGTH:
                self.lineReceived(LINE_TOO_LONG)
            else:
                self.lineReceived(line)
        if self.transport.disconnecting:
            return
        if not self._discarding_line and len(self._buffer) > self.MAX_LENGTH:
            self._discarding_line = True
            self.lineReceived(LINE_TOO_LONG)
        if self._discarding_line:
            # Keep a CR: it may be half of the CRLF that ends the line.
            self._buffer = self._buffer[-1:] if self._buffer.endswith(b"\r") else b""
        if self.blocked is None:
            self.commands_answered()

    def lineReceived(self, line):
        if self.blocked is not None:
            self.blocked.append(line)
            if len(self.blocked) >= MAX_QUEUED_LINES and not self._reading_paused:
                self._reading_paused = True
                self.transport.pauseProducing()
            return
        # The idle timer restarts after the command's first step, so that a
        # RETR's answer reaches the socket first.
        try:
            getattr(self, "state_" + self.state)(line)
        finally:
            self.resetTimeout()

    def _run_queued(self):
        lines, self.blocked = self.blocked, None
        while lines and self.blocked is None and not self.transport.disconnecting and not self.connection_gone:
            self.lineReceived(lines.pop(0))
        if self.blocked is not None:
            self.blocked.extend(lines)
        else:
            self.commands_answered()
        if self._reading_paused and (self.blocked is None or len(self.blocked) < MAX_QUEUED_LINES):
            self._reading_paused = False
            self.transport.resumeProducing()

    # -- dispatch ----------------------------------------------------------

    def state_COMMAND(self, line):
        if line is LINE_TOO_LONG:
            self.refuse(LineTooLong())
            return
        self.processCommand(*line.split(b" "))

    def processCommand(self, command, *args):
        started = monotonic()
        command = command.upper()
        try:
            result = self._dispatch(command, args)
        except Pop3Error as e:
            self.refuse(e)
        except Exception:
            log.failure("POP3 command {command} failed", command=command)
            self.failResponse(INTERNAL_ERROR)
        else:
            if inspect.iscoroutine(result):
                self.run(result, command, started)
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

    def refuse(self, error: Pop3Error):
        """The one place a ``-ERR`` of a ``Pop3Error`` is written; bad commands are counted."""
        self.failResponse(error.text)
        if isinstance(error, BadCommand) and self._bad_commands.bad():
            self.failResponse(TooManyBadCommands.text)
            self.transport.loseConnection()

    def run(self, coroutine, command: bytes, started: float):
        """
        Run a command that may wait on the store or the socket: most end
        in their first step, run here (``first_step_now``); later lines
        queue while one waits.
        """
        done = first_step_now(coroutine)
        done.addErrback(self._answer_failure)
        if done.called:
            metrics.observe_command("pop3", command, monotonic() - started)
            return
        self.blocked = []
        self.in_progress = done

        def finished(result):
            self.in_progress = None
            metrics.observe_command("pop3", command, monotonic() - started)
            self._run_queued()
            return result

        done.addCallback(finished)

    def _answer_failure(self, failure):
        if failure.check(Pop3Error):
            self.refuse(failure.value)
        else:
            log.failure("POP3 command failed", failure)
            self.failResponse(INTERNAL_ERROR)
