"""
Reading the whole SQLite store for a copy elsewhere (``IStoreDump``, for
``gateway migrate``): its users, and what each mailbox holds beside its
messages.  A mixin of L{SQLiteStore}; reads, from the read connection.
"""

from __future__ import annotations

from gateway.store.interfaces import NoSuchMailbox
from gateway.store.model import DeviceState, MailboxState
from gateway.store.sqlite.synchronous import deferred


class DumpMixin:
    @deferred
    def list_users(self):
        return [user for (user,) in self._db.execute(
            "SELECT user FROM mailboxes UNION SELECT user FROM subscriptions ORDER BY 1"
        )]

    @deferred
    def mailbox_state(self, mailbox_id):
        row = self._db.execute("SELECT first_recent_uid FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()
        if row is None:
            raise NoSuchMailbox(str(mailbox_id))
        expunged = self._db.execute(
            "SELECT uid, modseq FROM expunged WHERE mailbox_id = ? ORDER BY uid", (mailbox_id,)
        ).fetchall()
        return MailboxState(row[0], tuple(expunged))

    @deferred
    def list_devices(self, mailbox_id):
        deleted: dict[str, set[int]] = {}
        for device, uid in self._db.execute(
            "SELECT device, uid FROM pop3_device_deletions WHERE mailbox_id = ?", (mailbox_id,)
        ):
            deleted.setdefault(device, set()).add(uid)
        return tuple(
            DeviceState(name, last_login, frozenset(deleted.get(name, ())))
            for name, last_login in self._db.execute(
                "SELECT name, last_login FROM pop3_devices WHERE mailbox_id = ? ORDER BY name", (mailbox_id,)
            )
        )
