"""
Users, mailboxes and subscriptions in the SQLite store: the UIDVALIDITY
counter, creating, deleting and renaming mailboxes (their directories and
``mailbox.json`` kept in step with the index), subscriptions.  A mixin of
L{SQLiteStore}: writes are requests to its writer, reads answer at once.
"""

from __future__ import annotations

import shutil
import time

from gateway.durable import create_slot_file, fsync_dir, write_atomic
from gateway.store.interfaces import InvalidMailboxName, MailboxExists, NoSuchMailbox, NoSuchUser
from gateway.store.model import DEFAULT_SPECIAL_USE, HIERARCHY_SEPARATOR, UID_MAX, MailboxInfo, QuotaUsage
from gateway.store.names import canonical_name, check_name
from gateway.store.sqlite.synchronous import deferred


class MailboxesMixin:
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

        def run(step):
            if self._mailbox_row("user = ? AND name = 'INBOX'", (user,)) is None:
                self._create(user, "INBOX", None)
                self._subscribe(user, "INBOX")
                for name, special_use in DEFAULT_SPECIAL_USE:
                    if self._mailbox_row("user = ? AND name = ?", (user, name)) is None:
                        self._create(user, name, special_use)
                        self._subscribe(user, name)

        return self._writer.submit(run)

    @deferred
    def delete_user(self, user):
        def run(step):
            ids = [row[0] for row in self._db.execute("SELECT id FROM mailboxes WHERE user = ?", (user,))]
            for mailbox_id in ids:
                self._drop_mailbox_rows(mailbox_id)
            self._db.execute("DELETE FROM subscriptions WHERE user = ?", (user,))
            self._db.execute("DELETE FROM quota_usage WHERE user = ?", (user,))
            for mailbox_id in ids:
                step.after_commit(lambda path=self._mailbox_dir(mailbox_id): shutil.rmtree(path, ignore_errors=True))

        return self._writer.submit(run, frees_space=True)

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
    def quota_usage(self, user):
        row = self._db.execute("SELECT storage, messages FROM quota_usage WHERE user = ?", (user,)).fetchone()
        return QuotaUsage() if row is None else QuotaUsage(*row)

    @deferred
    def get_mailbox(self, user, name):
        return self._require_mailbox(user, name)

    @deferred
    def create_mailbox(self, user, name, special_use=None):
        name = check_name(name)

        def run(step):
            info = self._create(user, name, special_use)
            step.notify_mailboxes(user)
            return info

        return self._writer.submit(run)

    def _drop_mailbox_rows(self, mailbox_id: int) -> None:
        for table, column in (
            ("messages", "mailbox_id"), ("message_structures", "mailbox_id"), ("expunged", "mailbox_id"), ("expunging", "mailbox_id"),
            ("pop3_devices", "mailbox_id"), ("pop3_device_deletions", "mailbox_id"), ("mailboxes", "id"),
        ):
            self._db.execute(f"DELETE FROM {table} WHERE {column} = ?", (mailbox_id,))

    @deferred
    def delete_mailbox(self, user, name):
        name = canonical_name(name)
        if name == "INBOX":
            raise InvalidMailboxName("INBOX cannot be deleted")

        def run(step):
            info = self._require_mailbox(user, name)
            self._drop_mailbox_rows(info.id)
            step.after_commit(lambda: shutil.rmtree(self._mailbox_dir(info.id), ignore_errors=True))
            step.notify(info.id, info.highestmodseq + 1)
            step.notify_mailboxes(user)

        return self._writer.submit(run, frees_space=True)

    @deferred
    def rename_mailbox(self, user, old_name, new_name):
        old_name = canonical_name(old_name)
        new_name = check_name(new_name)

        def run(step):
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
            names = dict(self._db.execute(
                "SELECT id, name FROM mailboxes WHERE id IN (%s)" % ",".join("?" * len(moves)),
                [mailbox_id for mailbox_id, _ in moves],
            ).fetchall())
            for mailbox_id, name in moves:
                self._db.execute("UPDATE mailboxes SET name = ? WHERE id = ?", (name, mailbox_id))
                step.on_rollback(lambda box=mailbox_id: self._write_mailbox_meta(box, name=names[box]))
                self._write_mailbox_meta(mailbox_id, name=name)
            if old_name == "INBOX":
                self._create(user, "INBOX", None)
                step.notify(source.id, source.highestmodseq)
            step.notify_mailboxes(user)

        return self._writer.submit(run)

    def _subscribe(self, user: str, name: str) -> None:
        self._db.execute("INSERT OR IGNORE INTO subscriptions (user, name) VALUES (?, ?)", (user, name))

    @deferred
    def set_subscribed(self, user, name, subscribed):
        name = canonical_name(name)

        def run(step):
            if subscribed:
                self._subscribe(user, name)
            else:
                self._db.execute("DELETE FROM subscriptions WHERE user = ? AND name = ?", (user, name))

        return self._writer.submit(run)

    @deferred
    def list_subscriptions(self, user):
        return [row[0] for row in self._db.execute("SELECT name FROM subscriptions WHERE user = ? ORDER BY name", (user,))]
