"""
FETCH and UID FETCH (RFC 3501 6.4.5, 6.4.8), with CONDSTORE's MODSEQ and
CHANGEDSINCE (RFC 7162 3.1.4) and QRESYNC's VANISHED (3.2.6).

What each message's answer carries is ``fetch.plan_fetch``'s to say, and
each answer is a ``fetch_response.FetchResponse``; this mixin of
``gateway.imap.server.IMAPServer`` loads what the plan wants from the
store, a batch at a time, and writes the answers through an ``Output``
at the pace the client reads, streaming big sections from the file.
UID and FLAGS alone are answered from the selected view; what never
changes of a message's answer (its size, date, envelope, structure, header
fields) is kept rendered in the factory's ``fetch_cache``, so a client
listing a mailbox again costs the store one count a batch.
"""

from __future__ import annotations

from itertools import repeat

from twisted.mail import imap4

from gateway.imap import binary, fetch, resync
from gateway.imap.arguments import word
from gateway.imap.errors import CommandError, bad
from gateway.imap.fetch_response import Binary, FileRange, LineWriter, answer, line_writer
from gateway.imap.output import Output
from gateway.store.interfaces import MessageExpunged

# Messages whose records and structures are loaded at once.
BATCH = 200
# Messages whose rows are read, and lines formatted and written, at once.
LINE_BATCH = 500

EXPUNGE_ISSUED = b"[EXPUNGEISSUED] Some messages were expunged meanwhile; completed for the others"


class FetchCommand:
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
            requested = fetch.parse_fetch(rest)
        except fetch.FetchSyntaxError:
            raise bad(b"Invalid FETCH attributes") from None
        if fetch.enables_condstore(requested, changedsince):
            self.enable_condstore()

        def plan(seen_set=False):
            return fetch.plan_fetch(requested, by_uid=by_uid, condstore=self.condstore, qresync=self.qresync,
                                    changedsince=changedsince, seen_set=seen_set)

        planned = plan()
        view = self.view
        if "MODSEQ" in planned.items:
            # FLAGS from the view must be as new as the MODSEQ beside them.
            view.apply(await self.store.changes_since(view.mailbox_id, view.modseq))
        targets, expunged = self._live(self.targets(text, by_uid))
        if modifiers.vanished:
            # RFC 7162 3.2.6: before any FETCH.
            await self.report_changes(view, changedsince, self.sequence_set(text), flags=False)
        if fetch.sets_seen(requested) and not view.readonly:
            unseen = [uid for _, uid in targets if "\\Seen" not in view.flags_of(uid)]
            if unseen:
                for record in await self.store.store_flags(view.mailbox_id, unseen, {"\\Seen"}, "add"):
                    view.note_flags(record.uid, record.flags)
                planned = plan(seen_set=True)
        if changedsince is None and fetch.from_view(planned.items):
            return await self._fetch_from_view(text, by_uid, planned.items)
        if changedsince is not None:
            # RFC 7162 3.1.4.1: only what changed after it; the store's log
            # of changes says which, rather than every message's record.
            changes = await self.store.changes_since(view.mailbox_id, changedsince)
            changed = {record.uid for record in changes.updated}
            targets = [(seq, uid) for seq, uid in targets if uid in changed]
        try:
            expunged = await self._fetch_messages(targets, planned, changedsince) or expunged
        except binary.UnknownTransferEncoding as error:
            # RFC 3516 4.3
            raise CommandError(error.text) from None
        return EXPUNGE_ISSUED if expunged else b"FETCH completed"

    async def _fetch_messages(self, targets, plan: fetch.FetchPlan, changedsince) -> bool:
        """Answer FETCH for the (seq, UID) pairs ``targets``; whether any was expunged meanwhile."""
        if plan.wants_flags:
            self.announce_keywords()
        line = line_writer(plan)
        out = Output(self.transport, lambda: self._closing or self._gone)
        self.hand_over(out)
        try:
            if line is not None and line.cached is not None and changedsince is None:
                expunged = await self._write_cached(out, targets, line, plan.wants_flags)
            elif line is not None:
                expunged = await self._write_lines(out, targets, line, plan.wants_flags, changedsince)
            else:
                expunged = await self._write_answers(out, targets, plan, changedsince)
        finally:
            self.take_back(out.finish(keep=True))
        if out.stopped:
            # The connection is going (its transport stopped us): nothing
            # more goes out.
            self._closing = True
        return expunged

    async def _write_lines(self, out: Output, targets, line: LineWriter, wants_flags: bool, changedsince) -> bool:
        """Each message's line formatted from the store's rows, a batch at a time."""
        view = self.view
        expunged = False
        modseq_at = line.modseq_at
        format_line = line.line
        for start in range(0, len(targets), LINE_BATCH):
            batch = targets[start:start + LINE_BATCH]
            rows = await self.store.fetch_rows(view.mailbox_id, [uid for _, uid in batch], line.columns)
            if out.stopped:
                break
            flags = view.flags_texts(batch) if wants_flags else repeat(None)
            if len(rows) == len(batch) and changedsince is None:
                # Every message is there, in the batch's order (both ascend by UID).
                lines = list(map(format_line, [seq for seq, _ in batch], flags, rows))
                if wants_flags:
                    # An update of them still owed went in this answer.
                    _told_flags(view, batch)
            else:
                found = {row[0]: row for row in rows}
                lines = []
                for (seq, uid), shown in zip(batch, flags):
                    row = found.get(uid)
                    if row is None:
                        # RFC 2180 4.1.3: leave it out of the answer.
                        expunged = True
                        continue
                    if changedsince is not None and row[modseq_at] <= changedsince:
                        continue
                    lines.append(format_line(seq, shown, row))
                    if wants_flags:
                        view.told_flags(uid)
            await _send(out, lines)
        return expunged

    async def _write_cached(self, out: Output, targets, line: LineWriter, wants_flags: bool) -> bool:
        """
        Each message's line from its parts kept in the factory's
        ``fetch_cache``, the store read only for those not kept yet and
        for which messages are still there.
        """
        view = self.view
        store = self.store
        cached = line.cached
        kept = self.factory.fetch_parts
        key = (view.mailbox_id, view.uidvalidity, cached.key)
        expunged = False
        for start in range(0, len(targets), LINE_BATCH):
            batch = targets[start:start + LINE_BATCH]
            seqs, uids = zip(*batch)
            parts = list(map(kept.lookup(key).get, uids))
            # Whether every message has its parts, and whether all were just read.
            complete, read = True, False
            if None in parts:
                missing = [uid for uid, found in zip(uids, parts) if found is None]
                rows = await store.fetch_rows(view.mailbox_id, missing, line.columns)
                rendered = cached.render(rows)
                kept.keep(key, rendered, view.exists)
                read = len(rendered) == len(uids)
                if len(missing) == len(uids):
                    parts = list(map(rendered.get, uids))
                else:
                    parts = [rendered.get(uid) if found is None else found for uid, found in zip(uids, parts)]
                complete = len(rendered) == len(missing)
            # UIDs the store still has, when that is not all of them.
            there = None
            if not read and not await self._all_there(seqs, uids):
                there = {row[0] for row in await store.fetch_rows(view.mailbox_id, uids, ())}
            if out.stopped:
                break
            flags = view.flags_texts(batch) if wants_flags else repeat(None)
            if complete and there is None:
                lines = cached.lines(seqs, uids, flags, parts)
                if wants_flags:
                    # An update of them still owed went in this answer.
                    _told_flags(view, batch)
            else:
                kept_here = [
                    (seq, uid, shown, found) for seq, uid, shown, found in zip(seqs, uids, flags, parts)
                    # RFC 2180 4.1.3: leave those gone out of the answer.
                    if found is not None and (there is None or uid in there)
                ]
                expunged = expunged or len(kept_here) < len(uids)
                lines = cached.lines(*zip(*kept_here)) if kept_here else []
                if wants_flags:
                    for _, uid, _, _ in kept_here:
                        view.told_flags(uid)
            await _send(out, lines)
        return expunged

    async def _all_there(self, seqs, uids) -> bool:
        """
        Whether the store still has all of ``uids``, which the view holds
        at sequence numbers ``seqs``: when those follow each other, they
        are all the view holds from the first UID to the last, and the
        store holds no other there (UIDs are given ascending), so a count
        of what the store holds between the two tells.
        """
        if seqs[-1] - seqs[0] + 1 != len(seqs):
            return False
        return await self.store.count_messages(self.view.mailbox_id, uids[0], uids[-1]) == len(uids)

    async def _write_answers(self, out: Output, targets, plan: fetch.FetchPlan, changedsince) -> bool:
        """Each message's ``answer``, its sections read from the file or streamed."""
        view = self.view
        expunged = False
        for start in range(0, len(targets), BATCH):
            batch = targets[start:start + BATCH]
            loaded = await self._fetch_load(view.mailbox_id, [uid for _, uid in batch], plan)
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
                if plan.wants_file:
                    try:
                        opened = await self.store.open_message(view.mailbox_id, uid)
                    except MessageExpunged:
                        expunged = True
                        continue
                flags = None
                if plan.wants_flags:
                    # An update of them still owed goes in this answer.
                    flags = view.fetch_flags(seq, uid)
                try:
                    for piece in answer(seq, uid, plan, flags, record, structure, opened).pieces():
                        if isinstance(piece, FileRange):
                            await out.write_file(opened, piece.start, piece.end)
                        elif isinstance(piece, Binary):
                            for chunk in binary.decoded_range(opened, piece.decoding, piece.partial):
                                out.write(chunk)
                                await out.drain()
                        else:
                            out.write(piece)
                finally:
                    if opened is not None:
                        opened.close()
                if out.full:
                    await out.drain()
        return expunged

    async def _fetch_from_view(self, text, by_uid, items):
        """FETCH of UID and FLAGS alone: formatted from the view, many lines at a time."""
        view = self.view
        ranges = self.target_ranges(text, by_uid)
        expunged = view.expunged_within(ranges)
        if "FLAGS" in items:
            self.announce_keywords()
            view.told_flags_within(ranges)
        out = Output(self.transport, lambda: self._closing or self._gone)
        self.hand_over(out)
        try:
            for lines in view.fetch_lines(ranges, items):
                if out.stopped:
                    break
                out.write(b"".join(lines))
                await out.drain()
        finally:
            self.take_back(out.finish(keep=True))
        if out.stopped:
            self._closing = True
        return EXPUNGE_ISSUED if expunged else b"FETCH completed"

    async def _fetch_load(self, mailbox_id, uids, plan: fetch.FetchPlan):
        """UID -> (record, structure) of those still there, or None if the plan wants neither."""
        if plan.wants_record and plan.wants_structure:
            return {record.uid: (record, structure) for record, structure in
                    await self.store.get_messages(mailbox_id, uids)}
        if plan.wants_record:
            return {record.uid: (record, None) for record in await self.store.get_records(mailbox_id, uids)}
        if plan.wants_structure:
            return {uid: (None, structure) for uid, structure in
                    (await self.store.get_structures(mailbox_id, uids)).items()}
        return None

    select_FETCH = (do_FETCH, word, imap4.IMAP4Server.arg_line)


def _told_flags(view, pairs) -> None:
    """``view.told_flags`` of each of ``pairs`` (ascending), consecutive ones at once."""
    first, last = pairs[0][0], pairs[-1][0]
    if last - first + 1 == len(pairs):
        view.told_flags_within([(first - 1, last)])
    else:
        for _, uid in pairs:
            view.told_flags(uid)


async def _send(out, lines) -> None:
    """A batch of FETCH lines in one write; wait while the client is behind."""
    if lines:
        out.write(b"".join(lines))
    if out.full:
        await out.drain()
