"""
Which mailboxes may have changes a crash can lose after clients saw them,
and what to do about them at the next start.

A flag change is committed with ``synchronous=NORMAL`` and reaches the disk
within a second (``writer.py``); a delivery, APPEND or expunge is committed
the same way and synced just after, outside the store's write lock, before
it is acknowledged.  A crash in between loses the commit, though other
sessions may have seen it: a message goes back to its old flags and its old
mod-sequence, an expunged one comes back, one not yet acknowledged goes, and
the mailbox's HIGHESTMODSEQ and UIDNEXT go back too.  A CONDSTORE/QRESYNC
client that saw the lost change would then never hear of the message again,
a later change could reuse a mod-sequence it knows, and a later message the
UID it saw: RFC 7162 3.1.1 forbids mod-sequences going down, RFC 3501
2.3.1.1 UIDs being given twice, and DESIGN.md says a crash loses at most
flags, never an identity.

So before such a commit the writer records, durably, the mailboxes it
changes (``unsynced.<pid>.<n>`` in the store root, one line of JSON, locked by
the process while it lives); once the WAL is synced and the writer has
been idle a while, the record is emptied.
A record left by a process that is gone means a crash.  If the machine has
not restarted since (the record names the kernel's boot), only the process
died: every write it made is in the page cache and reaches the disk, so
nothing was lost and the record is just removed.  Otherwise ``recover`` gives
every message of those mailboxes, and the mailboxes, a mod-sequence above
any the lost commits can have handed out, so every client fetches their
flags again, and raises their UIDNEXT above any UID they can have handed
out.  Costs: one small fsync'd write the first time a mailbox's
flags change while the record does not hold it (it keeps a few
mailboxes across syncs while the writer is busy); at recovery, rewriting
those mailboxes' mod-sequences.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
from pathlib import Path

from gateway.durable import fsync_dir

PREFIX = "unsynced."

# Above every mod-sequence the commits of one unsynced second can have taken.
MARGIN = 1_000_000

# Above every UID the unsynced commits of one process can have given: its
# writer syncs each durable group before the next, and a group that changes
# more rows than this is synced before anyone sees it (writer.py).
UID_MARGIN = 100_000

# Mailboxes a record keeps once synced: a crash then recovers them too,
# which costs their clients one resync of flags, never a change.
KEPT_MAILBOXES = 64

# Several stores of one process (tests, tools) keep records of their own.
_serial = itertools.count()


class UnsyncedRecord:
    """This process's record of mailboxes with flag changes not yet synced."""

    def __init__(self, root: Path):
        self._path = Path(root) / f"{PREFIX}{os.getpid()}.{next(_serial)}"
        self._fd: int | None = None
        self.mailboxes: frozenset[int] = frozenset()

    def mark(self, mailbox_ids) -> None:
        """Add ``mailbox_ids`` to the record, durably (raises OSError)."""
        wanted = self.mailboxes | frozenset(mailbox_ids)
        if wanted == self.mailboxes:
            return
        created = self._fd is None
        if created:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                # Held while this process lives: a record whose lock can be
                # taken was left by a process that is gone.
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise
            self._fd = fd
        data = json.dumps({"boot": BOOT, "mailboxes": sorted(wanted)}).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)
        os.fsync(self._fd)
        if created:
            fsync_dir(self._path.parent)
        self.mailboxes = wanted

    def synced(self) -> None:
        """
        Everything is on disk.  The record keeps the mailboxes while they
        are few, so that the next flag change in one (a busy mailbox has
        one every few commits) needs no fsync; ``release`` empties it.
        """
        if len(self.mailboxes) > KEPT_MAILBOXES:
            self.release()

    def release(self) -> None:
        """Empty the record (no fsync: a stale one only costs a recovery)."""
        if self._fd is not None and self.mailboxes:
            os.ftruncate(self._fd, 0)
        self.mailboxes = frozenset()

    def close(self) -> None:
        """At a clean stop, after the last sync."""
        if self._fd is not None:
            self._path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


def left_behind(root: Path) -> list[tuple[Path, int]]:
    """
    The records of processes that are gone, each opened and locked (the
    caller closes the descriptor once it has recovered and removed it).
    """
    found = []
    for path in sorted(Path(root).glob(PREFIX + "*")):
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # its process is alive
            continue
        found.append((path, fd))
    return found


def mailboxes_of(fd: int) -> list[int] | None:
    """
    The mailbox ids in a record whose commits may be lost: none when the
    machine has not restarted since it was written, None if it cannot be
    read (then: every mailbox).
    """
    data = b""
    while chunk := os.pread(fd, 65536, len(data)):
        data += chunk
    if not data:
        return []
    try:
        record = json.loads(data)
    except ValueError:
        return None
    if isinstance(record, dict):
        if BOOT is not None and record.get("boot") == BOOT:
            return []
        record = record.get("mailboxes")
    if not isinstance(record, list) or not all(isinstance(i, int) for i in record):
        return None
    return record


def _boot_id() -> str | None:
    """This boot of the kernel (Linux); None where it cannot be told."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip() or None
    except OSError:
        return None


BOOT = _boot_id()
