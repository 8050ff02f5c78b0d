"""
Copying whole stores into and out of the PostgreSQL store (``IStoreLoad``,
``IStoreDump``, for ``gateway migrate``): every identity a client holds
(UIDVALIDITY, UIDs, modseqs, flags, INTERNALDATE, the expunged history,
\\Recent, subscriptions, POP3 device views) is written as the source has
it, not issued afresh.  A mixin of L{PostgreSQLStore}.

Each step is one transaction under the mailbox's row lock and announces
its mailbox's new HIGHESTMODSEQ, so sessions on the nodes, if any serve
already, hear of it.  Copying again compares and brings the copy up to
date: what the caller sends are the differences.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed

from gateway.store.blobs.spool import spool
from gateway.store.encoding import flags_text
from gateway.store.interfaces import CopyConflict, NoSuchMailbox
from gateway.store.model import DeviceState, MailboxInfo, MailboxState
from gateway.store.postgresql.flags import write_flags


class CopyingMixin:
    # -- IStoreDump ---------------------------------------------------------

    def list_users(self):
        def work(tx):
            return [row[0] for row in tx.all(
                "SELECT owner FROM mailboxes UNION SELECT owner FROM subscriptions ORDER BY 1"
            )]

        return self._db.read(work)

    def mailbox_state(self, mailbox_id):
        def work(tx):
            row = tx.one("SELECT first_recent_uid FROM mailboxes WHERE id = %s", (mailbox_id,))
            if row is None:
                raise NoSuchMailbox(str(mailbox_id))
            expunged = tx.all("SELECT uid, modseq FROM expunged WHERE mailbox_id = %s ORDER BY uid", (mailbox_id,))
            return MailboxState(row[0], tuple(expunged))

        return self._db.snapshot(work)

    def list_devices(self, mailbox_id):
        def work(tx):
            rows = tx.all(
                "SELECT d.name, d.last_login, coalesce(array_agg(x.uid) FILTER (WHERE x.uid IS NOT NULL), '{}')"
                " FROM pop3_devices AS d LEFT JOIN pop3_device_deletions AS x"
                " ON x.mailbox_id = d.mailbox_id AND x.device = d.name"
                " WHERE d.mailbox_id = %s GROUP BY d.name, d.last_login ORDER BY d.name",
                (mailbox_id,),
            )
            return tuple(DeviceState(name, last_login, frozenset(uids)) for name, last_login, uids in rows)

        return self._db.read(work)

    # -- IStoreLoad ---------------------------------------------------------

    def load_mailbox(self, user, info, state):
        def work(tx):
            row = tx.one(
                "SELECT id, uidvalidity, uidnext, highestmodseq FROM mailboxes WHERE owner = %s AND name = %s"
                " FOR UPDATE",
                (user, info.name),
            )
            label = f"{user}/{info.name}"
            if row is None:
                row = tx.one(
                    "INSERT INTO mailboxes (owner, name, uidvalidity, uidnext, highestmodseq, first_recent_uid,"
                    " special_use) VALUES (%s, %s, %s, 1, 1, %s, %s) RETURNING id, uidvalidity, uidnext, highestmodseq",
                    (user, info.name, info.uidvalidity, state.first_recent_uid, info.special_use),
                )
            mailbox_id, uidvalidity, uidnext, highestmodseq = row
            if uidvalidity != info.uidvalidity:
                if uidnext != 1:
                    raise CopyConflict(
                        f"{label}: UIDVALIDITY {uidvalidity} here, {info.uidvalidity} in the source:"
                        " another mailbox of that name; not copied"
                    )
                # Made here (a login, a delivery) but never held a message.
                tx.execute("UPDATE mailboxes SET uidvalidity = %s WHERE id = %s", (info.uidvalidity, mailbox_id))
            if highestmodseq > info.highestmodseq:
                raise CopyConflict(
                    f"{label}: HIGHESTMODSEQ {highestmodseq} here, above the source's {info.highestmodseq}:"
                    " changed here since it was copied; not copied"
                )
            # Never issue afresh a UIDVALIDITY that came from elsewhere.
            tx.execute("UPDATE counters SET value = greatest(value, %s) WHERE name = 'uidvalidity'",
                       (info.uidvalidity,))
            return MailboxInfo(mailbox_id, user, info.name, info.uidvalidity, uidnext, highestmodseq,
                               info.special_use)

        return self._db.write(work)

    def load_messages(self, mailbox_id, messages):
        return Deferred.fromCoroutine(self._load_messages(mailbox_id, list(messages)))

    async def _load_messages(self, mailbox_id, messages):
        def spool_all():
            spooled = []
            try:
                for record, structure, source in messages:
                    spooled.append((record, structure, spool(source, self._spool_dir)))
            except BaseException:
                for _, _, body in spooled:
                    body.file.close()
                raise
            return spooled

        def work(tx, spooled):
            bodies = {body.key: body for _, _, body in spooled}
            for key in sorted(bodies):
                self._store_body(tx, bodies[key])
            counters = self._lock_mailboxes(tx, [mailbox_id])
            if mailbox_id not in counters:
                raise NoSuchMailbox(str(mailbox_id))
            # Every writer of the mailbox's messages holds its row lock: no
            # UID can arrive between this look and the inserts.
            here = self._select_uids(tx, "uid", mailbox_id, [record.uid for record, _, _ in spooled])
            if here:
                raise CopyConflict(f"UID {here[0][0]} of mailbox {mailbox_id} is here already")
            for record, structure, body in spooled:
                self._insert_message(tx, mailbox_id, record.uid, record.flags, record.internaldate,
                                     body.size, record.modseq, body.key, structure)
            self._raise_counters(tx, mailbox_id, counters,
                                 max(r.uid for r, _, _ in spooled) + 1, max(r.modseq for r, _, _ in spooled))

        if not messages:
            return None
        spooled = await self._db.in_thread(spool_all)
        try:
            return await self._db.write(work, spooled)
        finally:
            for _, _, body in spooled:
                body.file.close()

    def load_flags(self, mailbox_id, records):
        records = list(records)

        def work(tx):
            counters = self._lock_mailboxes(tx, [mailbox_id])
            if mailbox_id not in counters:
                raise NoSuchMailbox(str(mailbox_id))
            write_flags(tx, mailbox_id, [(r.uid, flags_text(r.flags), r.modseq) for r in records])
            self._raise_counters(tx, mailbox_id, counters, 1, max(r.modseq for r in records))

        if not records:
            return succeed(None)
        return self._db.write(work)

    @staticmethod
    def _raise_counters(tx, mailbox_id: int, counters, uidnext: int, modseq: int) -> None:
        """UIDNEXT and HIGHESTMODSEQ up to cover what was just written, never down."""
        current_uidnext, current_modseq = counters[mailbox_id]
        counters[mailbox_id] = [max(current_uidnext, uidnext), max(current_modseq, modseq)]
        tx.execute("UPDATE mailboxes SET uidnext = %s, highestmodseq = %s WHERE id = %s",
                   (*counters[mailbox_id], mailbox_id))
        tx.changed_mailbox(mailbox_id, counters[mailbox_id][1])

    def finish_mailbox(self, mailbox_id, info, state, uids, devices):
        uids = sorted(set(uids))

        def work(tx):
            counters = self._lock_mailboxes(tx, [mailbox_id])
            if mailbox_id not in counters:
                raise NoSuchMailbox(str(mailbox_id))
            removed = tx.execute(
                "DELETE FROM messages WHERE mailbox_id = %s AND uid <> ALL(%s)", (mailbox_id, uids)
            ).rowcount
            tx.execute("DELETE FROM expunged WHERE mailbox_id = %s", (mailbox_id,))
            if state.expunged:
                tx.execute(
                    "INSERT INTO expunged (mailbox_id, uid, modseq)"
                    " SELECT %s, uid, modseq FROM unnest(%s::bigint[], %s::bigint[]) AS e (uid, modseq)",
                    (mailbox_id, [uid for uid, _ in state.expunged], [modseq for _, modseq in state.expunged]),
                )
            highest_uid, highest_modseq = tx.one(
                "SELECT coalesce(max(uid), 0), coalesce(max(modseq), 0) FROM messages WHERE mailbox_id = %s",
                (mailbox_id,),
            )
            uidnext = max(info.uidnext, highest_uid + 1)
            modseq = max(info.highestmodseq, highest_modseq, max((m for _, m in state.expunged), default=0))
            tx.execute(
                "UPDATE mailboxes SET uidnext = %s, highestmodseq = %s, first_recent_uid = %s, special_use = %s"
                " WHERE id = %s",
                (uidnext, modseq, state.first_recent_uid, info.special_use, mailbox_id),
            )
            tx.execute("DELETE FROM pop3_devices WHERE mailbox_id = %s", (mailbox_id,))
            for device in devices:
                tx.execute("INSERT INTO pop3_devices (mailbox_id, name, last_login) VALUES (%s, %s, %s)",
                           (mailbox_id, device.name, device.last_login))
                tx.execute(
                    "INSERT INTO pop3_device_deletions (mailbox_id, uid, device)"
                    " SELECT mailbox_id, uid, %s FROM messages WHERE mailbox_id = %s AND uid = ANY(%s)",
                    (device.name, mailbox_id, sorted(device.deleted)),
                )
            tx.changed_mailbox(mailbox_id, modseq)
            return removed

        # Messages the source expunged leave: their body keys go too.
        self._body_keys.forget(mailbox_id)
        return self._forgetting(mailbox_id, None, self._db.write(work))

    def set_subscriptions(self, user, names):
        names = sorted(set(names))

        def work(tx):
            tx.execute("DELETE FROM subscriptions WHERE owner = %s AND name <> ALL(%s)", (user, names))
            tx.execute(
                "INSERT INTO subscriptions (owner, name) SELECT %s, name FROM unnest(%s::text[]) AS name"
                " ON CONFLICT DO NOTHING",
                (user, names),
            )

        return self._db.write(work)
