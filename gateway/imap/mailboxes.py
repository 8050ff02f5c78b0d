"""
Mailbox-level IMAP commands (RFC 3501 6.3): CREATE, DELETE, RENAME,
SUBSCRIBE, UNSUBSCRIBE, LIST in RFC 3501's syntax, LSUB, APPEND; and XLIST, Gmail's LIST
with special uses from before RFC 6154, for the clients that know only it.

A mixin of ``gateway.imap.server.IMAPServer``: handlers take their
arguments from the parsers of ``gateway.imap.arguments`` and run through
``run_command``.
"""

from __future__ import annotations

import re


from gateway.imap import wire
from gateway.imap.arguments import astring, final_astring
from gateway.imap.errors import CommandError, TryCreate, bad
from gateway.imap.list_command import create_parameters
from gateway.imap.responses import Listed
from gateway.store.interfaces import NoSuchMailbox
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
        reference = self.mailbox_name(wire_reference) if wire_reference else ""
        pattern = self.mailbox_name(wire_pattern) if wire_pattern else ""
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
                self.send(Listed(command, tuple(attributes), name))
            return command + b" completed"
        subscribed = await self.store.list_subscriptions(self.account.user)
        for name in wire.lsub_matches(subscribed, reference, pattern):
            attributes = () if name in existing else ("\\Noselect",)
            self.send(Listed(b"LSUB", attributes, name))
        return b"LSUB completed"

    def arg_append(self, line):
        """``[flag-list] [date-time] literal`` of APPEND."""
        line = (line or b"").lstrip(b" ")
        flags = ()
        if line.startswith(b"("):
            close = line.find(b")")
            if close < 0:
                raise bad(b"Mismatched parenthesis")
            flags = line[1:close].split()
            line = line[close + 1:].lstrip(b" ")
        date = None
        if line.startswith(b'"'):
            match = re.match(rb'"([^"]*)" ?', line)
            if match is None:
                raise bad(b"Malformed date-time")
            date = match[1]
            line = line[match.end():]
        d = self.arg_literal(line)
        return d.addCallback(lambda result: ((flags, date, result[0]), result[1]))

    def do_APPEND(self, tag, name, message):
        self.run_command(tag, self._append, name, *message)

    async def _append(self, wire_name, flag_tokens, date, body):
        try:
            try:
                flags = wire.parse_flags(flag_tokens)
                internaldate = wire.parse_datetime(date) if date is not None else None
            except ValueError:
                raise bad(b"Bad flags or date-time") from None
            try:
                info = await self.account.select(self.mailbox_name(wire_name))
            except NoSuchMailbox:
                raise TryCreate() from None
            record = await self.store.append(info.id, body, flags, internaldate)
        finally:
            body.close()
        return b"[APPENDUID %d %d] APPEND completed" % (info.uidvalidity, record.uid)

    auth_CREATE = select_CREATE = (do_CREATE, astring, create_parameters)
    auth_DELETE = select_DELETE = (do_DELETE, final_astring)
    auth_RENAME = select_RENAME = (do_RENAME, astring, final_astring)
    auth_SUBSCRIBE = select_SUBSCRIBE = (do_SUBSCRIBE, final_astring)
    auth_UNSUBSCRIBE = select_UNSUBSCRIBE = (do_UNSUBSCRIBE, final_astring)
    auth_LSUB = select_LSUB = (do_LSUB, astring, final_astring)
    auth_XLIST = select_XLIST = (do_XLIST, astring, final_astring)
    auth_APPEND = select_APPEND = (do_APPEND, astring, arg_append)
