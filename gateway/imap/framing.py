"""
IMAP framing under our control: command lines, over-long lines and literals.

Twisted's ``LineReceiver`` splits lines; around it, this mixin of
``gateway.imap.server.IMAPServer``

- answers a line longer than ``max_line_length`` with ``BAD [TOOBIG]`` and
  skips the rest of it as it arrives, holding at most a few bytes of it;
- reads literal sizes as ASCII digits only (``policy.literal_marker``;
  Twisted's ``int()`` took ``-1``, ``+5`` and ``1_0``) and checks them
  before a byte is read: string literals up to ``max_line_length``, APPEND
  up to ``max_literal_size`` (APPENDLIMIT, RFC 7889), non-synchronizing
  literals before login up to 4096 (LITERAL-, RFC 7888 5);
- reads and throws away a non-synchronizing literal that no parser took
  (its command failed first), so that no byte of it runs as a command, and
  closes the session when it cannot (RFC 7888 4, option 2, as Dovecot).
"""

from __future__ import annotations

import re
import tempfile
from time import monotonic

from twisted.internet import defer
from twisted.logger import Logger
from twisted.mail import imap4

from gateway.imap import policy, search
from gateway.imap.engine import known_error
from gateway.imap.errors import Bad, CommandError, InternalParseError, MissingArgument, bad
from gateway.imap.responses import BYE, Condition, Continuation

log = Logger()

# APPEND literals above this size go to a temporary file, not memory.
SPOOL_IN_MEMORY = 256 * 1024

# While a command runs, what the client sends next waits in the line
# buffer, read but not run; past this many octets the connection stops
# being read until the command ends.
HELD_INPUT = 64 * 1024

LITERAL_TOO_BIG = Condition(BYE, b"[TOOBIG] Literal too big")


class LineTooLong(Bad):
    text = b"[TOOBIG] Command line too long"


class LiteralTooBig(Bad):
    text = b"[TOOBIG] Literal too big"


class AppendTooBig(CommandError):
    # RFC 7889: over APPENDLIMIT.
    text = b"[TOOBIG] Message exceeds APPENDLIMIT"


class MissingCommand(Bad):
    text = b"Missing command"


class NullCommand(Bad):
    text = b"Null command"


class _SpooledLiteral(imap4.LiteralFile):
    """A literal that goes to a temporary file once it is not small."""

    def __init__(self, size, deferred, in_memory=SPOOL_IN_MEMORY):
        self.size = size
        self.defer = deferred
        self.data = tempfile.SpooledTemporaryFile(max_size=in_memory)


class _DiscardedLiteral:
    """The bytes of a non-synchronizing literal no command wanted."""

    def __init__(self, size):
        self.size = size

    def write(self, data):
        if len(data) < self.size:
            self.size -= len(data)
            return None
        passon, self.size = data[self.size:], 0
        return passon


class Framing:
    # -- framing: lines, over-long lines, literals -----------------------

    def dataReceived(self, data):
        # What the commands of these bytes answer goes out together: at
        # their tagged answers, or here once nothing runs (server.hold).
        started = self.hold()
        try:
            self._lines_received(data)
        finally:
            if started and not self.running:
                self.release()
        if self.paused and self.buffered_input > HELD_INPUT:
            self.transport.pauseProducing()

    def hold_input(self):
        """
        Run none of the client's lines until ``resumeProducing``: those that
        arrive meanwhile wait in the line buffer (up to ``HELD_INPUT``
        octets, then the connection is not read), so a pipelined command
        never overtakes one still waiting for the store.  Unlike
        ``pauseProducing`` the connection is not taken out of the reactor's
        poll and put back for every command.
        """
        self.paused = True

    def _lines_received(self, data):
        # b"" too: LineReceiver.resumeProducing sends it to run buffered lines.
        while data is not None and not self._closing:
            if self._overlong_tail is not None:
                data = self._skip_overlong(data)
                if data is None:
                    return
            super().dataReceived(data)
            data, self._leftover = self._leftover, None

    def lineLengthExceeded(self, line):
        # LineReceiver hands over what it held (at most MAX_LENGTH and a bit,
        # and the buffer behind it); the rest of the line is skipped as it
        # comes, never buffered.
        abandoned, tag = self._abandon_command()
        if not abandoned:
            first = line.split(b" ", 1)[0]
            tag = first if policy.looks_like_tag(first) else None
        self._overlong_tag = tag
        self._overlong_tail = b""
        self._leftover = self._skip_overlong(line)

    def _skip_overlong(self, data):
        """Drop bytes up to the end of the over-long line; what follows, or None."""
        end = data.find(b"\n")
        if end < 0:
            self._overlong_tail = (self._overlong_tail + data)[-32:]
            return None
        tail = (self._overlong_tail + data[:end])[-32:].rstrip(b"\r")
        self._overlong_tail = None
        marker = policy.literal_marker(tail)
        if marker is not None and marker[1]:
            # RFC 7888 4: the literal that follows cannot be told from commands.
            self.close_with(LITERAL_TOO_BIG)
            return None
        self.fail(self._overlong_tag, LineTooLong())
        return data[end + 1:]

    def _abandon_command(self):
        """
        Forget a command waiting for more input: (whether one was, the tag
        to answer, None when its command was answered already).
        """
        if self.parseState == "idle":
            tag = self._idle_tag
            self._end_idle()
        elif self.parseState == "pending":
            tag = self._command_tag
        elif self.parseState == "discard":
            tag = None
        else:
            return False, None
        self.parseState = "command"
        self.pending_literal = None
        return True, tag

    def lineReceived(self, line):
        self.resetTimeout()
        self._literal_started = False
        try:
            getattr(self, "parse_" + self.parseState)(line)
        except Exception:
            # Never exception text on the wire (STYLE.md).
            log.failure("While handling an IMAP line")
            self.fail(None, InternalParseError())
        marker = policy.literal_marker(line)
        if marker is not None and marker[1] and not self._literal_started and not self._closing:
            self._discard_literal(marker[0])

    def parse_command(self, line):
        # Replaces IMAP4Server.parse_command, which answers with the text of
        # the exception, client input included.
        words = line.split(None, 2)
        self._command_tag = words[0] if words else None
        # Timed until its tagged answer (send).  The name is what
        # metrics.command_label reads: the command and, for UID, the next word.
        self._command_timer = (self._command_tag, b" ".join(word[:20] for word in words[1:3]), monotonic())
        if len(words) < 2:
            tag = words[0] if words and policy.looks_like_tag(words[0]) else None
            self.fail(tag, MissingCommand() if words else NullCommand())
            return
        tag, command = words[:2]
        try:
            self.dispatchCommand(tag, command.upper(), words[2] if len(words) == 3 else None)
        except Exception as e:
            # A command without argument parsers runs inside dispatchCommand.
            if known_error(e) is None:
                raise
            self.fail(tag, e)

    def _discard_literal(self, size):
        """
        A non-synchronizing literal follows that no parser took (the command
        failed before reaching it): read it and the rest of its command line
        and throw them away, so no byte of it runs as a command.
        """
        limit = self.config.limits.max_literal_size
        if size is None or size > limit:
            self.close_with(LITERAL_TOO_BIG)
            return
        self.parseState = "discard"
        if size:
            self.pending_literal = _DiscardedLiteral(size)
            self.setRawMode()

    def parse_discard(self, line):
        self.parseState = "command"

    def _literal_size(self, line, limit, refusal, alone=True):
        """
        The size of the literal ending ``line`` (``alone``: that is all the
        line holds), checked before a byte of it is read.  A synchronizing
        literal over ``limit`` is refused with ``refusal``; a
        non-synchronizing one cannot be (the client sends it at once) and
        closes the session (RFC 7888 4, option 2, as Dovecot).
        """
        line = line or b""
        marker = policy.literal_marker(line)
        if marker is None or marker[0] is None or (alone and line.rindex(b"{") != 0):
            raise bad(b"Malformed literal")
        size, non_synchronizing = marker
        if non_synchronizing and self.state == "unauth" and size > policy.LITERAL_MINUS_MAX:
            limit = policy.LITERAL_MINUS_MAX
        if size > limit:
            if non_synchronizing:
                self.close_with(LITERAL_TOO_BIG)
            raise refusal
        return size, non_synchronizing

    # -- argument parsing: quoted strings with escapes, literals ---------

    def arg_astring(self, line, final=False):
        line = (line or b"").lstrip(b" ")
        if not line:
            raise MissingArgument()
        if line[:1] == b'"':
            match = re.match(rb'"((?:[^"\\]|\\.)*)"(?: |$)', line)
            if match is None:
                raise bad(b"Unmatched quotes")
            return re.sub(rb"\\(.)", rb"\1", match[1]), line[match.end():]
        if line[:1] == b"{":
            size, non_synchronizing = self._literal_size(line, self.MAX_LENGTH, LiteralTooBig())
            return self._start_literal(imap4.LiteralString(size, defer.Deferred()), non_synchronizing)
        arg, _, rest = line.partition(b" ")
        return arg, rest

    def arg_literal(self, line, in_memory=SPOOL_IN_MEMORY):
        """
        The message literal of APPEND, up to APPENDLIMIT (RFC 7889); held in
        memory up to ``in_memory`` octets, then in a temporary file.
        """
        size, non_synchronizing = self._literal_size(line, self.config.limits.max_literal_size, AppendTooBig())
        return self._start_literal(_SpooledLiteral(size, defer.Deferred(), in_memory), non_synchronizing)

    def _start_literal(self, literal, non_synchronizing):
        self._literal_started = True
        self.parseState = "pending"
        self.pending_literal = literal
        if not non_synchronizing:
            self.send(Continuation(b"Ready for literal data"))
        if literal.size == 0:
            # Nothing to read; the rest of the command is the next line.
            literal.write(b"")
        else:
            self.setRawMode()
        return literal.defer

    def arg_searchline(self, line):
        """
        The rest of a SEARCH command as tokens (``search.tokenize_search``,
        nesting bounded by ``max_nesting``), with its literals read in
        (clients send non-ASCII strings as literals).
        """
        def tokens(collected):
            try:
                return search.tokenize_search(collected, self.config.limits.max_nesting)
            except search.SearchSyntaxError:
                raise bad(b"Invalid search criteria") from None

        return self.arg_with_literals(line, tokens)

    def arg_with_literals(self, line, finish):
        """
        The rest of a command with its literals read in and written inline
        (``{n}\r\n`` and n octets), given to ``finish``; its result is
        the argument.
        """
        collected = []
        line = line or b""

        def step(line):
            if policy.literal_marker(line) is None:
                collected.append(line)
                return finish(b"".join(collected)), b""
            if len(collected) > 200:
                raise bad(b"Too many literals")
            size, non_synchronizing = self._literal_size(line, self.MAX_LENGTH, LiteralTooBig(), alone=False)
            collected.append(line[: line.rindex(b"{")] + b"{%d}\r\n" % size)
            d = self._start_literal(imap4.LiteralString(size, defer.Deferred()), non_synchronizing)
            return d.addCallback(lambda result: (collected.append(result[0]), step(result[1]))[1])

        return step(line)
