"""
NOTIFY (RFC 5465): the session tells its client of changes as they happen,
not only when a command or IDLE lets it.

- The selected mailbox (SELECTED, SELECTED-DELAYED): EXISTS, EXPUNGE and
  FETCH FLAGS as soon as no command is running (with SELECTED-DELAYED,
  EXPUNGE waits for a command that allows it, RFC 5465 6.2), and for
  MessageNew with FETCH attributes, a FETCH of each new message.
- Other mailboxes (INBOXES, PERSONAL, SUBSCRIBED, SUBTREE, MAILBOXES):
  ``* STATUS`` with what changed (5.1-5.3); NOTIFY SET STATUS first tells
  each one's state (3.1).
- MailboxName: ``* LIST`` for a mailbox created, deleted (``\\NonExistent``)
  or renamed (``OLDNAME``, 5.4).

What arrives while a command runs is told after its tagged answer.  The
parsing and the choice of STATUS items are ``gateway.imap.notify``'s.

A mixin of ``gateway.imap.server.IMAPServer``.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from twisted.internet import defer
from twisted.logger import Logger

from gateway.imap import fetch, listing, notify, status, wire
from gateway.imap.errors import CommandError, bad
from gateway.imap.responses import Data, Status
from gateway.imap.sequence import SequenceSet
from gateway.mail import mutf7
from gateway.store.interfaces import NoSuchMailbox

log = Logger()

# In the set of what is due: the list of mailboxes changed.
_NAMES = "names"
# Every item any change report may need, read once per report.
_ITEMS = ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ")


@attrs.define
class _Watched:
    """
    One watched mailbox that is not (or is not always) the selected one:
    its events, the STATUS values last told, and the end of its feed.
    """

    name: str
    events: frozenset[str]
    told: dict[str, int]
    unsubscribe: Callable[[], None]


def notify_arguments(server, line):
    """NOTIFY's arguments as ``notify.tokenize`` tokens, literals read in."""

    def tokens(collected):
        try:
            return notify.tokenize(collected)
        except notify.NotifySyntaxError:
            raise bad(b"Invalid NOTIFY arguments") from None

    return server.arg_with_literals(line, tokens)


class NotifyCommands:
    # All class defaults: a session that never sends NOTIFY holds nothing.
    notify_set: notify.Notify | None = None
    _watched: dict | None = None
    _names: dict | None = None
    _names_unsubscribe = None
    _notify_due: set | None = None
    _notify_fetch = None

    def do_NOTIFY(self, tag, tokens):
        self.run_command(tag, self._notify, tokens)

    async def _notify(self, tokens):
        def decode(name: bytes) -> str:
            try:
                return self.mailbox_name(name)
            except CommandError:
                raise ValueError("not a mailbox name") from None

        try:
            wanted = notify.parse_notify(tokens, decode)
        except notify.UnsupportedEvent:
            raise CommandError(notify.UnsupportedEvent.code + b" Unsupported event") from None
        except notify.NotifySyntaxError:
            raise bad(b"Invalid NOTIFY arguments") from None
        selected = wanted.selected
        requested = None
        if selected is not None and selected.fetch is not None:
            try:
                requested = fetch.parse_fetch(b"(" + selected.fetch + b")")
            except fetch.FetchSyntaxError:
                raise bad(b"Invalid FETCH attributes") from None
        self.stop_notify()
        if not wanted.groups:
            return b"NOTIFY completed"
        self.notify_set = wanted
        self._notify_fetch = requested
        self._notify_due = set()
        self._watched = {}
        user = self.account.user
        subscribed = await self.store.list_subscriptions(user)
        mailboxes = await self.store.list_mailboxes(user)
        for info in mailboxes:
            await self._watch(info, subscribed, initial=wanted.status)
        if wanted.watches_mailbox_names():
            self._names = {info.id: info.name for info in mailboxes}
            self._names_unsubscribe = self.store.changes.subscribe_mailboxes(user, self._names_changed)
        return b"NOTIFY completed"

    def stop_notify(self) -> None:
        """NOTIFY NONE, a new NOTIFY SET, or the end of the session."""
        for watched in (self._watched or {}).values():
            watched.unsubscribe()
        if self._names_unsubscribe is not None:
            self._names_unsubscribe()
        for name in ("notify_set", "_watched", "_names", "_names_unsubscribe", "_notify_due", "_notify_fetch"):
            self.__dict__.pop(name, None)

    def connectionLost(self, reason):
        self.stop_notify()
        super().connectionLost(reason)

    # -- the selected mailbox --------------------------------------------

    def notify_selected(self) -> str | None:
        """The selected mailbox's filter when its message events are pushed: SELECTED or SELECTED-DELAYED."""
        if self.notify_set is None:
            return None
        group = self.notify_set.selected
        return group.filter if group is not None and group.events else None

    async def announce_new(self, view, largest_before: int) -> None:
        """RFC 5465 5.2: MessageNew's FETCH attributes for the messages after ``largest_before``."""
        if self._notify_fetch is None or self.notify_selected() is None or view.largest_uid <= largest_before:
            return
        ranges = view.index_ranges(SequenceSet(((largest_before + 1, None),)), by_uid=True)
        targets = [(seq, uid) for seq, uid in view.pairs(ranges) if not view.is_expunged(uid)]
        plan = fetch.plan_fetch(self._notify_fetch, by_uid=False, condstore=self.condstore, qresync=self.qresync,
                                changedsince=None)
        await self._fetch_messages(targets, plan, None)

    # -- other mailboxes -------------------------------------------------

    async def _watch(self, info, subscribed, initial=False) -> None:
        events = self.notify_set.events_for(info.name, subscribed) & set(notify.MESSAGE_EVENTS)
        if not events:
            return
        told = await self._status_now(info)
        if told is None:
            return

        def changed(mailbox_id, modseq):
            self._mailbox_changed(mailbox_id)

        self._watched[info.id] = _Watched(info.name, events, told, self.store.changes.subscribe(info.id, changed))
        if initial and not self._is_selected(info.id):
            items = notify.status_items(events, self.condstore, self.qresync).get("initial", ())
            if items:
                self.send(Status(info.name, tuple((item.encode("ascii"), told[item]) for item in items)))

    def _is_selected(self, mailbox_id) -> bool:
        return self.view is not None and self.view.mailbox_id == mailbox_id

    async def _status_now(self, info) -> dict[str, int] | None:
        """``_ITEMS`` of one mailbox as the store has them, or None if it is gone."""
        try:
            info = await self.store.get_mailbox(self.account.user, info.name)
        except NoSuchMailbox:
            return None
        # Not ``status_of``: reading HIGHESTMODSEQ here must not turn CONDSTORE on.
        records = await self.store.list_messages(info.id)
        return dict(status.status_values(_ITEMS, info, records, recent=0))

    def _mailbox_changed(self, mailbox_id) -> None:
        if self._watched is None or mailbox_id not in self._watched or self._is_selected(mailbox_id):
            return
        self._notify_due.add(mailbox_id)
        self._tell_soon()

    def _tell_soon(self) -> None:
        if self.running or self._gone or self._closing:
            # A command is running: after its tagged answer (command_finished).
            return
        defer.Deferred.fromCoroutine(self._tell_due()).addErrback(
            lambda failure: log.failure("NOTIFY update failed", failure))

    def command_finished(self) -> None:
        """Called once a command has been answered: what waited goes out."""
        if self._notify_due:
            self._tell_soon()
        if self.notify_selected() is not None and self.view is not None:
            # A change that came after the command's own report.
            self._on_change(self.view.mailbox_id, self.view.modseq + 1)

    async def _tell_due(self) -> None:
        while self._notify_due and not (self._gone or self._closing):
            mailbox_id = self._notify_due.pop()
            if mailbox_id == _NAMES:
                await self._tell_names()
                continue
            watched = self._watched.get(mailbox_id)
            if watched is None or self._is_selected(mailbox_id):
                continue
            now = await self._status_now(watched)
            if now is None or self._watched is None:
                continue
            items = notify.status_items(watched.events, self.condstore, self.qresync)
            sent = notify.changed_status(items, watched.told, now)
            watched.told = now
            if sent:
                self.send(Status(watched.name, tuple((item.encode("ascii"), now[item]) for item in sent)))

    # -- MailboxName -----------------------------------------------------

    def _names_changed(self, user) -> None:
        if self._names is None or self._gone or self._closing:
            return
        if self.running:
            self._notify_due.add(_NAMES)
            return
        defer.Deferred.fromCoroutine(self._tell_names()).addErrback(
            lambda failure: log.failure("NOTIFY MailboxName update failed", failure))

    async def _tell_names(self) -> None:
        user = self.account.user
        mailboxes = await self.store.list_mailboxes(user)
        if self._names is None:
            return
        before, self._names = self._names, {info.id: info.name for info in mailboxes}
        existing = {info.name: info.special_use for info in mailboxes}
        listed = {entry.name: entry for entry in listing.list_entries(existing, (), "", ["*"], extended=True)}
        subscribed = None
        for info in mailboxes:
            old = before.get(info.id)
            if old == info.name:
                continue
            line = listing.format_entry(b"LIST", listed[info.name], _encode_name)
            if old is not None:
                line += b' ("OLDNAME" (%s))' % _encode_name(old)
                watched = self._watched.get(info.id)
                if watched is not None:
                    watched.name = info.name
            elif self.notify_set is not None and self.notify_set.events_for(info.name):
                if subscribed is None:
                    subscribed = await self.store.list_subscriptions(user)
                await self._watch(info, subscribed)
            self.send(Data(line))
        for mailbox_id, name in before.items():
            if mailbox_id not in self._names:
                watched = self._watched.pop(mailbox_id, None)
                if watched is not None:
                    watched.unsubscribe()
                self.send(Data(b'LIST (\\NonExistent) "/" ' + _encode_name(name)))

    auth_NOTIFY = select_NOTIFY = (do_NOTIFY, notify_arguments)


def _encode_name(name: str) -> bytes:
    return wire.quote(mutf7.encode_mailbox(name))
