"""
Flag changes of every session on a node, grouped: those asked for in one
reactor turn (the \\Seen saves of POP3 sessions fall due together, IMAP
STOREs of many clients) run in one transaction, with one commit.

Each change keeps its own identity: the group row-locks every mailbox it
touches, in id order, as any single change would (so a group never waits
crosswise on a COPY or MOVE), and gives each change the next mod-sequence
of its mailbox in the order they were asked, so a mailbox's mod-sequences
still only go up (RFC 7162 3.1.1) and each caller gets the changes and the
modseq of its own request.  A request the group cannot serve (its mailbox
is gone) is refused alone; a failure of the transaction fails the group,
and each request is then tried on its own, so one cannot fail another.
"""

from __future__ import annotations

import attrs
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from gateway.store.encoding import flags_text, record_from_row
from gateway.store.interfaces import NoSuchMailbox
from gateway.store.model import flag_changes

# Changes in one transaction at most: each holds its mailbox's row lock to
# the commit.
MAX_GROUP = 256

RECORD_COLUMNS = "uid, flags, internaldate, tzoffset, size, modseq"


@attrs.frozen
class FlagChange:
    mailbox_id: int
    uids: tuple[int, ...]
    flags: frozenset[str]
    mode: str
    unchangedsince: int | None


class FlagGroups:
    """
    ``write`` runs ``work(transaction, *args)`` as one flag-only
    transaction (L{Database.write_flags}) and returns its Deferred.
    """

    def __init__(self, reactor, write):
        self._reactor = reactor
        self._write = write
        self._waiting: list[tuple[FlagChange, Deferred]] = []
        self._due = None
        # Transactions run, and changes they carried (for the tests and the
        # metrics of a node).
        self.transactions = 0
        self.changes = 0

    def submit(self, change: FlagChange) -> Deferred:
        """A Deferred firing with (changed records, modified UIDs) once ``change`` is committed."""
        d = Deferred()
        self._waiting.append((change, d))
        if self._due is None:
            self._due = self._reactor.callLater(0, self._run)
        return d

    def _run(self) -> None:
        self._due = None
        waiting, self._waiting = self._waiting, []
        for start in range(0, len(waiting), MAX_GROUP):
            self._start(waiting[start:start + MAX_GROUP])

    def _start(self, group: list[tuple[FlagChange, Deferred]]) -> None:
        self.transactions += 1
        self.changes += len(group)
        changes = [change for change, _ in group]
        d = self._write(apply_changes, changes)

        def done(outcomes):
            for (_, waiting), outcome in zip(group, outcomes):
                if isinstance(outcome, Exception):
                    waiting.errback(Failure(outcome))
                else:
                    waiting.callback(outcome)

        def failed(failure):
            if len(group) == 1:
                group[0][1].errback(failure)
                return
            # Whatever it was, it was no one request's refusal: each again
            # alone, so that the one at fault fails alone.
            for item in group:
                self._start([item])

        d.addCallbacks(done, failed)


def apply_changes(tx, changes: list[FlagChange]) -> list:
    """
    In one transaction: each change's (changed records, modified UIDs), or
    the refusal (an exception) of a change whose mailbox is gone.
    """
    mailbox_ids = sorted({change.mailbox_id for change in changes})
    modseqs = dict(tx.all(
        "SELECT id, highestmodseq FROM mailboxes WHERE id = ANY(%s) ORDER BY id FOR UPDATE", (mailbox_ids,)
    ))
    outcomes: list = []
    for change in changes:
        if change.mailbox_id not in modseqs:
            outcomes.append(NoSuchMailbox(str(change.mailbox_id)))
            continue
        modseq = modseqs[change.mailbox_id] + 1
        rows = tx.all(
            f"SELECT {RECORD_COLUMNS} FROM messages WHERE mailbox_id = %s AND uid = ANY(%s) ORDER BY uid",
            (change.mailbox_id, sorted(set(change.uids))),
        ) if change.uids else []
        changed, modified = flag_changes(
            (record_from_row(row) for row in rows), change.flags, change.mode, change.unchangedsince, modseq
        )
        if changed:
            tx.cursor.executemany(
                "UPDATE messages SET flags = %s, modseq = %s WHERE mailbox_id = %s AND uid = %s",
                [(flags_text(r.flags), modseq, change.mailbox_id, r.uid) for r in changed],
            )
            modseqs[change.mailbox_id] = modseq
            tx.changed_mailbox(change.mailbox_id, modseq)
        outcomes.append((changed, modified))
    if tx.changed:
        tx.cursor.executemany(
            "UPDATE mailboxes SET highestmodseq = %s WHERE id = %s",
            [(modseq, mailbox_id) for mailbox_id, modseq in sorted(tx.changed.items())],
        )
    return outcomes
