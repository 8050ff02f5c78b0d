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
from gateway.imap.errors import CommandError

log = Logger()

# APPEND literals above this size go to a temporary file, not memory.
SPOOL_IN_MEMORY = 256 * 1024

LITERAL_TOO_BIG = b"* BYE [TOOBIG] Literal too big"


class _SpooledLiteral(imap4.LiteralFile):
    """A literal that goes to a temporary file once it is not small."""

    def __init__(self, size, deferred):
        self.size = size
        self.defer = deferred
        self.data = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)


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
        tag = self._abandon_command()
        if tag is None:
            first = line.split(b" ", 1)[0]
            tag = first if policy.looks_like_tag(first) else b"*"
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
        self.sendLine(self._overlong_tag + b" BAD [TOOBIG] Command line too long")
        return data[end + 1:]

    def _abandon_command(self):
        """Forget a command waiting for more input; its tag, if one was."""
        if self.parseState == "idle":
            tag = self._idle_tag
            self._end_idle()
        elif self.parseState == "pending":
            tag = self._command_tag
        elif self.parseState == "discard":
            tag = b"*"  # its command was answered already
        else:
            return None
        self.parseState = "command"
        self._pendingLiteral = None
        return tag

    def lineReceived(self, line):
        self.resetTimeout()
        self._literal_started = False
        try:
            getattr(self, "parse_" + self.parseState)(line)
        except Exception:
            # Never exception text on the wire (STYLE.md).
            log.failure("While handling an IMAP line")
            self.sendLine(b"* BAD Internal error")
        marker = policy.literal_marker(line)
        if marker is not None and marker[1] and not self._literal_started and not self._closing:
            self._discard_literal(marker[0])

    def parse_command(self, line):
        # Replaces IMAP4Server.parse_command, which answers with the text of
        # the exception, client input included.
        words = line.split(None, 2)
        self._command_tag = words[0] if words else None
        # Timed until its tagged answer (sendLine).  The name is what
        # metrics.command_label reads: the command and, for UID, the next word.
        self._command_timer = (self._command_tag, b" ".join(word[:20] for word in words[1:3]), monotonic())
        if len(words) < 2:
            tag = words[0] if words and policy.looks_like_tag(words[0]) else b"*"
            self.sendLine(tag + (b" BAD Missing command" if words else b" BAD Null command"))
            return
        tag, command = words[:2]
        try:
            self.dispatchCommand(tag, command.upper(), words[2] if len(words) == 3 else None)
        except imap4.IllegalClientResponse as e:
            self.sendLine(tag + b" BAD " + _fixed_text(e))
        except imap4.IllegalMailboxEncoding:
            self.sendLine(tag + b" BAD Mailbox name is not modified UTF-7")

    def lookupCommand(self, command):
        # Twisted's nativeString() raises on a non-ASCII command name.
        if not re.fullmatch(rb"[A-Za-z]{1,20}", command):
            return None
        return super().lookupCommand(command)

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
            self._pendingLiteral = _DiscardedLiteral(size)
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
            raise imap4.IllegalClientResponse("Malformed literal")
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
            raise imap4.IllegalClientResponse("Missing argument")
        if line[:1] == b'"':
            match = re.match(rb'"((?:[^"\\]|\\.)*)"(?: |$)', line)
            if match is None:
                raise imap4.IllegalClientResponse("Unmatched quotes")
            return re.sub(rb"\\(.)", rb"\1", match[1]), line[match.end():]
        if line[:1] == b"{":
            size, non_synchronizing = self._literal_size(
                line, self.MAX_LENGTH, imap4.IllegalClientResponse("[TOOBIG] Literal too big")
            )
            return self._start_literal(imap4.LiteralString(size, defer.Deferred()), non_synchronizing)
        arg, _, rest = line.partition(b" ")
        return arg, rest

    def arg_literal(self, line):
        """The message literal of APPEND, up to APPENDLIMIT (RFC 7889)."""
        size, non_synchronizing = self._literal_size(
            line, self.config.limits.max_literal_size, CommandError(b"[TOOBIG] Message exceeds APPENDLIMIT")
        )
        return self._start_literal(_SpooledLiteral(size, defer.Deferred()), non_synchronizing)

    def _start_literal(self, literal, non_synchronizing):
        self._literal_started = True
        self.parseState = "pending"
        self._pendingLiteral = literal
        if not non_synchronizing:
            self.sendContinuationRequest(b"Ready for literal data")
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
        collected = []
        line = line or b""

        def step(line):
            if policy.literal_marker(line) is None:
                collected.append(line)
                try:
                    return search.tokenize_search(b"".join(collected), self.config.limits.max_nesting), b""
                except search.SearchSyntaxError:
                    raise imap4.IllegalClientResponse("Invalid search criteria") from None
            if len(collected) > 200:
                raise imap4.IllegalClientResponse("Too many literals")
            size, non_synchronizing = self._literal_size(
                line, self.MAX_LENGTH, imap4.IllegalClientResponse("[TOOBIG] Literal too big"), alone=False
            )
            collected.append(line[: line.rindex(b"{")] + b"{%d}\r\n" % size)
            d = self._start_literal(imap4.LiteralString(size, defer.Deferred()), non_synchronizing)
            return d.addCallback(lambda result: (collected.append(result[0]), step(result[1]))[1])

        return step(line)

    def _IMAP4Server__ebDispatch(self, failure, tag):
        # Replaces IMAP4Server.__ebDispatch, which puts exception text on the
        # wire for unexpected failures (STYLE.md: fixed responses only).
        if failure.check(CommandError):
            self.sendLine(tag + b" " + failure.value.status + b" " + failure.value.text)
        elif failure.check(imap4.IllegalClientResponse):
            self.sendLine(tag + b" BAD " + _fixed_text(failure.value))
        elif failure.check(imap4.IllegalMailboxEncoding):
            self.sendLine(tag + b" BAD Mailbox name is not modified UTF-7")
        else:
            log.failure("While parsing IMAP arguments", failure)
            self.sendLine(tag + b" BAD Internal error")

    def rawDataReceived(self, data):
        self.resetTimeout()
        passon = self._pendingLiteral.write(data)
        if passon is not None:
            self.setLineMode(passon)


def _fixed_text(error: Exception) -> bytes:
    """
    The text of a BAD: our parsers raise fixed strings; Twisted's "Too many
    arguments" carries the client's bytes, which are not echoed.
    """
    text = str(error)
    if text.startswith("Too many arguments"):
        return b"Too many arguments"
    return text.encode("ascii", "replace")[:200]
