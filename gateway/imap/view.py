"""
One IMAP session's view of its selected mailbox.

Pure: no Twisted.  The store is session-free; each session keeps here the
sequence-number map the client believes in, the flags it last told the client,
and what happened in the store since (new messages, flag changes, expunges)
that the client has not been told yet.  ``flush`` turns the pending changes
into untagged responses at the moments RFC 3501 7.4.1 allows.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from gateway.imap.sequence import format_sequence_set
from gateway.store.model import SYSTEM_FLAGS, ChangeSet

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


class SelectedView:
    """
    The client's picture of one selected mailbox, and what it still lacks.

    Sequence number N is ``uids[N - 1]``; the list stays ascending.  A message
    expunged in the store stays in the map until the client has been sent its
    EXPUNGE, so sequence numbers the client uses keep meaning what it thinks
    (RFC 3501 7.4.1; RFC 2180 4.1).
    """

    def __init__(
        self,
        mailbox_id: int,
        uidvalidity: int,
        messages: Iterable[tuple[int, frozenset[str]]],
        modseq: int,
        readonly: bool = False,
        recent: Iterable[int] = (),
    ):
        self.mailbox_id = mailbox_id
        self.uidvalidity = uidvalidity
        self.readonly = readonly
        self.modseq = modseq
        # ``messages``: (UID, flags) pairs, ascending by UID.
        self._flags: dict[int, frozenset[str]] = dict(messages)
        self.uids: list[int] = list(self._flags)
        self._recent: set[int] = set(recent) & set(self._flags)
        self._expunged: set[int] = set()
        self._new: list[int] = []
        self._flag_changed: set[int] = set()
        # The modseq of each flag change not told yet (FETCH MODSEQ, RFC 7162).
        self._changed_modseq: dict[int, int] = {}
        # Keywords the client was told of in FLAGS (RFC 3501 7.2.6).
        self._keywords: set[str] = {
            flag for flags in set(self._flags.values()) for flag in flags if not flag.startswith("\\")
        }

    # -- questions the session asks -------------------------------------

    @property
    def exists(self) -> int:
        return len(self.uids)

    @property
    def recent_count(self) -> int:
        return len(self._recent)

    @property
    def largest_uid(self) -> int:
        return self.uids[-1] if self.uids else 0

    def uid_of(self, seq: int) -> int:
        return self.uids[seq - 1]

    def seq_of(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        if i < len(self.uids) and self.uids[i] == uid:
            return i + 1
        return None

    def is_expunged(self, uid: int) -> bool:
        """Gone from the store, though the client has not been told yet."""
        return uid in self._expunged

    def is_recent(self, uid: int) -> bool:
        return uid in self._recent

    def flags_of(self, uid: int) -> frozenset[str]:
        """Stored flags plus this session's \\Recent."""
        flags = self._flags[uid]
        if uid in self._recent:
            flags = flags | {RECENT}
        return flags

    def stored_flags(self, uid: int) -> frozenset[str]:
        """The flags as the store last reported them, without \\Recent."""
        return self._flags[uid]

    def first_unseen(self) -> int | None:
        for seq, uid in enumerate(self.uids, 1):
            if "\\Seen" not in self._flags[uid]:
                return seq
        return None

    def pending_new(self) -> list[int]:
        """UIDs delivered since the client last heard, not yet announced."""
        return list(self._new)

    @property
    def has_pending(self) -> bool:
        return bool(self._new or self._expunged or self._flag_changed)

    # -- what happened in the store -------------------------------------

    def apply(self, changes: ChangeSet) -> None:
        """Take in what the store reports since ``self.modseq``."""
        gone = set(changes.expunged)
        known_top = max(self.largest_uid, self._new[-1] if self._new else 0)
        for record in changes.updated:
            uid = record.uid
            if uid in gone:
                continue
            if uid in self._flags:
                if record.flags != self._flags[uid]:
                    self._flags[uid] = record.flags
                    if self.seq_of(uid) is not None:
                        self._flag_changed.add(uid)
                        self._changed_modseq[uid] = record.modseq
            elif uid > known_top:
                self._flags[uid] = record.flags
                self._new.append(uid)
                known_top = uid
            # Otherwise this session expunged it already: nothing to say.
        for uid in gone:
            self.mark_expunged(uid)
        self.modseq = max(self.modseq, changes.highestmodseq)

    def mark_expunged(self, uid: int) -> None:
        if uid in self._new:
            self._new.remove(uid)
            self._flags.pop(uid, None)
            self._recent.discard(uid)
        elif self.seq_of(uid) is not None:
            self._expunged.add(uid)
            self._flag_changed.discard(uid)
            self._changed_modseq.pop(uid, None)

    def add_recent(self, uids: Iterable[int]) -> None:
        """\\Recent claimed by this session (RFC 3501 2.3.2)."""
        self._recent.update(uid for uid in uids if uid in self._flags)

    def note_flags(self, uid: int, flags: frozenset[str]) -> None:
        """This session changed the flags and reports them itself."""
        if uid in self._flags and uid not in self._expunged:
            self._flags[uid] = flags
            self._flag_changed.discard(uid)
            self._changed_modseq.pop(uid, None)

    # -- telling the client ---------------------------------------------

    def flags_lines(self) -> list[bytes]:
        """FLAGS and PERMANENTFLAGS of SELECT (without the leading ``* ``)."""
        flags = SYSTEM_FLAGS | self._keywords
        if self.readonly:
            permanent = b"OK [PERMANENTFLAGS ()] Read-only mailbox"
        else:
            permanent = b"OK [PERMANENTFLAGS " + format_flags(flags | {"\\*"}) + b"] Flags permitted"
        return [b"FLAGS " + format_flags(flags), permanent]

    def announce_keywords(self, uids: Iterable[int]) -> list[bytes]:
        """
        RFC 3501 7.2.6: FLAGS again (and PERMANENTFLAGS) when messages of
        ``uids`` carry a keyword the client was not told of; send them
        before the FETCH that shows it.
        """
        new = {
            flag for uid in uids for flag in self._flags.get(uid, ())
            if not flag.startswith("\\") and flag not in self._keywords
        }
        if not new:
            return []
        self._keywords |= new
        return self.flags_lines()

    def flush(self, allow_expunge: bool, condstore: bool = False, vanished: bool = False) -> list[bytes]:
        """
        Untagged responses (without the leading ``* ``) that bring the client
        up to date, and the map updated to match; with ``condstore`` (RFC
        7162 3.1) FETCH responses carry MODSEQ, with ``vanished`` (QRESYNC,
        RFC 7162 3.2.10.2) one VANISHED replaces the EXPUNGEs.

        RFC 3501 7.4.1: no EXPUNGE while the command is FETCH, STORE or
        SEARCH; then the expunged messages stay in the map, EXISTS counts
        them, and they get EXPUNGE at the next allowed moment.
        """
        lines: list[bytes] = self.announce_keywords([*self._new, *self._flag_changed])
        if allow_expunge and self._expunged:
            gone = []
            for index in range(len(self.uids) - 1, -1, -1):
                uid = self.uids[index]
                if uid in self._expunged:
                    gone.append(uid)
                    if not vanished:
                        lines.append(b"%d EXPUNGE" % (index + 1,))
                    del self.uids[index]
                    del self._flags[uid]
                    self._recent.discard(uid)
            self._expunged.clear()
            if vanished and gone:
                lines.append(b"VANISHED " + format_sequence_set(reversed(gone)).encode("ascii"))
        if self._new:
            self.uids.extend(self._new)
            self._new.clear()
            lines.append(b"%d EXISTS" % (len(self.uids),))
            lines.append(b"%d RECENT" % (len(self._recent),))
        if self._flag_changed:
            for uid in sorted(self._flag_changed):
                seq = self.seq_of(uid)
                if seq is not None and uid not in self._expunged:
                    modseq = self._changed_modseq.get(uid) if condstore else None
                    lines.append(self.fetch_flags_line(seq, uid, modseq))
            self._flag_changed.clear()
            self._changed_modseq.clear()
        return lines

    def fetch_flags_line(self, seq: int, uid: int, modseq: int | None = None) -> bytes:
        # The UID lets clients match unsolicited FETCH even mid-UID-command.
        line = b"%d FETCH (UID %d FLAGS %s" % (seq, uid, format_flags(self.flags_of(uid)))
        if modseq is not None:
            line += b" MODSEQ (%d)" % modseq
        return line + b")"
