"""
POP3 views per device in the SQLite index (``IMailStore.open_device`` and
its kin; the rules are ``gateway/pop3/devices.py``'s): a row per device of a
mailbox, and one per message a device deleted.

Marks only exist for registered devices (forgetting a device drops its
marks), so "every device deleted it" is a count per UID equal to the
devices' count.  A mailbox holds at most ``max_devices`` devices and a mark
per device and message still there, so the tables stay as small as the
mailboxes.
"""

from __future__ import annotations

from gateway.store.interfaces import TooManyDevices
from gateway.store.sqlite.synchronous import deferred


class DevicesMixin:
    @deferred
    def open_device(self, mailbox_id, device, now, max_devices, forget_before):
        def run(step):
            self._counters(mailbox_id)
            stale = [name for (name,) in self._db.execute(
                "SELECT name FROM pop3_devices WHERE mailbox_id = ? AND last_login < ?", (mailbox_id, forget_before)
            )]
            self._forget_devices(mailbox_id, stale)
            known = self._db.execute(
                "UPDATE pop3_devices SET last_login = ? WHERE mailbox_id = ? AND name = ?", (now, mailbox_id, device)
            ).rowcount
            if not known:
                (devices,) = self._db.execute(
                    "SELECT COUNT(*) FROM pop3_devices WHERE mailbox_id = ?", (mailbox_id,)
                ).fetchone()
                if devices >= max_devices:
                    raise TooManyDevices(device)
                self._db.execute(
                    "INSERT INTO pop3_devices (mailbox_id, name, last_login) VALUES (?, ?, ?)",
                    (mailbox_id, device, now),
                )
            return frozenset(uid for (uid,) in self._db.execute(
                "SELECT uid FROM pop3_device_deletions WHERE mailbox_id = ? AND device = ?", (mailbox_id, device)
            ))

        # A login noted late or twice does no harm: of the flags' tier.
        return self._writer.submit(run, durable=False)

    def _forget_devices(self, mailbox_id: int, names: list[str]) -> None:
        for table, column in (("pop3_device_deletions", "device"), ("pop3_devices", "name")):
            self._db.executemany(
                f"DELETE FROM {table} WHERE mailbox_id = ? AND {column} = ?", [(mailbox_id, name) for name in names]
            )

    @deferred
    def delete_for_device(self, mailbox_id, device, uids):
        uids = list(uids)

        def run(step):
            # A device forgotten while its session ran has no marks to keep.
            if self._db.execute(
                "SELECT 1 FROM pop3_devices WHERE mailbox_id = ? AND name = ?", (mailbox_id, device)
            ).fetchone():
                self._db.executemany(
                    "INSERT OR IGNORE INTO pop3_device_deletions (mailbox_id, uid, device)"
                    " SELECT mailbox_id, uid, ? FROM messages WHERE mailbox_id = ? AND uid = ?",
                    [(device, mailbox_id, uid) for uid in uids],
                )
            self._db.execute(
                "DELETE FROM pop3_device_deletions WHERE mailbox_id = ? AND NOT EXISTS (SELECT 1 FROM messages"
                " WHERE messages.mailbox_id = pop3_device_deletions.mailbox_id"
                " AND messages.uid = pop3_device_deletions.uid)",
                (mailbox_id,),
            )
            return [uid for (uid,) in self._db.execute(
                "SELECT uid FROM pop3_device_deletions WHERE mailbox_id = ? GROUP BY uid"
                " HAVING COUNT(*) = (SELECT COUNT(*) FROM pop3_devices WHERE mailbox_id = ?) ORDER BY uid",
                (mailbox_id, mailbox_id),
            )]

        return self._writer.submit(run)

    @deferred
    def forget_device_deletions(self, mailbox_id, uids):
        uids = list(uids)

        def run(step):
            self._db.executemany(
                "DELETE FROM pop3_device_deletions WHERE mailbox_id = ? AND uid = ?", [(mailbox_id, uid) for uid in uids]
            )

        return self._writer.submit(run, durable=False)
