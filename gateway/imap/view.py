"""
One IMAP session's view of its selected mailbox.

Pure: no Twisted.  The store is session-free; each session keeps here the
sequence-number map the client believes in, the flags it last told the client,
and what happened in the store since (new messages, flag changes, expunges)
that the client has not been told yet.  ``flush`` turns the pending changes
into untagged responses at the moments RFC 3501 7.4.1 allows.

The map and the flags live in a ``Snapshot`` that sessions on one mailbox
share (``gateway.imap.snapshot``); a view keeps beside it only what is its
own: flags that changed since (until they are folded into a successor
snapshot), pending responses, its \\Recent messages and the keywords it
announced.  An idle session on a mailbox of any size costs a few hundred
bytes here.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable, Iterator
from itertools import compress

from gateway.imap.sequence import SequenceSet, format_sequence_set
from gateway.imap.snapshot import Snapshot, SnapshotRegistry, UidRuns, UidSequence
from gateway.imap.view_flags import RECENT, FlagsToldMixin, format_flags
from gateway.store.model import ChangeSet


# Flag changes a view keeps as its own before it folds them into a
# successor snapshot (a copy of the blocks they touch, shared with every
# session that makes the same move).
FOLD_AFTER = 64

# Runs of matching messages in a mask of a byte a message; a run costs as
# much as stepping over this many messages one by one.
_ONES = re.compile(b"\x01+")
_RUN_WORTH = 32


class _Pending:
    """What happened in the store that the client has not been told yet."""

    __slots__ = ("new", "new_flags", "expunged", "flag_changed")

    def __init__(self) -> None:
        # Delivered since the client last heard, ascending, and their flags.
        self.new: list[int] = []
        self.new_flags: dict[int, frozenset[str]] = {}
        # Gone from the store, still in the client's numbering.
        self.expunged: set[int] = set()
        # UID -> modseq of a flag change not told yet (FETCH MODSEQ, RFC 7162).
        self.flag_changed: dict[int, int] = {}

    def __bool__(self) -> bool:
        return bool(self.new or self.expunged or self.flag_changed)


class SelectedView(FlagsToldMixin):
    """
    The client's picture of one selected mailbox, and what it still lacks.

    Sequence number N is ``uids[N - 1]``; the UIDs stay ascending.  A
    message expunged in the store stays in the map until the client has
    been sent its EXPUNGE, so sequence numbers the client uses keep meaning
    what it thinks (RFC 3501 7.4.1; RFC 2180 4.1).
    """

    __slots__ = ("mailbox_id", "uidvalidity", "readonly", "modseq", "_snapshot", "_flags", "_pending",
                 "_recent", "_keywords", "_registry")

    def __init__(
        self,
        mailbox_id: int,
        uidvalidity: int,
        messages: Iterable[tuple[int, frozenset[str]]] | Snapshot,
        modseq: int,
        readonly: bool = False,
        recent: Iterable[int] = (),
        registry: SnapshotRegistry | None = None,
    ):
        """
        ``messages`` are (UID, flags) pairs ascending by UID, or a shared
        snapshot, holding every change up to ``modseq``.  With
        ``registry``, the view offers there each snapshot it reaches with
        nothing pending, for sessions selecting the mailbox later.
        """
        self.mailbox_id = mailbox_id
        self.uidvalidity = uidvalidity
        self.readonly = readonly
        self.modseq = modseq
        self._snapshot = messages if isinstance(messages, Snapshot) else Snapshot.build(messages)
        # Flags that differ from the snapshot's, by UID.
        self._flags: dict[int, frozenset[str]] | None = None
        self._pending: _Pending | None = None
        self._recent: UidRuns | None = None
        # Keywords the client was told of in FLAGS (RFC 3501 7.2.6).
        self._keywords: frozenset[str] = self._snapshot.keywords
        self._registry = registry
        self.add_recent(recent)
        if registry is not None:
            self._snapshot = registry.offer(mailbox_id, uidvalidity, self._snapshot, modseq)

    # -- questions the session asks -------------------------------------

    @property
    def uids(self) -> UidSequence:
        """The UIDs in sequence-number order (read-only)."""
        return self._snapshot.uids

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    @property
    def exists(self) -> int:
        return len(self._snapshot)

    @property
    def recent_count(self) -> int:
        return len(self._recent) if self._recent else 0

    @property
    def largest_uid(self) -> int:
        return self._snapshot.largest_uid

    def uid_of(self, seq: int) -> int:
        return self._snapshot.uid_at(seq - 1)

    def seq_of(self, uid: int) -> int | None:
        index = self._snapshot.index_of(uid)
        return None if index is None else index + 1

    def expunges_pending(self) -> bool:
        """Whether any message is gone from the store, though the client has not been told yet."""
        return self._pending is not None and bool(self._pending.expunged)

    def is_expunged(self, uid: int) -> bool:
        """Gone from the store, though the client has not been told yet."""
        return self._pending is not None and uid in self._pending.expunged

    def is_recent(self, uid: int) -> bool:
        return bool(self._recent) and uid in self._recent

    def flags_of(self, uid: int) -> frozenset[str]:
        """Stored flags plus this session's \\Recent."""
        flags = self.stored_flags(uid)
        if self._recent and uid in self._recent:
            flags = flags | {RECENT}
        return flags

    def stored_flags(self, uid: int) -> frozenset[str]:
        """The flags as the store last reported them, without \\Recent."""
        if self._flags is not None:
            flags = self._flags.get(uid)
            if flags is not None:
                return flags
        index = self._snapshot.index_of(uid)
        if index is None:
            if self._pending is not None and uid in self._pending.new_flags:
                return self._pending.new_flags[uid]
            raise KeyError(uid)
        return self._snapshot.flags_at(index)

    def first_unseen(self) -> int | None:
        found = self.search_flags(lambda flags, recent: "\\Seen" not in flags, first=True)
        return found[0] if found else None

    def search_flags(
        self, match: Callable[[frozenset[str], bool], bool], first: bool = False, uids: bool = False
    ) -> list[int]:
        """
        Sequence numbers (UIDs with ``uids``), ascending, of the messages
        not expunged whose (stored flags, \\Recent) ``match`` says yes to
        (only the first with ``first``).  ``match`` is asked once per
        distinct flag list, not once per message.
        """
        mask = self.flag_mask(match)
        if self._pending is not None and self._pending.expunged:
            live = self.live_mask()
            mask = (int.from_bytes(mask, "big") & int.from_bytes(live, "big")).to_bytes(len(mask), "big")
        if first:
            index = mask.find(1)
            return [] if index < 0 else [self._snapshot.uid_at(index) if uids else index + 1]
        return self.chosen(mask, uids)

    def chosen(self, mask: bytes, uids: bool = False) -> list[int]:
        """The sequence numbers (UIDs with ``uids``) where ``mask`` (a byte
        a message) is 1: a run of them at a time where they come in runs."""
        runs = mask.count(b"\x00\x01") + mask.startswith(b"\x01")
        if runs * _RUN_WORTH > len(mask):
            return list(compress(self._snapshot.iter_uids() if uids else range(1, len(mask) + 1), mask))
        found: list[int] = []
        if not uids:
            for run in _ONES.finditer(mask):
                found.extend(range(run.start() + 1, run.end() + 1))
            return found
        for first, block, _ in self._snapshot.spans(0, len(mask)):
            for run in _ONES.finditer(mask, first, first + len(block)):
                found.extend(block[run.start() - first:run.end() - first])
        return found

    def flag_mask(self, match: Callable[[frozenset[str], bool], bool]) -> bytes:
        """
        One byte per message of the client's numbering (those expunged but
        not told too), 1 where ``match(stored flags, \\Recent)`` says yes.
        """
        snapshot = self._snapshot
        plain = [match(flags, False) for flags in snapshot.table.sets]
        mask = snapshot.matching(plain)
        if self._recent:
            recent = [match(flags, True) for flags in snapshot.table.sets]
            if recent != plain:
                recent_mask = snapshot.matching(recent)
                mask = bytearray(mask)
                for start, end in self._recent_ranges():
                    mask[start:end] = recent_mask[start:end]
        if self._flags:
            mask = bytearray(mask)
            for uid, flags in self._flags.items():
                mask[snapshot.index_of(uid)] = 1 if match(flags, self.is_recent(uid)) else 0
        return bytes(mask)

    def live_mask(self) -> bytes:
        """One byte per message of the client's numbering: 0 for those
        expunged but not yet told, 1 for the others."""
        mask = bytearray(b"\x01" * len(self._snapshot))
        if self._pending is not None:
            for uid in self._pending.expunged:
                mask[self._snapshot.index_of(uid)] = 0
        return bytes(mask)

    def expunged_within(self, ranges: list[tuple[int, int]]) -> bool:
        """Whether ``ranges`` (from ``index_ranges``) hold a message expunged
        but not yet announced."""
        if self._pending is None:
            return False
        for uid in self._pending.expunged:
            index = self._snapshot.index_of(uid)
            position = bisect.bisect_right(ranges, (index, len(self._snapshot))) - 1
            if position >= 0 and ranges[position][0] <= index < ranges[position][1]:
                return True
        return False

    def _own_uids(self) -> set[int]:
        """UIDs whose flags or presence differ from what the snapshot says."""
        own = set(self._flags or ())
        if self._pending is not None:
            own |= self._pending.expunged
        return own

    def _recent_ranges(self) -> list[tuple[int, int]]:
        """Half-open index ranges of this session's \\Recent messages."""
        snapshot = self._snapshot
        ranges = []
        for low, high in self._recent.runs():
            start, end = snapshot.bisect_left(low), snapshot.bisect_left(high + 1)
            if start < end:
                ranges.append((start, end))
        return ranges

    def index_ranges(self, numbers: SequenceSet, by_uid: bool) -> list[tuple[int, int]]:
        """
        The messages ``numbers`` names in the client's numbering, as
        ascending half-open ranges of indexes (sequence number - 1).
        Sequence numbers past EXISTS are the caller's to refuse first.
        """
        if not by_uid:
            return [(low - 1, high) for low, high in numbers.resolve(self.exists)]
        snapshot = self._snapshot
        ranges = []
        for low, high in numbers.resolve(self.largest_uid):
            start, end = snapshot.bisect_left(low), snapshot.bisect_left(high + 1)
            if start < end:
                ranges.append((start, end))
        return ranges

    def pairs(self, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """(seq, UID) of every message in ``ranges`` (from ``index_ranges``)."""
        found: list[tuple[int, int]] = []
        for start, end in ranges:
            for first, uids, _ in self._snapshot.spans(start, end):
                found.extend(zip(range(first + 1, first + 1 + len(uids)), uids))
        return found

    def fetch_lines(self, ranges: list[tuple[int, int]], items: tuple[str, ...]) -> Iterator[list[bytes]]:
        """
        ``* n FETCH (...)`` lines (CRLF-terminated) of the messages in
        ``ranges`` for ``items``, UID and FLAGS each at most once, in that
        order: what FETCH FLAGS answers from the view alone, a block of
        the snapshot at a time.  Messages expunged but not yet announced are
        left out (RFC 2180 4.1.3).
        """
        snapshot = self._snapshot
        formatted = [format_flags(flags) for flags in snapshot.table.sets]
        template = b"* %d FETCH (" + b" ".join(
            b"UID %d" if item == "UID" else b"FLAGS %s" for item in items
        ) + b")\r\n"
        own = self._own_uids()
        recent = self._recent_ranges() if self._recent and "FLAGS" in items else []
        if recent:
            with_recent = [format_flags(flags | {RECENT}) for flags in snapshot.table.sets]
        for start, end in ranges:
            for first, uids, numbers in snapshot.spans(start, end):
                last = first + len(uids)
                flags = list(map(formatted.__getitem__, numbers))
                for low, high in recent:
                    low, high = max(low, first) - first, min(high, last) - first
                    if low < high:
                        flags[low:high] = map(with_recent.__getitem__, numbers[low:high])
                columns = {"UID": uids, "FLAGS": flags}
                rows = zip(range(first + 1, last + 1), *(columns[item] for item in items))
                if own and any(uids[0] <= uid <= uids[-1] for uid in own):
                    rows = self._own_rows(rows, own, items)
                yield [template % row for row in rows]

    def _own_rows(self, rows, own: set[int], items: tuple[str, ...]):
        uid_at = 1 + items.index("UID") if "UID" in items else None
        for row in rows:
            uid = row[uid_at] if uid_at is not None else self.uid_of(row[0])
            if uid in own:
                if self.is_expunged(uid):
                    continue
                row = tuple(
                    format_flags(self.flags_of(uid)) if position and items[position - 1] == "FLAGS" else value
                    for position, value in enumerate(row)
                )
            yield row

    def pending_new(self) -> list[int]:
        """UIDs delivered since the client last heard, not yet announced."""
        return list(self._pending.new) if self._pending is not None else []

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    # -- what happened in the store -------------------------------------

    def _pending_state(self) -> _Pending:
        if self._pending is None:
            self._pending = _Pending()
        return self._pending

    def _set_flags(self, uid: int, index: int, flags: frozenset[str]) -> None:
        if flags == self._snapshot.flags_at(index):
            if self._flags is not None:
                self._flags.pop(uid, None)
        else:
            if self._flags is None:
                self._flags = {}
            self._flags[uid] = flags

    def apply(self, changes: ChangeSet) -> None:
        """Take in what the store reports since ``self.modseq``."""
        gone = set(changes.expunged)
        pending = self._pending
        known_top = max(self.largest_uid, pending.new[-1] if pending is not None and pending.new else 0)
        snapshot = self._snapshot
        for record in changes.updated:
            uid = record.uid
            if uid in gone:
                continue
            pending = self._pending
            if pending is not None and uid in pending.new_flags:
                pending.new_flags[uid] = record.flags
                continue
            index = snapshot.index_of(uid)
            if index is not None:
                current = self._flags.get(uid) if self._flags else None
                if record.flags != (snapshot.flags_at(index) if current is None else current):
                    self._set_flags(uid, index, record.flags)
                    self._pending_state().flag_changed[uid] = record.modseq
            elif uid > known_top:
                pending = self._pending_state()
                pending.new.append(uid)
                pending.new_flags[uid] = record.flags
                known_top = uid
            # Otherwise this session expunged it already: nothing to say.
        for uid in sorted(gone):
            self.mark_expunged(uid)
        self.modseq = max(self.modseq, changes.highestmodseq)

    def mark_expunged(self, uid: int) -> None:
        pending = self._pending
        if pending is not None and uid in pending.new_flags:
            pending.new.remove(uid)
            del pending.new_flags[uid]
            if self._recent:
                self._recent.discard(uid)
        elif self._snapshot.index_of(uid) is not None:
            pending = self._pending_state()
            pending.expunged.add(uid)
            pending.flag_changed.pop(uid, None)

    def add_recent(self, uids: Iterable[int]) -> None:
        """\\Recent claimed by this session (RFC 3501 2.3.2), of the
        messages it knows."""
        claimed = set(uids)
        if not claimed:
            return
        snapshot = self._snapshot
        if len(claimed) > 64:
            mine = claimed & set(snapshot.iter_uids())
        else:
            mine = {uid for uid in claimed if snapshot.index_of(uid) is not None}
        if self._pending is not None:
            mine |= claimed & self._pending.new_flags.keys()
        if mine:
            if self._recent is None:
                self._recent = UidRuns()
            self._recent.update(mine)

    def note_flags(self, uid: int, flags: frozenset[str]) -> None:
        """This session changed the flags and reports them itself."""
        pending = self._pending
        if pending is not None and uid in pending.new_flags:
            pending.new_flags[uid] = flags
            pending.flag_changed.pop(uid, None)
            return
        index = self._snapshot.index_of(uid)
        if index is not None and not self.is_expunged(uid):
            self._set_flags(uid, index, flags)
            if pending is not None:
                pending.flag_changed.pop(uid, None)

    def catch_up(self) -> None:
        """
        Take in what ``apply`` brought without telling the client: SELECT,
        before it answers, when the client has seen nothing yet.  The
        keywords it will be told of are then those its messages carry.
        """
        self.flush(allow_expunge=True)
        # Folded, so that the snapshot's keywords are exactly the mailbox's.
        self._fold((), (), everything=True)
        self._keywords = self._snapshot.keywords

    # -- telling the client ---------------------------------------------

    def flush(self, allow_expunge: bool, condstore: bool = False, vanished: bool = False,
              recent: bool = True) -> list[bytes]:
        """
        Untagged responses (without the leading ``* ``) that bring the client
        up to date, and the map updated to match; with ``condstore`` (RFC
        7162 3.1) FETCH responses carry MODSEQ, with ``vanished`` (QRESYNC,
        RFC 7162 3.2.10.2) one VANISHED replaces the EXPUNGEs; without
        ``recent`` (IMAP4rev2, RFC 9051 E.12) no RECENT follows EXISTS.

        RFC 3501 7.4.1: no EXPUNGE while the command is FETCH, STORE or
        SEARCH; then the expunged messages stay in the map, EXISTS counts
        them, and they get EXPUNGE at the next allowed moment.
        """
        pending = self._pending
        if pending is None:
            self._fold((), ())
            return []
        lines: list[bytes] = []
        removed: list[int] = []
        if allow_expunge and pending.expunged:
            snapshot = self._snapshot
            indexes = sorted((snapshot.index_of(uid) for uid in pending.expunged), reverse=True)
            removed = [snapshot.uid_at(index) for index in indexes]
            if not vanished:
                lines.extend(b"%d EXPUNGE" % (index + 1,) for index in indexes)
            pending.expunged.clear()
            for uid in removed:
                if self._recent:
                    self._recent.discard(uid)
                if self._flags:
                    self._flags.pop(uid, None)
            if vanished:
                lines.append(b"VANISHED " + format_sequence_set(reversed(removed)).encode("ascii"))
        appended = [(uid, pending.new_flags[uid]) for uid in pending.new]
        pending.new.clear()
        pending.new_flags.clear()
        changed = sorted(pending.flag_changed.items())
        pending.flag_changed.clear()
        if not pending:
            self._pending = None
        self._fold(removed, appended)
        # After the fold: the messages just appended are in the snapshot.
        lines[:0] = self.announce_keywords()
        if appended:
            lines.append(b"%d EXISTS" % (self.exists,))
            if recent:
                lines.append(b"%d RECENT" % (self.recent_count,))
        for uid, modseq in changed:
            seq = self.seq_of(uid)
            if seq is not None and not self.is_expunged(uid):
                lines.append(self.fetch_flags_line(seq, uid, modseq if condstore else None))
        return lines

    def _fold(self, removed: list[int], appended: list[tuple[int, frozenset[str]]], everything=False) -> None:
        """
        Move to the successor snapshot when the numbering changes (or this
        view's own flags grew past FOLD_AFTER, or with ``everything``),
        taking its own flags along; offer it for later SELECTs when nothing
        is pending.
        """
        own = self._flags
        if removed or appended or (own and (everything or len(own) > FOLD_AFTER)):
            self._snapshot = self._snapshot.successor(removed, appended, own)
            self._flags = None
        if self._registry is not None and not self._flags and self._pending is None:
            self._snapshot = self._registry.offer(self.mailbox_id, self.uidvalidity, self._snapshot, self.modseq)
