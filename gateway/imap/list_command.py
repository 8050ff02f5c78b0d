"""
LIST with its extensions, STATUS items and CREATE's special use:
LIST-EXTENDED (RFC 5258), RETURN (STATUS) (LIST-STATUS, RFC 5819), the
SPECIAL-USE selection and return options and CREATE ... (USE (...))
(CREATE-SPECIAL-USE, RFC 6154 3 and 5), STATUS SIZE (RFC 8438) and
DELETED (RFC 9051 6.3.11).

A LIST in RFC 3501's syntax answers as it always has (``MailboxCommands``);
one that uses any RFC 5258 syntax answers from ``gateway.imap.listing``.

A mixin of ``gateway.imap.server.IMAPServer``.
"""

from __future__ import annotations

from gateway.imap import listing, mailbox_names, status
from gateway.imap.arguments import astring, status_items
from gateway.imap.errors import CommandError, NotModifiedUtf7, bad
from gateway.imap.responses import Data, Listed, Status
from gateway.imap.search_keys import SearchSyntaxError, tokenize_search

# RFC 6154 2.
SPECIAL_USES = ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")
_USES = {use.upper().encode("ascii"): use for use in SPECIAL_USES}

USE_ATTR = b"[USEATTR] Unknown or unsupported special-use attribute"


def create_parameters(server, line):
    """
    CREATE's optional ``(USE (attributes))`` (RFC 4466 2.2, RFC 6154 3):
    the special use, or None; NO [USEATTR] for one we do not know or for
    more than one (a mailbox has one use here).
    """
    line = (line or b"").strip()
    if not line:
        return None, b""
    try:
        tokens = tokenize_search(line, 3)
    except SearchSyntaxError:
        raise bad(b"Invalid CREATE parameters") from None
    parameters = tokens[0] if len(tokens) == 1 and isinstance(tokens[0], list) else None
    if (parameters is None or len(parameters) != 2 or not isinstance(parameters[0], bytes)
            or parameters[0].upper() != b"USE" or not isinstance(parameters[1], list)):
        raise bad(b"Invalid CREATE parameters")
    uses = parameters[1]
    use = _USES.get(uses[0].upper()) if len(uses) == 1 and isinstance(uses[0], bytes) else None
    if use is None:
        # RFC 6154 3: nothing is created.
        raise CommandError(USE_ATTR)
    return use, b""


def list_arguments(server, line):
    """LIST's arguments as tokens (``listing.parse_list`` reads them), literals read in."""

    def tokens(collected):
        try:
            return tokenize_search(collected, 8)
        except SearchSyntaxError:
            raise bad(b"Invalid LIST arguments") from None

    return server.arg_with_literals(line, tokens)


class ListCommands:
    def do_LIST(self, tag, tokens):
        self.run_command(tag, self._list_any, tokens)

    async def _list_any(self, tokens):
        try:
            command = listing.parse_list(tokens)
        except listing.ListSyntaxError:
            raise bad(b"Invalid LIST arguments") from None
        if not command.extended and not self.imap4rev2:
            return await self._list(command.reference, command.patterns[0], b"LIST")
        return await self._list_extended(command)

    async def _list_extended(self, command: listing.ListCommand):
        items = ()
        if "STATUS" in command.returns:
            try:
                items = status.check_items(command.status_items)
            except status.StatusItemError:
                raise bad(b"Unknown STATUS item") from None
        try:
            reference = self.mailbox_name(command.reference) if command.reference else ""
            patterns = [self.mailbox_name(pattern) if pattern else "" for pattern in command.patterns]
        except NotModifiedUtf7:
            # Dovecot: a pattern no mailbox name can match matches nothing.
            return b"LIST completed"
        if patterns == [""]:
            # RFC 5258 3: as RFC 3501 6.3.8, the hierarchy delimiter.
            self.send(Listed(b"LIST", ("\\Noselect",), None))
            return b"LIST completed"
        infos = {info.name: info for info in await self.store.list_mailboxes(self.account.user)}
        existing = {name: info.special_use for name, info in infos.items()}
        subscribed = ()
        if "SUBSCRIBED" in command.selection | command.returns:
            subscribed = await self.store.list_subscriptions(self.account.user)
        # Child information always, as for RFC 3501's LIST (RFC 5258 4: MAY).
        entries = listing.list_entries(existing, subscribed, reference, [p for p in patterns if p],
                                       command.selection, command.returns | {"CHILDREN"}, extended=True)
        for entry in entries:
            self.send(Data(listing.format_entry(b"LIST", entry, self._encode_name)))
            info = infos.get(entry.name)
            if items and info is not None:
                # RFC 5819 2: each STATUS after its LIST.
                self.send(Status(info.name, await self.status_of(info, items), self.utf8))
        return b"LIST completed"

    async def listing_of(self, name: str) -> Data:
        """The LIST response of one existing mailbox, as LIST-EXTENDED would give it."""
        existing = {info.name: info.special_use for info in await self.store.list_mailboxes(self.account.user)}
        # A name with % or * in it is a pattern that finds others too.
        entry = next(entry for entry in listing.list_entries(existing, (), "", [name], extended=True)
                     if entry.name == name)
        return Data(listing.format_entry(b"LIST", entry, self._encode_name))

    async def status_of(self, info, items):
        """(item, value) pairs of ``items`` (``status.check_items``) for one mailbox."""
        records = await self.store.list_messages(info.id)
        view = self.view if self.view is not None and self.view.mailbox_id == info.id else None
        if view is not None:
            # \Recent is claimed per session; only our own view knows ours.
            recent = view.recent_count
        elif "RECENT" in items:
            # Those the next session to select it will claim.
            recent = await self.store.count_recent(info.id)
        else:
            recent = 0
        if "HIGHESTMODSEQ" in items:
            self.enable_condstore()
        values = status.status_values(items, info, records, recent)
        return tuple((item.encode("ascii"), value) for item, value in values)

    def do_STATUS(self, tag, name, items):
        self.run_command(tag, self._status, name, items)

    async def _status(self, wire_name, items):
        try:
            wanted = status.check_items(item.decode("ascii") for item in items)
        except status.StatusItemError:
            raise bad(b"Unknown STATUS item") from None
        name = self.mailbox_name(wire_name)
        info = await self.account.select(name)
        self.send(Status(name, await self.status_of(info, wanted), self.utf8))
        return b"STATUS completed"

    def _encode_name(self, name: str) -> bytes:
        # Modified UTF-7, or UTF-8 under UTF8=ACCEPT (RFC 6855 3).
        return mailbox_names.encode_name(name, self.utf8)

    auth_LIST = select_LIST = (do_LIST, list_arguments)
    auth_STATUS = select_STATUS = (do_STATUS, astring, status_items)

