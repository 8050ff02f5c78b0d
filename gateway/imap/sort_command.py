"""
SORT and THREAD (RFC 5256) and their UID forms, with SORT=DISPLAY (RFC
5957): the messages the search criteria match, ordered or threaded by
``gateway.imap.sort`` and ``gateway.imap.thread``.

The charset is required (RFC 5256 3); US-ASCII and UTF-8 are taken, any
other is ``NO [BADCHARSET]``.  The sort values or threading facts of each
message are read from its stored header and record in batches and worked
out in slices (``gateway.imap.slices``), so a big mailbox never holds the
reactor for long.

A mixin of ``gateway.imap.server.IMAPServer``; ``find`` is the SEARCH of
``gateway.imap.selected``.
"""

from __future__ import annotations

from gateway.imap import sort, thread
from gateway.imap.arguments import astring, search_line, word
from gateway.imap.errors import BadCharset, bad
from gateway.imap.search_keys import SUPPORTED_CHARSETS
from gateway.imap.fetch_command import BATCH
from gateway.imap.responses import Data
from gateway.imap.slices import Slices


def sort_program(server, line):
    """SORT's ``(sort-criterion ...)`` (RFC 5256 5)."""
    try:
        return sort.parse_sort_program(line or b"")
    except sort.SortSyntaxError:
        raise bad(b"Invalid sort criteria") from None


def thread_algorithm(server, line):
    """THREAD's algorithm name (RFC 5256 5)."""
    name, rest = word(server, line)
    algorithm = name.upper().decode("ascii", "replace")
    if algorithm not in thread.ALGORITHMS:
        raise bad(b"Unknown threading algorithm")
    return algorithm, rest


class SortCommands:
    uid_commands = frozenset({b"SORT", b"THREAD"})

    def do_SORT(self, tag, criteria, charset, tokens, uid=0):
        self.run_command(tag, self._sort, criteria, charset, tokens, bool(uid), allow_expunge=False)

    def do_THREAD(self, tag, algorithm, charset, tokens, uid=0):
        self.run_command(tag, self._thread, algorithm, charset, tokens, bool(uid), allow_expunge=False)

    async def _sort(self, criteria, charset, tokens, by_uid):
        needs = sort.needs(criteria)

        def entry(number, record, header):
            return number, sort.sort_values(
                criteria, header,
                record.internaldate if record is not None else None,
                record.size if record is not None else None,
            )

        entries = await self._each_found(charset, tokens, by_uid, needs, entry)
        self.send(Data(sort.format_sort(sort.sort_numbers(criteria, entries))))
        return b"SORT completed"

    async def _thread(self, algorithm, charset, tokens, by_uid):
        def message(number, record, header):
            return thread.thread_message(number, header, record.internaldate)

        messages = await self._each_found(charset, tokens, by_uid, frozenset({"record", "header"}), message)
        roots = await Slices(self.reactor).run(thread.thread_steps(algorithm, messages))
        self.send(Data(thread.format_threads(roots)))
        return b"THREAD completed"

    async def _each_found(self, charset, tokens, by_uid, needs, make):
        """
        ``make(number, record, header)`` for each message the criteria
        match, in mailbox order; ``needs`` says which of the record and the
        stored header ``make`` reads (the other is None).  A message
        expunged meanwhile is left out.
        """
        if charset.upper().decode("ascii", "replace") not in SUPPORTED_CHARSETS:
            raise BadCharset()
        view = self.view
        found, _ = await self.find(charset, tokens, False)
        slices = Slices(self.reactor)
        made = []
        for start in range(0, len(found), BATCH):
            batch = [(seq, view.uid_of(seq)) for seq in found[start:start + BATCH]]
            uids = [uid for _, uid in batch]
            records = structures = None
            if "record" in needs:
                records = {record.uid: record for record in await self.store.get_records(view.mailbox_id, uids)}
            if "header" in needs:
                structures = await self.store.get_structures(view.mailbox_id, uids)
            for seq, uid in batch:
                record = structure = None
                if records is not None and (record := records.get(uid)) is None:
                    continue
                if structures is not None and (structure := structures.get(uid)) is None:
                    continue
                made.append(make(uid if by_uid else seq, record, structure.header if structure is not None else None))
                await slices.pause()
        return made

    select_SORT = (do_SORT, sort_program, astring, search_line)
    select_THREAD = (do_THREAD, thread_algorithm, astring, search_line)
