"""
The PostgreSQL store's consistency check (for ``gateway check``): its
index against its body store.

Found: messages whose body is gone from the body store, bodies no message
names (left by expunges, deleted mailboxes and users, or deliveries that
never committed), a UIDNEXT not above every UID given out (expunged ones
included), a HIGHESTMODSEQ below a message's or an expunge's modseq, and a
mailbox whose quota counters (``message_count``, ``message_octets``: what
RFC 9208 usage and the LMTP quota refusal read) are not the count and the
sum of sizes of its messages.  All of it is read in one snapshot, in which
the counters agree with the rows whatever is being delivered meanwhile: the
triggers keep them in the transaction that adds or removes the rows.

``--repair`` does only what cannot lose or invent mail, each step through
the store so that live sessions on every node hear of it: raise UIDNEXT and
HIGHESTMODSEQ, expunge messages whose body is gone (they cannot be read
anyway; the row is all that is left), count the quota counters again (as
``doveadm quota recalc``), and collect the orphan bodies older than the
grace period.  A check without repair changes nothing.
"""

from __future__ import annotations

import datetime

import attrs
from twisted.internet import defer
from zope.interface import implementer

from gateway.store.interfaces import IStoreMaintenance
from gateway.store.model import CheckReport
from gateway.store.postgresql.maintenance import ORPHAN_GRACE

_ALL_TIME = datetime.datetime(9999, 12, 31, tzinfo=datetime.timezone.utc)

# A mailbox's messages and their octets, from a subquery ``t`` (count ``n``,
# summed ``octets``) with no row for an empty mailbox.
_HELD = "coalesce(t.n, 0), coalesce(t.octets, 0)::bigint"


@attrs.frozen
class Findings:
    """What one pass of the check saw."""

    # (mailbox id, "user/name", uidnext, highest UID)
    uidnext_low: tuple[tuple[int, str, int, int], ...]
    # (mailbox id, "user/name", highestmodseq, highest modseq recorded)
    modseq_low: tuple[tuple[int, str, int, int], ...]
    # (mailbox id, "user/name", UID, key)
    bodies_missing: tuple[tuple[int, str, int, str], ...]
    orphans: int
    # (mailbox id, "user/name", (count, octets) the counters say, (count, octets) held)
    miscounted: tuple[tuple[int, str, tuple[int, int], tuple[int, int]], ...]

    def problems(self) -> list[str]:
        lines = [f"{label}: UIDNEXT {uidnext} is not above UID {highest}"
                 for _, label, uidnext, highest in self.uidnext_low]
        lines += [f"{label}: HIGHESTMODSEQ {modseq} is below modseq {highest} of a change"
                  for _, label, modseq, highest in self.modseq_low]
        lines += [f"{label}: UID {uid} has no body (key {key} is not in the body store)"
                  for _, label, uid, key in self.bodies_missing]
        lines += [f"{label}: quota counters say {said[0]} messages / {said[1]} bytes,"
                  f" the mailbox holds {held[0]} / {held[1]}"
                  for _, label, said, held in self.miscounted]
        if self.orphans:
            lines.append(f"{self.orphans} stored bodies named by no message")
        return lines


class CheckMixin:
    def _findings(self, grace: datetime.timedelta) -> Findings:
        def indexed(tx):
            labels = {mailbox_id: f"{owner}/{name}"
                      for mailbox_id, owner, name in tx.all("SELECT id, owner, name FROM mailboxes")}
            uidnext_low = tuple(
                (mailbox_id, labels[mailbox_id], uidnext, highest)
                # An expunged UID counts: UIDs are never handed out twice.
                for mailbox_id, uidnext, highest in tx.all(
                    "SELECT m.id, m.uidnext, u.uid FROM mailboxes AS m JOIN"
                    " (SELECT mailbox_id, max(uid) AS uid FROM"
                    "  (SELECT mailbox_id, uid FROM messages UNION ALL SELECT mailbox_id, uid FROM expunged) AS a"
                    "  GROUP BY mailbox_id) AS u ON u.mailbox_id = m.id"
                    " WHERE m.uidnext <= u.uid ORDER BY m.id"
                )
            )
            modseq_low = tuple(
                (mailbox_id, labels[mailbox_id], modseq, highest)
                for mailbox_id, modseq, highest in tx.all(
                    "SELECT m.id, m.highestmodseq, c.modseq FROM mailboxes AS m JOIN"
                    " (SELECT mailbox_id, max(modseq) AS modseq FROM"
                    "  (SELECT mailbox_id, modseq FROM messages UNION ALL SELECT mailbox_id, modseq FROM expunged) AS a"
                    "  GROUP BY mailbox_id) AS c ON c.mailbox_id = m.id"
                    " WHERE m.highestmodseq < c.modseq ORDER BY m.id"
                )
            )
            stored = set(self._blobs.keys(tx, _ALL_TIME))
            bodies_missing = tuple(
                (mailbox_id, labels[mailbox_id], uid, key)
                for mailbox_id, uid, key in tx.all("SELECT mailbox_id, uid, blob FROM messages ORDER BY mailbox_id, uid")
                if key not in stored
            )
            unreferenced = tx.one(
                "SELECT count(*) FROM blobs AS b WHERE last_used < clock_timestamp() - %s"
                " AND NOT EXISTS (SELECT 1 FROM messages AS m WHERE m.blob = b.key)", (grace,)
            )[0]
            cutoff = tx.one("SELECT clock_timestamp() - %s", (grace,))[0]
            old = set(self._blobs.keys(tx, cutoff))
            known = {row[0] for row in tx.all("SELECT key FROM blobs WHERE key = ANY(%s)", (sorted(old),))}
            miscounted = tuple(
                (mailbox_id, labels[mailbox_id], (count, octets), (held, held_octets))
                for mailbox_id, count, octets, held, held_octets in tx.all(
                    f"SELECT m.id, m.message_count, m.message_octets, {_HELD} FROM mailboxes AS m"
                    " LEFT JOIN (SELECT mailbox_id, count(*) AS n, sum(size) AS octets FROM messages"
                    "  GROUP BY mailbox_id) AS t ON t.mailbox_id = m.id"
                    f" WHERE (m.message_count, m.message_octets) IS DISTINCT FROM ({_HELD}) ORDER BY m.id"
                )
            )
            return Findings(uidnext_low, modseq_low, bodies_missing, unreferenced + len(old - known), miscounted)

        return self._db.transact(indexed, (), "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")[0]

    def check(self, repair):
        """L{IStoreMaintenance.check}."""
        return self.check_store(repair).addCallback(lambda found: CheckReport(tuple(found[0]), tuple(found[1])))

    def check_store(self, repair: bool, grace: datetime.timedelta = ORPHAN_GRACE):
        """
        @return: Deferred firing with (problems still there, repairs done),
            each a list of lines.
        """
        return defer.Deferred.fromCoroutine(self._check(repair, grace))

    async def _check(self, repair: bool, grace: datetime.timedelta):
        findings = await self._db.in_thread(self._findings, grace)
        if not repair:
            return findings.problems(), []
        repairs = []
        for mailbox_id, label, _, highest in findings.uidnext_low:
            await self.raise_uidnext(mailbox_id, highest + 1)
            repairs.append(f"{label}: UIDNEXT raised to {highest + 1}")
        for mailbox_id, label, _, highest in findings.modseq_low:
            await self._db.write(self._raise_highestmodseq, mailbox_id, highest)
            repairs.append(f"{label}: HIGHESTMODSEQ raised to {highest}")
        for mailbox_id, label, uid, _ in findings.bodies_missing:
            if await self.expunge(mailbox_id, [uid]):
                repairs.append(f"{label}: UID {uid}, whose body is gone, expunged")
        for mailbox_id, label, _, _ in findings.miscounted:
            counted = await self._db.write(self._count_again, mailbox_id)
            if counted is not None:
                repairs.append(f"{label}: quota counters counted again: {counted[0]} messages / {counted[1]} bytes")
        if findings.orphans:
            collected = await self.collect_orphans(grace)
            count = len(collected.unreferenced) + len(collected.uncommitted)
            repairs.append(f"{count} bodies named by no message removed")
        after = await self._db.in_thread(self._findings, grace)
        return after.problems(), repairs

    @staticmethod
    def _raise_highestmodseq(tx, mailbox_id: int, modseq: int) -> None:
        row = tx.one(
            "UPDATE mailboxes SET highestmodseq = %s WHERE id = %s AND highestmodseq < %s RETURNING highestmodseq",
            (modseq, mailbox_id, modseq),
        )
        if row is not None:
            tx.changed_mailbox(mailbox_id, modseq)

    def _count_again(self, tx, mailbox_id: int) -> tuple[int, int] | None:
        """
        Set the mailbox's quota counters to what it holds, under its row
        lock: every writer of its messages takes that lock first and keeps
        it to its commit, so the count (a statement begun once the lock is
        ours, in READ COMMITTED, so seeing every commit before it) is of a
        set of rows no one is changing, and the writers after us add to the
        right figures.

        @return: the counters now, or None when they were right already or
            the mailbox is gone.
        """
        if not self._lock_mailboxes(tx, [mailbox_id]):
            return None
        return tx.one(
            "UPDATE mailboxes AS m SET message_count = t.n, message_octets = t.octets"
            " FROM (SELECT count(*) AS n, coalesce(sum(size), 0)::bigint AS octets FROM messages"
            "  WHERE mailbox_id = %s) AS t"
            " WHERE m.id = %s AND (m.message_count, m.message_octets) IS DISTINCT FROM (t.n, t.octets)"
            " RETURNING m.message_count, m.message_octets",
            (mailbox_id, mailbox_id),
        )


@implementer(IStoreMaintenance)
class PostgreSQLMaintenance:
    """
    ``gateway check`` on the shared store: opens it (``opener``), checks
    through its connections, and closes it again.
    """

    def __init__(self, opener):
        self._opener = opener

    def check(self, repair):
        async def run():
            store = self._opener()
            try:
                return await store.check(repair)
            finally:
                await store.close()

        return defer.Deferred.fromCoroutine(run())
