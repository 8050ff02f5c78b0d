"""
Selected-state IMAP commands (RFC 3501 6.4): CHECK, CLOSE, UNSELECT,
EXPUNGE, SEARCH, STORE, COPY, MOVE (RFC 6851) and their UID forms (with
UID EXPUNGE, RFC 4315), with CONDSTORE's MODSEQ search key and STORE
UNCHANGEDSINCE (RFC 7162 3.1), and QRESYNC's report of what changed
(3.2.5.1, 3.2.6).  FETCH is ``gateway.imap.fetch_command``'s.

A mixin of ``gateway.imap.server.IMAPServer``.  Message numbers go through
the session's ``SelectedView``.
"""

from __future__ import annotations

import bisect
import re

from twisted.mail import imap4

from gateway.imap import resync, search, view_search, wire
from gateway.imap.arguments import final_astring, search_charset, search_line, word
from gateway.imap.errors import BadCharset, CommandError, ReadOnly, TooManyArguments, TryCreate, bad
from gateway.imap.fetch_command import BATCH, EXPUNGE_ISSUED
from gateway.imap.esearch import SAVED
from gateway.imap.responses import OK, Condition, Data, FetchModseq, Vanished
from gateway.imap.search_results import search_return
from gateway.imap.sequence import SequenceSetError, format_sequence_set, parse_sequence_set
from gateway.imap.slices import Slices
from gateway.store.interfaces import MessageExpunged, NoSuchMailbox

# RFC 7162 3.1.3: the modifier before the STORE item.
_STORE = re.compile(
    rb"(?:\( *UNCHANGEDSINCE +([0-9]{1,19}) *\) +)?([+-]?)FLAGS(\.SILENT)? +(?:\((.*)\)|(.*))",
    re.IGNORECASE,
)

class SelectedCommands:
    # UID forms of the commands other mixins add (``UID SORT``, ``UID THREAD``).
    uid_commands: frozenset[bytes] = frozenset()

    # -- message numbers -------------------------------------------------

    def target_ranges(self, text: bytes, by_uid: bool) -> list[tuple[int, int]]:
        """The messages a sequence set names in the client's view, as
        half-open ranges of indexes (``SelectedView.index_ranges``)."""
        if text == SAVED:
            return self.saved_ranges()
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
        if not self.view.expunges_pending():
            return pairs, False
        live = [(seq, uid) for seq, uid in pairs if not self.view.is_expunged(uid)]
        return live, len(live) != len(pairs)

    def _writable(self):
        if self.view.readonly:
            raise ReadOnly()

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

    def do_SEARCH(self, tag, returns, charset, tokens, uid=0):
        self.run_command(tag, self._search, tag, returns, charset, tokens, bool(uid), allow_expunge=False)

    async def _search(self, tag, returns, charset, tokens, by_uid):
        returns = self.search_return_for(returns)
        saved = self.saved_uids
        if returns is not None and returns.saves:
            # RFC 5182 2.1: a failed SEARCH with SAVE leaves ``$`` empty.
            self.forget_saved()
        numbers, highest = await self.find(charset, tokens, by_uid, saved)
        await self.answer_search(tag, returns, by_uid, numbers, highest)
        return b"SEARCH completed"

    async def find(self, charset, tokens, by_uid, saved=None):
        """
        The messages SEARCH criteria (in ``charset``, or UTF-8) match, as
        ascending sequence numbers (UIDs with ``by_uid``), and their highest
        MODSEQ when the criteria use MODSEQ (RFC 7162 3.1.6), else None.
        """
        codec = search.search_codec(charset)
        if codec is None:
            raise BadCharset()
        try:
            key = search.parse_search(tokens, max_depth=self.config.limits.max_nesting, codec=codec,
                                      saved=self.saved_uids if saved is None else saved)
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
            numbers = view.search_flags(by_flags, uids=by_uid)
        elif view_search.answerable(key):
            # Flags with sequence numbers or UIDs: still the view's alone.
            numbers = view_search.search(view, key, uids=by_uid)
        else:
            live = [(seq, uid) for seq, uid in enumerate(view.uids, 1) if not view.is_expunged(uid)]
            found, highest = await self._search_messages(key, search.needs(key), live)
            numbers = [view.uid_of(seq) for seq in found] if by_uid else found
        return numbers, highest if with_modseq else None

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
        for start in range(0, len(live), BATCH):
            batch = live[start:start + BATCH]
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
            self.announce_keywords()
        if self.condstore:
            await self._report_modseqs(targets, changed, modified, silent and unchangedsince is None, silent)
        elif not silent:
            self.send_all(Data(view.fetch_flags_line(seq, uid)) for seq, uid in targets)
        if modified:
            failed = set(modified)
            numbers = modified if by_uid else [seq for seq, uid in targets if uid in failed]
            return b"[MODIFIED %s] Conditional STORE failed" % format_sequence_set(numbers).encode("ascii")
        return EXPUNGE_ISSUED if expunged else b"STORE completed"

    async def _report_modseqs(self, targets, changed, modified, changed_only, silent):
        """
        RFC 7162 3.1.3: a CONDSTORE-aware client hears each stored message's
        new MODSEQ, .SILENT or not; of a plain .SILENT STORE only the
        messages that changed.  Those that failed UNCHANGEDSINCE get no
        answer here: the sync before the tagged answer sends their flags.
        """
        view = self.view
        if not silent:
            self.announce_keywords()
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
        answers = []
        for seq, uid in report:
            modseq = modseqs.get(uid)
            if modseq is None:
                continue  # expunged meanwhile
            if silent:
                answers.append(FetchModseq(seq, uid, modseq))
            else:
                answers.append(Data(view.fetch_flags_line(seq, uid, modseq)))
        self.send_all(answers)

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
            self.send(Vanished(format_sequence_set(gone)))
        if not flags:
            return
        self.announce_keywords(view)
        answers = []
        for record in changes.updated:
            seq = view.seq_of(record.uid)
            if seq is not None and not view.is_expunged(record.uid) and known(record.uid):
                answers.append(Data(view.fetch_flags_line(seq, record.uid, record.modseq)))
        self.send_all(answers)

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
            raise TryCreate() from None
        verb = b"MOVE" if move else b"COPY"
        if not targets:
            return verb + b" completed"
        uids = [uid for _, uid in targets]
        if not move:
            records = await self.store.get_records(view.mailbox_id, uids)
            await self.check_quota(sum(record.size for record in records), len(records))
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
        self.send(Condition(OK, code + b" Moved"))
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
                raise TooManyArguments()
            self.do_EXPUNGE(tag, uid_set)
        elif command in (b"COPY", b"MOVE", b"FETCH", b"STORE", b"SEARCH") or command in self.uid_commands:
            self.dispatchCommand(tag, command, line, uid=1)
        else:
            raise bad(b"Unknown UID command")

    select_CHECK = (do_CHECK,)
    select_CLOSE = (do_CLOSE,)
    select_UNSELECT = (do_UNSELECT,)
    select_EXPUNGE = (do_EXPUNGE,)
    select_SEARCH = (do_SEARCH, search_return, search_charset, search_line)
    select_STORE = (do_STORE, word, imap4.IMAP4Server.arg_line)
    select_COPY = (do_COPY, word, final_astring)
    select_MOVE = (do_MOVE, word, final_astring)
    select_UID = (do_UID, word, imap4.IMAP4Server.arg_line)
