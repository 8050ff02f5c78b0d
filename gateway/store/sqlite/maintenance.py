"""
What the SQLite store does besides serving sessions: migration with given
UIDVALIDITY and UIDs (IImportableStore), repairs after a crash, and
rebuilding the index from the body files.  A mixin of L{SQLiteStore}: its
writes are requests to the same writer, over the same file layout.
"""

from __future__ import annotations

import datetime
import json
import os
import time

import attrs
from twisted.internet import defer
from twisted.logger import Logger

from gateway.mail import message
from gateway.durable import write_atomic
from gateway.store.interfaces import MailboxExists, UidNotAvailable
from gateway.store.model import UID_MAX
from gateway.store.names import check_name
from gateway.store.sqlite.synchronous import deferred
from gateway.store.sqlite.unsynced import MARGIN, left_behind, mailboxes_of

log = Logger()


def rebuilt_modseq() -> int:
    return int(time.time() * 1_000_000)


class MaintenanceMixin:
    # -- migration (IImportableStore) ---------------------------------------

    def _raise_uidvalidity_counter(self, uidvalidity: int) -> None:
        """Never issue afresh a UIDVALIDITY that came from elsewhere."""
        counter = self.root / "uidvalidity"
        try:
            last = int(counter.read_text().strip() or 0)
        except FileNotFoundError:
            last = 0
        if uidvalidity > last:
            write_atomic(counter, b"%d\n" % uidvalidity)

    @deferred
    def create_mailbox_with_uidvalidity(self, user, name, uidvalidity):
        name = check_name(name)
        if not 1 <= uidvalidity <= UID_MAX:
            raise ValueError(f"UIDVALIDITY out of range: {uidvalidity}")

        def run(step):
            info = self._mailbox_row("user = ? AND name = ?", (user, name))
            if info is None:
                info = self._create(user, name, None)
            elif info.uidnext != 1:
                raise MailboxExists(f"{name} has held messages; its UIDVALIDITY cannot change")
            self._db.execute("UPDATE mailboxes SET uidvalidity = ? WHERE id = ?", (uidvalidity, info.id))
            step.on_rollback(lambda: self._write_mailbox_meta(info.id, uidvalidity=info.uidvalidity))
            self._write_mailbox_meta(info.id, uidvalidity=uidvalidity)
            self._raise_uidvalidity_counter(uidvalidity)
            return attrs.evolve(info, uidvalidity=uidvalidity)

        return self._writer.submit(run)

    @deferred
    def append_with_uid(self, mailbox_id, uid, source, flags, internaldate):
        if not 1 <= uid <= UID_MAX:
            raise UidNotAvailable(f"UID out of range: {uid}")
        return defer.Deferred.fromCoroutine(self._append(mailbox_id, source, flags, internaldate, uid))

    @deferred
    def raise_uidnext(self, mailbox_id, uidnext):
        def run(step):
            current, _ = self._counters(mailbox_id)
            if uidnext <= current:
                return current
            if uidnext > UID_MAX + 1:
                raise UidNotAvailable(f"UIDNEXT out of range: {uidnext}")
            self._db.execute("UPDATE mailboxes SET uidnext = ? WHERE id = ?", (uidnext, mailbox_id))
            # rebuild_index takes UIDNEXT from the highest body file or this.
            self._write_mailbox_meta(mailbox_id, uid_floor=uidnext - 1)
            return uidnext

        return self._writer.submit(run)

    @deferred
    def discard_uncommitted(self, mailbox_id, uid):
        """
        Remove the body file of a UID that no commit ever gave out: what a
        crash leaves between the rename into mail/ and the index commit of an
        append, copy or move.  Such a message was never acknowledged (the
        sender retries) or still exists at its source, so indexing it would
        only duplicate it.  Decided under the write lock, so a delivery
        committing that very UID right now is never touched.

        @return: Deferred firing with True if the file was removed.
        """

        def run(step):
            uidnext, _ = self._counters(mailbox_id)
            committed = self._db.execute(
                "SELECT 1 FROM messages WHERE mailbox_id = ? AND uid = ?", (mailbox_id, uid)
            ).fetchone()
            if uid < uidnext or committed:
                return False
            (self._mailbox_dir(mailbox_id) / str(uid)).unlink(missing_ok=True)
            return True

        return self._writer.submit(run, frees_space=True)

    # -- after a crash -------------------------------------------------------

    def recover_unsynced(self) -> None:
        """
        At start-up: for each record of unsynced flag changes a crashed
        process left (``unsynced.py``), give its mailboxes mod-sequences
        above any the lost changes took, then remove the record.
        """
        for path, fd in left_behind(self.root):
            try:
                mailbox_ids = mailboxes_of(fd)
                if mailbox_ids != []:
                    raised = self._writer.run_now(lambda step: self._raise_modseqs(mailbox_ids))
                    log.info("Flag changes may have been lost in a crash: mod-sequences of {count}"
                             " mailboxes raised, clients fetch their flags again", count=raised)
                path.unlink()
            finally:
                os.close(fd)

    def _raise_modseqs(self, mailbox_ids: list[int] | None) -> int:
        """
        RFC 7162 3.1.1: every message of the mailboxes (all when None) gets
        one new mod-sequence, above the clock in microseconds (as a rebuild)
        and ``MARGIN`` above the mailbox's, so a message whose lost change
        took it back to its old flags is reported changed to every client.
        """
        if mailbox_ids is None:
            mailbox_ids = [row[0] for row in self._db.execute("SELECT id FROM mailboxes")]
        raised = 0
        for mailbox_id in mailbox_ids:
            row = self._db.execute("SELECT highestmodseq FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()
            if row is None:
                continue
            modseq = max(rebuilt_modseq(), row[0] + MARGIN)
            self._db.execute("UPDATE messages SET modseq = ? WHERE mailbox_id = ?", (modseq, mailbox_id))
            self._db.execute("UPDATE mailboxes SET highestmodseq = ? WHERE id = ?", (modseq, mailbox_id))
            raised += 1
        return raised

    # -- rebuilding the index from the files --------------------------------

    def rebuild_index(self) -> dict[str, int]:
        """Run at start-up, before any other write: see ``_rebuild``."""
        return self._writer.run_now(self._rebuild)

    def _rebuild(self, step) -> dict[str, int]:
        """
        Recreate every mailbox and message row from mail/.  UIDs, UIDVALIDITY
        and names come from the files, so POP3 UIDLs stay the same; flags,
        which live only in the index, start afresh.

        RFC 7162 3.1.1: a mailbox's mod-sequence never goes down, or a
        CONDSTORE/QRESYNC client would miss changes.  The old values are lost
        with the index, so the rebuilt ones start from the clock in
        microseconds, above any count of changes one index can have made
        (and above an earlier rebuild's start).
        """
        counts = {"mailboxes": 0, "messages": 0}
        highest_uidvalidity = 0
        modseq = rebuilt_modseq()
        for directory in sorted(self._mail.iterdir(), key=lambda p: p.name):
            meta_path = directory / "mailbox.json"
            if not directory.name.isdigit() or not meta_path.exists():
                continue
            meta = json.loads(meta_path.read_text())
            mailbox_id = int(directory.name)
            self._drop_mailbox_rows(mailbox_id)
            uids = sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())
            uidnext = max(uids[-1] if uids else 0, meta.get("uid_floor", 0)) + 1
            self._db.execute(
                "INSERT INTO mailboxes (id, user, name, uidvalidity, uidnext, highestmodseq,"
                " first_recent_uid, special_use) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (mailbox_id, meta["user"], meta["name"], meta["uidvalidity"], uidnext, modseq, uidnext,
                 meta.get("special_use")),
            )
            highest_uidvalidity = max(highest_uidvalidity, meta["uidvalidity"])
            for uid in uids:
                body_path = directory / str(uid)
                with open(body_path, "rb") as f:
                    structure = message.parse(f)
                stat = body_path.stat()
                internaldate = datetime.datetime.fromtimestamp(int(stat.st_mtime)).astimezone()
                self._insert_message(mailbox_id, uid, (), internaldate, stat.st_size, modseq, structure)
                counts["messages"] += 1
            counts["mailboxes"] += 1
        self._raise_uidvalidity_counter(highest_uidvalidity)
        return counts
