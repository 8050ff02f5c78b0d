"""
Where the IMAP server meets Twisted's ``IMAP4Server``: the one module that
relies on names of Twisted's beyond its public API, each checked against
the Twisted installed by ``tests/imap/test_engine.py``:

- the command tables, ``<state>_<COMMAND> = (handler, parser, ...)``:
  ``dispatchCommand`` here reads them as Twisted's ``__doCommand`` does,
  without a Deferred for each argument, and answers what fails without
  exception text (Twisted's puts "Server error: ..." on the wire);
- ``_pendingLiteral``, what Twisted's ``parse_pending`` (the next line) and
  ``rawDataReceived`` (a literal's bytes) feed: ``pending_literal`` here;
- ``_buffer``, where ``LineReceiver`` keeps what it read but has not run
  (all of it while ``paused``): ``buffered_input`` here;
- Twisted's own answers, the greeting and ``dispatchCommand``'s BAD to an
  unknown command, arrive through ``sendServerGreeting`` and
  ``sendBadResponse``, and leave as response values through ``send``;
- the Twisted code still run (``parse_pending``, ``arg_line``) raises no
  ``IllegalClientResponse``: every parser and handler of ours raises a
  ``gateway.imap.errors`` error instead.
"""

from __future__ import annotations

import re

from twisted.internet import defer
from twisted.mail import imap4

from gateway.imap.errors import CommandError, TooManyArguments, from_store
from gateway.imap.responses import BAD, NO, OK, Condition, Continuation, Data, answer
from gateway.store.interfaces import StoreError

_COMMAND_NAME = re.compile(rb"[A-Za-z]{1,20}")


def known_error(error: BaseException) -> CommandError | None:
    """
    The answer to a failure a command may meet: its own or the store's (by
    type); None for an unexpected one (a bug, which the caller logs).
    """
    if isinstance(error, CommandError):
        return error
    if isinstance(error, StoreError):
        return from_store(error)
    return None


class Engine(imap4.IMAP4Server):
    """
    ``IMAP4Server`` with its private hooks named once.  The server provides
    ``send`` (the one writer of responses) and ``argument_failed``.
    """

    # -- dispatching ----------------------------------------------------

    def dispatchCommand(self, tag, cmd, rest, uid=None):
        """
        Twisted's dispatch, parsing a command table entry's arguments in
        turn as they answer: Twisted's ``__doCommand`` puts each parser's
        answer through a Deferred and a callback, three Deferreds for a
        FETCH and six for a UID FETCH, which cost a one-message FETCH more
        than finding its message.  A parser that waits for a literal
        answers a Deferred, and the rest follows once it fires.
        """
        entry = self.lookupCommand(cmd)
        if not entry:
            self.sendBadResponse(tag, b"Unsupported command")
            return
        self._parse_arguments(tag, entry[0], [self, tag], entry[1:], rest, uid)

    def lookupCommand(self, cmd):
        """The command table entry of ``cmd`` in this state; None for an unknown name or one not ASCII letters."""
        if not _COMMAND_NAME.fullmatch(cmd):
            return None
        return getattr(self, self.state + "_" + cmd.upper().decode("ascii"), None)

    def _parse_arguments(self, tag, handler, args, parsers, line, uid) -> None:
        """
        Parse what ``parsers`` take of ``line`` into ``args``, then run
        ``handler``.  What fails here reaches the caller, which answers it
        (``parse_command``; ``argument_failed`` after a literal).
        """
        for index, parser in enumerate(parsers):
            if not callable(parser):
                args.append(parser)
                continue
            parsed = parser(self, line)
            if isinstance(parsed, defer.Deferred):
                parsed.addCallback(self._parsed, tag, handler, args, parsers[index + 1:], uid)
                parsed.addErrback(self.argument_failed, tag)
                return
            arg, line = parsed
            args.append(arg)
        if line:
            raise TooManyArguments()
        if uid is not None:
            handler(*args, uid=uid)
        else:
            handler(*args)

    def _parsed(self, parsed, tag, handler, args, parsers, uid) -> None:
        arg, rest = parsed
        args.append(arg)
        self._parse_arguments(tag, handler, args, parsers, rest, uid)

    @property
    def pending_literal(self):
        """A literal being read (``LiteralString``, ``LiteralFile``), or a Deferred for the next line."""
        return self._pendingLiteral

    @pending_literal.setter
    def pending_literal(self, pending) -> None:
        self._pendingLiteral = pending

    @property
    def buffered_input(self) -> int:
        """Octets read from the client and not run yet."""
        return len(self._buffer)

    # -- Twisted's own answers, as responses -----------------------------

    def sendServerGreeting(self):
        self.send(Condition(OK, b"[CAPABILITY " + b" ".join(self.listCapabilities()) + b"] " + self.IDENT))

    def sendPositiveResponse(self, tag=None, message=b""):
        self.send(answer(tag, OK, message))

    def sendNegativeResponse(self, tag=None, message=b""):
        self.send(answer(tag, NO, message))

    def sendBadResponse(self, tag=None, message=b""):
        self.send(answer(tag, BAD, message))

    def sendUntaggedResponse(self, message, isAsync=None):
        self.send(Data(message))

    def sendContinuationRequest(self, msg=b"Ready for additional command text"):
        self.send(Continuation(msg))
