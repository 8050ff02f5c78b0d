"""
The store side of a POP3 session: the ``Maildrop`` avatar, a static view of
INBOX taken at login (RFC 1939), and the realm's factory for it, which takes
the maildrop locks (RFC 1939 8) from the store.

QUIT applies the session's deletions as ``pop3.delete_policy`` says:
expunge (RFC 1939), move to the user's Trash, or flag ``pop3.hidden_flag``,
which keeps a message out of every later snapshot while IMAP still shows
it.  A device's view (``alice#phone``, ``gateway/pop3/devices.py``) records
its deletions for that device instead, and the policy takes what every
device has deleted.
"""

from __future__ import annotations

import attrs
from twisted.internet.defer import Deferred, DeferredLock
from twisted.logger import Logger
from twisted.mail import pop3 as twisted_pop3
from zope.interface import implementer

from gateway.pop3.devices import forget_before
from gateway.pop3.session import (
    TRASH,
    DotStuffer,
    MaildropLocked,
    MessageDeleted,
    MessageExpunged,
    NoSuchMessage,
    Snapshot,
    TooManyDevices,
    build_snapshot,
    find_trash,
)
from gateway.store import interfaces as store_interfaces


log = Logger()

IMailbox = twisted_pop3.IMailbox

SEEN = frozenset({"\\Seen"})

# Longest a \Seen that RETR set waits to be saved, with every other one set
# meanwhile: a client that downloads one message at a time would otherwise
# cost a write per message.  Other sessions see it this soon (Dovecot's POP3
# shows them at QUIT), and the batched durability tier makes it durable
# within FLAG_SYNC_DELAY after that, inside the second the README promises.
# A quarter of a second rather than a twentieth: eight clients downloading,
# 3% more messages a second and 9 us less CPU a message (paired runs, both
# orders).
SEEN_DELAY = 0.25

# Once a message has gone out whole, the next one is opened while the client
# takes it: clients download in order, one command at a time, and the next
# RETR then finds its file open, which takes the open off the wait between
# the client's command and our answer (one client downloading: 6% more
# messages a second, paired runs).  The sessions of a process hold at most
# OPEN_AHEAD_FILES.
OPEN_AHEAD_FILES = 1024

# A session downloading alone in its process (no other session has sent a
# message for LONE_WINDOW seconds) has the next message read and
# dot-stuffed too, up to PREPARE_AT_MOST octets of it: the reactor has
# nothing else to do while the client takes a message, and the RETR that
# follows finds its answer ready (one client downloading: 11% more messages
# a second, paired runs, 8 of 8; eight clients: no change).  Not when many
# download: the same work only moves, and the body is cold in the CPU's
# cache by the time it goes out (eight clients: 3% fewer messages a second
# when every session read ahead).  The sessions of a process hold at most
# PREPARED_OCTETS so, and one message more.
LONE_WINDOW = 0.05
PREPARE_AT_MOST = 256 * 1024
PREPARED_OCTETS = 64 * 1024 * 1024


@attrs.frozen
class Prepared:
    """A message read and dot-stuffed ahead: ``response``, what follows its "+OK" line."""

    response: bytes

    @classmethod
    def of(cls, message: bytes) -> Prepared:
        stuffer = DotStuffer()
        return cls(stuffer.transform(message) + stuffer.terminator())


@attrs.define
class AheadBudget:
    """
    What the POP3 sessions of one process may hold ahead: files opened,
    octets prepared; and which session last sent a message, and when.
    """

    files: int = OPEN_AHEAD_FILES
    octets: int = PREPARED_OCTETS
    last_sender: object = None
    last_sent: float = float("-inf")
    # When a session last sent within LONE_WINDOW of another's sending.
    crowded: float = float("-inf")

    def sent_by(self, session: object, now: float) -> bool:
        """
        ``session`` sent a message at ``now``: whether it downloads alone,
        no other session having sent for LONE_WINDOW.  Not just whether
        it sent last: under load one session often sends twice in a row.
        """
        if session is not self.last_sender and now - self.last_sent < LONE_WINDOW:
            self.crowded = now
        self.last_sender, self.last_sent = session, now
        return now - self.crowded >= LONE_WINDOW


@attrs.frozen
class Pop3Mind:
    """What a POP3 login tells the realm beside the user: the device, if one is named."""

    device: str | None = None


@implementer(IMailbox)
class Maildrop:
    """
    The avatar of one POP3 session: the INBOX snapshot taken at login plus
    the store calls RETR, DELE and QUIT need.

    The ``IMailbox`` methods (0-based, for Twisted's contract) sit on top of
    the 1-based ones the protocol uses.
    """

    def __init__(self, store, mailbox, view: Snapshot, config, clock, device: str | None = None,
                 ahead_budget: AheadBudget | None = None):
        self.store = store
        self.mailbox = mailbox
        self.view = view
        self.config = config
        self.device = device
        self._clock = clock
        # The save_seen due within SEEN_DELAY, while one is.
        self._save_due = None
        # Numbers RETR flagged \Seen, and the UIDs not yet saved so.
        self._marked_seen: set[int] = set()
        self._unsaved_seen: list[int] = []
        # Saves run one at a time, in RETR order, and whatever waits for a
        # save (QUIT's deletions, the end of the session) waits for every
        # save before it too, whichever backend answers them.
        self._saving = DeferredLock()
        self._ahead_budget = AheadBudget() if ahead_budget is None else ahead_budget
        # (number, file) of the message opened ahead, or (number, Prepared)
        # of the one prepared ahead, while there is one.
        self._ahead = None

    async def open_message(self, number: int):
        """The stored message file for RETR/TOP; the caller closes it."""
        entry = self.view.readable(number)
        try:
            return await self.store.open_message(self.mailbox.id, entry.uid)
        except store_interfaces.MessageExpunged:
            raise self._expunged(number) from None

    def open_message_now(self, number: int):
        """``open_message`` if the message was opened ahead or the store has the file at hand, else None."""
        entry = self.view.readable(number)
        ahead = self._ahead
        if ahead is not None and ahead[0] == number:
            if isinstance(ahead[1], Prepared):
                self.close_ahead()
            else:
                self._ahead = None
                self._ahead_budget.files += 1
                return ahead[1]
        try:
            return self.store.open_message_now(self.mailbox.id, entry.uid)
        except store_interfaces.MessageExpunged:
            raise self._expunged(number) from None

    def take_prepared(self, number: int) -> bytes | None:
        """
        Message ``number`` as RETR sends it after its "+OK" line,
        dot-stuffed and terminated, if it was prepared ahead; else None.
        """
        ahead = self._ahead
        if ahead is None or ahead[0] != number or not isinstance(ahead[1], Prepared):
            return None
        # Raises for a message deleted or expunged since it was prepared,
        # as RETR refuses it.
        self.view.readable(number)
        self._ahead = None
        self._ahead_budget.octets += len(ahead[1].response)
        return ahead[1].response

    def open_ahead(self, number: int) -> None:
        """
        Message ``number`` has gone out whole: open the next one for the
        RETR that usually follows, if there is one to open (not deleted,
        within the budget, at hand in the store), and prepare it where the
        session downloads alone.

        A message another session expunges meanwhile may still go out
        then: as it would have had the client asked a moment sooner.
        """
        self.close_ahead()
        budget = self._ahead_budget
        alone = budget.sent_by(self, self._clock.seconds())
        following = number + 1
        try:
            entry = self.view.readable(following)
        except (NoSuchMessage, MessageDeleted, MessageExpunged):
            return
        if not budget.files:
            return
        try:
            file = self.store.open_message_now(self.mailbox.id, entry.uid)
        except (store_interfaces.MessageExpunged, OSError):
            # Its RETR, if it comes, opens it again and answers for it;
            # the message just sent has had its answer.
            return
        if file is None:
            return
        if alone and entry.size <= PREPARE_AT_MOST and entry.size < budget.octets:
            try:
                message = file.read(entry.size + 1)
            except OSError:
                return
            finally:
                file.close()
            if len(message) > entry.size:
                # Not the body the index describes: its RETR finds out.
                return
            prepared = Prepared.of(message)
            budget.octets -= len(prepared.response)
            self._ahead = (following, prepared)
            return
        budget.files -= 1
        self._ahead = (following, file)

    def close_ahead(self) -> None:
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return
        if isinstance(ahead[1], Prepared):
            self._ahead_budget.octets += len(ahead[1].response)
        else:
            self._ahead_budget.files += 1
            ahead[1].close()

    def _expunged(self, number: int) -> MessageExpunged:
        """Another session expunged message ``number``: marked so, and the error that says it."""
        self.view.mark_expunged(number)
        return MessageExpunged(number)

    def mark_seen(self, number: int) -> None:
        """
        RETR sent the message whole: it is to be flagged \\Seen at the next
        ``save_seen``, so that a burst of RETRs costs one index write, not
        one each.
        """
        entry = self.view.entries[number - 1]
        if self.config.retr_sets_seen and not entry.seen and number not in self._marked_seen:
            self._marked_seen.add(number)
            self._unsaved_seen.append(entry.uid)

    @property
    def seen_unsaved(self) -> bool:
        return bool(self._unsaved_seen)

    def save_seen_soon(self) -> None:
        """
        The client's commands are all answered: save what RETR flagged
        within SEEN_DELAY, together with whatever RETR flags meanwhile.  The
        moment is a multiple of SEEN_DELAY on the clock, so that the saves
        of all sessions fall due in one reactor turn and the store's writer
        commits them as one group.
        """
        if not self._unsaved_seen or self._save_due is not None:
            return
        delay = SEEN_DELAY - self._clock.seconds() % SEEN_DELAY
        self._save_due = self._clock.callLater(delay, self._save_now)

    def _save_now(self) -> None:
        self._save_due = None
        saved = Deferred.fromCoroutine(self.save_seen())
        saved.addErrback(lambda failure: log.failure("POP3 could not flag messages \\Seen", failure))

    async def save_seen(self) -> None:
        """
        Flag \\Seen what RETR sent since the last call, in one store call;
        returns once that and every earlier save is done.  The session need
        not wait: a flag change is visible to every session once saved and
        durable within a second (README, "Storage and durability").
        """
        due, self._save_due = self._save_due, None
        if due is not None and due.active():
            due.cancel()
        uids, self._unsaved_seen = self._unsaved_seen, []
        await self._saving.run(self._store_seen, uids)

    def _store_seen(self, uids: list[int]):
        if uids:
            return self.store.store_flags(self.mailbox.id, uids, SEEN, "add")
        return None

    async def delete(self, number: int) -> None:
        """DELE: mark in the session, if no other session expunged it."""
        entry = self.view.readable(number)
        present = await self.store.get_records(self.mailbox.id, [entry.uid])
        if not present:
            self.view.mark_expunged(number)
        self.view.delete(number)

    async def apply_deletions(self) -> int:
        """
        QUIT (RFC 1939 6, UPDATE state): what DELE marked leaves the
        maildrop as ``pop3.delete_policy`` says, or, in a device's view,
        leaves that view, and the maildrop once every device has deleted it
        (``pop3.device_delete`` "last").  Each is one store call, so a crash
        leaves all or none of it done; the other messages keep their UIDs,
        hence their UIDLs.
        """
        # A message read and deleted goes to Trash (or stays hidden) \Seen,
        # and no deletion overtakes a save RETR started.
        await self.save_seen()
        uids = self.view.deleted_uids()
        if not uids:
            return 0
        if self.device is None:
            return await self._remove(uids)
        every_device = await self.store.delete_for_device(self.mailbox.id, self.device, uids)
        if every_device and self.config.device_delete == "last":
            await self._remove(every_device)
            # Only now: a crash before leaves the marks, and the next QUIT
            # of a device takes these again.
            await self.store.forget_device_deletions(self.mailbox.id, every_device)
        return len(uids)

    async def _remove(self, uids: list[int]) -> int:
        """The user's delete policy on ``uids``; how many it took."""
        policy = self.config.delete_policy_for(self.mailbox.user)
        if policy == "trash":
            trash = await self._trash()
            return len(await self.store.move(self.mailbox.id, uids, trash.id))
        if policy == "hide":
            return len(await self.store.store_flags(self.mailbox.id, uids, {self.config.hidden_flag}, "add"))
        return len(await self.store.expunge(self.mailbox.id, uids))

    async def _trash(self):
        user = self.mailbox.user
        trash = find_trash(await self.store.list_mailboxes(user))
        if trash is not None:
            return trash
        try:
            return await self.store.create_mailbox(user, TRASH, special_use="\\Trash")
        except store_interfaces.MailboxExists:
            # Another session made it meanwhile.
            return await self.store.get_mailbox(user, TRASH)

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
        return Deferred.fromCoroutine(self.apply_deletions())


def avatar_factory(store, config, clock, ahead_budget: AheadBudget | None = None):
    """
    The realm's POP3 avatar factory: (user name, ``Pop3Mind`` or None) ->
    Deferred (Maildrop, logout).  ``clock`` tells when a device logs in.

    The store holds the maildrop locks (RFC 1939 8: one session per
    maildrop, a device's view being one), for every process or node that
    shares it; logout releases the session's lock.  The sessions share one
    ``AheadBudget``.
    """
    budget = AheadBudget() if ahead_budget is None else ahead_budget

    async def open_maildrop(user: str, device: str | None):
        release = None
        if config.pop3.lock_session:
            release = await store.lock_maildrop(user, device)
            if release is None:
                raise MaildropLocked()

        def logout():
            # The lock's release, which QUIT waits for (interfaces.py).
            return release() if release is not None else None

        try:
            await store.ensure_user(user)
            inbox = await store.get_mailbox(user, "INBOX")
            hidden_here = frozenset()
            if device is not None:
                hidden_here = await _open_device(store, config.pop3, clock, inbox, device)
            records = await store.list_messages(inbox.id)
        except BaseException:
            logout()
            raise
        view = build_snapshot(
            records,
            lambda uid: config.uidl.format(inbox.uidvalidity, uid).encode("ascii"),
            config.pop3.hidden_flag,
            hidden_here,
        )
        maildrop = Maildrop(store, inbox, view, config.pop3, clock, device, budget)

        def end():
            maildrop.close_ahead()
            return logout()

        return maildrop, end

    def factory(user: str, mind=None):
        return Deferred.fromCoroutine(open_maildrop(user, getattr(mind, "device", None)))

    return factory


async def _open_device(store, config, clock, inbox, device: str) -> frozenset[int]:
    """The device's deletions, the device registered (or its login noted) first."""
    now = clock.seconds()
    try:
        return await store.open_device(
            inbox.id, device, now, config.max_devices, forget_before(now, config.forget_devices_after)
        )
    except store_interfaces.TooManyDevices:
        raise TooManyDevices() from None
