"""
What the SQLite store does besides serving sessions: migration with given
UIDVALIDITY and UIDs (IImportableStore), the sweep at start that puts right
what a crash left, and rebuilding the index from the body files.  A mixin of
L{SQLiteStore}: its writes are requests to the same writer, over the same
file layout; what runs at start (the sweep, a rebuild, a recovery) runs in
write transactions on the opening thread, before the writer thread starts.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import time
from pathlib import Path

import attrs
from twisted.internet import defer
from twisted.logger import Logger

from gateway.durable import create_slot_file, read_slot_file, write_atomic
from gateway.store.interfaces import MailboxExists, UidNotAvailable
from gateway.store.model import UID_MAX
from gateway.store.names import check_name
from gateway.store.sqlite.rows import usage_drift
from gateway.store.sqlite.synchronous import deferred
from gateway.store.sqlite.unsynced import MARGIN, UID_MARGIN, left_behind, mailboxes_of

log = Logger()

# A temporary file younger than this may belong to a delivery in progress
# in another process (bodies are spooled before the write lock is taken).
TMP_GRACE_SECONDS = 3600


def rebuilt_modseq() -> int:
    return int(time.time() * 1_000_000)


def body_uids(directory: Path) -> dict[int, Path]:
    """UID -> path of the body files of a mailbox directory."""
    return {int(path.name): path for path in directory.iterdir() if path.name.isdigit()}


def _remove_if_stale(path: Path, now: float) -> list[str]:
    if path.is_file() and now - path.stat().st_mtime > TMP_GRACE_SECONDS:
        path.unlink(missing_ok=True)
        return [f"removed {path}, a temporary file a crash left"]
    return []


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
            self._record_uidnext(mailbox_id, uidnext)
            return uidnext

        return self._writer.submit(run)

    # -- the sweep at start ---------------------------------------------------

    def sweep(self) -> list[str]:
        """
        Make the files say what the index committed, after a crash; one
        mailbox per write transaction, so a concurrent ``gateway deliver``
        waits for at most one, and never finds its own uncommitted body
        taken (it renames and commits under that same lock).  Each thing done
        (and the interrupted expunges finished when the store was opened) is
        logged and returned as a line:

          - UIDNEXT is raised above every row and to the recorded one;
          - a body whose UID the index records as expunged is removed (a
            crash between the commit of an expunge or a move and the unlink
            of its source: the message is at its destination or was deleted);
          - a body at or above UIDNEXT is removed: no commit ever took it (a
            crash between its rename into place and the commit of an append,
            copy or move), so it was never acknowledged, or it is still at
            its source;
          - a row whose body file is gone is expunged (a power cut between
            a commit and the fsync of the directory beside it, before the
            message was acknowledged; else the file was lost: either way
            the message cannot be served);
          - a mailbox directory the index does not know is removed (a crash
            between DELETE's commit and the removal, or during a CREATE that
            never committed);
          - a missing or unreadable ``uidnext`` slot file is made again, and
            temporary files older than an hour are removed;
          - a user's quota usage that is not what the mailboxes hold (an
            index edited by hand) is counted again.

        A body the index knows nothing of below UIDNEXT is left alone and
        logged: ``gateway check`` reports it for a human.  A mailbox whose
        directory or mailbox.json is missing is left alone too (a file
        system not mounted must not empty the index).
        """
        now = time.time()
        recovered, self._recovered = self._recovered, []
        recovered += self._finish_interrupted_expunges()
        done = []
        for path in sorted([*self._tmp.iterdir(), *self.root.glob("*.tmp")]):
            done += _remove_if_stale(path, now)
        for (mailbox_id,) in self._db.execute("SELECT id FROM mailboxes ORDER BY id").fetchall():
            done += self._sweep_mailbox(mailbox_id, now)
        with self._write():
            known = {str(row[0]) for row in self._db.execute("SELECT id FROM mailboxes")}
            for directory in sorted(self._mail.iterdir()):
                if directory.name.isdigit() and directory.name not in known:
                    shutil.rmtree(directory)
                    done.append(f"removed mail/{directory.name}, a mailbox directory the index does not know")
            for user, recorded, (storage, messages) in usage_drift(self._db):
                self._db.execute("INSERT OR REPLACE INTO quota_usage (user, storage, messages) VALUES (?, ?, ?)",
                                 (user, storage, messages))
                done.append(f"counted the quota usage of {user} again: {messages} messages, {storage} octets")
        for line in done:
            log.info("store sweep: {line}", line=line)
        return recovered + done

    def _sweep_mailbox(self, mailbox_id: int, now: float) -> list[str]:
        directory = self._mailbox_dir(mailbox_id)
        label = f"mail/{mailbox_id}"
        if not (directory / "mailbox.json").is_file():
            log.warn("store sweep: {label} has no mailbox.json; left alone", label=label)
            return []
        done = []
        modseq = None
        with self._write() as step:
            row = self._db.execute("SELECT uidnext FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()
            if row is None:
                return []  # deleted meanwhile
            rows = {uid for (uid,) in self._db.execute("SELECT uid FROM messages WHERE mailbox_id = ?", (mailbox_id,))}
            uidnext = max(row[0], max(rows, default=0) + 1, self._recorded_uidnext(mailbox_id))
            if uidnext > row[0]:
                self._db.execute("UPDATE mailboxes SET uidnext = ? WHERE id = ?", (uidnext, mailbox_id))
                done.append(f"raised UIDNEXT of {label} to {uidnext}")
            slot = directory / "uidnext"
            if not slot.exists() or read_slot_file(slot) is None:
                create_slot_file(slot, b"%d" % uidnext)
                done.append(f"made {label}/uidnext")
            files = body_uids(directory)
            highest = max(files, default=0)
            for uid in sorted(files.keys() - rows):
                expunged = self._db.execute(
                    "SELECT 1 FROM expunged WHERE mailbox_id = ? AND uid = ?", (mailbox_id, uid)
                ).fetchone()
                if expunged:
                    if uid == highest:
                        # What a rebuild would take UIDNEXT from goes: an
                        # expunge that failed to record it left this body.
                        self._record_uidnext(mailbox_id, uidnext)
                    files[uid].unlink(missing_ok=True)
                    done.append(f"removed {label}/{uid}, the body of an expunged or moved message")
                elif uid >= uidnext:
                    files[uid].unlink(missing_ok=True)
                    done.append(f"removed {label}/{uid}, a body no commit took")
                else:
                    log.warn("store sweep: {label}/{uid} is below UIDNEXT and unknown to the index; left for"
                             " `gateway check`", label=label, uid=uid)
            missing = sorted(rows - files.keys())
            if missing:
                removed, modseq = self._expunge(step, mailbox_id, missing)
                done.append(f"expunged UID {' '.join(map(str, removed))} of {label}, whose body files are gone")
            for path in sorted(directory.glob("*.tmp")):
                done += _remove_if_stale(path, now)
        if modseq is not None:
            self._announce({mailbox_id: modseq}, ())
        return done

    # -- flag changes a crash lost ----------------------------------------------

    def recover_unsynced(self) -> None:
        """
        At start-up: for each record of unsynced changes a crashed process
        left (``unsynced.py``), give its mailboxes mod-sequences and a
        UIDNEXT above any the lost changes took, then remove the record.
        """
        for path, fd in left_behind(self.root):
            try:
                mailbox_ids = mailboxes_of(fd)
                if mailbox_ids != []:
                    with self._write():
                        raised = self._raise_counters(mailbox_ids)
                    log.info("Changes may have been lost in a crash: mod-sequences and UIDNEXT of {count}"
                             " mailboxes raised, clients fetch their flags again", count=raised)
                path.unlink()
            finally:
                os.close(fd)

    def _raise_counters(self, mailbox_ids: list[int] | None) -> int:
        """
        RFC 7162 3.1.1: every message of the mailboxes (all when None) gets
        one new mod-sequence, above the clock in microseconds (as a rebuild)
        and ``MARGIN`` above the mailbox's, so a message whose lost change
        took it back to its old flags, or which came back from a lost
        expunge, is reported changed to every client.  RFC 3501 2.3.1.1:
        UIDNEXT goes ``UID_MARGIN`` up (no further than the last UID), and a
        rebuild keeps it, so no UID of a lost message is given again.
        """
        if mailbox_ids is None:
            mailbox_ids = [row[0] for row in self._db.execute("SELECT id FROM mailboxes")]
        raised = 0
        for mailbox_id in mailbox_ids:
            row = self._db.execute("SELECT highestmodseq, uidnext FROM mailboxes WHERE id = ?",
                                   (mailbox_id,)).fetchone()
            if row is None:
                continue
            modseq = max(rebuilt_modseq(), row[0] + MARGIN)
            uidnext = min(row[1] + UID_MARGIN, UID_MAX + 1)
            self._db.execute("UPDATE messages SET modseq = ? WHERE mailbox_id = ?", (modseq, mailbox_id))
            self._db.execute("UPDATE mailboxes SET highestmodseq = ?, uidnext = ? WHERE id = ?",
                             (modseq, uidnext, mailbox_id))
            self._record_uidnext(mailbox_id, uidnext)
            raised += 1
        return raised

    # -- rebuilding the index from the files --------------------------------

    def rebuild_index(self) -> dict[str, int]:
        """
        Recreate every mailbox and message row from mail/.  UIDs, UIDVALIDITY
        and names come from the files, so POP3 UIDLs stay the same; flags,
        which live only in the index, start afresh.  UIDNEXT is above the
        highest body and never below the recorded one (the ``uidnext`` slot
        file), so no UID given out before, expunged ones included, is given
        out again.

        Every body file counts as committed: the sweep at each start of the
        server removed what a crash left, so the files say what the index
        said.  Only an index lost in the very crash that left an uncommitted
        body (never acknowledged) or the source of a move between its commit
        and its unlink would bring that body back.

        RFC 7162 3.1.1: a mailbox's mod-sequence never goes down, or a
        CONDSTORE/QRESYNC client would miss changes.  The old values are lost
        with the index, so the rebuilt ones start from the clock in
        microseconds, above any count of changes one index can have made
        (and above an earlier rebuild's start).
        """
        counts = {"mailboxes": 0, "messages": 0}
        highest_uidvalidity = 0
        modseq = rebuilt_modseq()
        with self._write():
            for directory in sorted(self._mail.iterdir(), key=lambda p: p.name):
                meta_path = directory / "mailbox.json"
                if not directory.name.isdigit() or not meta_path.exists():
                    continue
                meta = json.loads(meta_path.read_text())
                mailbox_id = int(directory.name)
                self._drop_mailbox_rows(mailbox_id)
                uids = sorted(body_uids(directory))
                uidnext = max(uids[-1] + 1 if uids else 1, self._recorded_uidnext(mailbox_id))
                self._db.execute(
                    "INSERT INTO mailboxes (id, user, name, uidvalidity, uidnext, highestmodseq,"
                    " first_recent_uid, special_use) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (mailbox_id, meta["user"], meta["name"], meta["uidvalidity"], uidnext, modseq, uidnext,
                     meta.get("special_use")),
                )
                highest_uidvalidity = max(highest_uidvalidity, meta["uidvalidity"])
                for uid in uids:
                    # Its structure is parsed when a reader first asks, as after a delivery.
                    stat = (directory / str(uid)).stat()
                    internaldate = datetime.datetime.fromtimestamp(int(stat.st_mtime)).astimezone()
                    self._insert_message(mailbox_id, uid, (), internaldate, stat.st_size, modseq)
                    counts["messages"] += 1
                counts["mailboxes"] += 1
            self._raise_uidvalidity_counter(highest_uidvalidity)
        return counts
