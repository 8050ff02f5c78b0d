"""
Shared, immutable pictures of one selected mailbox: which UID each sequence
number names, as packed arrays, and each message's flags, as a small number
per message into the mailbox's table of distinct flag lists.

Pure: no Twisted.  A mailbox of 20,000 messages is 80 KB of UIDs and 20 KB
of flag numbers here, however many sessions select it: sessions hold the
same ``Snapshot`` until their views differ (``SelectedView`` keeps what is
its own beside it).  A snapshot is a run of blocks of ``BLOCK`` messages;
one that moves on (a message delivered, expunged, flagged) asks for its
``successor``, which shares every block the move did not touch, so a session
that diverges pays for a block or two, not for a copy of the mailbox.
Sessions that make the same move from the same snapshot get the same
successor.
"""

from __future__ import annotations

import bisect
import weakref
from array import array
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from collections.abc import Sequence as SequenceABC
from itertools import chain
from operator import itemgetter

# Messages per block: 4 KB of UIDs and 1 KB of flag numbers.
BLOCK = 1024

# Flag numbers fit a byte while a mailbox has at most this many distinct
# flag lists (a person's INBOX has a few dozen).
_BYTE_IDS = 256

# A successor drops this many messages of a block one by one (each a
# move of the block's tail, in C); more, and it copies the block's others.
_DELETE_AT_MOST = 32

# A table that has doubled in size since it was last found mostly in use
# (flag lists of messages long gone or changed) starts again with only
# those in use, so a client inventing keywords cannot grow it for ever.
_TABLE_SLACK = 1024


class FlagTable:
    """
    The distinct flag lists seen in one mailbox, each under a small number.
    Append-only, so a number means the same in every snapshot sharing the
    table, and equal flag lists are one frozenset in memory.
    """

    __slots__ = ("sets", "_numbers", "checked")

    def __init__(self) -> None:
        self.sets: list[frozenset[str]] = []
        self._numbers: dict[frozenset[str], int] = {}
        # Its size when last compared with the flag lists in use.
        self.checked = _TABLE_SLACK

    def number(self, flags: frozenset[str]) -> int:
        found = self._numbers.get(flags)
        if found is None:
            found = self._numbers[flags] = len(self.sets)
            self.sets.append(flags)
        return found

    def __len__(self) -> int:
        return len(self.sets)


def _packed(numbers: Iterable[int], largest: int):
    """Flag numbers as bytes while they fit, else a wider array."""
    if largest < _BYTE_IDS:
        return bytes(numbers)
    # An iterator: array() would read bytes as raw machine values.
    return array("H" if largest < 1 << 16 else "I", iter(numbers))


def _writable(numbers, largest: int):
    """A mutable copy of block flag numbers that can hold ``largest``."""
    if isinstance(numbers, bytes):
        return bytearray(numbers) if largest < _BYTE_IDS else _packed(numbers, largest)
    if numbers.typecode == "H" and largest >= 1 << 16:
        return array("I", iter(numbers))
    return numbers[:]


def _frozen(numbers):
    return bytes(numbers) if isinstance(numbers, bytearray) else numbers


class Snapshot:
    """
    Sequence number N is ``uid_at(N - 1)`` (ascending); its flags are
    ``flags_at(N - 1)``.  Never changed once built.
    """

    __slots__ = ("table", "_blocks", "_starts", "_firsts", "_length", "_keywords", "_successors", "__weakref__")

    def __init__(self, blocks: Sequence[tuple[array, bytes | array]], table: FlagTable):
        self.table = table
        # Each block: (UIDs, flag numbers), never empty.
        self._blocks = tuple(blocks)
        starts, total = [], 0
        for uids, _ in self._blocks:
            starts.append(total)
            total += len(uids)
        self._starts = array("I", starts)
        self._firsts = array("I", [uids[0] for uids, _ in self._blocks])
        self._length = total
        self._keywords: frozenset[str] | None = None
        # Moves made from here: key -> weakref to the successor.
        self._successors: dict[tuple, weakref.ref] | None = None

    @classmethod
    def build(cls, messages: Iterable[tuple[int, frozenset[str]]], table: FlagTable | None = None) -> Snapshot:
        """From (UID, flags) pairs, ascending by UID."""
        table = FlagTable() if table is None else table
        messages = messages if isinstance(messages, list) else list(messages)
        # Column at a time, so that the loops over messages run in C.
        uids = array("I", map(itemgetter(0), messages))
        lists = list(map(itemgetter(1), messages))
        numbers = {flags: table.number(flags) for flags in dict.fromkeys(lists)}
        packed = _packed(map(numbers.__getitem__, lists), len(table) - 1)
        return cls([(uids[start:start + BLOCK], packed[start:start + BLOCK])
                    for start in range(0, len(uids), BLOCK)], table)

    # -- reading ----------------------------------------------------------

    def __len__(self) -> int:
        return self._length

    def _block_at(self, index: int) -> int:
        return bisect.bisect_right(self._starts, index) - 1

    def uid_at(self, index: int) -> int:
        if not 0 <= index < self._length:
            raise IndexError(index)
        block = self._block_at(index)
        return self._blocks[block][0][index - self._starts[block]]

    def flags_at(self, index: int) -> frozenset[str]:
        block = self._block_at(index)
        return self.table.sets[self._blocks[block][1][index - self._starts[block]]]

    @property
    def largest_uid(self) -> int:
        return self._blocks[-1][0][-1] if self._blocks else 0

    def _locate(self, uid: int) -> tuple[int, int] | None:
        """(block, position in it) of ``uid``, or None."""
        block = bisect.bisect_right(self._firsts, uid) - 1
        if block < 0:
            return None
        uids = self._blocks[block][0]
        position = bisect.bisect_left(uids, uid)
        if position < len(uids) and uids[position] == uid:
            return block, position
        return None

    def index_of(self, uid: int) -> int | None:
        """Where ``uid`` is (sequence number - 1), or None."""
        found = self._locate(uid)
        return None if found is None else self._starts[found[0]] + found[1]

    def bisect_left(self, uid: int) -> int:
        """The index of the first UID at least ``uid``."""
        block = max(0, bisect.bisect_right(self._firsts, uid) - 1)
        if not self._blocks:
            return 0
        return self._starts[block] + bisect.bisect_left(self._blocks[block][0], uid)

    def iter_uids(self) -> Iterator[int]:
        return chain.from_iterable(uids for uids, _ in self._blocks)

    @property
    def uids(self) -> UidSequence:
        """The UIDs in sequence-number order, as a read-only sequence."""
        return UidSequence(self)

    def spans(self, start: int, end: int) -> Iterator[tuple[int, array, bytes | array]]:
        """(index of the first, UIDs, flag numbers) of the messages
        ``start``..``end`` (half-open), a block at most at a time."""
        block = self._block_at(start) if start < end else len(self._blocks)
        while start < end and block < len(self._blocks):
            uids, numbers = self._blocks[block]
            offset = self._starts[block]
            low, high = start - offset, min(end - offset, len(uids))
            yield start, uids[low:high], numbers[low:high]
            start = offset + high
            block += 1

    @property
    def keywords(self) -> frozenset[str]:
        """The keywords some message here carries (RFC 3501 7.2.6 FLAGS)."""
        if self._keywords is None:
            used = set().union(*(set(numbers) for _, numbers in self._blocks))
            sets = self.table.sets
            self._keywords = frozenset(
                flag for number in used for flag in sets[number] if not flag.startswith("\\")
            )
        return self._keywords

    def matching(self, wanted: Sequence[bool]) -> bytes:
        """One byte per message, 1 where ``wanted[its flag number]``, else 0."""
        ones = [1 if yes else 0 for yes in wanted]
        table = bytes(ones[:_BYTE_IDS]) + bytes(max(0, _BYTE_IDS - len(ones)))
        return b"".join(
            numbers.translate(table) if isinstance(numbers, bytes) else bytes(map(ones.__getitem__, numbers))
            for _, numbers in self._blocks
        )

    def same_as(self, other: Snapshot) -> bool:
        """Whether ``other`` holds the same messages with the same flags
        (as numbers of the same table; blocks shared are not compared)."""
        if other is self:
            return True
        if other.table is not self.table or other._length != self._length:
            return False
        if len(other._blocks) == len(self._blocks) and other._starts == self._starts:
            return all(mine is theirs or mine == theirs for mine, theirs in zip(self._blocks, other._blocks))
        return (list(self.iter_uids()) == list(other.iter_uids())
                and b"".join(bytes(numbers) for _, numbers in self._blocks)
                == b"".join(bytes(numbers) for _, numbers in other._blocks))

    # -- moving on --------------------------------------------------------

    def successor(
        self,
        removed: Collection[int] = (),
        appended: Sequence[tuple[int, frozenset[str]]] = (),
        changed: Mapping[int, frozenset[str]] | None = None,
    ) -> Snapshot:
        """
        This snapshot with the messages of UIDs ``removed`` taken out,
        ``changed`` (UID -> flags) applied and ``appended`` (UID, flags)
        pairs added at the end (their UIDs above every UID here).  The same
        move from the same snapshot gives the same object while anyone holds
        it; blocks the move does not touch are shared.
        """
        number = self.table.number
        # Asked by every session on the mailbox after each delivery: the
        # usual move (one message more) costs a lookup and no more.
        key = (
            tuple(sorted(removed)) if removed else (),
            tuple([(uid, number(flags)) for uid, flags in appended]),
            tuple(sorted([(uid, number(flags)) for uid, flags in changed.items()])) if changed else (),
        )
        if self._successors is None:
            self._successors = {}
        known = self._successors.get(key)
        found = known() if known is not None else None
        if found is None:
            found = self._build_successor(*key)
            if len(self.table) >= 2 * self.table.checked:
                found = found._compacted()
            if len(self._successors) >= 8:
                self._successors = {k: ref for k, ref in self._successors.items() if ref() is not None}
            self._successors[key] = weakref.ref(found)
        return found

    def _compacted(self) -> Snapshot:
        """This snapshot over a table of the flag lists in use, if that is
        less than half of its table; else itself."""
        used = sorted(set().union(*(set(numbers) for _, numbers in self._blocks)))
        if 2 * len(used) > len(self.table):
            self.table.checked = len(self.table)
            return self
        table = FlagTable()
        renumbered = [0] * len(self.table)
        for number in used:
            renumbered[number] = table.number(self.table.sets[number])
        largest = len(table) - 1
        return Snapshot([(uids, _packed(map(renumbered.__getitem__, numbers), largest))
                         for uids, numbers in self._blocks], table)

    def _build_successor(self, removed, appended, changed) -> Snapshot:
        blocks = list(self._blocks)
        touched: dict[int, tuple[set[int], dict[int, int]]] = {}
        for uid in removed:
            found = self._locate(uid)
            if found is not None:
                touched.setdefault(found[0], (set(), {}))[0].add(found[1])
        for uid, flag_number in changed:
            found = self._locate(uid)
            if found is not None:
                touched.setdefault(found[0], (set(), {}))[1][found[1]] = flag_number
        for block, (gone, patches) in touched.items():
            uids, numbers = blocks[block]
            numbers = _writable(numbers, max(patches.values(), default=0))
            for position, flag_number in patches.items():
                numbers[position] = flag_number
            if len(gone) > _DELETE_AT_MOST:
                kept = [position for position in range(len(uids)) if position not in gone]
                uids = array("I", [uids[position] for position in kept])
                kept_numbers = [numbers[position] for position in kept]
                numbers = (bytearray(kept_numbers) if isinstance(numbers, bytearray)
                           else array(numbers.typecode, kept_numbers))
            elif gone:
                uids = uids[:]
                for position in sorted(gone, reverse=True):
                    del uids[position], numbers[position]
            blocks[block] = (uids, _frozen(numbers))
        blocks = [block for block in blocks if len(block[0])]
        if appended:
            largest = max(flag_number for _, flag_number in appended)
            if blocks and len(blocks[-1][0]) < BLOCK:
                uids, numbers = blocks.pop()
                uids, numbers = uids[:], _writable(numbers, largest)
            else:
                uids, numbers = array("I"), _writable(b"", largest)
            for uid, flag_number in appended:
                if len(uids) == BLOCK:
                    blocks.append((uids, _frozen(numbers)))
                    uids, numbers = array("I"), _writable(b"", largest)
                uids.append(uid)
                numbers.append(flag_number)
            blocks.append((uids, _frozen(numbers)))
        return Snapshot(blocks, self.table)


class UidSequence(SequenceABC):
    """A snapshot's UIDs, read-only, indexed by sequence number - 1."""

    __slots__ = ("_snapshot",)

    def __init__(self, snapshot: Snapshot):
        self._snapshot = snapshot

    def __len__(self) -> int:
        return len(self._snapshot)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self._snapshot.uid_at(i) for i in range(*index.indices(len(self)))]
        return self._snapshot.uid_at(index + len(self) if index < 0 else index)

    def __iter__(self) -> Iterator[int]:
        return self._snapshot.iter_uids()


class UidRuns:
    """
    A set of UIDs kept as runs of consecutive numbers: a session's
    \\Recent messages, often every message delivered since the last
    session looked (thousands, after an import), in a few bytes.
    """

    __slots__ = ("_lows", "_highs")

    def __init__(self, uids: Iterable[int] = ()):
        self._lows = array("I")
        self._highs = array("I")
        self.update(uids)

    def __len__(self) -> int:
        return sum(self._highs) - sum(self._lows) + len(self._lows)

    def __bool__(self) -> bool:
        return bool(self._lows)

    def __contains__(self, uid: int) -> bool:
        run = bisect.bisect_right(self._lows, uid) - 1
        return run >= 0 and uid <= self._highs[run]

    def __iter__(self) -> Iterator[int]:
        return chain.from_iterable(range(low, high + 1) for low, high in zip(self._lows, self._highs))

    def runs(self) -> Iterator[tuple[int, int]]:
        """(first, last) of each run, ascending."""
        return zip(self._lows, self._highs)

    def update(self, uids: Iterable[int]) -> None:
        merged: list[list[int]] = []
        for low, high in sorted([*zip(self._lows, self._highs), *((uid, uid) for uid in set(uids))]):
            if merged and low <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], high)
            else:
                merged.append([low, high])
        self._lows = array("I", [low for low, _ in merged])
        self._highs = array("I", [high for _, high in merged])

    def discard(self, uid: int) -> None:
        run = bisect.bisect_right(self._lows, uid) - 1
        if run < 0 or uid > self._highs[run]:
            return
        low, high = self._lows[run], self._highs[run]
        if low == high:
            del self._lows[run], self._highs[run]
        elif uid == low:
            self._lows[run] = uid + 1
        elif uid == high:
            self._highs[run] = uid - 1
        else:
            self._highs[run] = uid - 1
            self._lows.insert(run + 1, uid + 1)
            self._highs.insert(run + 1, high)


class SnapshotRegistry:
    """
    The newest snapshot known to match each mailbox at a modseq, so that a
    session selecting it starts from there (and shares it) instead of
    reading every message's flags again.  Holds snapshots weakly: a mailbox
    nobody has selected costs nothing here.
    """

    def __init__(self) -> None:
        self._latest: dict[tuple[int, int], tuple[weakref.ref, int]] = {}

    def latest(self, mailbox_id: int, uidvalidity: int) -> tuple[Snapshot, int] | None:
        """(snapshot, modseq): the snapshot holds every change up to modseq."""
        entry = self._latest.get((mailbox_id, uidvalidity))
        if entry is None:
            return None
        snapshot = entry[0]()
        return None if snapshot is None else (snapshot, entry[1])

    def offer(self, mailbox_id: int, uidvalidity: int, snapshot: Snapshot, modseq: int) -> Snapshot:
        """
        ``snapshot`` is the whole mailbox with every change up to
        ``modseq``.  Returns the snapshot to hold from now on: the one
        known already when it says the same (two sessions that reached one
        state by different moves then share it again), else ``snapshot``.
        """
        key = (mailbox_id, uidvalidity)
        entry = self._latest.get(key)
        if entry is not None:
            current = entry[0]()
            if current is not None:
                if entry[1] == modseq and current.same_as(snapshot):
                    return current
                if entry[1] >= modseq:
                    return snapshot
        latest = self._latest

        def forget(ref, key=key):
            if latest.get(key, (None,))[0] is ref:
                del latest[key]

        latest[key] = (weakref.ref(snapshot, forget), modseq)
        return snapshot
