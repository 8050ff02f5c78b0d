"""
The PostgreSQL store's users and mailboxes: making, listing, renaming and
deleting them, subscriptions, quota usage, and the row locks on mailboxes
that every write of messages takes first (``_lock_mailboxes``).
"""

from __future__ import annotations

from psycopg import errors

from gateway.store.interfaces import (
    InvalidMailboxName,
    MailboxExists,
    NoSuchMailbox,
    NoSuchUser,
    TemporaryFailure,
)
from gateway.store.model import DEFAULT_SPECIAL_USE, HIERARCHY_SEPARATOR, UID_MAX, Inbox, MailboxInfo, QuotaUsage
from gateway.store.names import canonical_name, check_name
from gateway.store.postgresql import notices
from gateway.store.postgresql.database import Transaction

MAILBOX_COLUMNS = "id, owner, name, uidvalidity, uidnext, highestmodseq, special_use"


class MailboxesMixin:
    @staticmethod
    def _mailbox(tx: Transaction, user: str, name: str) -> MailboxInfo | None:
        row = tx.one(f"SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE owner = %s AND name = %s", (user, name))
        return MailboxInfo(*row) if row else None

    @staticmethod
    def _next_uidvalidity(tx: Transaction) -> int:
        """
        One counter for the whole store, raised to the clock when the clock
        is ahead (so values also differ across stores, as Dovecot's do); its
        row lock serialises every node creating a mailbox.
        """
        value = tx.one(
            "UPDATE counters SET value = greatest(value + 1, least(extract(epoch FROM clock_timestamp())::bigint, %s))"
            " WHERE name = 'uidvalidity' RETURNING value",
            (UID_MAX,),
        )[0]
        if value > UID_MAX:
            raise TemporaryFailure("every UIDVALIDITY has been issued")
        return value

    def _create(self, tx: Transaction, user: str, name: str, special_use: str | None) -> MailboxInfo | None:
        """The new mailbox, or None if one of that name exists (perhaps just made by another node)."""
        uidvalidity = self._next_uidvalidity(tx)
        row = tx.one(
            "INSERT INTO mailboxes (owner, name, uidvalidity, uidnext, highestmodseq, first_recent_uid, special_use)"
            " VALUES (%s, %s, %s, 1, 1, 1, %s) ON CONFLICT (owner, name) DO NOTHING RETURNING id",
            (user, name, uidvalidity, special_use),
        )
        if row is None:
            return None
        return MailboxInfo(row[0], user, name, uidvalidity, 1, 1, special_use)

    @staticmethod
    def _subscribe(tx: Transaction, user: str, name: str) -> None:
        tx.execute("INSERT INTO subscriptions (owner, name) VALUES (%s, %s) ON CONFLICT DO NOTHING", (user, name))

    def ensure_user(self, user):
        def work(tx):
            if self._mailbox(tx, user, "INBOX") is not None:
                return
            for name, special_use in (("INBOX", None), *DEFAULT_SPECIAL_USE):
                self._create(tx, user, name, special_use)
                self._subscribe(tx, user, name)

        return self._db.write(work)

    def delete_user(self, user):
        def work(tx):
            ids = [row[0] for row in tx.all("DELETE FROM mailboxes WHERE owner = %s RETURNING id", (user,))]
            tx.execute("DELETE FROM subscriptions WHERE owner = %s", (user,))
            return ids

        def deleted(ids):
            for mailbox_id in ids:
                self._body_keys.forget(mailbox_id)

        return self._db.write(work).addCallback(deleted)

    def list_mailboxes(self, user):
        def work(tx):
            rows = tx.all(f"SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE owner = %s ORDER BY name", (user,))
            if not rows:
                raise NoSuchUser(user)
            return [MailboxInfo(*row) for row in rows]

        return self._db.read(work)

    def get_mailbox(self, user, name):
        def work(tx):
            info = self._mailbox(tx, user, canonical_name(name))
            if info is None:
                raise NoSuchMailbox(name)
            return info

        return self._db.read(work)

    def create_mailbox(self, user, name, special_use=None):
        def work(tx):
            info = self._create(tx, user, check_name(name), special_use)
            if info is None:
                raise MailboxExists(name)
            return info

        return self._changing_list(user, work)

    def delete_mailbox(self, user, name):
        def work(tx):
            canonical = canonical_name(name)
            if canonical == "INBOX":
                raise InvalidMailboxName("INBOX cannot be deleted")
            row = tx.one(
                "DELETE FROM mailboxes WHERE owner = %s AND name = %s RETURNING id, highestmodseq", (user, canonical)
            )
            if row is None:
                raise NoSuchMailbox(name)
            # Sessions that selected it look again and find it gone.
            tx.changed_mailbox(row[0], row[1] + 1)
            self._body_keys.forget(row[0])

        return self._changing_list(user, work)

    def rename_mailbox(self, user, old_name, new_name):
        def work(tx):
            old = canonical_name(old_name)
            new = check_name(new_name)
            source = tx.one(
                f"SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE owner = %s AND name = %s FOR UPDATE", (user, old)
            )
            if source is None:
                raise NoSuchMailbox(old_name)
            source = MailboxInfo(*source)
            if old == "INBOX":
                # RFC 3501 6.3.5: INBOX's messages move to the new name, INBOX
                # stays (empty, so with a new UIDVALIDITY) and its inferiors
                # are not renamed.
                moves = [(source.id, new)]
            else:
                prefix = old + HIERARCHY_SEPARATOR
                moves = [
                    (mailbox_id, new + name[len(old):])
                    for mailbox_id, name in tx.all(
                        "SELECT id, name FROM mailboxes WHERE owner = %s AND (name = %s OR starts_with(name, %s))"
                        " ORDER BY id FOR UPDATE",
                        (user, old, prefix),
                    )
                ]
            clash = tx.one(
                "SELECT name FROM mailboxes WHERE owner = %s AND name = ANY(%s)", (user, [name for _, name in moves])
            )
            if clash is not None:
                raise MailboxExists(clash[0])
            try:
                tx.cursor.executemany("UPDATE mailboxes SET name = %s WHERE id = %s", [(n, i) for i, n in moves])
            except errors.UniqueViolation:
                raise MailboxExists(new_name) from None  # made by another node meanwhile
            if old == "INBOX":
                self._create(tx, user, "INBOX", None)
                tx.changed_mailbox(source.id, source.highestmodseq)

        return self._changing_list(user, work)

    def _changing_list(self, user, work):
        """
        ``work``, a write that changes the user's list of mailboxes: this
        node's sessions are told once it commits, the other nodes' by the
        NOTIFY it commits with (IMAP NOTIFY MailboxName).
        """
        def telling(tx):
            result = work(tx)
            tx.execute("SELECT pg_notify(%s, %s)", (notices.CHANNEL, notices.encode_list(self.changes.node, user)))
            return result

        return self._db.write(telling).addCallback(self._mailboxes_changed, user)

    def _mailboxes_changed(self, result, user):
        self.changes.notify_mailboxes(user)
        return result

    def quota_usage(self, user):
        def work(tx):
            storage, messages = tx.one(
                "SELECT coalesce(sum(message_octets), 0), coalesce(sum(message_count), 0) FROM mailboxes"
                " WHERE owner = %s", (user,))
            return QuotaUsage(int(storage), messages)

        return self._db.read(work)

    def set_subscribed(self, user, name, subscribed):
        def work(tx):
            if subscribed:
                self._subscribe(tx, user, canonical_name(name))
            else:
                tx.execute("DELETE FROM subscriptions WHERE owner = %s AND name = %s", (user, canonical_name(name)))

        return self._db.write(work)

    def list_subscriptions(self, user):
        def work(tx):
            return [row[0] for row in tx.all("SELECT name FROM subscriptions WHERE owner = %s ORDER BY name", (user,))]

        return self._db.read(work)

    @staticmethod
    def _mailbox_ids(tx: Transaction, mailboxes) -> dict:
        """Each of ``mailboxes`` (ids, L{Inbox}es) that exists -> its id; an id is taken as it is."""
        users = sorted({mailbox.user for mailbox in mailboxes if isinstance(mailbox, Inbox)})
        inboxes = dict(tx.all("SELECT owner, id FROM mailboxes WHERE owner = ANY(%s) AND name = 'INBOX'", (users,))
                       if users else ())
        return {
            mailbox: inboxes[mailbox.user] if isinstance(mailbox, Inbox) else mailbox
            for mailbox in mailboxes
            if not isinstance(mailbox, Inbox) or mailbox.user in inboxes
        }

    @staticmethod
    def _lock_mailboxes(tx: Transaction, mailbox_ids) -> dict[int, list[int]]:
        """
        Row-lock the mailboxes, in id order (so two transactions never wait
        on each other crosswise), until the commit.

        @return: mailbox id -> [uidnext, highestmodseq] for those that exist.
        """
        rows = tx.all(
            "SELECT id, uidnext, highestmodseq FROM mailboxes WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
            (sorted(set(mailbox_ids)),),
        )
        return {mailbox_id: [uidnext, modseq] for mailbox_id, uidnext, modseq in rows}

    @staticmethod
    def _set_counters(tx: Transaction, counters: dict[int, list[int]], mailbox_ids) -> None:
        tx.cursor.executemany(
            "UPDATE mailboxes SET uidnext = %s, highestmodseq = %s WHERE id = %s",
            [(counters[m][0], counters[m][1], m) for m in sorted(set(mailbox_ids))],
        )
