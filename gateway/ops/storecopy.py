"""
``gateway migrate``: copy a whole store (the SQLite store of a data dir)
into another (the shared PostgreSQL store of a cluster), keeping every
identity a client holds: UIDVALIDITY, UIDs, modseqs, flags, INTERNALDATE,
the expunged history QRESYNC answers from, \\Recent, subscriptions and the
POP3 device views.  POP3 UIDLs, derived from UIDVALIDITY and UID, come out
byte for byte the same, and IMAP clients keep their caches.

Running it again brings the copy up to date: per mailbox it copies the
messages the copy lacks, the flags and modseqs that moved, removes what
the source expunged, and sets the counters, devices and subscriptions to
the source's.  So a site copies while the old server still serves (the
bulk of the bytes), stops it, copies again (what changed meanwhile), and
starts the nodes.  A mailbox the copy holds under another UIDVALIDITY, or
that changed on the target after a copy, is left alone and reported.
"""

from __future__ import annotations

from typing import TextIO

import attrs
from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults

from gateway.store.interfaces import CopyConflict, MessageExpunged, NoSuchMailbox, NoSuchUser

# Messages and bytes per commit on the target: big enough that a commit's
# cost is shared, small enough that an interruption loses little.
BATCH_MESSAGES = 200
BATCH_BYTES = 16 << 20
# Batches in flight at once: bodies go to an object store one request each,
# so several keep its connections busy.
PARALLEL = 4


@attrs.define
class CopySummary:
    """What a copy did, for the report at its end."""

    users: int = 0
    mailboxes: int = 0
    copied: int = 0
    bytes: int = 0
    updated: int = 0
    removed: int = 0
    already: int = 0
    conflicts: list[str] = attrs.Factory(list)
    notes: list[str] = attrs.Factory(list)

    def lines(self) -> list[str]:
        lines = [
            f"{self.users} users, {self.mailboxes} mailboxes: {self.copied} messages copied ({self.bytes} bytes),"
            f" {self.updated} with flags brought up to date, {self.removed} removed, {self.already} already there,"
            f" {len(self.conflicts)} mailboxes not copied"
        ]
        lines += [f"  not copied: {conflict}" for conflict in self.conflicts]
        lines += [f"  {note}" for note in self.notes]
        return lines


def render_bar(done: int, total: int, done_bytes: int, total_bytes: int, width: int = 30) -> str:
    """``[#####.....]  50%  5/10 messages, 1.2/2.4 MB``: how far a copy is."""
    fraction = done / total if total else 1.0
    filled = min(width, int(fraction * width))
    return (f"[{'#' * filled}{'.' * (width - filled)}] {int(fraction * 100):3d}%"
            f"  {done}/{total} messages, {done_bytes / 1e6:.1f}/{total_bytes / 1e6:.1f} MB")


class ProgressBar:
    """A bar redrawn with ``\\r`` on a terminal; silent otherwise (cron, logs)."""

    def __init__(self, stream: TextIO, total: int, total_bytes: int):
        self._stream = stream
        self._enabled = stream.isatty()
        self.total = total
        self.total_bytes = total_bytes
        self.done = 0
        self.done_bytes = 0

    def advance(self, messages: int, size: int) -> None:
        self.done += messages
        self.done_bytes += size
        if self._enabled:
            self._stream.write("\r" + render_bar(self.done, self.total, self.done_bytes, self.total_bytes))
            self._stream.flush()

    def finish(self) -> None:
        if self._enabled:
            self._stream.write("\r" + render_bar(self.done, self.total, self.done_bytes, self.total_bytes) + "\n")
            self._stream.flush()


async def copy_store(source, target, progress_stream: TextIO) -> CopySummary:
    """
    Copy every user of ``source`` (an L{IMailStore} and L{IStoreDump}) into
    ``target`` (an L{IMailStore} and L{IStoreLoad}).  The target's
    L{TemporaryFailure} ends the copy; running it again continues.
    """
    summary = CopySummary()
    plan = []
    total = total_bytes = 0
    for user in await source.list_users():
        try:
            mailboxes = await source.list_mailboxes(user)
        except NoSuchUser:
            mailboxes = []  # subscriptions only
        for info in mailboxes:
            records = await source.list_messages(info.id)
            total += len(records)
            total_bytes += sum(record.size for record in records)
        plan.append((user, [info.name for info in mailboxes]))
    progress = ProgressBar(progress_stream, total, total_bytes)
    try:
        for user, names in plan:
            summary.users += 1
            for name in names:
                await _copy_mailbox(source, target, user, name, summary, progress)
            await target.set_subscriptions(user, await source.list_subscriptions(user))
            await _note_target_only(target, user, set(names), summary)
    finally:
        progress.finish()
    return summary


async def _copy_mailbox(source, target, user: str, name: str, summary: CopySummary, progress: ProgressBar) -> None:
    try:
        # Counters first: the messages listed after are at least as new.
        info = await source.get_mailbox(user, name)
        state = await source.mailbox_state(info.id)
    except NoSuchMailbox:
        summary.notes.append(f"{user}/{name}: deleted in the source during the copy")
        return
    records = await source.list_messages(info.id)
    try:
        here = await target.load_mailbox(user, info, state)
    except CopyConflict as e:
        summary.conflicts.append(str(e))
        progress.advance(len(records), sum(record.size for record in records))
        return
    summary.mailboxes += 1
    existing = {record.uid: record for record in await target.list_messages(here.id)}
    different = [r for r in records if r.uid in existing and existing[r.uid].size != r.size]
    if different:
        record = different[0]
        summary.conflicts.append(
            f"{user}/{name}: UID {record.uid} is another message here ({existing[record.uid].size} bytes,"
            f" {record.size} in the source)"
        )
        progress.advance(len(records), sum(record.size for record in records))
        return
    new = [r for r in records if r.uid not in existing]
    moved = [r for r in records
             if r.uid in existing and (existing[r.uid].flags != r.flags or existing[r.uid].modseq != r.modseq)]
    summary.already += len(records) - len(new) - len(moved)
    progress.advance(len(records) - len(new), sum(r.size for r in records if r.uid in existing))
    gone: set[int] = set()
    semaphore = DeferredSemaphore(PARALLEL)
    await gatherResults(
        [semaphore.run(lambda batch=batch: Deferred.fromCoroutine(
            _copy_batch(source, target, info, here, batch, gone, summary, progress)))
         for batch in _batches(new)],
        consumeErrors=True,
    ).addErrback(lambda failure: failure.value.subFailure)
    if moved:
        await target.load_flags(here.id, moved)
        summary.updated += len(moved)
    devices = await source.list_devices(info.id)
    present = [r.uid for r in records if r.uid not in gone]
    summary.removed += await target.finish_mailbox(here.id, info, state, present, devices)


def _batches(records):
    batch, size = [], 0
    for record in records:
        if batch and (len(batch) >= BATCH_MESSAGES or size + record.size > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(record)
        size += record.size
    if batch:
        yield batch


async def _copy_batch(source, target, info, here, batch, gone: set[int], summary: CopySummary,
                      progress: ProgressBar) -> None:
    messages = await source.get_messages(info.id, [record.uid for record in batch])
    bodies = []
    try:
        for record, structure in messages:
            try:
                bodies.append((record, structure, await source.open_message(info.id, record.uid)))
            except MessageExpunged:
                gone.add(record.uid)  # by a session of the source, during the copy
        gone.update({r.uid for r in batch} - {record.uid for record, _ in messages})
        await target.load_messages(here.id, bodies)
    finally:
        for _, _, body in bodies:
            body.close()
    summary.copied += len(bodies)
    summary.bytes += sum(record.size for record, _, _ in bodies)
    progress.advance(len(batch), sum(record.size for record in batch))


async def _note_target_only(target, user: str, names: set[str], summary: CopySummary) -> None:
    try:
        here = await target.list_mailboxes(user)
    except NoSuchUser:
        return
    for info in here:
        if info.name not in names:
            summary.notes.append(f"{user}/{info.name}: only in the target; left alone")
