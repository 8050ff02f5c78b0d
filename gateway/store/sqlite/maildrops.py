"""
POP3 maildrop locks (RFC 1939 8: one session per maildrop) for every
process serving one SQLite store, as ``flock`` locks on files in the
store's ``run/``.

Why flock: the kernel drops it with the process that held it (a worker
killed mid-session frees its users at once), and it belongs to an open file
description, so two sessions of one process exclude each other as two
processes do.  It is taken with ``LOCK_NB``: a session never waits for
another, it is told ``[IN-USE]`` (RFC 2449 8.1.2).

A lock file is named by a hash of (user, device), never by the user's name
(no name chosen by a client becomes a path).  It is removed when its lock is
released, so files do not pile up: only a holder that died leaves one, and
the next lock of that maildrop takes it over and removes it in turn.  A
removed file must not be locked by a latecomer that opened it just before:
a lock counts only if the path still names the locked file afterwards.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Callable
from pathlib import Path


def lock_name(user: str, device: str | None) -> str:
    """The file name of a maildrop's lock; a device name never holds NUL, so no two pairs share one."""
    key = user.encode() + (b"\0" + device.encode() if device is not None else b"")
    return "maildrop." + hashlib.sha256(key).hexdigest()[:40]


class MaildropLocks:
    """Maildrop locks of one store in the directory ``run``."""

    def __init__(self, run: Path):
        self._run = Path(run)

    def lock(self, user: str, device: str | None = None) -> Callable[[], None] | None:
        """
        Hold the maildrop: a callable releasing it (once; again does
        nothing), or None when another session, in any process, holds it.
        Raises OSError if the file system refuses.
        """
        path = self._run / lock_name(user, device)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            except BaseException:
                os.close(fd)
                raise
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return _releaser(path, fd)
            # Its holder released it and removed the file between our open
            # and our lock: try the file that is there now.
            os.close(fd)


def _releaser(path: Path, fd: int) -> Callable[[], None]:
    released = []

    def release() -> None:
        if released:
            return
        released.append(True)
        # Removed while still locked: whoever opened it meanwhile finds, once
        # locked, that the path names another file (or none) and tries again.
        path.unlink(missing_ok=True)
        os.close(fd)

    return release
