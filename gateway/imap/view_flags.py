"""
The flags an IMAP session's view of its selected mailbox tells the client:
FLAGS and PERMANENTFLAGS, FETCH FLAGS of one message or of many at once,
and the keywords it must announce first (RFC 3501 7.2.6).  A mixin of
``SelectedView`` (``gateway/imap/view.py``), whose state it reads.  Pure:
no Twisted.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from gateway.store.model import SYSTEM_FLAGS

RECENT = "\\Recent"

# FETCH FLAGS of a thousand messages formats a handful of distinct lists.
_formatted: dict[frozenset[str], bytes] = {}


def format_flags(flags: Iterable[str]) -> bytes:
    """The parenthesised flag list of FLAGS responses and FETCH FLAGS."""
    if isinstance(flags, frozenset):
        text = _formatted.get(flags)
        if text is None:
            if len(_formatted) >= 4096:
                _formatted.clear()
            text = _formatted[flags] = _format_flags(flags)
        return text
    return _format_flags(flags)


def _format_flags(flags: Iterable[str]) -> bytes:
    ordered = sorted(flags, key=lambda flag: (not flag.startswith("\\"), flag))
    return b"(" + " ".join(ordered).encode("ascii") + b")"


class FlagsToldMixin:
    """What ``SelectedView`` tells the client of flags."""

    # A view has slots only: no instance dict for the mixin either.
    __slots__ = ()

    def flags_lines(self) -> list[bytes]:
        """FLAGS and PERMANENTFLAGS of SELECT (without the leading ``* ``)."""
        flags = SYSTEM_FLAGS | self._keywords
        if self.readonly:
            permanent = b"OK [PERMANENTFLAGS ()] Read-only mailbox"
        else:
            # \\* last, as Dovecot lists it: some clients (aioimaplib) strip
            # every "* " of an untagged line.
            permanent = b"OK [PERMANENTFLAGS " + format_flags(flags)[:-1] + b" \\*)] Flags permitted"
        return [b"FLAGS " + format_flags(flags), permanent]

    def announce_keywords(self) -> list[bytes]:
        """
        RFC 3501 7.2.6: FLAGS again (and PERMANENTFLAGS) when a message in
        the client's numbering carries a keyword the client was not told
        of; every path that writes FLAGS in a FETCH sends these first.  The
        snapshot's keywords are worked out once per snapshot; beside them
        only this view's own flags (a few dozen at most) are read.
        """
        shown = self._snapshot.keywords
        if self._flags:
            shown = shown.union(*self._flags.values())
        new = {flag for flag in shown - self._keywords if not flag.startswith("\\")}
        if not new:
            return []
        self._keywords = self._keywords | new
        return self.flags_lines()

    def flags_of_pair(self, seq: int, uid: int) -> frozenset[str]:
        """``flags_of(uid)`` for message ``seq`` (a pair of ``pairs``), found by its number, not its UID."""
        flags = self._flags.get(uid) if self._flags is not None else None
        if flags is None:
            flags = self._snapshot.flags_at(seq - 1)
        if self._recent and uid in self._recent:
            flags = flags | {RECENT}
        return flags

    def fetch_flags(self, seq: int, uid: int) -> bytes:
        """FETCH FLAGS of message ``seq`` (UID ``uid``), formatted; the client is told them (``told_flags``)."""
        flags = self.flags_of_pair(seq, uid)
        pending = self._pending
        if pending is not None and pending.flag_changed:
            pending.flag_changed.pop(uid, None)
        return format_flags(flags)

    def flags_texts(self, pairs: list[tuple[int, int]]) -> list[bytes]:
        """
        ``fetch_flags`` of each of ``pairs`` (from ``pairs``), for a FETCH
        of many messages, without telling the client (``told_flags``):
        for consecutive messages, the snapshot's flag numbers a block at a
        time, each distinct list formatted once.
        """
        if not pairs:
            return []
        start, end = pairs[0][0] - 1, pairs[-1][0]
        if end - start != len(pairs):
            return [format_flags(self.flags_of_pair(seq, uid)) for seq, uid in pairs]
        snapshot = self._snapshot
        sets = snapshot.table.sets
        numbers = [number for _, _, block in snapshot.spans(start, end) for number in block]
        formatted = {number: format_flags(sets[number]) for number in set(numbers)}
        texts = list(map(formatted.__getitem__, numbers))
        if self._recent:
            with_recent: dict[int, bytes] = {}
            for low, high in self._recent_ranges():
                for index in range(max(low, start), min(high, end)):
                    number = numbers[index - start]
                    text = with_recent.get(number)
                    if text is None:
                        text = with_recent[number] = format_flags(sets[number] | {RECENT})
                    texts[index - start] = text
        if self._flags:
            for uid in self._flags:
                index = snapshot.index_of(uid)
                if index is not None and start <= index < end:
                    texts[index - start] = format_flags(self.flags_of_pair(index + 1, uid))
        return texts

    def told_flags(self, uid: int) -> None:
        """The client was just sent the flags of ``uid`` (in a FETCH it
        asked for): a pending change of them need not be told again."""
        pending = self._pending
        if pending is not None and pending.flag_changed:
            pending.flag_changed.pop(uid, None)

    def told_flags_within(self, ranges: list[tuple[int, int]]) -> None:
        """``told_flags`` of every message in ``ranges`` (from ``index_ranges``)."""
        pending = self._pending
        if pending is None or not pending.flag_changed:
            return
        starts = [start for start, _ in ranges]
        for uid in list(pending.flag_changed):
            index = self._snapshot.index_of(uid)
            position = bisect.bisect_right(starts, index) - 1
            if position >= 0 and index < ranges[position][1]:
                del pending.flag_changed[uid]

    def fetch_flags_line(self, seq: int, uid: int, modseq: int | None = None) -> bytes:
        # The UID lets clients match unsolicited FETCH even mid-UID-command.
        line = b"%d FETCH (UID %d FLAGS %s" % (seq, uid, format_flags(self.flags_of(uid)))
        if modseq is not None:
            line += b" MODSEQ (%d)" % modseq
        return line + b")"
