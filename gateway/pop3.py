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
- TCP_NODELAY on every connection (DESIGN.md, performance rules).

The session snapshot and the byte transforms are pure code in
``gateway/pop3_view.py``.
"""

from __future__ import annotations

import inspect

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import LoginFailed
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ServerFactory
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.mail import pop3 as twisted_pop3
from twisted.protocols.basic import FileSender
from zope.interface import implementer

from gateway import pop3_view
from gateway.pop3_view import (
    CAPABILITIES,
    DotStuffer,
    MaildropLocked,
    Pop3Error,
    Snapshot,
    SnapshotEntry,
    TopFilter,
    parse_line_count,
    parse_message_number,
    parse_sasl_plain,
)
from gateway.store import interfaces as store_interfaces

log = Logger()

IMailbox = twisted_pop3.IMailbox

SEEN = frozenset({"\\Seen"})

# RFC 3206 4: SYS/TEMP for failures that may go away if retried.
_INTERNAL_ERROR = b"[SYS/TEMP] Internal server error, try again later"

# Pipelined lines queued behind a running command before the connection
# stops being read: input stays bounded whatever the client sends.
MAX_QUEUED_LINES = 100


@implementer(IMailbox)
class Maildrop:
    """
    The avatar of one POP3 session: the INBOX snapshot taken at login plus
    the store calls RETR, DELE and QUIT need.

    The ``IMailbox`` methods (0-based, for Twisted's contract) sit on top of
    the 1-based ones the protocol uses.
    """

    def __init__(self, store, mailbox, view: Snapshot, retr_sets_seen: bool):
        self.store = store
        self.mailbox = mailbox
        self.view = view
        self.retr_sets_seen = retr_sets_seen

    async def open_message(self, number: int):
        """The stored message file for RETR/TOP; the caller closes it."""
        entry = self.view.readable(number)
        try:
            return await self.store.open_message(self.mailbox.id, entry.uid)
        except store_interfaces.MessageExpunged:
            self.view.mark_expunged(number)
            raise pop3_view.MessageExpunged(number) from None

    async def mark_seen(self, number: int) -> None:
        entry = self.view.entries[number - 1]
        if self.retr_sets_seen and not entry.seen:
            await self.store.store_flags(self.mailbox.id, [entry.uid], SEEN, "add")

    async def delete(self, number: int) -> None:
        """DELE: mark in the session, if no other session expunged it."""
        entry = self.view.readable(number)
        present = await self.store.get_structures(self.mailbox.id, [entry.uid])
        if entry.uid not in present:
            self.view.mark_expunged(number)
        self.view.delete(number)

    async def expunge_deleted(self) -> int:
        """QUIT (RFC 1939 6, UPDATE state): remove what DELE marked."""
        uids = self.view.deleted_uids()
        if not uids:
            return 0
        removed = await self.store.expunge(self.mailbox.id, uids)
        return len(removed)

    # twisted.mail.pop3.IMailbox, 0-based.

    def listMessages(self, i=None):
        if i is None:
            return [
                0 if number in self.view.deleted else entry.size
                for number, entry in enumerate(self.view.entries, 1)
            ]
        number = i + 1
        entry = self.view.entry(number)
        return 0 if number in self.view.deleted else entry.size

    def getMessage(self, i):
        return Deferred.fromCoroutine(self.open_message(i + 1))

    def getUidl(self, i):
        return self.view.visible(i + 1).uidl

    def deleteMessage(self, i):
        self.view.delete(i + 1)

    def undeleteMessages(self):
        self.view.reset()

    def sync(self):
        return Deferred.fromCoroutine(self.expunge_deleted())


def avatar_factory(store, config):
    """
    The realm's POP3 avatar factory: user name -> Deferred (Maildrop, logout).

    Holds the maildrop locks of this process (RFC 1939 8: one session per
    maildrop); logout releases the session's lock.
    """
    locked: set[str] = set()

    async def open_maildrop(user: str):
        lock = config.pop3.lock_session
        if lock:
            if user in locked:
                raise MaildropLocked()
            locked.add(user)
        released = False

        def logout():
            nonlocal released
            if lock and not released:
                released = True
                locked.discard(user)

        try:
            await store.ensure_user(user)
            inbox = await store.get_mailbox(user, "INBOX")
            records = await store.list_messages(inbox.id)
        except BaseException:
            logout()
            raise
        entries = tuple(
            SnapshotEntry(
                uid=record.uid,
                size=record.size,
                uidl=config.uidl.format(inbox.uidvalidity, record.uid).encode("ascii"),
                seen="\\Seen" in record.flags,
            )
            for record in records
        )
        maildrop = Maildrop(store, inbox, Snapshot(entries), config.pop3.retr_sets_seen)
        return maildrop, logout

    def factory(user: str):
        return Deferred.fromCoroutine(open_maildrop(user))

    return factory


class _WireReader:
    """
    A file for FileSender: reads the stored message (already CRLF) and hands
    out wire bytes, TOP-limited and dot-stuffed; empty once TOP is done so
    the rest of the file is never read.
    """

    def __init__(self, file, stuffer: DotStuffer, top: TopFilter | None, on_read):
        self._file = file
        self._stuffer = stuffer
        self._top = top
        self._on_read = on_read

    def read(self, size: int) -> bytes:
        if self._top is not None and self._top.done:
            return b""
        chunk = self._file.read(size)
        if self._top is not None:
            chunk = self._top.transform(chunk)
        self._on_read()
        return self._stuffer.transform(chunk)


class Pop3Server(twisted_pop3.POP3):
    """One POP3 connection; see the module docstring for what differs."""

    AUTH_CMDS = [b"CAPA", b"USER", b"PASS", b"AUTH", b"QUIT"]
    # RFC 1939 3 allows 40 octets of argument; AUTH continuation lines may be
    # longer (RFC 5034 4), so keep room for long passwords.
    MAX_LENGTH = 4096

    do_APOP = None  # no timestamp in the greeting, so no APOP (RFC 1939 7)
    do_RPOP = None
    do_LAST = None  # removed from POP3 by RFC 1725

    def __init__(self, portal, config, reactor):
        self.portal = portal
        self.config = config
        self.reactor = reactor
        self.timeOut = config.pop3.idle_timeout
        self._connection_gone = False
        self._in_progress: Deferred | None = None
        self._reading_paused = False

    def callLater(self, period, func):
        return self.reactor.callLater(period, func)

    def capabilities(self) -> list[bytes]:
        return list(CAPABILITIES)

    # Connection

    def connectionMade(self):
        # Nagle's algorithm holds back the short replies of a pipelined
        # session: 200 times slower (DESIGN.md).
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        self.successResponse(self.config.hostname.encode("ascii", "replace") + b" POP3 gateway ready")
        self.setTimeout(self.timeOut)

    def connectionLost(self, reason):
        self._connection_gone = True
        self.setTimeout(None)
        logout, self._onLogout = self._onLogout, None
        if logout is None:
            return
        if self._in_progress is None:
            logout()
        else:
            # A QUIT may still be expunging: the lock stays until it is done.
            self._in_progress.addBoth(lambda result: logout())

    def lineLengthExceeded(self, line):
        self.failResponse(b"Line too long")
        self.transport.loseConnection()

    def successResponse(self, message=b""):
        if not isinstance(message, bytes):
            message = str(message).encode("utf-8")
        self.sendLine(b"+OK " + message if message else b"+OK")

    # Command dispatch

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
        if self._reading_paused and (self.blocked is None or len(self.blocked) < MAX_QUEUED_LINES):
            self._reading_paused = False
            self.transport.resumeProducing()

    def state_COMMAND(self, line):
        self.processCommand(*line.split(b" "))

    def processCommand(self, command, *args):
        command = command.upper()
        handler = getattr(self, "do_" + command.decode("ascii", "replace"), None)
        if handler is None:
            self.failResponse(b"Unknown command")
            return
        authenticated = self.mbox is not None
        if authenticated == (command in self.AUTH_CMDS) and command not in (b"CAPA", b"QUIT"):
            self.failResponse(b"Command not valid in this state")
            return
        try:
            inspect.signature(handler).bind(*args)
        except TypeError:
            self.failResponse(b"Syntax error")
            return
        try:
            result = handler(*args)
        except Pop3Error as e:
            self.failResponse(e.text)
        except Exception:
            log.failure("POP3 command {command} failed", command=command)
            self.failResponse(_INTERNAL_ERROR)
        else:
            if inspect.iscoroutine(result):
                self._run(result)

    def _run(self, coroutine):
        """Run a command that waits on the store; later lines queue meanwhile."""
        self.blocked = []
        done = Deferred.fromCoroutine(self._answer_errors(coroutine))
        if done.called:
            self._unblock()
            return
        self._in_progress = done

        def finished(result):
            self._in_progress = None
            self._unblock()
            return result

        done.addCallback(finished)

    async def _answer_errors(self, coroutine):
        try:
            await coroutine
        except Pop3Error as e:
            self.failResponse(e.text)
        except Exception:
            log.failure("POP3 command failed")
            self.failResponse(_INTERNAL_ERROR)

    # AUTHORIZATION state

    def do_CAPA(self):
        self.successResponse(b"Capability list follows")
        self.transport.writeSequence([line + b"\r\n" for line in self.capabilities()] + [b".\r\n"])

    def do_USER(self, user):
        self._userIs = user
        self.successResponse(b"Send PASS")

    def do_PASS(self, password, *words):
        if self._userIs is None:
            self.failResponse(b"USER required before PASS")
            return None
        user, self._userIs = self._userIs, None
        try:
            name = user.decode("utf-8")
        except UnicodeDecodeError:
            name = None
        return self._login(name, b" ".join((password,) + words))

    def do_AUTH(self, mechanism=None, initial_response=None):
        if mechanism is None:
            # Not in RFC 5034, but clients of RFC 1734 list mechanisms so.
            self.successResponse(b"Supported mechanisms follow")
            self.transport.write(b"PLAIN\r\n.\r\n")
            return None
        if mechanism.upper() != b"PLAIN":
            self.failResponse(b"Unsupported authentication mechanism")
            return None
        if initial_response is None:
            self.state = "AUTH"
            self.sendLine(b"+ ")
            return None
        return self._login(*parse_sasl_plain(initial_response))

    def state_AUTH(self, line):
        self.state = "COMMAND"
        if line == b"*":
            # RFC 5034 4: the client cancelled the exchange.
            self.failResponse(b"Authentication cancelled")
            return
        try:
            user, password = parse_sasl_plain(line)
        except Pop3Error as e:
            self.failResponse(e.text)
            return
        self._run(self._login(user, password))

    async def _login(self, user: str | None, password: bytes):
        try:
            if user is None:
                raise LoginFailed("user name is not UTF-8")
            _, maildrop, logout = await self.portal.login(
                UsernamePassword(user.encode("utf-8"), password), None, IMailbox
            )
        except LoginFailed:
            # Slow down password guessing; later commands wait in the queue.
            await deferLater(self.reactor, self.config.auth.failure_delay)
            self.failResponse(b"[AUTH] Authentication failed")
            return
        except MaildropLocked as e:
            self.failResponse(e.text)
            return
        if self._connection_gone:
            logout()
            return
        self.mbox = maildrop
        self._onLogout = logout
        log.info("POP3 login {user}", user=user)
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
            await self.mbox.mark_seen(number)

    async def do_TOP(self, number, lines):
        number = parse_message_number(number)
        top = TopFilter(parse_line_count(lines))
        self.mbox.view.readable(number)
        await self._send_message(number, b"Top of message follows", top)

    async def _send_message(self, number: int, status: bytes, top: TopFilter | None) -> bool:
        """Stream the message; False if the connection went away meanwhile."""
        file = await self.mbox.open_message(number)
        try:
            stuffer = DotStuffer()
            self.successResponse(status)
            sender = FileSender()
            reader = _WireReader(file, stuffer, top, self.resetTimeout)
            try:
                await sender.beginFileTransfer(reader, self.transport)
            except Exception:
                # The transport stopped the transfer: the connection is
                # going, and after "+OK" there is nothing to tell the client.
                self.transport.loseConnection()
                return False
            self.transport.write(stuffer.terminator())
            return True
        finally:
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
            removed = await self.mbox.expunge_deleted()
        except Exception:
            log.failure("POP3 QUIT could not expunge")
            # RFC 1939 6: "-ERR some deleted messages not removed"
            self.failResponse(b"[SYS/TEMP] Some deleted messages not removed")
        else:
            self.successResponse(b"Bye, %d messages deleted" % (removed,))
        self.transport.loseConnection()


class Pop3Factory(ServerFactory):
    def __init__(self, portal, config, reactor):
        self.portal = portal
        self.config = config
        self.reactor = reactor

    def buildProtocol(self, addr):
        protocol = Pop3Server(self.portal, self.config, self.reactor)
        protocol.factory = self
        return protocol


def build_factory(portal, config, reactor) -> ServerFactory:
    return Pop3Factory(portal, config, reactor)
