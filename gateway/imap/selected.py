"""
Selected-state IMAP commands (RFC 3501 6.4): CHECK, CLOSE, UNSELECT,
EXPUNGE, SEARCH, FETCH, STORE, COPY, MOVE (RFC 6851) and their UID forms
(with UID EXPUNGE, RFC 4315), with CONDSTORE's MODSEQ search key, FETCH
MODSEQ and CHANGEDSINCE, STORE UNCHANGEDSINCE (RFC 7162 3.1) and QRESYNC's
UID FETCH VANISHED (3.2.6).

A mixin of ``gateway.imap.server.IMAPServer``.  Message numbers go through
the session's ``SelectedView``; bodies are streamed from the store's file,
reading only the bytes of the asked-for section.
"""

from __future__ import annotations

import bisect
import os
import re

from twisted.mail import imap4

from gateway.mail import message
from gateway.imap import fetch, resync, search, view_search, wire
from gateway.imap.errors import CommandError, bad
from gateway.imap.mailboxes import final_astring
from gateway.imap.output import CHUNK, Output
from gateway.imap.sequence import SequenceSetError, format_sequence_set, parse_sequence_set
from gateway.imap.slices import Slices
from gateway.imap.view import format_flags
from gateway.store.interfaces import MessageExpunged, NoSuchMailbox

# Messages whose structures are loaded at once by FETCH and SEARCH.
_BATCH = 200
_EXPUNGE_ISSUED = b"[EXPUNGEISSUED] Some messages were expunged meanwhile; completed for the others"

# RFC 7162 3.1.3: the modifier before the STORE item.
_STORE = re.compile(
    rb"(?:\( *UNCHANGEDSINCE +([0-9]{1,19}) *\) +)?([+-]?)FLAGS(\.SILENT)? +(?:\((.*)\)|(.*))",
    re.IGNORECASE,
)

def word(server, line):
    """Command-table parser: one space-delimited token (a sequence set)."""
    token, _, rest = (line or b"").lstrip(b" ").partition(b" ")
    if not token:
        raise imap4.IllegalClientResponse("Missing argument")
    return token, rest


def search_line(server, line):
    return server.arg_searchline(line)


def search_charset(server, line):
    return imap4.IMAP4Server.opt_charset(server, line or b"")


class SelectedCommands:
    # -- message numbers -------------------------------------------------

    def target_ranges(self, text: bytes, by_uid: bool) -> list[tuple[int, int]]:
        """The messages a sequence set names in the client's view, as
        half-open ranges of indexes (``SelectedView.index_ranges``)."""
        try:
            numbers = parse_sequence_set(text)
        except SequenceSetError:
            raise bad(b"Invalid sequence set") from None
        if not by_uid:
            largest = numbers.largest_number
            if largest is not None and largest > self.view.exists:
                raise bad(b"Invalid message sequence number")
        return self.view.index_ranges(numbers, by_uid)

    def targets(self, text: bytes, by_uid: bool) -> list[tuple[int, int]]:
        """(seq, uid) pairs a sequence set names in the client's view."""
        return self.view.pairs(self.target_ranges(text, by_uid))

    def _live(self, pairs):
        live = [(seq, uid) for seq, uid in pairs if not self.view.is_expunged(uid)]
        return live, len(live) != len(pairs)

    def _writable(self):
        if self.view.readonly:
            raise CommandError(b"[READ-ONLY] Mailbox is read-only")

    # -- CHECK, CLOSE, UNSELECT, EXPUNGE ---------------------------------

    def do_CHECK(self, tag):
        self.run_command(tag, self._done, b"CHECK completed")

    def do_CLOSE(self, tag):
        self.run_command(tag, self._close, True)

    def do_UNSELECT(self, tag):
        self.run_command(tag, self._close, False)

    async def _close(self, expunge):
        view = self.view
        if expunge and not view.readonly:
            # RFC 3501 6.4.2: expunge silently, no untagged EXPUNGE.
            await self._expunge_deleted(None)
        self._deselect()
        return b"CLOSE completed" if expunge else b"UNSELECT completed"

    def do_EXPUNGE(self, tag, uid_set=None):
        self.run_command(tag, self._expunge, uid_set)

    async def _expunge(self, uid_set):
        self._writable()
        await self._expunge_deleted(uid_set)
        return b"EXPUNGE completed"

    async def _expunge_deleted(self, uid_set):
        view = self.view
        view.apply(await self.store.changes_since(view.mailbox_id, view.modseq))
        marked = view.search_flags(lambda flags, recent: "\\Deleted" in flags, uids=True)
        if uid_set is None:
            deleted = marked
        else:
            named = {uid for _, uid in self.targets(uid_set, by_uid=True)}
            deleted = [uid for uid in marked if uid in named]
        if deleted:
            for uid in await self.store.expunge(view.mailbox_id, deleted):
                view.mark_expunged(uid)

    # -- SEARCH ----------------------------------------------------------

    def do_SEARCH(self, tag, charset, tokens, uid=0):
        self.run_command(tag, self._search, charset, tokens, bool(uid), allow_expunge=False)

    async def _search(self, charset, tokens, by_uid):
        codec = search.search_codec(charset)
        if codec is None:
            raise CommandError(b"[BADCHARSET (US-ASCII UTF-8)] Unsupported charset")
        try:
            key = search.parse_search(tokens, max_depth=self.config.limits.max_nesting, codec=codec)
        except search.SearchSyntaxError:
            raise bad(b"Invalid search criteria") from None
        view = self.view
        with_modseq = search.uses_modseq(key)
        if with_modseq:
            self.enable_condstore()
        # The flags the store has now: what a concurrent STORE elsewhere did
        # counts (its FETCH FLAGS follows the SEARCH answer).
        view.apply(await self.store.changes_since(view.mailbox_id, view.modseq))
        by_flags = search.flag_matcher(key)
        highest = 0
        if by_flags is not None:
            # From the view alone: one evaluation per distinct flag list.
            found = numbers = view.search_flags(by_flags, uids=by_uid)
        elif view_search.answerable(key):
            # Flags with sequence numbers or UIDs: still the view's alone.
            found = numbers = view_search.search(view, key, uids=by_uid)
        else:
            live = [(seq, uid) for seq, uid in enumerate(view.uids, 1) if not view.is_expunged(uid)]
            found, highest = await self._search_messages(key, search.needs(key), live)
            numbers = [view.uid_of(seq) for seq in found] if by_uid else found
        answer = b"* SEARCH" + (b" " + " ".join(map(str, numbers)).encode("ascii") if numbers else b"")
        if with_modseq and found:
            # RFC 7162 3.1.6
            answer += b" (MODSEQ %d)" % highest
        self.sendLine(answer)
        return b"SEARCH completed"

    async def _search_messages(self, key, needs, live) -> tuple[list[int], int]:
        """
        Sequence numbers of the (seq, UID) pairs ``live`` that match ``key``,
        and the highest modseq among them (0 unless ``needs`` has "record").
        Evaluation runs in slices: a big or deep message, or a big mailbox,
        never holds the reactor for long.
        """
        view = self.view
        steps = search.stepper(key, view.exists, view.largest_uid)
        slices = Slices(self.reactor)
        found = []
        highest = 0
        for start in range(0, len(live), _BATCH):
            batch = live[start:start + _BATCH]
            records = structures = None
            if "record" in needs:
                records = {r.uid: r for r in await self.store.get_records(view.mailbox_id, [uid for _, uid in batch])}
            if "header" in needs or "body" in needs:
                structures = await self.store.get_structures(view.mailbox_id, [uid for _, uid in batch])
            for seq, uid in batch:
                record = structure = None
                if records is not None:
                    record = records.get(uid)
                    if record is None:
                        continue
                if structures is not None:
                    structure = structures.get(uid)
                    if structure is None:
                        continue
                opened = None
                if "body" in needs:
                    try:
                        opened = await self.store.open_message(view.mailbox_id, uid)
                    except MessageExpunged:
                        continue
                try:
                    candidate = search.SearchMessage(
                        seq=seq, uid=uid, flags=view.stored_flags(uid),
                        internaldate=record.internaldate if record is not None else None,
                        size=record.size if record is not None else None,
                        recent=view.is_recent(uid),
                        header=structure.header if structure is not None else None,
                        # Read only if the evaluation gets that far.
                        body=opened,
                        parts=structure.root if structure is not None else None,
                        modseq=record.modseq if record is not None else None,
                    )
                    if await slices.run(steps(candidate)):
                        found.append(seq)
                        if record is not None:
                            highest = max(highest, record.modseq)
                finally:
                    if opened is not None:
                        opened.close()
        return found, highest

    # -- FETCH -----------------------------------------------------------

    def do_FETCH(self, tag, text, rest, uid=0):
        self.run_command(tag, self._fetch, text, rest, bool(uid), allow_expunge=False)

    async def _fetch(self, text, rest, by_uid):
        try:
            rest, modifiers = resync.split_fetch_modifiers(rest or b"")
        except resync.ParameterError:
            raise bad(b"Invalid FETCH modifiers") from None
        changedsince = modifiers.changedsince
        if modifiers.vanished and not (by_uid and self.qresync):
            # RFC 7162 3.2.6
            raise bad(b"VANISHED needs UID FETCH and ENABLE QRESYNC")
        try:
            items = fetch.parse_fetch(rest)
        except fetch.FetchSyntaxError:
            raise bad(b"Invalid FETCH attributes") from None
        if by_uid and "UID" not in items:
            # RFC 3501 6.4.8: UID FETCH always answers with the UID.
            items.insert(0, "UID")
        if changedsince is not None or "MODSEQ" in items:
            self.enable_condstore()
        if self.condstore and "MODSEQ" not in items and (changedsince is not None or "FLAGS" in items):
            # RFC 7162 3.1.4.1: CHANGEDSINCE implies MODSEQ; and once
            # enabled, flags go with their mod-sequence (as Dovecot does).
            items.append("MODSEQ")
        view = self.view
        if "MODSEQ" in items:
            # FLAGS from the view must be as new as the MODSEQ beside them.
            view.apply(await self.store.changes_since(view.mailbox_id, view.modseq))
        targets, expunged = self._live(self.targets(text, by_uid))
        if modifiers.vanished:
            # RFC 7162 3.2.6: before any FETCH.
            await self.report_changes(view, changedsince, parse_sequence_set(text), flags=False)
        if fetch.sets_seen(items) and not view.readonly:
            unseen = [uid for _, uid in targets if "\\Seen" not in view.flags_of(uid)]
            if unseen:
                for record in await self.store.store_flags(view.mailbox_id, unseen, {"\\Seen"}, "add"):
                    view.note_flags(record.uid, record.flags)
                if "FLAGS" not in items:
                    items.append("FLAGS")
                    if self.condstore and "MODSEQ" not in items:
                        items.append("MODSEQ")
        if changedsince is None and fetch.from_view(items):
            return await self._fetch_from_view(text, by_uid, tuple(items))
        if changedsince is not None:
            # RFC 7162 3.1.4.1: only what changed after it; the store's log
            # of changes says which, rather than every message's record.
            changes = await self.store.changes_since(view.mailbox_id, changedsince)
            changed = {record.uid for record in changes.updated}
            targets = [(seq, uid) for seq, uid in targets if uid in changed]
        if self.qresync and "MODSEQ" in items and "UID" not in items:
            # RFC 7162 3.2.4
            items.insert(0, "UID")
        plan = [(item, _as_section(item)) for item in items]
        wants_record = "INTERNALDATE" in items or "RFC822.SIZE" in items or "MODSEQ" in items
        wants_structure = fetch.needs_structure(items)
        wants_file = any(section is not None and _needs_file(section[1]) for _, section in plan)
        out = Output(self.transport, lambda: self._closing or self._gone)
        try:
            for start in range(0, len(targets), _BATCH):
                batch = targets[start:start + _BATCH]
                uids = [uid for _, uid in batch]
                loaded = await self._fetch_load(view.mailbox_id, uids, wants_record, wants_structure)
                if out.stopped:
                    break
                for seq, uid in batch:
                    if out.stopped:
                        break
                    record = structure = None
                    if loaded is not None:
                        found = loaded.get(uid)
                        if found is None:
                            # RFC 2180 4.1.3: leave it out of the answer.
                            expunged = True
                            continue
                        record, structure = found
                        if changedsince is not None and record.modseq <= changedsince:
                            continue
                    opened = None
                    if wants_file:
                        try:
                            opened = await self.store.open_message(view.mailbox_id, uid)
                        except MessageExpunged:
                            expunged = True
                            continue
                    try:
                        pieces = self._fetch_response(seq, uid, plan, record, structure, opened)
                        for piece in pieces:
                            if isinstance(piece, bytes):
                                out.write(piece)
                            else:
                                await out.write_file(opened, *piece)
                    finally:
                        if opened is not None:
                            opened.close()
                    await out.drain()
        finally:
            out.finish()
        if out.stopped:
            # The connection is going (its transport stopped us): nothing
            # more goes out.
            self._closing = True
        return _EXPUNGE_ISSUED if expunged else b"FETCH completed"

    async def _fetch_from_view(self, text, by_uid, items):
        """FETCH of UID and FLAGS alone: formatted from the view, many lines at a time."""
        view = self.view
        ranges = self.target_ranges(text, by_uid)
        expunged = view.expunged_within(ranges)
        out = Output(self.transport, lambda: self._closing or self._gone)
        try:
            for lines in view.fetch_lines(ranges, items):
                if out.stopped:
                    break
                out.write(b"".join(lines))
                await out.drain()
        finally:
            out.finish()
        if out.stopped:
            self._closing = True
        return _EXPUNGE_ISSUED if expunged else b"FETCH completed"

    async def _fetch_load(self, mailbox_id, uids, wants_record, wants_structure):
        """UID -> (record, structure) of those still there, or None if FETCH needs neither."""
        if wants_record and wants_structure:
            return {record.uid: (record, structure) for record, structure in
                    await self.store.get_messages(mailbox_id, uids)}
        if wants_record:
            return {record.uid: (record, None) for record in await self.store.get_records(mailbox_id, uids)}
        if wants_structure:
            return {uid: (None, structure) for uid, structure in
                    (await self.store.get_structures(mailbox_id, uids)).items()}
        return None

    def _fetch_response(self, seq, uid, plan, record, structure, opened) -> list:
        """
        ``* seq FETCH (...)`` as bytes, with (start, end) ranges of the file
        in between where a section is too big to hold in memory.
        """
        pieces = []
        out = [b"* %d FETCH (" % seq]
        for index, (item, section) in enumerate(plan):
            if index:
                out.append(b" ")
            if section is None:
                out.append(self._simple_item(item, uid, record, structure))
                continue
            name, section = section
            content = self._section(section, structure, opened)
            if content is None:
                out.append(name + b" NIL")
            elif isinstance(content, bytes):
                out.append(name + b" {%d}\r\n" % len(content))
                out.append(content)
            else:
                start, end = content
                out.append(name + b" {%d}\r\n" % (end - start))
                pieces.append(b"".join(out))
                pieces.append(content)
                out = []
        out.append(b")\r\n")
        pieces.append(b"".join(out))
        return pieces

    def _simple_item(self, item, uid, record, structure) -> bytes:
        if item == "UID":
            return b"UID %d" % uid
        if item == "FLAGS":
            return b"FLAGS " + format_flags(self.view.flags_of(uid))
        if item == "INTERNALDATE":
            return b"INTERNALDATE " + wire.format_datetime(record.internaldate)
        if item == "RFC822.SIZE":
            return b"RFC822.SIZE %d" % record.size
        if item == "MODSEQ":
            return b"MODSEQ (%d)" % record.modseq
        if item == "ENVELOPE":
            return b"ENVELOPE " + structure.envelope
        if item == "BODYSTRUCTURE":
            return b"BODYSTRUCTURE " + structure.bodystructure
        if item == "BODY":
            return b"BODY " + structure.body
        return b"RFC822.HEADER " + _literal(structure.header)

    def _section(self, section, structure, opened):
        """
        The section's bytes, or (start, end) offsets in the file for big
        ones, or None when the part does not exist.
        """
        if section.part == () and section.text is None:
            # The whole message: no structure needed.
            span = (0, os.fstat(opened.fileno()).st_size)
            content = None
        elif section.part == () and section.text in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            content = structure.header
        else:
            text = "HEADER" if section.text and section.text.startswith("HEADER") else section.text
            span = message.section_range(structure.root, section.part, text)
            if span is None:
                return None
            if section.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
                opened.seek(span[0])
                content = opened.read(span[1] - span[0])
            else:
                content = None
        if section.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            content = message.header_fields(content, section.fields, section.text.endswith(".NOT"))
        if section.partial is not None:
            origin, length = section.partial
            if content is None:
                start = min(span[0] + origin, span[1])
                span = (start, min(start + length, span[1]))
            else:
                content = content[origin:origin + length]
        if content is None:
            if span[1] - span[0] <= CHUNK:
                opened.seek(span[0])
                return opened.read(span[1] - span[0])
            return span
        return content

    # -- STORE -----------------------------------------------------------

    def do_STORE(self, tag, text, rest, uid=0):
        self.run_command(tag, self._store, text, rest, bool(uid), allow_expunge=False)

    async def _store(self, text, rest, by_uid):
        match = _STORE.fullmatch(rest.strip())
        if match is None:
            raise bad(b"Invalid STORE arguments")
        try:
            flags = wire.parse_flags((match[4] if match[4] is not None else match[5]).split())
        except ValueError:
            raise bad(b"Invalid flag") from None
        unchangedsince = int(match[1]) if match[1] is not None else None
        if unchangedsince is not None and unchangedsince > resync.MAX_MODSEQ:
            raise bad(b"Invalid UNCHANGEDSINCE value")
        self._writable()
        if unchangedsince is not None:
            self.enable_condstore()
        mode = {b"": "set", b"+": "add", b"-": "remove"}[match[2]]
        silent = bool(match[3])
        view = self.view
        targets, expunged = self._live(self.targets(text, by_uid))
        changed, modified = [], []
        if targets:
            uids = [uid for _, uid in targets]
            if unchangedsince is None:
                changed = await self.store.store_flags(view.mailbox_id, uids, flags, mode)
            else:
                changed, modified = await self.store.store_flags_unchanged_since(
                    view.mailbox_id, uids, flags, mode, unchangedsince
                )
            for record in changed:
                view.note_flags(record.uid, record.flags)
            for line in view.announce_keywords(record.uid for record in changed):
                self.sendLine(b"* " + line)
        if self.condstore:
            await self._report_modseqs(targets, changed, modified, silent and unchangedsince is None, silent)
        elif not silent:
            for seq, uid in targets:
                self.sendLine(b"* " + view.fetch_flags_line(seq, uid))
        if modified:
            failed = set(modified)
            numbers = modified if by_uid else [seq for seq, uid in targets if uid in failed]
            return b"[MODIFIED %s] Conditional STORE failed" % format_sequence_set(numbers).encode("ascii")
        return _EXPUNGE_ISSUED if expunged else b"STORE completed"

    async def _report_modseqs(self, targets, changed, modified, changed_only, silent):
        """
        RFC 7162 3.1.3: a CONDSTORE-aware client hears each stored message's
        new MODSEQ, .SILENT or not; of a plain .SILENT STORE only the
        messages that changed.  Those that failed UNCHANGEDSINCE get no
        answer here: the sync before the tagged answer sends their flags.
        """
        view = self.view
        modseqs = {record.uid: record.modseq for record in changed}
        failed = set(modified)
        report = [
            (seq, uid) for seq, uid in targets
            if uid not in failed and (uid in modseqs or not changed_only)
        ]
        unknown = [uid for _, uid in report if uid not in modseqs]
        if unknown:
            for record in await self.store.get_records(view.mailbox_id, unknown):
                modseqs[record.uid] = record.modseq
        for seq, uid in report:
            modseq = modseqs.get(uid)
            if modseq is None:
                continue  # expunged meanwhile
            if silent:
                self.sendLine(b"* %d FETCH (UID %d MODSEQ (%d))" % (seq, uid, modseq))
            else:
                self.sendLine(b"* " + view.fetch_flags_line(seq, uid, modseq))

    async def report_changes(self, view, modseq, uid_set, flags):
        """
        RFC 7162 3.2.5.1 and 3.2.6: ``VANISHED (EARLIER)`` for the UIDs of
        ``uid_set`` (a SequenceSet, or None for all) expunged after
        ``modseq``, then, with ``flags``, FETCH FLAGS of those changed since.
        A message still in the client's numbering is left to the EXPUNGE or
        VANISHED that will renumber it.
        """
        changes = await self.store.changes_since(view.mailbox_id, modseq)
        ranges = None if uid_set is None else uid_set.resolve(max(view.largest_uid, changes.uidnext - 1))
        lows = [low for low, _ in ranges or ()]

        def known(uid):
            if ranges is None:
                return True
            index = bisect.bisect_right(lows, uid) - 1
            return index >= 0 and uid <= ranges[index][1]

        gone = [uid for uid in changes.expunged if view.seq_of(uid) is None and known(uid)]
        if gone:
            self.sendLine(b"* VANISHED (EARLIER) " + format_sequence_set(gone).encode("ascii"))
        if not flags:
            return
        for record in changes.updated:
            seq = view.seq_of(record.uid)
            if seq is not None and not view.is_expunged(record.uid) and known(record.uid):
                self.sendLine(b"* " + view.fetch_flags_line(seq, record.uid, record.modseq))

    # -- COPY, MOVE ------------------------------------------------------

    def do_COPY(self, tag, text, name, uid=0):
        self.run_command(tag, self._copy, text, name, bool(uid), False)

    def do_MOVE(self, tag, text, name, uid=0):
        self.run_command(tag, self._copy, text, name, bool(uid), True)

    async def _copy(self, text, wire_name, by_uid, move):
        if move:
            self._writable()
        view = self.view
        targets, expunged = self._live(self.targets(text, by_uid))
        if expunged:
            # RFC 2180 4.4.1: refuse rather than copy part of the set.
            raise CommandError(b"[EXPUNGEISSUED] Some of the messages were expunged")
        try:
            destination = await self.account.select(self.mailbox_name(wire_name))
        except NoSuchMailbox:
            raise CommandError(b"[TRYCREATE] No such mailbox") from None
        verb = b"MOVE" if move else b"COPY"
        if not targets:
            return verb + b" completed"
        uids = [uid for _, uid in targets]
        if move:
            pairs = await self.store.move(view.mailbox_id, uids, destination.id)
        else:
            pairs = await self.store.copy(view.mailbox_id, uids, destination.id)
        if not pairs:
            return verb + b" completed"
        code = b"[COPYUID %d %s %s]" % (
            destination.uidvalidity,
            format_sequence_set([s for s, _ in pairs]).encode("ascii"),
            format_sequence_set([d for _, d in pairs]).encode("ascii"),
        )
        if not move:
            return code + b" COPY completed"
        # RFC 6851 4.3: COPYUID goes in an untagged OK before the EXPUNGEs.
        self.sendLine(b"* OK " + code + b" Moved")
        for source, _ in pairs:
            view.mark_expunged(source)
        return b"MOVE completed"

    # -- UID -------------------------------------------------------------

    def do_UID(self, tag, command, line):
        command = command.upper()
        if command == b"EXPUNGE":
            # RFC 4315 2.1
            uid_set, rest = word(self, line)
            if rest.strip():
                raise imap4.IllegalClientResponse("Too many arguments")
            self.do_EXPUNGE(tag, uid_set)
        elif command in (b"COPY", b"MOVE", b"FETCH", b"STORE", b"SEARCH"):
            self.dispatchCommand(tag, command, line, uid=1)
        else:
            raise imap4.IllegalClientResponse("Unknown UID command")

    select_CHECK = (do_CHECK,)
    select_CLOSE = (do_CLOSE,)
    select_UNSELECT = (do_UNSELECT,)
    select_EXPUNGE = (do_EXPUNGE,)
    select_SEARCH = (do_SEARCH, search_charset, search_line)
    select_FETCH = (do_FETCH, word, imap4.IMAP4Server.arg_line)
    select_STORE = (do_STORE, word, imap4.IMAP4Server.arg_line)
    select_COPY = (do_COPY, word, final_astring)
    select_MOVE = (do_MOVE, word, final_astring)
    select_UID = (do_UID, imap4.IMAP4Server.arg_atom, imap4.IMAP4Server.arg_line)


def _literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


def _needs_file(section) -> bool:
    return not (section.part == () and section.text in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"))


def _as_section(item):
    """(reply name, Section) for items that carry message bytes, else None."""
    if item == "RFC822":
        return b"RFC822", fetch.Section(peek=False)
    if item == "RFC822.TEXT":
        return b"RFC822.TEXT", fetch.Section(peek=False, text="TEXT")
    if isinstance(item, fetch.Section):
        return item.reply_name(), item
    return None
