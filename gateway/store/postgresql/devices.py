"""
POP3 views per device in the PostgreSQL index (``IMailStore.open_device``
and its kin; the rules are ``gateway/pop3/devices.py``'s): a row per device
of a mailbox, and one per message a device deleted.  A mixin of
L{PostgreSQLStore}.

Each call takes a transaction-level advisory lock on its mailbox's devices,
so the steps of sessions on different nodes follow one another: two
devices whose QUITs delete the same message at once cannot each miss the
other's mark (both would then answer "not every device yet" and the
message would stay for ever), and two new devices cannot both take the
last place under ``max_devices``.  Deliveries and IMAP never wait on it.
"""

from __future__ import annotations

from gateway.store.interfaces import NoSuchMailbox, TooManyDevices
from gateway.store.postgresql.database import Transaction

# A 64-bit key per mailbox, computed by the server so every node agrees; the
# POP3 maildrop locks (maildrops.py) hash names of another form.
_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('gateway devices ' || %s::text, 0))"


class DevicesMixin:
    @staticmethod
    def _lock_devices(tx: Transaction, mailbox_id: int) -> None:
        """The devices' lock, and the mailbox kept from being deleted meanwhile."""
        tx.execute(_LOCK, (mailbox_id,))
        if tx.one("SELECT 1 FROM mailboxes WHERE id = %s FOR KEY SHARE", (mailbox_id,)) is None:
            raise NoSuchMailbox(str(mailbox_id))

    def open_device(self, mailbox_id, device, now, max_devices, forget_before):
        def work(tx):
            self._lock_devices(tx, mailbox_id)
            # The marks of the forgotten go with them (ON DELETE CASCADE).
            tx.execute("DELETE FROM pop3_devices WHERE mailbox_id = %s AND last_login < %s",
                       (mailbox_id, forget_before))
            known = tx.execute(
                "UPDATE pop3_devices SET last_login = %s WHERE mailbox_id = %s AND name = %s",
                (now, mailbox_id, device),
            ).rowcount
            if not known:
                (devices,) = tx.one("SELECT count(*) FROM pop3_devices WHERE mailbox_id = %s", (mailbox_id,))
                if devices >= max_devices:
                    raise TooManyDevices(device)
                tx.execute("INSERT INTO pop3_devices (mailbox_id, name, last_login) VALUES (%s, %s, %s)",
                           (mailbox_id, device, now))
            return frozenset(uid for (uid,) in tx.all(
                "SELECT uid FROM pop3_device_deletions WHERE mailbox_id = %s AND device = %s", (mailbox_id, device)
            ))

        return self._db.write(work)

    def delete_for_device(self, mailbox_id, device, uids):
        uids = sorted(set(uids))

        def work(tx):
            self._lock_devices(tx, mailbox_id)
            # Marks only for messages there now; FOR KEY SHARE keeps them
            # from being expunged before the commit.  A device forgotten
            # while its session ran has no marks to keep.
            tx.execute(
                "INSERT INTO pop3_device_deletions (mailbox_id, uid, device)"
                " SELECT m.mailbox_id, m.uid, d.name FROM messages AS m"
                " JOIN pop3_devices AS d ON d.mailbox_id = m.mailbox_id AND d.name = %s"
                " WHERE m.mailbox_id = %s AND m.uid = ANY(%s) FOR KEY SHARE OF m"
                " ON CONFLICT DO NOTHING",
                (device, mailbox_id, uids),
            )
            tx.execute(
                "DELETE FROM pop3_device_deletions AS x WHERE mailbox_id = %s AND NOT EXISTS"
                " (SELECT 1 FROM messages AS m WHERE m.mailbox_id = x.mailbox_id AND m.uid = x.uid)",
                (mailbox_id,),
            )
            return [uid for (uid,) in tx.all(
                "SELECT uid FROM pop3_device_deletions WHERE mailbox_id = %s GROUP BY uid"
                " HAVING count(*) = (SELECT count(*) FROM pop3_devices WHERE mailbox_id = %s) ORDER BY uid",
                (mailbox_id, mailbox_id),
            )]

        return self._db.write(work)

    def forget_device_deletions(self, mailbox_id, uids):
        uids = sorted(set(uids))

        def work(tx):
            tx.execute(_LOCK, (mailbox_id,))
            tx.execute("DELETE FROM pop3_device_deletions WHERE mailbox_id = %s AND uid = ANY(%s)", (mailbox_id, uids))

        return self._db.write(work)
