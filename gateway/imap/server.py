"""
The IMAP4rev1 protocol: Twisted's ``IMAP4Server`` with the pieces that fall
short of RFC 3501 replaced, over the shared store.

What we keep from Twisted: line and literal framing, argument parsers, the
command tables (``<state>_<COMMAND>``) and STARTTLS.  What we replace, each
in one place here or in the two command mixins:

- commands run one at a time: input is paused while a command runs, so a
  pipelined command never overtakes one still waiting for the store, and
  literals (LITERAL+ included) stay in the byte stream;
- every selected session has a ``SelectedView`` fed by the store's change
  feed (Twisted's ``IMailboxIMAPListener`` has no expunge callback, so
  untagged EXPUNGE only reached the expunging session);
- error paths send fixed bytes (Twisted sends ``str`` or exception text in
  places, its issue 12262);
- SELECT answers ``OK [UIDVALIDITY n] text`` (Twisted 26.10 sends no text);
- capabilities: LITERAL+, SASL-IR, ID, ENABLE, UIDPLUS, MOVE, CHILDREN,
  SPECIAL-USE, UNSELECT, none of which Twisted has.
"""

from __future__ import annotations

import base64
import binascii
import re
import socket
import tempfile

from twisted.cred import credentials
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, protocol, task
from twisted.logger import Logger
from twisted.mail import imap4

from gateway.imap import wire
from gateway.imap.errors import CommandError, bad
from gateway.imap.mailboxes import MailboxCommands, astring, final_astring
from gateway.imap.selected import SelectedCommands
from gateway.imap.view import SelectedView, format_flags
from gateway.store.interfaces import (
    InvalidMailboxName,
    MailboxExists,
    MessageExpunged,
    NoSuchMailbox,
    StoreError,
    TemporaryFailure,
)
from gateway.store.model import SYSTEM_FLAGS

log = Logger()

CAPABILITIES = (
    b"IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE UIDPLUS MOVE CHILDREN "
    b"SPECIAL-USE UNSELECT AUTH=PLAIN"
)

# Bigger APPEND literals are refused (RFC 7888 4: then close the connection
# when the literal was non-synchronizing).
MAX_LITERAL = 64 * 1024 * 1024
# APPEND literals above this size go to a temporary file, not memory.
SPOOL_IN_MEMORY = 256 * 1024

_LITERAL = re.compile(rb"\{(\d{1,10})(\+?)\}$")


_STORE_ERRORS = (
    (NoSuchMailbox, b"[NONEXISTENT] No such mailbox"),
    (MailboxExists, b"[ALREADYEXISTS] Mailbox exists already"),
    (InvalidMailboxName, b"[CANNOT] Not an acceptable mailbox name"),
    (MessageExpunged, b"[EXPUNGEISSUED] Message was expunged"),
    (TemporaryFailure, b"[UNAVAILABLE] Temporary failure, try again later"),
)


class _SpooledLiteral(imap4.LiteralFile):
    """A literal that goes to a temporary file once it is not small."""

    def __init__(self, size, deferred):
        self.size = size
        self.defer = deferred
        self.data = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)


class IMAPServer(MailboxCommands, SelectedCommands, imap4.IMAP4Server):
    IDENT = b"gateway IMAP4rev1 ready"

    def __init__(self, store, config, reactor, portal, context_factory=None):
        super().__init__(contextFactory=context_factory)
        self.store = store
        self.config = config
        self.reactor = reactor
        self.portal = portal
        self.POSTAUTH_TIMEOUT = config.imap.idle_timeout
        self.view: SelectedView | None = None
        self._unsubscribe = None
        self._idle_tag = None
        self._syncing = False
        self._resync = False
        self._gone = False

    # -- connection ------------------------------------------------------

    def connectionMade(self):
        # DESIGN.md: Nagle's algorithm costs two orders of magnitude here.
        try:
            self.transport.setTcpNoDelay(True)
        except (AttributeError, OSError, socket.error):
            pass
        super().connectionMade()

    def connectionLost(self, reason):
        self._gone = True
        self._deselect()
        super().connectionLost(reason)

    def timeoutConnection(self):
        self.sendLine(b"* BYE Autologout; idle for too long")
        self._deselect()
        self.state = "logout"
        self.transport.loseConnection()

    def capabilities(self):
        return {}

    def listCapabilities(self):
        return self.capability_line().split()

    def capability_line(self) -> bytes:
        if self.state == "unauth" and self.ctx is not None and not self.startedTLS and self.canStartTLS:
            return CAPABILITIES + b" STARTTLS"
        return CAPABILITIES

    def lineReceived(self, line):
        self.resetTimeout()
        try:
            getattr(self, "parse_" + self.parseState)(line)
        except Exception:
            # Never exception text on the wire (STYLE.md).
            log.failure("While handling an IMAP line")
            self.sendLine(b"* BAD Internal error")

    def lineLengthExceeded(self, line):
        self.sendLine(b"* BAD [TOOBIG] Line too long")
        self.transport.loseConnection()

    # -- argument parsing: quoted strings with escapes, LITERAL+ ----------

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
            match = _LITERAL.match(line)
            if match is None:
                raise imap4.IllegalClientResponse("Malformed literal")
            size = int(match[1])
            if final and not size:
                return b"", b""
            if size > self._literalStringLimit:
                raise imap4.IllegalClientResponse("Literal too long")
            return self._start_literal(imap4.LiteralString(size, defer.Deferred()), match[2])
        arg, _, rest = line.partition(b" ")
        return arg, rest

    def arg_literal(self, line):
        match = _LITERAL.match((line or b"").strip())
        if match is None:
            raise imap4.IllegalClientResponse("Missing literal")
        size = int(match[1])
        if size > MAX_LITERAL:
            if match[2]:
                self.sendLine(b"* BYE [TOOBIG] Literal too big")
                self.transport.loseConnection()
            raise imap4.IllegalClientResponse("[TOOBIG] Literal too big")
        return self._start_literal(_SpooledLiteral(size, defer.Deferred()), match[2])

    def _start_literal(self, literal, non_synchronizing):
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
        The rest of a SEARCH command as ``parseNestedParens`` tokens, with
        its literals read in (clients send non-ASCII strings as literals;
        Twisted's ``arg_searchkeys`` sees only the first line).
        """
        collected = []
        line = line or b""

        def step(line):
            match = _LITERAL.search(line)
            if match is None:
                collected.append(line)
                try:
                    return imap4.parseNestedParens(b"".join(collected)), b""
                except (imap4.IMAP4Exception, ValueError, IndexError):
                    raise imap4.IllegalClientResponse("Invalid search criteria") from None
            size = int(match[1])
            if size > self._literalStringLimit or len(collected) > 200:
                raise imap4.IllegalClientResponse("Literal too long")
            collected.append(line[: match.start()] + b"{%d}\r\n" % size)
            d = self._start_literal(imap4.LiteralString(size, defer.Deferred()), match[2])
            return d.addCallback(lambda result: (collected.append(result[0]), step(result[1]))[1])

        return step(line)

    def _IMAP4Server__ebDispatch(self, failure, tag):
        # Replaces IMAP4Server.__ebDispatch, which puts exception text on the
        # wire for unexpected failures (STYLE.md: fixed responses only).
        if failure.check(imap4.IllegalClientResponse):
            self.sendLine(tag + b" BAD " + str(failure.value).encode("ascii", "replace"))
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
        if self._gone:
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
        if view is self.view and not self._gone:
            for line in view.flush(allow_expunge):
                self.sendLine(b"* " + line)

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

    def do_ID(self, tag, rest):
        rest = rest or b""
        # RFC 2971: we answer whatever the client sent (or NIL).
        if not re.fullmatch(rb"(?i:NIL)|\(.*\)", rest.strip()):
            self.sendLine(tag + b" BAD ID takes a parenthesised list or NIL")
            return
        self.sendLine(b'* ID ("name" "gateway" "version" "0.1.0")')
        self.run_command(tag, self._done, b"ID completed")

    unauth_CAPABILITY = auth_CAPABILITY = select_CAPABILITY = (do_CAPABILITY,)
    unauth_NOOP = auth_NOOP = select_NOOP = (do_NOOP,)
    unauth_LOGOUT = auth_LOGOUT = select_LOGOUT = (do_LOGOUT,)
    unauth_ID = auth_ID = select_ID = (do_ID, imap4.IMAP4Server.arg_line)

    # -- not authenticated -----------------------------------------------

    def do_LOGIN(self, tag, user, password):
        self.run_command(tag, self._login, user, password)

    async def _login(self, user, password):
        await self._authenticate(user, password)
        return b"[CAPABILITY " + self.capability_line() + b"] LOGIN completed"

    async def _authenticate(self, user: bytes, password: bytes):
        try:
            interface, avatar, logout = await self.portal.login(
                credentials.UsernamePassword(user, password), None, imap4.IAccount
            )
        except UnauthorizedLogin:
            await task.deferLater(self.reactor, self.config.auth.failure_delay, lambda: None)
            raise CommandError(b"[AUTHENTICATIONFAILED] Authentication failed") from None
        self.account = avatar
        self._onLogout = logout
        self.state = "auth"
        self.setTimeout(self.POSTAUTH_TIMEOUT)

    def do_AUTHENTICATE(self, tag, rest):
        rest = rest or b""
        mechanism, _, initial = rest.strip().partition(b" ")
        if mechanism.upper() != b"PLAIN":
            self.sendLine(tag + b" NO [CANNOT] Unsupported authentication mechanism")
            return
        if initial:
            # RFC 4959: SASL-IR; "=" is an empty initial response.
            self._plain_response(tag, b"" if initial == b"=" else initial)
            return
        self.sendLine(b"+ ")
        self.parseState = "pending"
        self._pendingLiteral = defer.Deferred()
        self._pendingLiteral.addCallback(lambda line: self._plain_response(tag, line))

    def _plain_response(self, tag, encoded: bytes):
        if encoded.strip() == b"*":
            self.sendLine(tag + b" BAD AUTHENTICATE cancelled")
            return
        try:
            message = base64.b64decode(encoded.strip(), validate=True)
            authzid, authcid, password = message.split(b"\0")
        except (binascii.Error, ValueError):
            self.sendLine(tag + b" BAD Malformed PLAIN response")
            return
        if authzid and authzid != authcid:
            self.sendLine(tag + b" NO [AUTHORIZATIONFAILED] Cannot act as another user")
            return
        self.run_command(tag, self._sasl_done, authcid, password)

    async def _sasl_done(self, user, password):
        await self._authenticate(user, password)
        return b"[CAPABILITY " + self.capability_line() + b"] Authenticated"

    def do_STARTTLS(self, tag):
        if self.ctx is None or self.startedTLS or not self.canStartTLS:
            self.sendLine(tag + b" NO [CANNOT] TLS not available")
            return
        self.sendLine(tag + b" OK Begin TLS negotiation now")
        # Anything pipelined after STARTTLS came in the clear: drop it
        # (RFC 3501 6.2.1; the command-injection class of bugs).
        self.clearLineBuffer()
        self.transport.startTLS(self.ctx)
        self.startedTLS = True

    unauth_STARTTLS = (do_STARTTLS,)
    unauth_LOGIN = (do_LOGIN, astring, final_astring)
    unauth_AUTHENTICATE = (do_AUTHENTICATE, imap4.IMAP4Server.arg_line)

    # -- authenticated ---------------------------------------------------

    def do_NAMESPACE(self, tag):
        self.sendLine(b'* NAMESPACE (("" "/")) NIL NIL')
        self.run_command(tag, self._done, b"NAMESPACE completed")

    def do_ENABLE(self, tag, rest):
        rest = rest or b""
        # RFC 5161: we have no extension that needs enabling.
        if not rest.strip():
            self.sendLine(tag + b" BAD ENABLE needs a capability")
            return
        self.sendLine(b"* ENABLED")
        self.run_command(tag, self._done, b"ENABLE completed")

    def do_SELECT(self, tag, name, readonly=False):
        self.run_command(tag, self._select, name, readonly)

    def do_EXAMINE(self, tag, name):
        self.do_SELECT(tag, name, readonly=True)

    async def _select(self, wire_name, readonly):
        self._deselect()
        name = self.mailbox_name(wire_name)
        info = await self.account.select(name)
        records = await self.store.list_messages(info.id)
        view = SelectedView(info.id, info.uidvalidity, records, info.highestmodseq, readonly)
        view.apply(await self.store.changes_since(info.id, info.highestmodseq))
        view.flush(allow_expunge=True)  # the client has seen nothing yet
        if not readonly:
            view.add_recent(await self.store.claim_recent(info.id))
        keywords = set()
        for record in records:
            keywords.update(f for f in record.flags if not f.startswith("\\"))
        flags = SYSTEM_FLAGS | keywords
        self.sendLine(b"* FLAGS " + format_flags(flags))
        if readonly:
            self.sendLine(b"* OK [PERMANENTFLAGS ()] Read-only mailbox")
        else:
            self.sendLine(b"* OK [PERMANENTFLAGS " + format_flags(flags | {"\\*"}) + b"] Flags permitted")
        self.sendLine(b"* %d EXISTS" % view.exists)
        self.sendLine(b"* %d RECENT" % view.recent_count)
        unseen = view.first_unseen()
        if unseen is not None:
            self.sendLine(b"* OK [UNSEEN %d] First unseen message" % unseen)
        self.sendLine(b"* OK [UIDVALIDITY %d] UIDs valid" % info.uidvalidity)
        uidnext = max(info.uidnext, view.largest_uid + 1)
        self.sendLine(b"* OK [UIDNEXT %d] Predicted next UID" % uidnext)
        self.view = view
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
        if self.view is not None:
            # RFC 2177: report at once what is pending.
            self._on_change(self.view.mailbox_id, self.view.modseq + 1)

    def parse_idle(self, line):
        tag, self._idle_tag = self._idle_tag, None
        self.parseState = "command"
        if line.strip().upper() != b"DONE":
            self.sendLine(tag + b" BAD Expected DONE")
            return
        self.run_command(tag, self._done, b"IDLE terminated")

    auth_NAMESPACE = select_NAMESPACE = (do_NAMESPACE,)
    auth_ENABLE = (do_ENABLE, imap4.IMAP4Server.arg_line)
    auth_SELECT = select_SELECT = (do_SELECT, final_astring)
    auth_EXAMINE = select_EXAMINE = (do_EXAMINE, final_astring)
    auth_IDLE = select_IDLE = (do_IDLE,)

    # -- helpers for the command mixins ----------------------------------

    def mailbox_name(self, wire_name: bytes) -> str:
        try:
            return wire.canonical_name(wire.decode_mailbox(wire_name))
        except wire.BadMailboxName:
            raise bad(b"Mailbox name is not modified UTF-7") from None


class IMAPFactory(protocol.ServerFactory):
    def __init__(self, portal, store, config, reactor, context_factory=None):
        self.portal = portal
        self.store = store
        self.config = config
        self.reactor = reactor
        self.context_factory = context_factory

    def buildProtocol(self, addr):
        server = IMAPServer(self.store, self.config, self.reactor, self.portal, self.context_factory)
        server.factory = self
        return server


def build_factory(portal, store, config, reactor, context_factory=None) -> IMAPFactory:
    """
    The IMAP listener's factory; with ``context_factory`` (a TLS context
    factory) the session offers STARTTLS.
    """
    return IMAPFactory(portal, store, config, reactor, context_factory)
