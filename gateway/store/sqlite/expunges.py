"""
Expunge in the SQLite store: all or nothing, with the bodies unlinked after
the commit that drops their rows, or, on a full disk, in two commits that
each free room before they need any.  A mixin of L{SQLiteStore}.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.logger import Logger

from gateway.store.interfaces import StoreFull
from gateway.store.sqlite.onestep import select_rows, uids_where
from gateway.store.sqlite.synchronous import deferred

log = Logger()


class ExpungesMixin:
    def _keep_uidnext(self, step, mailbox_id: int, uidnext: int, going=()) -> None:
        """
        A rebuild takes UIDNEXT from the highest body file: unless the body
        of UID ``uidnext - 1`` stays, record ``uidnext`` beside the commit,
        before any body goes, so that losing the index never hands an
        expunged UID out again.  Recorded even if the commit fails: a
        UIDNEXT a little high at the next rebuild or sweep is harmless.
        """
        last = uidnext - 1
        stays = last not in going and self._db.execute(
            "SELECT 1 FROM messages WHERE mailbox_id = ? AND uid = ?", (mailbox_id, last)
        ).fetchone()
        if not stays:
            step.beside_commit(("uidnext", mailbox_id), lambda: self._record_uidnext(mailbox_id, uidnext))

    def _expunge(self, step, mailbox_id: int, uids) -> tuple[list[int], int]:
        uidnext, modseq = self._counters(mailbox_id)
        present = [uid for (uid,) in select_rows(self._db, "uid", mailbox_id, uids)]
        if not present:
            return [], modseq
        modseq += 1
        where, listed = uids_where(present)
        self._db.execute(
            "INSERT OR REPLACE INTO expunged (mailbox_id, uid, modseq)"
            f" SELECT mailbox_id, uid, ? FROM messages WHERE mailbox_id = ? AND {where}",
            (modseq, mailbox_id, listed),
        )
        for table in ("messages", "message_structures"):
            self._db.execute(f"DELETE FROM {table} WHERE mailbox_id = ? AND {where}", (mailbox_id, listed))
        self._db.execute("UPDATE mailboxes SET highestmodseq = ? WHERE id = ?", (modseq, mailbox_id))
        self._keep_uidnext(step, mailbox_id, uidnext)
        return present, modseq

    def _unlink_bodies(self, mailbox_id: int, uids) -> None:
        directory = self._mailbox_dir(mailbox_id)
        for uid in uids:
            (directory / str(uid)).unlink(missing_ok=True)

    def _mark_expunging(self, step, mailbox_id: int, uids) -> None:
        """
        The first step of an expunge on a full disk, inside a write
        transaction: the UIDs it takes, committed before any body goes, and
        the UIDNEXT a rebuild needs if the highest goes.  Small, so it
        commits on a full disk (with the reserve's room).
        """
        present = [uid for (uid,) in select_rows(self._db, "uid", mailbox_id, uids)]
        if present:
            self._keep_uidnext(step, mailbox_id, self._counters(mailbox_id)[0], set(present))
            where, listed = uids_where(present)
            self._db.execute(
                f"INSERT OR IGNORE INTO expunging (mailbox_id, uid) SELECT mailbox_id, uid FROM messages"
                f" WHERE mailbox_id = ? AND {where}",
                (mailbox_id, listed),
            )

    def _marked_expunging(self, mailbox_id: int) -> list[int]:
        return [uid for (uid,) in self._db.execute(
            "SELECT uid FROM expunging WHERE mailbox_id = ? ORDER BY uid", (mailbox_id,)
        )]

    def _finish_expunging(self, step, mailbox_id: int) -> tuple[list[int], int | None]:
        """
        An expunge's second step, for whatever is marked in the mailbox: the
        bodies are unlinked, as Maildir does, and only then are the rows
        dropped, so on a full disk the room they free is what this commit
        needs.  A crash between the two steps is finished at the next open
        (L{_finish_interrupted_expunges}): all of an expunge or none of it.
        Runs inside a write request (or transaction).
        """
        marked = self._marked_expunging(mailbox_id)
        if not marked:
            return [], None
        self._unlink_bodies(mailbox_id, marked)
        removed, modseq = self._expunge(step, mailbox_id, marked)
        self._db.execute("DELETE FROM expunging WHERE mailbox_id = ?", (mailbox_id,))
        return removed, modseq

    def _finish_interrupted_expunges(self) -> list[str]:
        """
        Finish the expunges whose bodies may be half unlinked.  One may be
        under way in a live process, between its two commits: finishing it
        here is what a concurrent expunge of the mailbox does (the second
        step takes whatever is marked, under the write lock), and the live
        process hears of it as of any other commit.
        """
        done = []
        for (mailbox_id,) in self._db.execute("SELECT DISTINCT mailbox_id FROM expunging").fetchall():
            with self._write() as step:
                removed, modseq = self._finish_expunging(step, mailbox_id)
            if modseq is None:
                continue  # finished meanwhile by its own process
            if removed:
                self._announce({mailbox_id: modseq}, ())
            done.append(f"finished the expunge of UID {' '.join(map(str, removed))} of mail/{mailbox_id},"
                        " which a crash interrupted")
        for line in done:
            log.info("store: {line}", line=line)
        return done

    @deferred
    def expunge(self, mailbox_id, uids):
        return defer.Deferred.fromCoroutine(self._expunge_messages(mailbox_id, list(uids)))

    async def _expunge_messages(self, mailbox_id: int, uids: list[int]) -> list[int]:
        """
        One request and one commit, the bodies unlinked after it, as MOVE
        does at its source: a crash in between leaves bodies of expunged
        messages, which the sweep removes.  That commit needs room; on a
        full disk the expunge goes in two steps instead, each of which
        frees room before it needs any.
        """
        def run(step):
            # With what an interrupted two-step expunge left marked.
            taken = sorted(set(uids).union(self._marked_expunging(mailbox_id)))
            removed, modseq = self._expunge(step, mailbox_id, taken)
            self._db.execute("DELETE FROM expunging WHERE mailbox_id = ?", (mailbox_id,))
            if removed:
                step.after_commit(lambda: self._unlink_bodies(mailbox_id, removed))
                step.notify(mailbox_id, modseq)
            return removed

        try:
            removed = await self._writer.submit(run, frees_space=True)
        except StoreFull:
            removed = await self._expunge_in_two_steps(mailbox_id, uids)
        # What else was marked (an expunge a crash or a failure interrupted)
        # is told to sessions by the change feed; the caller hears of its own.
        asked = set(uids)
        return [uid for uid in removed if uid in asked]

    async def _expunge_in_two_steps(self, mailbox_id: int, uids: list[int]) -> list[int]:
        # Two requests, two commits: the UIDs marked as taken, then (bodies
        # unlinked first) the rows dropped.  Both free room, so both go
        # through on a full disk.
        await self._writer.submit(lambda step: self._mark_expunging(step, mailbox_id, uids), frees_space=True)

        def finish(step):
            removed, modseq = self._finish_expunging(step, mailbox_id)
            if removed:
                step.notify(mailbox_id, modseq)
            return removed

        return await self._writer.submit(finish, frees_space=True)
