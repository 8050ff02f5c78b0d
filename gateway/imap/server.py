"""
The IMAP4rev1 protocol: Twisted's ``IMAP4Server`` with the pieces that fall
short of RFC 3501 replaced, over the shared store.

What we keep from Twisted: line framing, some argument parsers and the
command tables (``<state>_<COMMAND>``).  What we replace, each in one place
here or in the command mixins (``login``, ``mailboxes``, ``select_command``,
``selected``):

- commands run one at a time: input is paused while a command runs, so a
  pipelined command never overtakes one still waiting for the store, and
  literals (LITERAL+ included) stay in the byte stream;
- every selected session has a ``SelectedView`` fed by the store's change
  feed (Twisted's ``IMailboxIMAPListener`` has no expunge callback, so
  untagged EXPUNGE only reached the expunging session);
- error paths send fixed bytes (Twisted sends ``str`` or exception text in
  places, Twisted issue 12262);
- SELECT answers ``OK [UIDVALIDITY n] text`` (Twisted 26.10 sends no text);
- capabilities (``gateway.imap.capabilities``): LITERAL+/LITERAL-,
  APPENDLIMIT, SASL-IR, ID, ENABLE, UIDPLUS, MOVE, CHILDREN, SPECIAL-USE,
  UNSELECT, CONDSTORE and QRESYNC (RFC 7162), ESEARCH and SEARCHRES
  (``search_results``), SORT and THREAD (``sort_command``), LIST-EXTENDED,
  LIST-STATUS, CREATE-SPECIAL-USE and STATUS=SIZE (``list_command``),
  NOTIFY (``notify_command``) and IMAP4rev2 by ENABLE, COMPRESS=DEFLATE
  (``compress``), QUOTA (``quota_commands``), MULTIAPPEND (``append``),
  BINARY and UTF8=ACCEPT, none of which Twisted has;
- the limits of ``[limits]``: a command line longer than
  ``max_line_length`` is answered ``BAD [TOOBIG]`` and skipped without being
  buffered; literal sizes are ASCII digits only (Twisted used ``int()``),
  checked before a byte is read, and a non-synchronizing literal that no
  parser takes is read and thrown away, never run as commands;
  ``max_bad_commands`` BADs in a row end the session; the time before login
  is an absolute deadline (Twisted's timeout restarts with every byte), the
  time after it an idle timeout that IDLE does not extend.

Handlers answer with response values (``gateway.imap.responses``) and
failures that carry theirs (``gateway.imap.errors``); ``send`` is the one
writer, where BADs are counted (``gateway.policy.session``, shared with
POP3 and LMTP) and a command's time ends.  What the server takes from
Twisted beyond its public API is named in ``gateway.imap.engine``.
"""

from __future__ import annotations

from time import monotonic

from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.mail import imap4

from gateway.imap import mailbox_names
from gateway.imap.append import AppendCommand
from gateway.imap.compress import CompressCommand
from gateway.imap.engine import Engine, known_error
from gateway.imap.errors import InternalError, InternalParseError, NotModifiedUtf7, NotUtf8, bad
from gateway.imap.framing import Framing
from gateway.imap.list_command import ListCommands
from gateway.imap.login import LoginCommands
from gateway.imap.mailboxes import MailboxCommands
from gateway.imap.notify_command import NotifyCommands
from gateway.imap.responses import (
    BAD,
    BYE,
    OK,
    Capability,
    Condition,
    Continuation,
    Data,
    Enabled,
    Namespace,
    Tagged,
    answer,
)
from gateway.imap.fetch_cache import RenderedParts
from gateway.imap.fetch_command import FetchCommand
from gateway.imap.quota_commands import QuotaCommands
from gateway.imap.search_results import SearchResults
from gateway.imap.select_command import SelectCommands
from gateway.imap.selected import SelectedCommands
from gateway.imap.sort_command import SortCommands
from gateway.imap.snapshot import SnapshotRegistry
from gateway.imap.view import SelectedView
from gateway.net import metrics
from gateway.net.connection import set_no_delay
from gateway.net.firststep import first_step_now
from gateway.policy.login import LoginPolicy
from gateway.policy.quota import Quotas
from gateway.policy.session import BadCommands, Deadline, session_config
from gateway.store.interfaces import NoSuchMailbox, TemporaryFailure

log = Logger()

# ENABLED spells a capability as CAPABILITY does.
_ENABLED_NAMES = {b"IMAP4REV2": b"IMAP4rev2"}

INACTIVE = Condition(BYE, b"Disconnected for inactivity.")
TOO_MANY_BAD = Condition(BYE, b"Too many invalid IMAP commands.")
MAILBOX_DELETED = Condition(BYE, b"Selected mailbox was deleted")

# Responses the client waits for: what is held goes out with them.
_AT_ONCE = frozenset({Tagged, Continuation})


class IMAPServer(CompressCommand, Framing, LoginCommands, NotifyCommands, ListCommands, MailboxCommands,
                 SelectCommands, AppendCommand, SortCommands, SelectedCommands, SearchResults, FetchCommand,
                 QuotaCommands, Engine):
    IDENT = b"gateway IMAP4rev1 ready"
    # RFC 6855 3: once on (ENABLE UTF8=ACCEPT), mailbox names are UTF-8 both ways.
    utf8 = False

    def __init__(self, store, config, reactor, portal, context_factory=None):
        super().__init__(contextFactory=context_factory)
        self.store = store
        self.config = config
        self.reactor = reactor
        self.portal = portal
        # TimeoutMixin would take the global reactor.
        self.callLater = reactor.callLater
        self.MAX_LENGTH = config.limits.max_line_length
        # Before login the absolute deadline alone applies.
        self.timeOut = None
        self.POSTAUTH_TIMEOUT = config.imap.idle_timeout
        self.view: SelectedView | None = None
        self._unsubscribe = None
        self._idle_tag = None
        self._syncing = False
        self._resync = False
        self._gone = False
        self._closing = False
        self._bad_commands = BadCommands(config.limits.max_bad_commands)
        self._command_tag = None
        self._command_timer = None
        self._literal_started = False
        self._overlong_tag = None
        self._overlong_tail = None
        self._leftover = None
        # Responses waiting to go out together (``hold``), or None.
        self._held = None
        # Whether a command is between its line and its tagged answer.
        self.running = False
        self._prelogin = Deadline(reactor, config.limits.prelogin_timeout, lambda: self.close_with(INACTIVE))
        self._keepalive = None
        # RFC 7162 3.1: once on, every untagged FETCH carries MODSEQ.
        self.condstore = False
        # RFC 7162 3.2: once on, VANISHED replaces EXPUNGE.
        self.qresync = False

    # -- connection ------------------------------------------------------

    def connectionMade(self):
        set_no_delay(self.transport)
        self._prelogin.start()
        super().connectionMade()

    def connectionLost(self, reason):
        self._gone = True
        self._cancel_timers()
        self._deselect()
        super().connectionLost(reason)

    def _cancel_timers(self):
        self._prelogin.cancel()
        if self._keepalive is not None and self._keepalive.active():
            self._keepalive.cancel()
        self._keepalive = None

    def logged_in(self):
        """Called by the login commands once the session is authenticated."""
        self._prelogin.cancel()
        self.setTimeout(self.POSTAUTH_TIMEOUT)

    def timeoutConnection(self):
        self.close_with(INACTIVE)

    def close_with(self, bye: Condition):
        """Send an untagged BYE and close; nothing is written after it."""
        if self._closing or self._gone:
            return
        self._write(bye.encode() + b"\r\n", True)
        self._closing = True
        self._cancel_timers()
        self.setTimeout(None)
        self._deselect()
        self.state = "logout"
        self.transport.loseConnection()

    # -- responses -------------------------------------------------------

    def send(self, response) -> None:
        """The one writer of responses (``gateway.imap.responses``); nothing goes after a BYE."""
        if self._closing:
            return
        self._write(response.encode() + b"\r\n", type(response) in _AT_ONCE)
        self._sent(response)

    def send_all(self, responses) -> None:
        """Several responses in one write: a delivery wakes every idling session at once."""
        if self._closing:
            return
        responses = list(responses)
        if responses:
            self._write(b"".join(response.encode() + b"\r\n" for response in responses), False)
            for response in responses:
                self._sent(response)

    # -- holding responses: one write per command -------------------------
    #
    # While the client's bytes are read and a command runs, its responses
    # wait in ``_held`` and go out in one write with its tagged answer (or a
    # continuation request, which the client waits for): a SELECT is one
    # system call instead of ten, and the reply still leaves the moment the
    # command ends.  Outside a command (IDLE, NOTIFY) responses go at once.

    def hold(self) -> bool:
        """Start holding responses; whether this call started it."""
        if self._held is not None:
            return False
        self._held = []
        return True

    def release(self) -> None:
        """Write what is held, and stop holding."""
        held, self._held = self._held, None
        if held:
            if len(held) == 1:
                self.transport.write(held[0])
            else:
                self.transport.writeSequence(held)

    def _write(self, data: bytes, now: bool) -> None:
        held = self._held
        if held is None:
            self.transport.write(data)
            return
        held.append(data)
        if now:
            self.release()

    def hand_over(self, out) -> None:
        """What is held goes first through ``out`` (an ``Output``, about to write a FETCH answer)."""
        held = self._held
        if held:
            self._held = []
            for data in held:
                out.write(data)

    def take_back(self, pieces) -> None:
        """What an ``Output`` left unwritten goes with the tagged answer."""
        started = self.hold()
        self._held.extend(pieces)
        if started:
            self.release()

    def _sent(self, response) -> None:
        status = getattr(response, "status", None)
        if status is None:
            return
        tagged = isinstance(response, Tagged)
        timer = self._command_timer
        if tagged and timer is not None and response.tag == timer[0]:
            self._command_timer = None
            metrics.observe_command("imap", timer[1], monotonic() - timer[2])
        # Every BAD, tagged or not, counts; a tagged OK starts the count
        # again, so that a long session with the odd unknown command lives.
        if status == BAD:
            if self._bad_commands.bad():
                self.close_with(TOO_MANY_BAD)
        elif tagged and status == OK:
            self._bad_commands.good()

    def fail(self, tag: bytes | None, error: BaseException) -> None:
        """
        The one place a failed command is answered: by the response its
        error carries (an unexpected one is logged by the caller and
        answered by ``errors.InternalError``).
        """
        known = known_error(error)
        if known is None:
            known = InternalError()
        self.send(answer(tag, known.status, known.text))

    def argument_failed(self, failure, tag) -> None:
        """Reading a command's arguments (or running it) failed."""
        if known_error(failure.value) is None:
            log.failure("While parsing IMAP arguments", failure)
            self.fail(tag, InternalParseError())
            return
        self.fail(tag, failure.value)

    def capabilities(self):
        return {}

    def listCapabilities(self):
        return self.capability_line().split()

    # -- running commands ------------------------------------------------

    def run_command(self, tag, work, *args, allow_expunge=True):
        """
        Run ``await work(*args)`` (it returns the OK text), bring the
        client's view up to date where RFC 3501 7.4.1 allows, and send the
        tagged response.  Input is paused while the command waits, so a
        pipelined command never overtakes it; one answered at once (a read
        the store answered in the call) needs no pause.
        """
        self.hold()
        self.running = True
        d = first_step_now(self._command(tag, work, args, allow_expunge))
        d.addErrback(lambda failure: log.failure("IMAP command crashed", failure))
        if d.called:
            self._command_done()
            return
        self.hold_input()
        d.addBoth(lambda _: self._command_done())

    async def _command(self, tag, work, args, allow_expunge):
        try:
            response = Tagged(tag, OK, await work(*args))
        except Exception as e:
            error = known_error(e)
            if error is None:
                log.failure("IMAP command failed")
                error = InternalError()
            response = error.response(tag)
        if self._gone or self._closing:
            return
        if self.view is not None and self._idle_tag is None:
            await self.sync(allow_expunge)
        self.send(response)

    def _command_done(self):
        self.running = False
        if self._gone:
            return
        if self.paused:
            self.resumeProducing()
        self.command_finished()

    async def sync(self, allow_expunge=True):
        """Learn what changed in the selected mailbox and tell the client."""
        view = self.view
        try:
            changes = await self.store.changes_since(view.mailbox_id, view.modseq)
            view.apply(changes)
            if view.pending_new() and not self.imap4rev2:
                # A read-only view shows new messages \Recent and leaves
                # them for the next SELECT to claim.
                view.add_recent(view.pending_new() if view.readonly
                                else await self.store.claim_recent(view.mailbox_id))
        except NoSuchMailbox:
            # Deleted under us: RFC 3501 leaves it open; say BYE like Dovecot.
            self.send(MAILBOX_DELETED)
            self._deselect()
            self.transport.loseConnection()
            return
        except TemporaryFailure as e:
            # The command's own answer still goes out; what changed is told
            # after a later command, once the store answers again.
            log.warn("Selected mailbox not brought up to date: {error}", error=str(e))
            return
        if view is self.view and not self._gone and not self._closing:
            largest = view.largest_uid
            lines = view.flush(allow_expunge, self.condstore, self.qresync, recent=not self.imap4rev2)
            self.send_all(Data(line) for line in lines)
            await self.announce_new(view, largest)

    def _pushing(self) -> bool:
        """Whether changes to the selected mailbox go out as they happen: IDLE, or NOTIFY between commands."""
        return self._idle_tag is not None or (self.notify_selected() is not None and not self.running)

    def _on_change(self, mailbox_id, modseq):
        if not self._pushing() or self.view is None or modseq <= self.view.modseq:
            return
        if self._syncing:
            self._resync = True
            return
        defer.Deferred.fromCoroutine(self._idle_sync()).addErrback(
            lambda failure: log.failure("IDLE update failed", failure)
        )

    async def _idle_sync(self):
        self._syncing = True
        try:
            while True:
                self._resync = False
                # RFC 5465 6.2: SELECTED-DELAYED keeps EXPUNGE for a command.
                await self.sync(allow_expunge=self._idle_tag is not None or self.notify_selected() == "SELECTED")
                if not self._resync or not self._pushing() or self.view is None:
                    break
        finally:
            self._syncing = False

    # -- any state -------------------------------------------------------

    def do_CAPABILITY(self, tag):
        self.send(Capability(self.capability_line()))
        self.run_command(tag, self._done, b"CAPABILITY completed")

    async def _done(self, text):
        return text

    def do_NOOP(self, tag):
        self.run_command(tag, self._done, b"NOOP completed")

    def do_LOGOUT(self, tag):
        self.send(Condition(BYE, b"Logging out"))
        self.send(Tagged(tag, OK, b"LOGOUT completed"))
        self._deselect()
        self.state = "logout"
        self.transport.loseConnection()

    unauth_CAPABILITY = auth_CAPABILITY = select_CAPABILITY = (do_CAPABILITY,)
    unauth_NOOP = auth_NOOP = select_NOOP = (do_NOOP,)
    unauth_LOGOUT = auth_LOGOUT = select_LOGOUT = (do_LOGOUT,)

    # -- authenticated ---------------------------------------------------

    def do_NAMESPACE(self, tag):
        self.send(Namespace())
        self.run_command(tag, self._done, b"NAMESPACE completed")

    def do_ENABLE(self, tag, rest):
        rest = rest or b""
        if not rest.strip():
            raise bad(b"ENABLE needs a capability")
        # RFC 5161 3.1: ENABLED names what this command enabled; unknown
        # names are ignored.  QRESYNC brings CONDSTORE (RFC 7162 3.2.3).
        before = {b"CONDSTORE": self.condstore, b"QRESYNC": self.qresync, b"IMAP4REV2": self.imap4rev2,
                  b"UTF8=ACCEPT": self.utf8}
        wanted = [name for name in dict.fromkeys(rest.upper().split()) if name in before]
        if b"QRESYNC" in wanted:
            self.qresync = True
        if b"IMAP4REV2" in wanted:
            # RFC 9051 5.1: IMAP4rev2 names mailboxes in UTF-8, as RFC 6855 3 does.
            self.imap4rev2 = True
            self.utf8 = True
        if set(wanted) & {b"CONDSTORE", b"QRESYNC"}:
            self.condstore = True
        if b"UTF8=ACCEPT" in wanted:
            self.utf8 = True
        enabled = [_ENABLED_NAMES.get(name, name) for name in wanted if not before[name]]
        self.send(Enabled(tuple(enabled)))
        self.run_command(tag, self._done, b"ENABLE completed")

    def enable_condstore(self):
        """
        A CONDSTORE enabling command (RFC 7162 3.1): the first one with a
        mailbox selected reports the mailbox's HIGHESTMODSEQ.
        """
        if self.condstore:
            return
        self.condstore = True
        if self.view is not None:
            self.send(Condition(OK, b"[HIGHESTMODSEQ %d] Highest" % self.view.modseq))

    auth_NAMESPACE = select_NAMESPACE = (do_NAMESPACE,)
    auth_ENABLE = (do_ENABLE, imap4.IMAP4Server.arg_line)

    # -- helpers for the command mixins ----------------------------------

    def announce_keywords(self, view=None) -> None:
        """RFC 3501 7.2.6: FLAGS naming every keyword the client may see in
        ``view`` (the selected one by default), before any FETCH that shows
        one (``SelectedView.announce_keywords``)."""
        self.send_all(Data(line) for line in (view or self.view).announce_keywords())

    def mailbox_name(self, wire_name: bytes) -> str:
        """The store's name for a mailbox name as the client sent it:
        modified UTF-7, or UTF-8 once UTF8=ACCEPT is on (RFC 6855 3)."""
        try:
            return mailbox_names.decode_name(wire_name, self.utf8)
        except mailbox_names.BadMailboxName:
            raise (NotUtf8() if self.utf8 else NotModifiedUtf7()) from None


class IMAPFactory(protocol.ServerFactory):
    """
    Sessions of one IMAP listener (or of several that share a budget).
    ``logins`` (``gateway.policy.login.LoginPolicy``) is shared by all its
    sessions; pass the POP3 factory's to count both protocols together.
    """

    def __init__(self, portal, store, config, reactor, context_factory=None, *, logins=None, quotas=None):
        self.portal = portal
        # RFC 9208: the limits APPEND and COPY are held to, GETQUOTA shows.
        self.quotas = Quotas(config) if quotas is None else quotas
        self.store = store
        self.config = config
        self.reactor = reactor
        self.context_factory = context_factory
        self.logins = LoginPolicy(config, reactor) if logins is None else logins
        # Sessions selecting one mailbox share one picture of it.
        self.snapshots = SnapshotRegistry()
        # What FETCH answers of a message that never changes, rendered once.
        self.fetch_parts = RenderedParts(_megabytes(config.imap.fetch_cache_size))

    def buildProtocol(self, addr):
        # A session keeps the config it connected under (gateway.policy.session).
        config = session_config(self.config)
        # A reload's budget applies from the next connection, as [imap]'s other options.
        self.fetch_parts.resize(_megabytes(config.imap.fetch_cache_size))
        server = IMAPServer(self.store, config, self.reactor, self.portal, self.context_factory)
        server.factory = self
        return server


def _megabytes(count: int) -> int:
    return count * 1024 * 1024


def build_factory(portal, store, config, reactor, context_factory=None, *, logins=None,
                  quotas=None) -> IMAPFactory:
    """
    The IMAP listener's factory; with ``context_factory`` (a TLS context
    factory, ``CertificateStore.context_factory()``) the session offers
    STARTTLS.  ``logins`` defaults to a ``LoginPolicy`` of its own; the
    service passes the one POP3 shares, so a guesser gains nothing by
    switching protocol.  ``quotas`` (``gateway.policy.quota.Quotas``)
    defaults to the config's ``[quota]`` alone; the service passes the one
    that reads the users file's rules too.
    """
    return IMAPFactory(portal, store, config, reactor, context_factory, logins=logins, quotas=quotas)
