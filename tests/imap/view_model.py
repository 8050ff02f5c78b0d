"""
A simple model of a selected session's view, for checking the compact one
(gateway/imap/view.py) against: a list of UIDs and a dict of flags per
session, nothing shared, written for clarity and not for memory.  Its
answers are what RFC 3501 7.4.1 asks of the view; the compact view must
give the same bytes.
"""

from __future__ import annotations

from gateway.imap.sequence import format_sequence_set
from gateway.imap.view import RECENT, format_flags
from gateway.store.model import SYSTEM_FLAGS


class ModelView:
    def __init__(self, messages, modseq, readonly=False):
        self.readonly = readonly
        self.modseq = modseq
        self.flags = dict(messages)
        self.uids = list(self.flags)
        self.recent = set()
        self.expunged = set()
        self.new = []
        self.flag_changed = {}
        self.keywords = {flag for flags in self.flags.values() for flag in flags if not flag.startswith("\\")}

    @property
    def exists(self):
        return len(self.uids)

    def seq_of(self, uid):
        return self.uids.index(uid) + 1 if uid in self.uids else None

    def flags_of(self, uid):
        return self.flags[uid] | {RECENT} if uid in self.recent else self.flags[uid]

    def first_unseen(self):
        return next((seq for seq, uid in enumerate(self.uids, 1)
                     if "\\Seen" not in self.flags[uid] and uid not in self.expunged), None)

    def search_flags(self, match):
        return [seq for seq, uid in enumerate(self.uids, 1)
                if uid not in self.expunged and match(self.flags[uid], uid in self.recent)]

    def fetch_lines(self, seqs, items):
        lines = []
        for seq in seqs:
            uid = self.uids[seq - 1]
            if uid in self.expunged:
                continue
            parts = [b"UID %d" % uid if item == "UID" else b"FLAGS " + format_flags(self.flags_of(uid))
                     for item in items]
            lines.append(b"* %d FETCH (" % seq + b" ".join(parts) + b")\r\n")
        return lines

    def apply(self, changes):
        gone = set(changes.expunged)
        known_top = max(self.uids[-1] if self.uids else 0, self.new[-1] if self.new else 0)
        for record in changes.updated:
            uid = record.uid
            if uid in gone:
                continue
            if uid in self.flags:
                if record.flags != self.flags[uid]:
                    self.flags[uid] = record.flags
                    if uid in self.uids:
                        self.flag_changed[uid] = record.modseq
            elif uid > known_top:
                self.flags[uid] = record.flags
                self.new.append(uid)
                known_top = uid
        for uid in gone:
            self.mark_expunged(uid)
        self.modseq = max(self.modseq, changes.highestmodseq)

    def mark_expunged(self, uid):
        if uid in self.new:
            self.new.remove(uid)
            del self.flags[uid]
            self.recent.discard(uid)
        elif uid in self.uids:
            self.expunged.add(uid)
            self.flag_changed.pop(uid, None)

    def add_recent(self, uids):
        self.recent.update(uid for uid in uids if uid in self.flags)

    def note_flags(self, uid, flags):
        if uid in self.flags and uid not in self.expunged:
            self.flags[uid] = flags
            self.flag_changed.pop(uid, None)

    def flags_lines(self):
        flags = SYSTEM_FLAGS | self.keywords
        if self.readonly:
            permanent = b"OK [PERMANENTFLAGS ()] Read-only mailbox"
        else:
            permanent = b"OK [PERMANENTFLAGS " + format_flags(flags)[:-1] + b" \\*)] Flags permitted"
        return [b"FLAGS " + format_flags(flags), permanent]

    def announce_keywords(self):
        # RFC 3501 7.2.6: every keyword a message in the client's numbering carries.
        new = {flag for uid in self.uids for flag in self.flags[uid]
               if not flag.startswith("\\") and flag not in self.keywords}
        if not new:
            return []
        self.keywords |= new
        return self.flags_lines()

    def catch_up(self):
        self.flush(True)
        self.keywords = {flag for uid in self.uids for flag in self.flags[uid] if not flag.startswith("\\")}

    def flush(self, allow_expunge, condstore=False, vanished=False):
        if not (self.new or self.expunged or self.flag_changed):
            return []
        lines = []
        if allow_expunge and self.expunged:
            gone = []
            for index in range(len(self.uids) - 1, -1, -1):
                uid = self.uids[index]
                if uid in self.expunged:
                    gone.append(uid)
                    if not vanished:
                        lines.append(b"%d EXPUNGE" % (index + 1,))
                    del self.uids[index]
                    del self.flags[uid]
                    self.recent.discard(uid)
            self.expunged.clear()
            if vanished and gone:
                lines.append(b"VANISHED " + format_sequence_set(reversed(gone)).encode("ascii"))
        if self.new:
            self.uids.extend(self.new)
            self.new.clear()
            lines.append(b"%d EXISTS" % (len(self.uids),))
            lines.append(b"%d RECENT" % (len(self.recent),))
        lines[:0] = self.announce_keywords()
        for uid in sorted(self.flag_changed):
            seq = self.seq_of(uid)
            if seq is not None and uid not in self.expunged:
                line = b"%d FETCH (UID %d FLAGS %s" % (seq, uid, format_flags(self.flags_of(uid)))
                if condstore:
                    line += b" MODSEQ (%d)" % self.flag_changed[uid]
                lines.append(line + b")")
        self.flag_changed.clear()
        return lines
