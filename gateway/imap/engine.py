"""
Where the IMAP server meets Twisted's ``IMAP4Server``: the one module that
relies on names of Twisted's beyond its public API, each checked against
the Twisted installed by ``tests/imap/test_engine.py``:

- ``_IMAP4Server__ebDispatch``, the errback of Twisted's argument parsing
  (``__doCommand``): Twisted's puts exception text on the wire ("Server
  error: ..."); ours hands the failure to ``argument_failed``;
- ``_pendingLiteral``, what Twisted's ``parse_pending`` (the next line) and
  ``rawDataReceived`` (a literal's bytes) feed: ``pending_literal`` here;
- ``_buffer``, where ``LineReceiver`` keeps what it read but has not run
  (all of it while ``paused``): ``buffered_input`` here;
- Twisted's own answers, the greeting and ``dispatchCommand``'s BAD to an
  unknown command, arrive through ``sendServerGreeting`` and
  ``sendBadResponse``, and leave as response values through ``send``;
- the only ``IllegalClientResponse`` the Twisted code we still run raises
  is ``__doCommand``'s "Too many arguments" (its text names the client's
  bytes): ``known_error`` answers it with fixed text.  Every parser and
  handler of ours raises a ``gateway.imap.errors`` error instead.
"""

from __future__ import annotations

from twisted.mail import imap4

from gateway.imap.errors import CommandError, TooManyArguments, from_store
from gateway.imap.responses import BAD, NO, OK, Condition, Continuation, Data, answer
from gateway.store.interfaces import StoreError


def known_error(error: BaseException) -> CommandError | None:
    """
    The answer to a failure a command may meet: its own, the store's (by
    type), or Twisted's argument count; None for an unexpected one (a bug,
    which the caller logs).
    """
    if isinstance(error, CommandError):
        return error
    if isinstance(error, StoreError):
        return from_store(error)
    if isinstance(error, imap4.IllegalClientResponse):
        return TooManyArguments()
    return None


class Engine(imap4.IMAP4Server):
    """
    ``IMAP4Server`` with its private hooks named once.  The server provides
    ``send`` (the one writer of responses) and ``argument_failed``.
    """

    # -- argument parsing ------------------------------------------------

    def _IMAP4Server__ebDispatch(self, failure, tag):
        self.argument_failed(failure, tag)

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
