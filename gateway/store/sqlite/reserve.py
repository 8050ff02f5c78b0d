"""
Room the store keeps on its file system so that mail can be deleted on a
full disk.

Deleting writes the index before it frees anything: SELECT claims \\Recent,
STORE sets \\Deleted, an expunge commits the UIDs it takes before it unlinks
their bodies.  Each commit appends pages to SQLite's WAL, which needs new
blocks until the WAL is checkpointed.  So the store keeps a file of
``RESERVE_BYTES`` (``store/reserve``), really allocated, and the index grows
into it: an index write that finds less than ``SLICE_BYTES`` free first
shrinks the reserve by that much.  While the reserve is short, deliveries
are refused as a temporary failure (the sender retries) rather than eat the
room deletions need; once deleting (or the administrator) has freed twice
the reserve, it is made whole again and deliveries go on.

The state lives in the file, so every process using the store (the server,
``gateway deliver``, the offline tools) sees it: absent, the store has none
(made at the server's start when there is room for it); shorter than
``RESERVE_BYTES``, it is being lent to the index.
"""

from __future__ import annotations

import errno
import functools
import os
from pathlib import Path
from stat import S_ISREG

from twisted.logger import Logger

log = Logger()

RESERVE_BYTES = 1 << 20
SLICE_BYTES = 128 << 10


def _never_in_the_way(method):
    """The reserve helps; a failure to keep it is logged (the answer is then None) and stops nothing."""

    @functools.wraps(method)
    def wrapper(self):
        try:
            return method(self)
        except OSError:
            log.failure("Keeping the disk reserve {path}", path=self.path)
            return None

    return wrapper


class DiskFull(Exception):
    """Deliveries wait: the reserve is lent to the index."""


class Reserve:
    def __init__(self, path: Path, size: int = RESERVE_BYTES, slice_size: int = SLICE_BYTES):
        self.path = Path(path)
        self.size = size
        self.slice_size = slice_size

    def _free(self) -> int:
        stat = os.statvfs(self.path.parent)
        return stat.f_bavail * stat.f_frsize

    def _held(self) -> int | None:
        """Bytes the reserve holds now; None when there is no reserve file."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        # Something else in its place (a directory's size is its file system's
        # business) is no reserve, and must never hold deliveries back.
        return stat.st_size if S_ISREG(stat.st_mode) else None

    def _fill(self) -> bool:
        """Make the reserve whole (or make it); False, and it is left as it was, when there is no room."""
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            held = os.fstat(fd).st_size
            try:
                os.posix_fallocate(fd, 0, self.size)
                os.fsync(fd)
                return True
            except OSError as e:
                if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                os.ftruncate(fd, held)
                return False
        finally:
            os.close(fd)

    def _shrink(self, held: int) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, max(0, held - self.slice_size))
        finally:
            os.close(fd)

    @_never_in_the_way
    def keep(self) -> None:
        """At the server's start: make the reserve if there is none and there is room for it."""
        if self._held() is None and self._free() >= 2 * self.size and not self._fill():
            self.path.unlink(missing_ok=True)

    @_never_in_the_way
    def before_index_write(self) -> None:
        """Let the index grow into the reserve on a (nearly) full disk; make it whole once there is room again."""
        held = self._held()
        if held is None:
            return
        free = self._free()
        if free < self.slice_size and held:
            self._shrink(held)
        elif free >= 2 * self.size and held < self.size:
            self._fill()

    def before_delivery(self) -> None:
        """Raise L{DiskFull} while the reserve is short and the disk has not got room back."""
        if self._short():
            raise DiskFull("the disk is full; the space left is kept for deleting mail")

    @_never_in_the_way
    def _short(self) -> bool:
        held = self._held()
        if held is None or held >= self.size:
            return False
        return self._free() < 2 * self.size or not self._fill()
