"""
APPEND (RFC 3501 6.3.11) and MULTIAPPEND (RFC 3502): one or more messages,
each with its flags and date-time, added to one mailbox together: all of
them or none (RFC 3502 6.3.11); a message may come as UTF8 (literal8), as
RFC 6855 4 sends one with UTF-8 headers.  APPENDUID names their UIDs (RFC 4315);
the user's quota counts them all before the first is stored (RFC 9208).

A mixin of ``gateway.imap.server.IMAPServer``.  The store adds a message
at a time, durably; when one fails after others were added, those are
expunged again before the NO, so the mailbox ends as it began (a session
watching it at that moment may see them come and go, as Dovecot's
sessions may see a MULTIAPPEND roll back).
"""

from __future__ import annotations

import re

import attrs

from gateway.imap import wire
from gateway.imap.arguments import astring
from gateway.imap.errors import TryCreate, bad
from gateway.imap.framing import SPOOL_IN_MEMORY
from gateway.imap.sequence import format_sequence_set
from gateway.store.interfaces import NoSuchMailbox

# Messages of one MULTIAPPEND; each is up to APPENDLIMIT, the first
# MEMORY_BUDGET octets of them in memory, the rest in temporary files.
MAX_MESSAGES = 100
MEMORY_BUDGET = 1 << 20

_UTF8_DATA = re.compile(rb"UTF8 \(~(?=\{)", re.IGNORECASE)


@attrs.frozen
class Appended:
    """One message of an APPEND, as the client sent it."""

    flags: tuple[bytes, ...]
    date: bytes | None
    body: object  # a file, positioned at the message's start


def _close_all(messages) -> None:
    for message in messages:
        message.body.close()


class AppendCommand:
    def arg_append(self, line):
        """``1*(SP [flag-list SP] [date-time SP] literal)`` (RFC 3502 6.3.11)."""
        messages: list[Appended] = []
        held = [0]

        def failed(failure):
            _close_all(messages)
            return failure

        def step(line):
            line = (line or b"").lstrip(b" ")
            if messages and not line.strip():
                return messages, b""
            if len(messages) >= MAX_MESSAGES:
                raise bad(b"Too many messages in one APPEND")
            flags = ()
            if line.startswith(b"("):
                close = line.find(b")")
                if close < 0:
                    raise bad(b"Mismatched parenthesis")
                flags = tuple(line[1:close].split())
                line = line[close + 1:].lstrip(b" ")
            date = None
            if line.startswith(b'"'):
                match = re.match(rb'"([^"]*)" ?', line)
                if match is None:
                    raise bad(b"Malformed date-time")
                date = match[1]
                line = line[match.end():]
            # RFC 6855 4: "UTF8" SP "(" literal8 ")", a message with UTF-8 headers.
            utf8 = _UTF8_DATA.match(line)
            if utf8 is not None:
                line = line[utf8.end():]
            in_memory = SPOOL_IN_MEMORY if held[0] < MEMORY_BUDGET else 1
            d = self.arg_literal(line, in_memory)

            def read(result):
                body, rest = result
                if utf8 is not None:
                    if not rest.startswith(b")"):
                        body.close()
                        raise bad(b"Expected ) after the UTF8 literal")
                    rest = rest[1:]
                held[0] += min(body.seek(0, 2), in_memory)
                body.seek(0)
                messages.append(Appended(flags, date, body))
                return step(rest)

            return d.addCallback(read)

        try:
            d = step(line)
        except Exception:
            _close_all(messages)
            raise
        return d.addErrback(failed)

    def do_APPEND(self, tag, name, messages):
        self.run_command(tag, self._append, name, messages)

    async def _append(self, wire_name, messages):
        try:
            try:
                parsed = [(wire.parse_flags(m.flags), wire.parse_datetime(m.date) if m.date is not None else None)
                          for m in messages]
            except ValueError:
                raise bad(b"Bad flags or date-time") from None
            try:
                info = await self.account.select(self.mailbox_name(wire_name))
            except NoSuchMailbox:
                raise TryCreate() from None
            sizes = [m.body.seek(0, 2) for m in messages]
            for m in messages:
                m.body.seek(0)
            await self.check_quota(sum(sizes), len(messages))
            # This session reports the messages: it takes their \\Recent.
            view = self.view
            recent = (view is not None and view.mailbox_id == info.id and not view.readonly
                      and not self.imap4rev2)
            uids = []
            try:
                for message, (flags, internaldate) in zip(messages, parsed):
                    uids.append((await self.store.append(info.id, message.body, flags, internaldate,
                                                         recent=recent)).uid)
            except BaseException:
                # RFC 3502: none of them, then.
                if uids:
                    await self.store.expunge(info.id, uids)
                raise
        finally:
            _close_all(messages)
        return b"[APPENDUID %d %s] APPEND completed" % (info.uidvalidity, format_sequence_set(uids).encode("ascii"))

    auth_APPEND = select_APPEND = (do_APPEND, astring, arg_append)
