"""
Local delivery: one message into one user's mailbox.

``deliver`` is shared by the LMTP listener and the ``gateway deliver`` MDA
(``gateway.ops.mda``).  ``GroupCommit`` is ``deliver`` for the LMTP listener:
what its sessions deliver in one reactor turn goes to the store together,
and the store's writer commits it in one group.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.python.failure import Failure

from gateway.store.interfaces import (
    IGroupCommitStore,
    InvalidMailboxName,
    NoSuchMailbox,
)
from gateway.store.model import Inbox
from gateway.store.traced import read_again


async def deliver(store, user: str, source, mailbox: str = "INBOX", special_use: bool = True):
    """
    Store ``source`` (bytes or a binary file at the message start) in the
    user's ``mailbox``, creating the user's mailboxes on first delivery.

    A mailbox that does not exist (or whose name the store refuses) means
    INBOX, as Dovecot's LDA does without ``lda_mailbox_autocreate``: a typo in
    a sieve or a ``+detail`` must never bounce mail.  With ``special_use``
    false, so does a mailbox with a special use (RFC 6154: Sent, Drafts,
    Trash, Junk...): the mailbox was named by the sender, not the user.

    @return: the L{MessageRecord} of the stored message; fails with
        L{TemporaryFailure} when the store cannot take it now.
    """
    info = await _mailbox_for(store, user, mailbox, special_use)
    return await store.append(info.id, source)


async def _mailbox_for(store, user: str, mailbox: str, special_use: bool):
    if mailbox == "INBOX":
        # A user with an INBOX has every mailbox a first delivery makes
        # (ensure_user stops there): one read, not two (nor a write, where
        # ensure_user is a transaction).
        try:
            return await store.get_mailbox(user, "INBOX")
        except NoSuchMailbox:
            pass
    await store.ensure_user(user)
    try:
        info = await store.get_mailbox(user, mailbox)
    except (NoSuchMailbox, InvalidMailboxName):
        return await store.get_mailbox(user, "INBOX")
    if info.special_use is not None and not special_use:
        return await store.get_mailbox(user, "INBOX")
    return info


class GroupCommit:
    """
    ``deliver`` for the LMTP listener, with group commit: the deliveries
    asked for in one reactor turn, by one session (all recipients of a
    message) or several, go to the store in one ``append_many`` call, which
    the store's writer commits as one group (its only commit mechanism:
    this decides what arrives together).  Each message's body is fsynced
    once, however many recipients share it; they share one index commit
    (one WAL fsync) and one fsync per mailbox directory, and none is
    answered before that commit (DESIGN.md, durability).

    A store that does not provide ``IGroupCommitStore`` gets one ``append``
    per delivery, at once, one recipient after another; ``batching`` says
    which, so that the listener starts a message's deliveries together
    only where they go to the store together.
    """

    def __init__(self, store, reactor):
        self.store = store
        self._reactor = reactor
        self.batching = IGroupCommitStore.providedBy(store)
        self._pending: list[tuple[int | Inbox, object, defer.Deferred]] = []
        self._flush_call = None

    async def deliver(self, user: str, source, mailbox: str = "INBOX", special_use: bool = True):
        """
        As ``deliver``: the stored message's L{MessageRecord}.  INBOX, where
        nearly all mail goes, is named to the store as the user's
        (``Inbox``), found in the transaction that stores the message: no
        read on the reactor thread first, where every SQLite call lets the
        store's threads take the GIL and waits to get it back.  A user
        without one yet gets it made, as ``deliver`` does.
        """
        if not self.batching:
            return await deliver(self.store, user, source, mailbox, special_use)
        again = read_again(source) if mailbox == "INBOX" else None
        if again is not None:
            try:
                return await self._append(Inbox(user), source)
            except NoSuchMailbox:
                source = again
        info = await _mailbox_for(self.store, user, mailbox, special_use)
        return await self._append(info.id, source)

    def _append(self, mailbox, source) -> defer.Deferred:
        """``source`` into ``mailbox`` (an id or an ``Inbox``) with this turn's other deliveries."""
        stored = defer.Deferred()
        self._pending.append((mailbox, source, stored))
        if self._flush_call is None:
            # After every session's input of this reactor turn is handled.
            self._flush_call = self._reactor.callLater(0, self._flush)
        return stored

    def _flush(self) -> None:
        self._flush_call = None
        batch, self._pending = self._pending, []

        def answer(outcomes):
            for (_, _, stored), outcome in zip(batch, outcomes):
                if isinstance(outcome, BaseException):
                    stored.errback(Failure(outcome))
                else:
                    stored.callback(outcome)

        def fail(failure):
            for _, _, stored in batch:
                stored.errback(failure)

        appended = defer.maybeDeferred(self.store.append_many, [(box, source) for box, source, _ in batch])
        appended.addCallbacks(answer, fail)
