"""
The IMAP avatar: one user's mailboxes in the shared store.

The realm (``gateway.auth.MailRealm``) calls ``avatar_factory(store, config)``
with a user name after login.  The account speaks Twisted's ``IAccount`` over
the store, every method returning a Deferred; the protocol
(``gateway.imap.server``) reads the store through ``account.store`` for the
selected-mailbox work, which ``IAccount``/``IMailbox`` cannot express (per
session sequence numbers, change feed).
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.mail.imap4 import IAccount, MailboxException
from zope.interface import implementer

from gateway.imap import wire
from gateway.store.model import HIERARCHY_SEPARATOR


@implementer(IAccount)
class Account:
    def __init__(self, store, user: str):
        self.store = store
        self.user = user

    # IAccount: names are text (decoded from modified UTF-7 by the protocol).

    def addMailbox(self, name, mbox=None):
        if mbox is not None:
            raise MailboxException("mailboxes live in the store; cannot adopt another object")
        return self.create(name)

    def create(self, pathspec, special_use=None):
        # RFC 3501 6.3.3: a trailing separator only says "will have children".
        name = wire.canonical_name(pathspec.rstrip(HIERARCHY_SEPARATOR))
        return self.store.create_mailbox(self.user, name, special_use)

    def select(self, name, rw=True):
        """The L{MailboxInfo} of ``name`` (the protocol builds the live view)."""
        return self.store.get_mailbox(self.user, wire.canonical_name(name))

    def delete(self, name):
        return self.store.delete_mailbox(self.user, wire.canonical_name(name))

    def rename(self, oldname, newname):
        return self.store.rename_mailbox(
            self.user, wire.canonical_name(oldname), wire.canonical_name(newname.rstrip(HIERARCHY_SEPARATOR))
        )

    def isSubscribed(self, name):
        async def subscribed():
            return wire.canonical_name(name) in await self.store.list_subscriptions(self.user)

        return defer.Deferred.fromCoroutine(subscribed())

    def subscribe(self, name):
        return self.store.set_subscribed(self.user, wire.canonical_name(name), True)

    def unsubscribe(self, name):
        return self.store.set_subscribed(self.user, wire.canonical_name(name), False)

    def listMailboxes(self, ref, wildcard):
        """Pairs of (name, L{MailboxInfo}) matching ``ref`` + ``wildcard``."""

        async def matching():
            matcher = wire.compile_pattern(ref, wildcard)
            mailboxes = await self.store.list_mailboxes(self.user)
            return [(info.name, info) for info in mailboxes if matcher.fullmatch(info.name)]

        return defer.Deferred.fromCoroutine(matching())


def avatar_factory(store, config):
    """
    For ``MailRealm``: user name -> Deferred firing with (avatar, logout).
    The user's INBOX and special-use folders are created on first login.
    """

    async def make(user: str):
        await store.ensure_user(user)
        return Account(store, user), lambda: None

    def factory(user, mind=None):
        if isinstance(user, bytes):
            user = user.decode("utf-8")
        return defer.Deferred.fromCoroutine(make(user))

    return factory
