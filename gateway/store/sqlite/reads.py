"""
What the SQLite store answers at once, on the calling (reactor) thread, from
its read connection: message lists, records, structures, bodies, changes
since a mod-sequence, \\Recent counts.  A mixin of L{SQLiteStore}.

A read never waits for the writer (WAL: it sees the last commit).  The
answers of ``changes_since`` are memoised per (mailbox, modseq): a delivery
wakes every session idling on the mailbox with the same question.  The memo
holds until a commit, ours (the writer's answer arrives, ``_written``) or
another process's (its notice arrives, ``_heard``, or ``PRAGMA
data_version`` moves; read once per reactor turn).
"""

from __future__ import annotations

from twisted.internet import defer

from gateway.store.interfaces import MessageExpunged, NoSuchMailbox
from gateway.store.model import ChangeSet
from gateway.store.encoding import MEMO_LIMIT, flag_set, record_from_row, structure_from_row
from gateway.store.sqlite.onestep import select_rows
from gateway.store.sqlite.rows import RECORD_COLUMNS, STRUCTURE_COLUMNS, WITH_STRUCTURES
from gateway.store.sqlite.summaries import (
    STRUCTURE_NAMES,
    SUMMARY_COLUMNS,
    UNSUMMARISED_COLUMNS,
    WITHOUT_SUMMARIES,
    summary_source,
)
from gateway.store.sqlite.synchronous import deferred


class ReadsMixin:
    # -- the memo -------------------------------------------------------------

    def _version_stale(self) -> None:
        self._version_fresh = False

    def _forget(self) -> None:
        self._changes_memo.clear()
        self._nothing_recent.clear()

    def _check_memo(self) -> None:
        if self._version_fresh:
            return
        if self._reactor is not None:
            self._version_fresh = True
            self._reactor.callLater(0, self._version_stale)
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._memo_version or len(self._changes_memo) >= MEMO_LIMIT:
            self._forget()
            self._memo_version = version

    # -- messages -------------------------------------------------------------

    @deferred
    def list_messages(self, mailbox_id):
        rows = self._db.execute(
            f"SELECT {RECORD_COLUMNS} FROM messages WHERE mailbox_id = ? ORDER BY uid", (mailbox_id,)
        ).fetchall()
        return [record_from_row(row) for row in rows]

    def _select_uids(self, columns: str, mailbox_id: int, uids, source: str = "messages") -> list:
        # Stepped through: some callers read structures (blobs), which JSON
        # cannot carry.
        return select_rows(self._db, columns, mailbox_id, uids, source, steps=True)

    def _with_structures(self, columns: str, mailbox_id: int, uids, first: int):
        """
        The rows of ``columns`` (the UID first, the structure's from
        ``first`` on) of ``uids`` still there: at once where every structure
        is parsed, else a Deferred once the rest are.
        """
        rows = self._select_uids(columns, mailbox_id, uids, WITH_STRUCTURES)
        unparsed = [row[0] for row in rows if row[first] is None]
        if not unparsed:
            return rows

        def filled(parsed):
            return [
                row if row[first] is not None else (*row[:first], *parsed[row[0]])
                for row in rows
                if row[first] is not None or row[0] in parsed
            ]

        return self._structures_parsed(mailbox_id, unparsed).addCallback(filled)

    @deferred
    def get_messages(self, mailbox_id, uids):
        return _then(
            self._with_structures(f"{RECORD_COLUMNS}, {STRUCTURE_COLUMNS}", mailbox_id, uids, 6),
            lambda rows: [(record_from_row(row[:6]), structure_from_row(*row[6:])) for row in rows],
        )

    @deferred
    def get_structures(self, mailbox_id, uids):
        return _then(
            self._with_structures(f"uid, {STRUCTURE_COLUMNS}", mailbox_id, uids, 1),
            lambda rows: {row[0]: structure_from_row(*row[1:]) for row in rows},
        )

    @deferred
    def get_records(self, mailbox_id, uids):
        return [record_from_row(row) for row in self._select_uids(RECORD_COLUMNS, mailbox_id, uids)]

    @deferred
    def fetch_rows(self, mailbox_id, uids, columns):
        uids = set(uids)
        # Where a message's structure is in the row: (place in the row, in structure_columns).
        structural = [
            (place, STRUCTURE_NAMES[name]) for place, name in enumerate(columns, 1) if name in STRUCTURE_NAMES
        ]
        if not structural and "internaldate" not in columns:
            # The record alone answers: a message not yet parsed has no summary.
            return self._select_uids(_long_way(columns), mailbox_id, uids, "messages m")
        selected = ", ".join(["uid", *(SUMMARY_COLUMNS[name] for name in columns)])
        rows = self._select_uids(selected, mailbox_id, uids, summary_source(columns))
        if len(rows) == len(uids):
            return rows
        # Expunged, not yet parsed, or without a summary: read the long way.
        missing = uids.difference(row[0] for row in rows)
        found = self._select_uids(_long_way(columns), mailbox_id, missing, WITHOUT_SUMMARIES)
        unparsed = [row for row in found if structural and row[structural[0][0]] is None]
        if not unparsed:
            return sorted(rows + found)

        def filled(parsed):
            for row in unparsed:
                if row[0] in parsed:
                    row = list(row)
                    for place, column in structural:
                        row[place] = parsed[row[0]][column]
                    rows.append(tuple(row))
            return sorted(rows)

        rows.extend(row for row in found if row[structural[0][0]] is not None)
        return self._structures_parsed(mailbox_id, [row[0] for row in unparsed]).addCallback(filled)

    @deferred
    def count_messages(self, mailbox_id, first_uid, last_uid):
        return self._db.execute(
            "SELECT count(*) FROM messages WHERE mailbox_id = ? AND uid BETWEEN ? AND ?",
            (mailbox_id, first_uid, last_uid),
        ).fetchone()[0]

    @deferred
    def list_flags(self, mailbox_id):
        rows = self._db.execute("SELECT uid, flags FROM messages WHERE mailbox_id = ? ORDER BY uid", (mailbox_id,))
        return [(uid, flag_set(flags)) for uid, flags in rows]

    @deferred
    def open_message(self, mailbox_id, uid):
        return self.open_message_now(mailbox_id, uid)

    def open_message_now(self, mailbox_id, uid):
        try:
            # A plain string path and no read buffer: FETCH opens thousands of
            # these a second, and every reader takes big reads.
            return open(f"{self._mail_path}/{mailbox_id}/{uid}", "rb", buffering=0)
        except FileNotFoundError:
            raise MessageExpunged(uid) from None

    @deferred
    def changes_since(self, mailbox_id, modseq):
        self._check_memo()
        key = (mailbox_id, modseq)
        changes = self._changes_memo.get(key)
        if changes is not None:
            return changes
        uidnext, highestmodseq = self._counters(mailbox_id)
        if modseq >= highestmodseq:
            updated = expunged = ()
        else:
            # INDEXED BY: left to itself SQLite walks the primary key for the
            # ORDER BY, reading every row (and its structure) of the mailbox.
            updated = tuple(
                record_from_row(row)
                for row in self._db.execute(
                    f"SELECT {RECORD_COLUMNS} FROM messages INDEXED BY messages_modseq"
                    " WHERE mailbox_id = ? AND modseq > ? ORDER BY uid",
                    (mailbox_id, modseq),
                )
            )
            expunged = tuple(
                row[0]
                for row in self._db.execute(
                    "SELECT uid FROM expunged INDEXED BY expunged_modseq"
                    " WHERE mailbox_id = ? AND modseq > ? ORDER BY uid",
                    (mailbox_id, modseq),
                )
            )
        changes = self._changes_memo[key] = ChangeSet(
            mailbox_id=mailbox_id, highestmodseq=highestmodseq, uidnext=uidnext, updated=updated, expunged=expunged
        )
        return changes

    # -- changes by other processes ------------------------------------------

    def _poll_highestmodseq(self, mailbox_ids) -> dict[int, int] | None:
        # PRAGMA data_version moves only when another connection commits, so
        # an idle poll costs one cheap statement.
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if version == self._data_version:
            return None
        self._data_version = version
        ids = list(mailbox_ids)
        return {
            mailbox_id: modseq
            for mailbox_id, modseq in self._db.execute(
                "SELECT id, highestmodseq FROM mailboxes WHERE id IN (%s)" % ",".join("?" * len(ids)), ids
            )
        }

    def _poll_mailbox_lists(self, users) -> dict[str, int] | None:
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if version == self._lists_data_version:
            return None
        self._lists_data_version = version
        users = list(users)
        return dict(self._db.execute(
            "SELECT user, version FROM mailbox_lists WHERE user IN (%s)" % ",".join("?" * len(users)), users
        ).fetchall())

    @deferred
    def count_recent(self, mailbox_id):
        row = self._db.execute("SELECT first_recent_uid FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()
        if row is None:
            raise NoSuchMailbox(str(mailbox_id))
        return self._db.execute(
            "SELECT count(*) FROM messages WHERE mailbox_id = ? AND uid >= ?", (mailbox_id, row[0])
        ).fetchone()[0]


def _long_way(columns) -> str:
    """What ``fetch_rows`` selects of ``columns`` from a message's record and structure, not its summary."""
    return ", ".join(["uid", *(UNSUMMARISED_COLUMNS[name] for name in columns)])


def _then(rows, answer):
    """``answer(rows)``, or a Deferred of it where ``rows`` is still to come."""
    return rows.addCallback(answer) if isinstance(rows, defer.Deferred) else answer(rows)
