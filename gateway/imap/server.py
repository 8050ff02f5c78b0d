"""
The IMAP4rev1 protocol: Twisted's ``IMAP4Server`` with the pieces that fall
short of RFC 3501 replaced, over the shared store.

What we keep from Twisted: line framing, some argument parsers and the
command tables (``<state>_<COMMAND>``).  What we replace, each in one place
here or in the command mixins (``login``, ``mailboxes``, ``selected``):

- commands run one at a time: input is paused while a command runs, so a
  pipelined command never overtakes one still waiting for the store, and
  literals (LITERAL+ included) stay in the byte stream;
- every selected session has a ``SelectedView`` fed by the store's change
  feed (Twisted's ``IMailboxIMAPListener`` has no expunge callback, so
  untagged EXPUNGE only reached the expunging session);
- error paths send fixed bytes (Twisted sends ``str`` or exception text in
  places, its issue 12262);
- SELECT answers ``OK [UIDVALIDITY n] text`` (Twisted 26.10 sends no text);
- capabilities: LITERAL+/LITERAL-, APPENDLIMIT, SASL-IR, ID, ENABLE,
  UIDPLUS, MOVE, CHILDREN, SPECIAL-USE, UNSELECT, CONDSTORE and QRESYNC
  (RFC 7162), none of which Twisted has;
- the limits of ``[limits]`` (issue 4): a command line longer than
  ``max_line_length`` is answered ``BAD [TOOBIG]`` and skipped without being
  buffered; literal sizes are ASCII digits only (Twisted used ``int()``),
  checked before a byte is read, and a non-synchronizing literal that no
  parser takes is read and thrown away, never run as commands;
  ``max_bad_commands`` BADs in a row end the session; the time before login
  is an absolute deadline (Twisted's timeout restarts with every byte), the
  time after it an idle timeout that IDLE does not extend.
"""

from __future__ import annotations

import socket
from time import monotonic

from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.mail import imap4

from gateway.net import metrics
from gateway.imap import resync, wire
from gateway.mail import mutf7
from gateway.imap.framing import Framing
from gateway.imap.errors import CommandError, bad
from gateway.imap.login import LoginCommands
from gateway.imap.mailboxes import MailboxCommands, astring
from gateway.imap.selected import SelectedCommands
from gateway.imap.snapshot import Snapshot, SnapshotRegistry
from gateway.imap.view import SelectedView
from gateway.policy.login import LoginPolicy
from gateway.store.interfaces import (
    InvalidMailboxName,
    MailboxExists,
    MessageExpunged,
    NoSuchMailbox,
    StoreError,
    TemporaryFailure,
)

log = Logger()

# Dovecot's imap_idle_notify_interval: keeps NAT and firewall state alive.
IDLE_KEEPALIVE = 120.0

INACTIVE = b"* BYE Disconnected for inactivity."
TOO_MANY_BAD = b"* BYE Too many invalid IMAP commands."

_STORE_ERRORS = (
    (NoSuchMailbox, b"[NONEXISTENT] No such mailbox"),
    (MailboxExists, b"[ALREADYEXISTS] Mailbox exists already"),
    (InvalidMailboxName, b"[CANNOT] Not an acceptable mailbox name"),
    (MessageExpunged, b"[EXPUNGEISSUED] Message was expunged"),
    (TemporaryFailure, b"[UNAVAILABLE] Temporary failure, try again later"),
)


def select_parameters(server, line):
    """
    Command-table parser: SELECT/EXAMINE's optional parameter list (RFC 4466
    2.1): CONDSTORE and QRESYNC (RFC 7162 3.1.8, 3.2.5); any other is BAD.
    """
    try:
        return resync.parse_select_parameters(line or b""), b""
    except resync.ParameterError:
        raise imap4.IllegalClientResponse("Unknown or malformed SELECT parameter") from None


class IMAPServer(Framing, LoginCommands, MailboxCommands, SelectedCommands, imap4.IMAP4Server):
    IDENT = b"gateway IMAP4rev1 ready"

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
        self._bad_commands = 0
        self._command_tag = None
        self._command_timer = None
        self._literal_started = False
        self._overlong_tag = None
        self._overlong_tail = None
        self._leftover = None
        self._prelogin = None
        self._keepalive = None
        # RFC 7162 3.1: once on, every untagged FETCH carries MODSEQ.
        self.condstore = False
        # RFC 7162 3.2: once on, VANISHED replaces EXPUNGE.
        self.qresync = False

    # -- connection ------------------------------------------------------

    def connectionMade(self):
        # DESIGN.md: Nagle's algorithm costs two orders of magnitude here.
        try:
            self.transport.setTcpNoDelay(True)
        except (AttributeError, OSError, socket.error):
            pass
        self._prelogin = self.reactor.callLater(
            self.config.limits.prelogin_timeout, self.close_with, INACTIVE
        )
        super().connectionMade()

    def connectionLost(self, reason):
        self._gone = True
        self._cancel_timers()
        self._deselect()
        super().connectionLost(reason)

    def _cancel_timers(self):
        for call in (self._prelogin, self._keepalive):
            if call is not None and call.active():
                call.cancel()
        self._prelogin = self._keepalive = None

    def logged_in(self):
        """Called by the login commands once the session is authenticated."""
        if self._prelogin is not None and self._prelogin.active():
            self._prelogin.cancel()
        self._prelogin = None
        self.setTimeout(self.POSTAUTH_TIMEOUT)

    def timeoutConnection(self):
        self.close_with(INACTIVE)

    def close_with(self, line: bytes):
        """Send an untagged BYE and close; nothing is written after it."""
        if self._closing or self._gone:
            return
        super().sendLine(line)
        self._closing = True
        self._cancel_timers()
        self.setTimeout(None)
        self._deselect()
        self.state = "logout"
        self.transport.loseConnection()

    def sendLine(self, line):
        if self._closing:
            return
        super().sendLine(line)
        tag, _, rest = line.partition(b" ")
        timer = self._command_timer
        if timer is not None and tag == timer[0] and tag != b"*":
            self._command_timer = None
            metrics.observe_command("imap", timer[1], monotonic() - timer[2])
        # Every BAD, tagged or not, counts; a tagged OK starts the count
        # again, so that a long session with the odd unknown command lives.
        if rest.startswith(b"BAD"):
            self._bad_commands += 1
            if self._bad_commands >= self.config.limits.max_bad_commands:
                self.close_with(TOO_MANY_BAD)
        elif rest.startswith(b"OK") and tag != b"*":
            self._bad_commands = 0

    def capabilities(self):
        return {}

    def listCapabilities(self):
        return self.capability_line().split()

    # -- running commands ------------------------------------------------

    def run_command(self, tag, work, *args, allow_expunge=True):
        """
        Run ``await work(*args)`` (it returns the OK text) with input paused,
        bring the client's view up to date where RFC 3501 7.4.1 allows, and
        send the tagged response.
        """
        self.pauseProducing()
        d = defer.Deferred.fromCoroutine(self._command(tag, work, args, allow_expunge))
        d.addErrback(lambda failure: log.failure("IMAP command crashed", failure))
        d.addBoth(lambda _: self._command_done())

    async def _command(self, tag, work, args, allow_expunge):
        status = b"OK"
        try:
            text = await work(*args)
        except CommandError as e:
            status, text = e.status, e.text
        except imap4.IllegalClientResponse as e:
            status, text = b"BAD", str(e).encode("ascii", "replace")
        except StoreError as e:
            status = b"NO"
            text = next((t for kind, t in _STORE_ERRORS if isinstance(e, kind)), b"Store error")
        except Exception:
            log.failure("IMAP command failed")
            status, text = b"NO", b"[SERVERBUG] Internal error"
        if self._gone or self._closing:
            return
        if self.view is not None and self._idle_tag is None:
            await self.sync(allow_expunge)
        self.sendLine(tag + b" " + status + b" " + text)

    def _command_done(self):
        if not self._gone and self.paused:
            self.resumeProducing()

    async def sync(self, allow_expunge=True):
        """Learn what changed in the selected mailbox and tell the client."""
        view = self.view
        try:
            changes = await self.store.changes_since(view.mailbox_id, view.modseq)
            view.apply(changes)
            if view.pending_new() and not view.readonly:
                view.add_recent(await self.store.claim_recent(view.mailbox_id))
        except NoSuchMailbox:
            # Deleted under us: RFC 3501 leaves it open; say BYE like Dovecot.
            self.sendLine(b"* BYE Selected mailbox was deleted")
            self._deselect()
            self.transport.loseConnection()
            return
        if view is self.view and not self._gone and not self._closing:
            lines = view.flush(allow_expunge, self.condstore, self.qresync)
            if lines:
                # One write: a delivery wakes every idling session at once.
                self.transport.write(b"".join(b"* %s\r\n" % line for line in lines))

    def _on_change(self, mailbox_id, modseq):
        if self._idle_tag is None or self.view is None or modseq <= self.view.modseq:
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
                await self.sync(allow_expunge=True)
                if not self._resync or self._idle_tag is None or self.view is None:
                    break
        finally:
            self._syncing = False

    # -- any state -------------------------------------------------------

    def do_CAPABILITY(self, tag):
        self.sendLine(b"* CAPABILITY " + self.capability_line())
        self.run_command(tag, self._done, b"CAPABILITY completed")

    async def _done(self, text):
        return text

    def do_NOOP(self, tag):
        self.run_command(tag, self._done, b"NOOP completed")

    def do_LOGOUT(self, tag):
        self.sendLine(b"* BYE Logging out")
        self.sendLine(tag + b" OK LOGOUT completed")
        self._deselect()
        self.state = "logout"
        self.transport.loseConnection()

    unauth_CAPABILITY = auth_CAPABILITY = select_CAPABILITY = (do_CAPABILITY,)
    unauth_NOOP = auth_NOOP = select_NOOP = (do_NOOP,)
    unauth_LOGOUT = auth_LOGOUT = select_LOGOUT = (do_LOGOUT,)

    # -- authenticated ---------------------------------------------------

    def do_NAMESPACE(self, tag):
        self.sendLine(b'* NAMESPACE (("" "/")) NIL NIL')
        self.run_command(tag, self._done, b"NAMESPACE completed")

    def do_ENABLE(self, tag, rest):
        rest = rest or b""
        if not rest.strip():
            self.sendLine(tag + b" BAD ENABLE needs a capability")
            return
        # RFC 5161 3.1: ENABLED names what this command enabled; unknown
        # names are ignored.  QRESYNC brings CONDSTORE (RFC 7162 3.2.3).
        before = {b"CONDSTORE": self.condstore, b"QRESYNC": self.qresync}
        wanted = [name for name in dict.fromkeys(rest.upper().split()) if name in before]
        if b"QRESYNC" in wanted:
            self.qresync = True
        if wanted:
            self.condstore = True
        enabled = [name for name in wanted if not before[name]]
        self.sendLine(b"* ENABLED" + b"".join(b" " + name for name in enabled))
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
            self.sendLine(b"* OK [HIGHESTMODSEQ %d] Highest" % self.view.modseq)

    def do_SELECT(self, tag, name, parameters=resync.SelectParameters(), readonly=False):
        self.run_command(tag, self._select, name, parameters, readonly)

    def do_EXAMINE(self, tag, name, parameters=resync.SelectParameters()):
        self.do_SELECT(tag, name, parameters, readonly=True)

    async def _select(self, wire_name, parameters, readonly):
        if parameters.qresync is not None and not self.qresync:
            # RFC 7162 3.2.5
            raise bad(b"QRESYNC parameter without ENABLE QRESYNC")
        if self.view is not None:
            # RFC 7162 3.2.11: what follows is about the new mailbox (owed
            # by any server that advertises CONDSTORE).
            self.sendLine(b"* OK [CLOSED] Previous mailbox closed")
        # Held until the new view is made: SELECT of the same mailbox again
        # starts from it.
        previous = self.view
        self._deselect()
        if parameters.condstore:
            # Its HIGHESTMODSEQ comes with the SELECT answer below.
            self.condstore = True
        name = self.mailbox_name(wire_name)
        info = await self.account.select(name)
        # Another session's picture of the mailbox, if there is one, is a
        # start that needs only what changed since (and is shared, not copied).
        snapshots = self.factory.snapshots
        start = snapshots.latest(info.id, info.uidvalidity)
        if start is None:
            start = Snapshot.build(await self.store.list_flags(info.id)), info.highestmodseq
        snapshot, modseq = start
        view = SelectedView(info.id, info.uidvalidity, snapshot, modseq, readonly, registry=snapshots)
        view.apply(await self.store.changes_since(info.id, modseq))
        view.catch_up()
        if not readonly:
            view.add_recent(await self.store.claim_recent(info.id))
        for line in view.flags_lines():
            self.sendLine(b"* " + line)
        self.sendLine(b"* %d EXISTS" % view.exists)
        self.sendLine(b"* %d RECENT" % view.recent_count)
        unseen = view.first_unseen()
        if unseen is not None:
            self.sendLine(b"* OK [UNSEEN %d] First unseen message" % unseen)
        self.sendLine(b"* OK [UIDVALIDITY %d] UIDs valid" % info.uidvalidity)
        uidnext = max(info.uidnext, view.largest_uid + 1)
        self.sendLine(b"* OK [UIDNEXT %d] Predicted next UID" % uidnext)
        if self.condstore:
            # RFC 7162 3.1.2.1
            self.sendLine(b"* OK [HIGHESTMODSEQ %d] Highest" % view.modseq)
        known = parameters.qresync
        if known is not None and known.uidvalidity == info.uidvalidity:
            # RFC 7162 3.2.5.1: as UID FETCH known-uids (FLAGS)
            # (CHANGEDSINCE modseq VANISHED); another UIDVALIDITY means the
            # client starts over, and nothing more is said.
            await self.report_changes(view, known.modseq, known.known_uids, flags=True)
        self.view = view
        del previous
        self.state = "select"
        self._unsubscribe = self.store.changes.subscribe(info.id, self._on_change)
        return b"[READ-ONLY] EXAMINE completed" if readonly else b"[READ-WRITE] SELECT completed"

    def _deselect(self):
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.view = None
        if self.state == "select":
            self.state = "auth"

    def do_IDLE(self, tag):
        self.sendLine(b"+ idling")
        self._idle_tag = tag
        self.parseState = "idle"
        # RFC 2177: IDLE is activity only until the idle timeout (the client
        # re-issues it within 29 minutes); meanwhile an untagged OK every
        # few minutes keeps NAT and firewall state open, as Dovecot does.
        self._keepalive = self.reactor.callLater(IDLE_KEEPALIVE, self._still_here)
        if self.view is not None:
            # RFC 2177: report at once what is pending.
            self._on_change(self.view.mailbox_id, self.view.modseq + 1)

    def _still_here(self):
        self.sendLine(b"* OK Still here")
        self._keepalive = self.reactor.callLater(IDLE_KEEPALIVE, self._still_here)

    def _end_idle(self):
        self._idle_tag = None
        if self._keepalive is not None and self._keepalive.active():
            self._keepalive.cancel()
        self._keepalive = None

    def parse_idle(self, line):
        tag = self._idle_tag
        self._end_idle()
        self.parseState = "command"
        if line.strip().upper() != b"DONE":
            self.sendLine(tag + b" BAD Expected DONE")
            return
        self.run_command(tag, self._done, b"IDLE terminated")

    auth_NAMESPACE = select_NAMESPACE = (do_NAMESPACE,)
    auth_ENABLE = (do_ENABLE, imap4.IMAP4Server.arg_line)
    auth_SELECT = select_SELECT = (do_SELECT, astring, select_parameters)
    auth_EXAMINE = select_EXAMINE = (do_EXAMINE, astring, select_parameters)
    auth_IDLE = select_IDLE = (do_IDLE,)

    # -- helpers for the command mixins ----------------------------------

    def mailbox_name(self, wire_name: bytes) -> str:
        try:
            return wire.canonical_name(mutf7.decode_mailbox(wire_name))
        except mutf7.BadMailboxName:
            raise bad(b"Mailbox name is not modified UTF-7") from None


class IMAPFactory(protocol.ServerFactory):
    """
    Sessions of one IMAP listener (or of several that share a budget).
    ``logins`` (``gateway.policy.login.LoginPolicy``) is shared by all its
    sessions; pass the POP3 factory's to count both protocols together.
    """

    def __init__(self, portal, store, config, reactor, context_factory=None, *, logins=None):
        self.portal = portal
        self.store = store
        self.config = config
        self.reactor = reactor
        self.context_factory = context_factory
        self.logins = LoginPolicy(config, reactor) if logins is None else logins
        # Sessions selecting one mailbox share one picture of it.
        self.snapshots = SnapshotRegistry()

    def buildProtocol(self, addr):
        # A session keeps the config it started with (gateway/reload.py's
        # LiveConfig swaps ``current`` on SIGHUP; new sessions see that).
        config = getattr(self.config, "current", self.config)
        server = IMAPServer(self.store, config, self.reactor, self.portal, self.context_factory)
        server.factory = self
        return server


def build_factory(portal, store, config, reactor, context_factory=None, *, logins=None) -> IMAPFactory:
    """
    The IMAP listener's factory; with ``context_factory`` (a TLS context
    factory, ``CertificateStore.context_factory()``) the session offers
    STARTTLS.  ``logins`` defaults to a ``LoginPolicy`` of its own; the
    service passes the one POP3 shares, so a guesser gains nothing by
    switching protocol.
    """
    return IMAPFactory(portal, store, config, reactor, context_factory, logins=logins)
