"""
Mailbox-level IMAP commands (RFC 3501 6.3): CREATE, DELETE, RENAME,
SUBSCRIBE, UNSUBSCRIBE, LIST in RFC 3501's syntax, LSUB (APPEND is
``gateway.imap.append``'s); and XLIST, Gmail's LIST
with special uses from before RFC 6154, for the clients that know only it.

A mixin of ``gateway.imap.server.IMAPServer``: handlers take their
arguments from the parsers of ``gateway.imap.arguments`` and run through
``run_command``.
"""

from __future__ import annotations

from gateway.imap import listing, wire
from gateway.imap.arguments import astring, final_astring
from gateway.imap.errors import CommandError, NotModifiedUtf7
from gateway.imap.list_command import create_parameters
from gateway.imap.responses import Listed
from gateway.store.model import HIERARCHY_SEPARATOR

# Characters in a mailbox name a client may create (Dovecot allows 255 per
# level); it is shown in every LIST answer, so it is kept short.
MAX_NAME_LENGTH = 1000


# XLIST names for RFC 6154's special uses, as Gmail sent them; INBOX gets
# \Inbox besides.
_XLIST_USES = {"\\Junk": "\\Spam", "\\All": "\\AllMail", "\\Flagged": "\\Starred"}


def _xlist_attributes(name: str, attributes) -> tuple[str, ...]:
    named = tuple(_XLIST_USES.get(attribute, attribute) for attribute in attributes)
    return (*named, "\\Inbox") if name == "INBOX" else named


def _creatable(name: str) -> str:
    """
    Names we let a client create.  Names never become paths here, but an
    export to Maildir++ or a migration to Dovecot may make them so: refuse
    what Dovecot refuses, ``.`` and ``..`` levels and a leading ``~``.
    """
    if len(name) > MAX_NAME_LENGTH:
        raise CommandError(b"[CANNOT] Mailbox name too long")
    if name.startswith("~") or any(level in (".", "..") for level in name.split(HIERARCHY_SEPARATOR)):
        raise CommandError(b"[CANNOT] Not an acceptable mailbox name")
    return name


class MailboxCommands:
    def do_CREATE(self, tag, name, special_use=None):
        self.run_command(tag, self._create, name, special_use)

    async def _create(self, wire_name, special_use):
        name = _creatable(self.mailbox_name(wire_name).rstrip(HIERARCHY_SEPARATOR))
        if name == "INBOX":
            raise CommandError(b"[ALREADYEXISTS] INBOX always exists")
        await self.account.create(name, special_use)
        return b"CREATE completed"

    def do_DELETE(self, tag, name):
        self.run_command(tag, self._delete, name)

    async def _delete(self, wire_name):
        name = self.mailbox_name(wire_name)
        if name == "INBOX":
            raise CommandError(b"[CANNOT] INBOX cannot be deleted")
        await self.account.delete(name)
        return b"DELETE completed"

    def do_RENAME(self, tag, old, new):
        self.run_command(tag, self._rename, old, new)

    async def _rename(self, old, new):
        await self.account.rename(self.mailbox_name(old), _creatable(self.mailbox_name(new)))
        return b"RENAME completed"

    def do_SUBSCRIBE(self, tag, name):
        self.run_command(tag, self._subscribe, name, True)

    def do_UNSUBSCRIBE(self, tag, name):
        self.run_command(tag, self._subscribe, name, False)

    async def _subscribe(self, wire_name, subscribed):
        name = self.mailbox_name(wire_name)
        if subscribed:
            await self.account.subscribe(name)
            return b"SUBSCRIBE completed"
        await self.account.unsubscribe(name)
        return b"UNSUBSCRIBE completed"

    def do_LSUB(self, tag, reference, pattern):
        self.run_command(tag, self._list, reference, pattern, b"LSUB")

    def do_XLIST(self, tag, reference, pattern):
        self.run_command(tag, self._list, reference, pattern, b"XLIST")

    async def _list(self, wire_reference, wire_pattern, command):
        try:
            reference = self.mailbox_name(wire_reference) if wire_reference else ""
            pattern = self.mailbox_name(wire_pattern) if wire_pattern else ""
        except NotModifiedUtf7:
            # Dovecot: a pattern no mailbox name can match matches nothing.
            return command + b" completed"
        if command != b"LSUB" and not pattern:
            # RFC 3501 6.3.8: the hierarchy delimiter and root name.
            self.send(Listed(command, ("\\Noselect",), None))
            return command + b" completed"
        mailboxes = await self.store.list_mailboxes(self.account.user)
        existing = {info.name: info.special_use for info in mailboxes}
        if command != b"LSUB":
            for name, attributes in wire.list_matches(existing, reference, pattern):
                if command == b"XLIST":
                    attributes = _xlist_attributes(name, attributes)
                self.send(Listed(command, tuple(attributes), name, self.utf8))
            return command + b" completed"
        subscribed = await self.store.list_subscriptions(self.account.user)
        for entry in listing.lsub_entries(existing, subscribed, reference, pattern):
            self.send(Listed(b"LSUB", entry.attributes, entry.name, self.utf8))
        return b"LSUB completed"

    auth_CREATE = select_CREATE = (do_CREATE, astring, create_parameters)
    auth_DELETE = select_DELETE = (do_DELETE, final_astring)
    auth_RENAME = select_RENAME = (do_RENAME, astring, final_astring)
    auth_SUBSCRIBE = select_SUBSCRIBE = (do_SUBSCRIBE, final_astring)
    auth_UNSUBSCRIBE = select_UNSUBSCRIBE = (do_UNSUBSCRIBE, final_astring)
    auth_LSUB = select_LSUB = (do_LSUB, astring, final_astring)
    auth_XLIST = select_XLIST = (do_XLIST, astring, final_astring)
