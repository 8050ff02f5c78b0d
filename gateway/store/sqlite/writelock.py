"""
The lock every process writing one SQLite store takes around each write
transaction (``run/write.lock``), so that writers of several processes wait
for each other in the kernel rather than in SQLite's busy handler.

SQLite's own write lock cannot be waited for: a connection that finds it
taken sleeps (1, 2, 5, 10 ms...) and tries again, so under contention each
write pays milliseconds after the lock is free.  A blocking ``flock`` wakes
its waiter the moment the holder lets go.  It is taken only where blocking
is allowed (the writer thread; the opening thread; a CLI tool), never on a
reactor.  SQLite's lock stays underneath, and its busy timeout is what a
process that does not take this one (an older version, a hand-run sqlite3)
is waited for with.

The lock file is opened once per process (a descriptor inherited through a
fork would be one lock shared by parent and child) and never removed.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class WriteLock:
    """
    One store's lock, taken by one thread at a time: the store's writes are
    its writer thread's (or, before that starts, the opening thread's).
    """

    def __init__(self, path: Path):
        self._path = Path(path)
        self._fd: int | None = None
        self._pid: int | None = None

    def acquire(self) -> None:
        """Wait as long as another process holds the lock (raises OSError if its file cannot be opened)."""
        pid = os.getpid()
        if self._pid != pid:
            # After a fork the inherited descriptor is left to the parent.
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._pid = pid
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = self._pid = None
