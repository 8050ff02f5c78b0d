"""
The embedded store: an index in SQLite, message bodies as immutable files.

Layout under the store root::

    index.sqlite            the index (WAL); can be rebuilt from the rest
    uidvalidity             last UIDVALIDITY issued (a counter, not the clock)
    reserve                 room kept for index writes on a full disk (reserve.py)
    tmp/                    bodies being written
    mail/<id>/mailbox.json  owner, name, UIDVALIDITY, special use
    mail/<id>/uidnext       a UIDNEXT a rebuild must not go below, in a slot
                            file (durable.py) rewritten in place
    mail/<id>/<uid>         one body per file, CRLF, never changed

Mailbox names never become paths: directories are named by the index's id.
Durability (DESIGN.md): a body is written to tmp/, fsynced, renamed into
place, and only then is the index row committed; the caller is answered after
that commit.  A crash leaves no message or a whole one.  The UID a message
gets is decided inside the write transaction, so two processes delivering at
once never share one.

Which body files count: those the index names.  A crash can leave others (a
body renamed in before a commit that never came, the source of a committed
move before its unlink); the serving process sweeps them at start, under the
write lock (maintenance.py), so the files say what the index committed and a
rebuild from them gives the same mailboxes back.  An expunge commits its
UIDs as under way, unlinks their bodies (freeing the room its commit needs on
a full disk, as Maildir's unlink does), then drops the rows; whatever a crash
interrupts is finished when the store is next opened.

Every call is synchronous underneath (SQLite is local and fast) and returns an
already-fired Deferred, to honour the backend-neutral contract.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from twisted.logger import Logger
from zope.interface import implementer

from gateway.mail import message
from gateway.durable import create_slot_file, fsync_dir, read_slot_file, write_atomic, write_slot_file
from gateway.store.changes import ChangeFeed
from gateway.store.interfaces import (
    IGroupCommitStore,
    IImportableStore,
    IMailStore,
    InvalidMailboxName,
    MailboxExists,
    MessageExpunged,
    NoSuchMailbox,
    NoSuchUser,
    TemporaryFailure,
    UidNotAvailable,
)
from gateway.store.model import (
    DEFAULT_SPECIAL_USE,
    HIERARCHY_SEPARATOR,
    UID_MAX,
    ChangeSet,
    MailboxInfo,
    MessageRecord,
)
from gateway.store.names import canonical_name, check_name
from gateway.store.sqlite.maintenance import MaintenanceMixin
from gateway.store.sqlite.reserve import DiskFull, Reserve
from gateway.store.sqlite.rows import (
    MEMO_LIMIT,
    RECORD_COLUMNS,
    SCHEMA,
    STRUCTURE_COLUMNS,
    flag_set,
    flags_text,
    part_to_json,
    record_from_row,
    structure_from_row,
)
from gateway.store.sqlite.synchronous import deferred

log = Logger()

_CHUNK = 256 * 1024


def _source_chunks(source) -> Iterable[bytes]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        yield bytes(source)
        return
    while chunk := source.read(_CHUNK):
        yield chunk


@implementer(IMailStore, IImportableStore, IGroupCommitStore)
class SQLiteStore(MaintenanceMixin):
    """
    The embedded default backend.  ``path`` is the store root directory.
    ``serving`` is for the server's own long-lived store: opening it sweeps
    what a crash left (L{sweep}) and keeps the disk reserve.
    """

    def __init__(self, path, reactor=None, poll_interval: float = 0.5, serving: bool = False):
        self.root = Path(path)
        self._mail = self.root / "mail"
        self._tmp = self.root / "tmp"
        self._reserve = Reserve(self.root / "reserve")
        # What opening the store put right, until a sweep reports it.
        self._recovered: list[str] = []
        for directory in (self.root, self._mail, self._tmp):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        index = self.root / "index.sqlite"
        fresh = not index.exists()
        self._db = sqlite3.connect(index, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._data_version = None
        # What changes_since answered, per (mailbox id, modseq): one delivery
        # wakes every session idling on the mailbox with the same question.
        # Valid until a commit: ours (``_write``) or another process's
        # (``PRAGMA data_version`` moves).
        self._changes_memo: dict[tuple[int, int], ChangeSet] = {}
        # Mailboxes with no \\Recent message left to claim, under the same rule.
        self._nothing_recent: set[int] = set()
        self._memo_version = None
        # With a reactor, data_version is read once per reactor turn: a
        # delivery wakes a thousand sessions in one turn.
        self._reactor = reactor
        self._version_fresh = False
        self._mail_path = str(self._mail)
        self.changes = ChangeFeed(reactor, self._poll_highestmodseq, poll_interval)
        if serving:
            self._reserve.keep()
        if fresh and any(self._mail.iterdir()):
            self.rebuild_index()
        else:
            # Cheap when there is nothing to finish: every process does it.
            self._recovered = self._finish_interrupted_expunges()
            if serving:
                self.sweep()

    def close(self) -> None:
        self.changes.stop_polling()
        self._db.close()

    # -- transactions -------------------------------------------------------

    def _write(self):
        self._reserve.before_index_write()
        return _WriteTransaction(self._db, self._forget)

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

    # -- UIDVALIDITY --------------------------------------------------------

    def _next_uidvalidity(self) -> int:
        """
        A UIDVALIDITY this store never issued: a persisted counter, raised to
        the clock when the clock is ahead (so values also differ across
        stores, as Dovecot's do).  Call inside a write transaction, which
        serialises every process using this store.
        """
        counter = self.root / "uidvalidity"
        try:
            last = int(counter.read_text().strip() or 0)
        except FileNotFoundError:
            last = 0
        value = max(last + 1, int(time.time()))
        if value > UID_MAX:
            value = last + 1
        write_atomic(counter, b"%d\n" % value)
        return value

    # -- mailbox metadata files ---------------------------------------------

    def _mailbox_dir(self, mailbox_id: int) -> Path:
        return self._mail / str(mailbox_id)

    def _write_mailbox_meta(self, mailbox_id: int, **fields) -> None:
        """Identity fields of mailbox.json, rewritten whole (new blocks: not for deleting)."""
        directory = self._mailbox_dir(mailbox_id)
        meta_path = directory / "mailbox.json"
        try:
            meta = json.loads(meta_path.read_text())
        except FileNotFoundError:
            meta = {}
        meta.update(fields)
        write_atomic(meta_path, json.dumps(meta, sort_keys=True).encode())

    def _recorded_uidnext(self, mailbox_id: int) -> int:
        """
        The UIDNEXT a rebuild will not go below: from the uidnext slot file,
        or from the ``uid_floor`` of an older store's mailbox.json.
        """
        directory = self._mailbox_dir(mailbox_id)
        try:
            recorded = int(read_slot_file(directory / "uidnext") or 1)
        except FileNotFoundError:
            recorded = 1
        try:
            floor = json.loads((directory / "mailbox.json").read_text()).get("uid_floor", 0)
        except (FileNotFoundError, ValueError):
            floor = 0
        return max(recorded, floor + 1)

    def _record_uidnext(self, mailbox_id: int, uidnext: int) -> None:
        """
        Make sure no rebuild hands out a UID below ``uidnext`` again, even
        once the bodies of the highest UIDs are gone: rewritten in place, so
        this works on a full disk; made only where an older store has none.
        """
        if self._recorded_uidnext(mailbox_id) >= uidnext:
            return
        path = self._mailbox_dir(mailbox_id) / "uidnext"
        try:
            write_slot_file(path, b"%d" % uidnext)
        except FileNotFoundError:
            create_slot_file(path, b"%d" % uidnext)

    # -- users and mailboxes ------------------------------------------------

    def _mailbox_row(self, where: str, args) -> MailboxInfo | None:
        row = self._db.execute(
            "SELECT id, user, name, uidvalidity, uidnext, highestmodseq, special_use"
            " FROM mailboxes WHERE " + where,
            args,
        ).fetchone()
        if row is None:
            return None
        return MailboxInfo(*row)

    def _require_mailbox(self, user: str, name: str) -> MailboxInfo:
        info = self._mailbox_row("user = ? AND name = ?", (user, canonical_name(name)))
        if info is None:
            raise NoSuchMailbox(name)
        return info

    def _create(self, user: str, name: str, special_use: str | None) -> MailboxInfo:
        if self._mailbox_row("user = ? AND name = ?", (user, name)) is not None:
            raise MailboxExists(name)
        uidvalidity = self._next_uidvalidity()
        cursor = self._db.execute(
            "INSERT INTO mailboxes (user, name, uidvalidity, uidnext, highestmodseq,"
            " first_recent_uid, special_use) VALUES (?, ?, ?, 1, 1, 1, ?)",
            (user, name, uidvalidity, special_use),
        )
        mailbox_id = cursor.lastrowid
        directory = self._mailbox_dir(mailbox_id)
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(mode=0o700)
        create_slot_file(directory / "uidnext", b"1")
        self._write_mailbox_meta(
            mailbox_id,
            user=user,
            name=name,
            uidvalidity=uidvalidity,
            special_use=special_use,
        )
        fsync_dir(self._mail)
        return MailboxInfo(mailbox_id, user, name, uidvalidity, 1, 1, special_use)

    @deferred
    def ensure_user(self, user):
        if self._mailbox_row("user = ? AND name = 'INBOX'", (user,)) is not None:
            return None
        with self._write():
            if self._mailbox_row("user = ? AND name = 'INBOX'", (user,)) is None:
                self._create(user, "INBOX", None)
                self._subscribe(user, "INBOX")
                for name, special_use in DEFAULT_SPECIAL_USE:
                    if self._mailbox_row("user = ? AND name = ?", (user, name)) is None:
                        self._create(user, name, special_use)
                        self._subscribe(user, name)
        return None

    @deferred
    def delete_user(self, user):
        ids = [row[0] for row in self._db.execute("SELECT id FROM mailboxes WHERE user = ?", (user,))]
        with self._write():
            for mailbox_id in ids:
                self._drop_mailbox_rows(mailbox_id)
            self._db.execute("DELETE FROM subscriptions WHERE user = ?", (user,))
        for mailbox_id in ids:
            shutil.rmtree(self._mailbox_dir(mailbox_id), ignore_errors=True)
        return None

    @deferred
    def list_mailboxes(self, user):
        rows = self._db.execute(
            "SELECT id, user, name, uidvalidity, uidnext, highestmodseq, special_use"
            " FROM mailboxes WHERE user = ? ORDER BY name",
            (user,),
        ).fetchall()
        if not rows:
            raise NoSuchUser(user)
        return [MailboxInfo(*row) for row in rows]

    @deferred
    def get_mailbox(self, user, name):
        return self._require_mailbox(user, name)

    @deferred
    def create_mailbox(self, user, name, special_use=None):
        name = check_name(name)
        with self._write():
            return self._create(user, name, special_use)

    def _drop_mailbox_rows(self, mailbox_id: int) -> None:
        for table, column in (
            ("messages", "mailbox_id"), ("expunged", "mailbox_id"), ("expunging", "mailbox_id"), ("mailboxes", "id")
        ):
            self._db.execute(f"DELETE FROM {table} WHERE {column} = ?", (mailbox_id,))

    @deferred
    def delete_mailbox(self, user, name):
        name = canonical_name(name)
        if name == "INBOX":
            raise InvalidMailboxName("INBOX cannot be deleted")
        with self._write():
            info = self._require_mailbox(user, name)
            self._drop_mailbox_rows(info.id)
        shutil.rmtree(self._mailbox_dir(info.id), ignore_errors=True)
        self.changes.notify(info.id, info.highestmodseq + 1)
        return None

    @deferred
    def rename_mailbox(self, user, old_name, new_name):
        old_name = canonical_name(old_name)
        new_name = check_name(new_name)
        with self._write():
            source = self._require_mailbox(user, old_name)
            if self._mailbox_row("user = ? AND name = ?", (user, new_name)) is not None:
                raise MailboxExists(new_name)
            if old_name == "INBOX":
                # RFC 3501 6.3.5: INBOX's messages move to the new name, INBOX
                # stays (empty, so with a new UIDVALIDITY) and its inferiors
                # are not renamed.
                moves = [(source.id, new_name)]
            else:
                prefix = old_name + HIERARCHY_SEPARATOR
                moves = [
                    (mailbox_id, new_name + name[len(old_name) :])
                    for mailbox_id, name in self._db.execute(
                        "SELECT id, name FROM mailboxes WHERE user = ? AND (name = ? OR substr(name, 1, ?) = ?)",
                        (user, old_name, len(prefix), prefix),
                    ).fetchall()
                ]
            targets = [name for _, name in moves]
            clash = self._db.execute(
                "SELECT name FROM mailboxes WHERE user = ? AND name IN (%s)" % ",".join("?" * len(targets)),
                (user, *targets),
            ).fetchone()
            if clash is not None:
                raise MailboxExists(clash[0])
            for mailbox_id, name in moves:
                self._db.execute("UPDATE mailboxes SET name = ? WHERE id = ?", (name, mailbox_id))
                self._write_mailbox_meta(mailbox_id, name=name)
            if old_name == "INBOX":
                self._create(user, "INBOX", None)
        if old_name == "INBOX":
            self.changes.notify(source.id, source.highestmodseq)
        return None

    def _subscribe(self, user: str, name: str) -> None:
        self._db.execute("INSERT OR IGNORE INTO subscriptions (user, name) VALUES (?, ?)", (user, name))

    @deferred
    def set_subscribed(self, user, name, subscribed):
        name = canonical_name(name)
        with self._write():
            if subscribed:
                self._subscribe(user, name)
            else:
                self._db.execute("DELETE FROM subscriptions WHERE user = ? AND name = ?", (user, name))
        return None

    @deferred
    def list_subscriptions(self, user):
        return [row[0] for row in self._db.execute("SELECT name FROM subscriptions WHERE user = ? ORDER BY name", (user,))]

    # -- messages -----------------------------------------------------------

    def _spool(self, source) -> Path:
        """Write the message, CRLF-normalised, to tmp/ and fsync it."""
        try:
            self._reserve.before_delivery()
        except DiskFull as e:
            raise TemporaryFailure(str(e)) from None
        fd, name = tempfile.mkstemp(dir=self._tmp, prefix="msg.")
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in message.crlf_chunks(_source_chunks(source)):
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            path.unlink(missing_ok=True)
            raise TemporaryFailure(f"cannot write message: {os.strerror(e.errno or errno.EIO)}") from e
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path

    def _insert_message(self, mailbox_id, uid, flags, internaldate, size, modseq, structure) -> None:
        offset = internaldate.utcoffset() or datetime.timedelta(0)
        self._db.execute(
            "INSERT INTO messages (mailbox_id, uid, flags, internaldate, tzoffset, size, modseq,"
            " envelope, body, bodystructure, header, parts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                mailbox_id,
                uid,
                flags_text(flags),
                int(internaldate.timestamp()),
                int(offset.total_seconds() // 60),
                size,
                modseq,
                structure.envelope,
                structure.body,
                structure.bodystructure,
                structure.header,
                json.dumps(part_to_json(structure.root)),
            ),
        )

    def _counters(self, mailbox_id: int) -> tuple[int, int]:
        row = self._db.execute("SELECT uidnext, highestmodseq FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()
        if row is None:
            raise NoSuchMailbox(str(mailbox_id))
        return row

    @deferred
    def append(self, mailbox_id, source, flags=frozenset(), internaldate=None):
        return self._append(mailbox_id, source, flags, internaldate, None)

    def _append(self, mailbox_id, source, flags, internaldate, wanted_uid: int | None) -> MessageRecord:
        if internaldate is None:
            internaldate = datetime.datetime.now().astimezone().replace(microsecond=0)
        spooled = self._spool(source)
        final = None
        try:
            size = spooled.stat().st_size
            with open(spooled, "rb") as f:
                structure = message.parse(f)
            with self._write():
                uidnext, modseq = self._counters(mailbox_id)
                if wanted_uid is not None:
                    if wanted_uid < uidnext:
                        raise UidNotAvailable(f"UID {wanted_uid} is below UIDNEXT {uidnext}")
                    uidnext = wanted_uid
                modseq += 1
                final = self._mailbox_dir(mailbox_id) / str(uidnext)
                os.replace(spooled, final)
                fsync_dir(final.parent)
                self._insert_message(mailbox_id, uidnext, flags, internaldate, size, modseq, structure)
                self._db.execute(
                    "UPDATE mailboxes SET uidnext = ?, highestmodseq = ? WHERE id = ?",
                    (uidnext + 1, modseq, mailbox_id),
                )
        except OSError as e:
            raise TemporaryFailure(f"cannot store message: {os.strerror(e.errno or errno.EIO)}") from e
        except BaseException:
            if final is not None:
                final.unlink(missing_ok=True)
            raise
        finally:
            spooled.unlink(missing_ok=True)
        self.changes.notify(mailbox_id, modseq)
        return MessageRecord(uid=uidnext, flags=frozenset(flags), internaldate=internaldate, size=size, modseq=modseq)

    @deferred
    def list_messages(self, mailbox_id):
        rows = self._db.execute(
            f"SELECT {RECORD_COLUMNS} FROM messages WHERE mailbox_id = ? ORDER BY uid", (mailbox_id,)
        ).fetchall()
        return [record_from_row(row) for row in rows]

    def _select_uids(self, columns: str, mailbox_id: int, uids) -> list:
        uids = sorted(set(uids))
        if not uids:
            return []
        rows = self._db.execute(
            f"SELECT {columns} FROM messages WHERE mailbox_id = ? AND uid BETWEEN ? AND ? ORDER BY uid",
            (mailbox_id, uids[0], uids[-1]),
        ).fetchall()
        if len(uids) == uids[-1] - uids[0] + 1:
            return rows  # every UID of the range was asked for
        wanted = set(uids)
        return [row for row in rows if row[0] in wanted]

    @deferred
    def get_messages(self, mailbox_id, uids):
        return [
            (record_from_row(row[:6]), structure_from_row(*row[6:]))
            for row in self._select_uids(f"{RECORD_COLUMNS}, {STRUCTURE_COLUMNS}", mailbox_id, uids)
        ]

    @deferred
    def get_structures(self, mailbox_id, uids):
        rows = self._select_uids(f"uid, {STRUCTURE_COLUMNS}", mailbox_id, uids)
        return {row[0]: structure_from_row(*row[1:]) for row in rows}

    @deferred
    def get_records(self, mailbox_id, uids):
        return [record_from_row(row) for row in self._select_uids(RECORD_COLUMNS, mailbox_id, uids)]

    @deferred
    def list_flags(self, mailbox_id):
        rows = self._db.execute("SELECT uid, flags FROM messages WHERE mailbox_id = ? ORDER BY uid", (mailbox_id,))
        return [(uid, flag_set(flags)) for uid, flags in rows]

    @deferred
    def open_message(self, mailbox_id, uid):
        try:
            # A plain string path and no read buffer: FETCH opens thousands of
            # these a second, and every reader takes big reads.
            return open(f"{self._mail_path}/{mailbox_id}/{uid}", "rb", buffering=0)
        except FileNotFoundError:
            raise MessageExpunged(uid) from None

    @deferred
    def store_flags(self, mailbox_id, uids, flags, mode):
        changed, _ = self._store_flags(mailbox_id, uids, flags, mode, None)
        return changed

    def _store_flags(self, mailbox_id, uids, flags, mode, unchangedsince):
        """
        Change flags, all under one write lock, so that with
        ``unchangedsince`` (RFC 7162 3.1.3) nobody changes a message between
        our reading its modseq and our update.  Returns (changed records,
        UIDs refused because they changed after ``unchangedsince``).
        """
        flags = frozenset(flags)
        if mode not in ("set", "add", "remove"):
            raise ValueError(mode)
        with self._write():
            _, modseq = self._counters(mailbox_id)
            modseq += 1
            changed, modified = [], []
            for row in self._select_uids(RECORD_COLUMNS, mailbox_id, uids):
                record = record_from_row(row)
                if unchangedsince is not None and record.modseq > unchangedsince:
                    modified.append(record.uid)
                    continue
                if mode == "set":
                    new = flags
                elif mode == "add":
                    new = record.flags | flags
                else:
                    new = record.flags - flags
                if new != record.flags:
                    changed.append(MessageRecord(record.uid, new, record.internaldate, record.size, modseq))
            if not changed:
                return [], modified
            self._db.executemany(
                "UPDATE messages SET flags = ?, modseq = ? WHERE mailbox_id = ? AND uid = ?",
                [(flags_text(r.flags), modseq, mailbox_id, r.uid) for r in changed],
            )
            self._db.execute("UPDATE mailboxes SET highestmodseq = ? WHERE id = ?", (modseq, mailbox_id))
        self.changes.notify(mailbox_id, modseq)
        return changed, modified

    def _keep_uidnext(self, mailbox_id: int, uidnext: int, going=()) -> None:
        """
        A rebuild takes UIDNEXT from the highest body file: unless the body
        of UID ``uidnext - 1`` stays, record ``uidnext``, so that losing the
        index never hands an expunged UID out again.
        """
        last = uidnext - 1
        stays = last not in going and self._db.execute(
            "SELECT 1 FROM messages WHERE mailbox_id = ? AND uid = ?", (mailbox_id, last)
        ).fetchone()
        if not stays:
            self._record_uidnext(mailbox_id, uidnext)

    def _expunge(self, mailbox_id: int, uids) -> tuple[list[int], int]:
        uidnext, modseq = self._counters(mailbox_id)
        present = [row[0] for row in self._select_uids("uid", mailbox_id, uids)]
        if not present:
            return [], modseq
        modseq += 1
        self._db.executemany(
            "DELETE FROM messages WHERE mailbox_id = ? AND uid = ?", [(mailbox_id, uid) for uid in present]
        )
        self._db.executemany(
            "INSERT OR REPLACE INTO expunged (mailbox_id, uid, modseq) VALUES (?, ?, ?)",
            [(mailbox_id, uid, modseq) for uid in present],
        )
        self._db.execute("UPDATE mailboxes SET highestmodseq = ? WHERE id = ?", (modseq, mailbox_id))
        self._keep_uidnext(mailbox_id, uidnext)
        return present, modseq

    def _unlink_bodies(self, mailbox_id: int, uids) -> None:
        directory = self._mailbox_dir(mailbox_id)
        for uid in uids:
            (directory / str(uid)).unlink(missing_ok=True)

    def _mark_expunging(self, mailbox_id: int, uids) -> None:
        """
        An expunge's first step, inside a write transaction: the UIDs it
        takes, committed before any body goes, and the UIDNEXT a rebuild
        needs if the highest goes.  Small, so it commits on a full disk
        (with the reserve's room).
        """
        present = [row[0] for row in self._select_uids("uid", mailbox_id, uids)]
        if present:
            self._keep_uidnext(mailbox_id, self._counters(mailbox_id)[0], set(present))
            self._db.executemany(
                "INSERT OR IGNORE INTO expunging (mailbox_id, uid) VALUES (?, ?)", [(mailbox_id, uid) for uid in present]
            )

    def _marked_expunging(self, mailbox_id: int) -> list[int]:
        return [uid for (uid,) in self._db.execute(
            "SELECT uid FROM expunging WHERE mailbox_id = ? ORDER BY uid", (mailbox_id,)
        )]

    def _finish_expunging(self, mailbox_id: int) -> tuple[list[int], int | None]:
        """
        An expunge's second step, for whatever is marked in the mailbox: the
        bodies are unlinked, as Maildir does, and only then are the rows
        dropped, so on a full disk the room they free is what this commit
        needs.  A crash between the two steps is finished at the next open
        (L{_finish_interrupted_expunges}): all of an expunge or none of it.
        """
        marked = self._marked_expunging(mailbox_id)
        if not marked:
            return [], None
        self._unlink_bodies(mailbox_id, marked)
        with self._write():
            marked = self._marked_expunging(mailbox_id)
            # Marked by another process since: its bodies go too, before this commit.
            self._unlink_bodies(mailbox_id, marked)
            removed, modseq = self._expunge(mailbox_id, marked)
            self._db.execute("DELETE FROM expunging WHERE mailbox_id = ?", (mailbox_id,))
        return removed, modseq

    def _finish_interrupted_expunges(self) -> list[str]:
        done = []
        for (mailbox_id,) in self._db.execute("SELECT DISTINCT mailbox_id FROM expunging").fetchall():
            removed, _ = self._finish_expunging(mailbox_id)
            done.append(f"finished the expunge of UID {' '.join(map(str, removed))} of mail/{mailbox_id},"
                        " which a crash interrupted")
        for line in done:
            log.info("store: {line}", line=line)
        return done

    @deferred
    def expunge(self, mailbox_id, uids):
        try:
            with self._write():
                self._mark_expunging(mailbox_id, uids)
            removed, modseq = self._finish_expunging(mailbox_id)
        except OSError as e:
            raise TemporaryFailure(f"cannot expunge: {os.strerror(e.errno or errno.EIO)}") from e
        if removed:
            self.changes.notify(mailbox_id, modseq)
        # What else was marked (an expunge a crash interrupted) is told to
        # sessions by the change feed; the caller hears of its own UIDs.
        asked = set(uids)
        return [uid for uid in removed if uid in asked]

    def _copy(self, mailbox_id: int, uids, dest_mailbox_id: int) -> tuple[list[tuple[int, int]], int]:
        rows = self._select_uids(
            f"{RECORD_COLUMNS}, envelope, body, bodystructure, header, parts", mailbox_id, uids
        )
        uidnext, modseq = self._counters(dest_mailbox_id)
        modseq += 1
        pairs = []
        source_dir, dest_dir = self._mailbox_dir(mailbox_id), self._mailbox_dir(dest_mailbox_id)
        for row in rows:
            record = record_from_row(row[:6])
            envelope, body, bodystructure, header, parts = row[6:]
            new_uid = uidnext
            uidnext += 1
            # Bodies never change, so a hard link is a safe copy.
            staged = self._tmp / f"copy.{os.getpid()}.{dest_mailbox_id}.{new_uid}"
            staged.unlink(missing_ok=True)
            try:
                os.link(source_dir / str(record.uid), staged)
            except FileNotFoundError:
                raise MessageExpunged(record.uid) from None
            except OSError:
                shutil.copyfile(source_dir / str(record.uid), staged)
            os.replace(staged, dest_dir / str(new_uid))
            structure = structure_from_row(envelope, body, bodystructure, header, parts)
            self._insert_message(
                dest_mailbox_id, new_uid, record.flags, record.internaldate, record.size, modseq, structure
            )
            pairs.append((record.uid, new_uid))
        if pairs:
            fsync_dir(dest_dir)
            self._db.execute(
                "UPDATE mailboxes SET uidnext = ?, highestmodseq = ? WHERE id = ?",
                (uidnext, modseq, dest_mailbox_id),
            )
        return pairs, modseq

    @deferred
    def copy(self, mailbox_id, uids, dest_mailbox_id):
        with self._write():
            pairs, modseq = self._copy(mailbox_id, uids, dest_mailbox_id)
        if pairs:
            self.changes.notify(dest_mailbox_id, modseq)
        return pairs

    @deferred
    def move(self, mailbox_id, uids, dest_mailbox_id):
        # Linked into the destination, committed, and only then unlinked at
        # the source: a crash at any point leaves the message where the
        # index says it is (a source body the index no longer names is
        # swept at start).
        try:
            with self._write():
                pairs, dest_modseq = self._copy(mailbox_id, uids, dest_mailbox_id)
                removed, source_modseq = self._expunge(mailbox_id, [source for source, _ in pairs])
        except OSError as e:
            raise TemporaryFailure(f"cannot move: {os.strerror(e.errno or errno.EIO)}") from e
        if pairs:
            self._unlink_bodies(mailbox_id, removed)
            self.changes.notify(dest_mailbox_id, dest_modseq)
            self.changes.notify(mailbox_id, source_modseq)
        return pairs

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

    @deferred
    def claim_recent(self, mailbox_id):
        # Every session idling on a mailbox asks after each delivery; only
        # the first has anything to claim, and the others need no write lock.
        self._check_memo()
        if mailbox_id in self._nothing_recent:
            return frozenset()
        row = self._db.execute("SELECT first_recent_uid, uidnext FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()
        if row is not None and row[0] >= row[1]:
            self._nothing_recent.add(mailbox_id)
            return frozenset()
        with self._write():
            row = self._db.execute(
                "SELECT first_recent_uid, uidnext FROM mailboxes WHERE id = ?", (mailbox_id,)
            ).fetchone()
            if row is None:
                raise NoSuchMailbox(str(mailbox_id))
            first, uidnext = row
            if first >= uidnext:
                return frozenset()
            self._db.execute("UPDATE mailboxes SET first_recent_uid = ? WHERE id = ?", (uidnext, mailbox_id))
            uids = self._db.execute(
                "SELECT uid FROM messages WHERE mailbox_id = ? AND uid >= ?", (mailbox_id, first)
            ).fetchall()
        return frozenset(row[0] for row in uids)

    # -- changes by other processes ----------------------------------------

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

    # -- group commit (LMTP) ------------------------------------------------

    @deferred
    def append_many(self, deliveries):
        """
        Several appends under one write transaction: ``deliveries`` is a list
        of (mailbox_id, source) as ``append`` takes them.  Each body is
        spooled and fsynced as ``append`` does, each directory that got one
        is fsynced once, and one COMMIT (one WAL fsync) indexes them all;
        nothing is acknowledged before that commit, as DESIGN.md asks.

        @return: Deferred firing with one item per delivery, in order: its
            L{MessageRecord}, or the exception that refused it
            (L{TemporaryFailure}, L{NoSuchMailbox}); one refused delivery
            does not stop the others.
        """
        outcomes: list = [None] * len(deliveries)
        internaldate = datetime.datetime.now().astimezone().replace(microsecond=0)
        prepared = []
        try:
            for index, (mailbox_id, source) in enumerate(deliveries):
                try:
                    spooled = self._spool(source)
                except TemporaryFailure as e:
                    outcomes[index] = e
                    continue
                try:
                    size = spooled.stat().st_size
                    with open(spooled, "rb") as f:
                        structure = message.parse(f)
                except OSError as e:
                    spooled.unlink(missing_ok=True)
                    outcomes[index] = TemporaryFailure(f"cannot store message: {os.strerror(e.errno or errno.EIO)}")
                    continue
                prepared.append((index, mailbox_id, spooled, size, structure))
            placed, notify = [], {}
            try:
                with self._write():
                    for index, mailbox_id, spooled, size, structure in prepared:
                        try:
                            uidnext, modseq = self._counters(mailbox_id)
                        except NoSuchMailbox as e:
                            outcomes[index] = e
                            continue
                        modseq += 1
                        final = self._mailbox_dir(mailbox_id) / str(uidnext)
                        os.replace(spooled, final)
                        placed.append((index, final))
                        self._insert_message(mailbox_id, uidnext, (), internaldate, size, modseq, structure)
                        self._db.execute(
                            "UPDATE mailboxes SET uidnext = ?, highestmodseq = ? WHERE id = ?",
                            (uidnext + 1, modseq, mailbox_id),
                        )
                        notify[mailbox_id] = modseq
                        outcomes[index] = MessageRecord(
                            uid=uidnext, flags=frozenset(), internaldate=internaldate, size=size, modseq=modseq
                        )
                    for directory in {final.parent for _, final in placed}:
                        fsync_dir(directory)
            except (OSError, TemporaryFailure) as e:
                if isinstance(e, OSError):
                    failure = TemporaryFailure(f"cannot store message: {os.strerror(e.errno or errno.EIO)}")
                    failure.__cause__ = e
                else:
                    failure = e
                # Rolled back: no body stays without its row.
                for _, final in placed:
                    final.unlink(missing_ok=True)
                for index, *_ in prepared:
                    if not isinstance(outcomes[index], NoSuchMailbox):
                        outcomes[index] = failure
                return outcomes
            except BaseException:
                for _, final in placed:
                    final.unlink(missing_ok=True)
                raise
        finally:
            for _, _, spooled, _, _ in prepared:
                spooled.unlink(missing_ok=True)
        for mailbox_id, modseq in notify.items():
            self.changes.notify(mailbox_id, modseq)
        return outcomes

    # -- IMAP extensions ----------------------------------------------------

    @deferred
    def count_recent(self, mailbox_id):
        row = self._db.execute("SELECT first_recent_uid FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()
        if row is None:
            raise NoSuchMailbox(str(mailbox_id))
        return self._db.execute(
            "SELECT count(*) FROM messages WHERE mailbox_id = ? AND uid >= ?", (mailbox_id, row[0])
        ).fetchone()[0]

    @deferred
    def store_flags_unchanged_since(self, mailbox_id, uids, flags, mode, unchangedsince):
        return self._store_flags(mailbox_id, uids, flags, mode, unchangedsince)


class _WriteTransaction:
    """
    BEGIN IMMEDIATE ... COMMIT: takes SQLite's write lock up front, so the
    reads that decide a UID or modseq cannot race another process.
    """

    def __init__(self, db: sqlite3.Connection, on_change):
        self._db = db
        self._on_change = on_change
        self._changes_before = db.total_changes

    def __enter__(self):
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise TemporaryFailure(f"index is busy: {e}") from e
        return self

    def __exit__(self, exc_type, exc, tb):
        if self._db.total_changes != self._changes_before:
            self._on_change()
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as e:
                # SQLite has rolled back already after some failures (a full
                # disk): ROLLBACK then would fail in turn.
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise TemporaryFailure(f"cannot commit: {e}") from e
            return False
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
        if isinstance(exc, sqlite3.OperationalError):
            # "database or disk is full", "disk I/O error", a lock held too long.
            raise TemporaryFailure(f"index write failed: {exc}") from exc
        return False
