"""
The file a DATA spool spills to once the message outgrows memory, made,
written and closed on a thread, never on the reactor.

Making a file allocates an inode, which on a busy ext4 takes a millisecond
or more; writes and the final close (which frees an unlinked file's blocks)
may wait on the disk.  Here the reactor only hands chunks over: one job at a
time writes what has gathered since the last, in order, so a message is
written in as few jobs as the disk's pace allows.  What waits is bounded
(``BACKLOG``): past it the session stops reading until the disk catches up.
"""

from __future__ import annotations

import errno
import os
import tempfile

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.logger import Logger

from gateway.lmtp.spool import LineEnds

log = Logger()

# Bytes handed over and not yet written past which a session stops reading
# (``SpillFile.room``): the client is not faster than the disk for long.
BACKLOG = 1024 * 1024

# What open() says where a file system has no O_TMPFILE.
_NO_TMPFILE = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL)


def anonymous_file(directory: str | None):
    """
    A new file with no name in ``directory``: nothing is left behind
    whatever happens to this process.  O_TMPFILE without O_EXCL, so that the
    store may still give it a name (``linkat``); a plain unlinked temporary
    file where the file system cannot.

    @raise OSError: no file can be made there (a full disk).
    """
    directory = directory if directory is not None else tempfile.gettempdir()
    flags = getattr(os, "O_TMPFILE", 0)
    if flags:
        try:
            fd = os.open(directory, flags | os.O_RDWR | getattr(os, "O_CLOEXEC", 0), 0o600)
        except OSError as e:
            if e.errno not in _NO_TMPFILE:
                raise
        else:
            return os.fdopen(fd, "w+b")
    return tempfile.TemporaryFile(dir=directory, prefix="lmtp.")


class SpillFile:
    """
    An anonymous file in ``directory``, written with ``chunks`` and then
    whatever ``write`` is given, by ``run(work, *args)`` (a Deferred with
    the outcome of ``work`` on a thread).  ``file`` is the open file once
    ``finish`` is done; ``error`` the first failure (a full disk), after
    which nothing more is written; ``normalised`` says every line ends in
    CRLF.
    """

    def __init__(self, run, directory: str | None, chunks: list[bytes]):
        self._run = run
        self._directory = directory
        self.file = None
        self.error: OSError | None = None
        self._ends = LineEnds()
        self._pending = list(chunks)
        self.backlog = sum(len(chunk) for chunk in chunks)
        self._room: list[defer.Deferred] = []
        # The job running now; None when there is none.
        self._job: defer.Deferred | None = None
        self._next()

    @property
    def normalised(self) -> bool:
        return self._ends.normalised

    def write(self, chunk: bytes) -> None:
        if self.error is not None:
            return
        self._pending.append(chunk)
        self.backlog += len(chunk)
        if self._job is None:
            self._next()

    def room(self) -> defer.Deferred | None:
        """None while the backlog is under ``BACKLOG``; else a Deferred that fires once it is."""
        if self.backlog <= BACKLOG or self.error is not None:
            return None
        waiter = defer.Deferred()
        self._room.append(waiter)
        return waiter

    def finish(self) -> defer.Deferred:
        """A Deferred that fires once everything given is written and flushed."""
        return defer.Deferred.fromCoroutine(self._finish())

    async def _finish(self) -> None:
        await self._drained()
        if self.error is None:
            self._pending.append(None)
            self._next()
            await self._drained()

    def close(self) -> None:
        """Close the file on a thread once the jobs queued are done; a full disk is of no concern now."""
        defer.Deferred.fromCoroutine(self._close()).addErrback(
            lambda failure: log.failure("While closing an LMTP spool file", failure)
        )

    async def _close(self) -> None:
        await self._drained()
        self._pending = []
        if self.file is not None:
            file, self.file = self.file, None
            await self._run(_close, file)

    async def _drained(self) -> None:
        """Once no job is running (each job starts the next while chunks wait)."""
        while self._job is not None:
            waiter = defer.Deferred()
            self._job.addBoth(lambda outcome: (waiter.callback(None), outcome)[1])
            await waiter

    def _next(self) -> None:
        if not self._pending:
            return
        chunks, self._pending = self._pending, []
        job = self._job = self._run(self._write_all, chunks)
        job.addBoth(self._written, sum(len(chunk) for chunk in chunks if chunk is not None))

    def _write_all(self, chunks: list[bytes | None]) -> OSError | None:
        """On a thread: the chunks written in order (None: flush); the error that stopped them."""
        try:
            if self.file is None:
                self.file = anonymous_file(self._directory)
            for chunk in chunks:
                if chunk is None:
                    self.file.flush()
                    continue
                self._ends.see(chunk)
                self.file.write(chunk)
        except OSError as e:
            return e
        return None

    def _written(self, error: OSError | Failure | None, size: int) -> None:
        self._job = None
        self.backlog -= size
        if isinstance(error, Failure):
            log.failure("While spooling LMTP message data", error)
            error = OSError(errno.EIO, "cannot spool message data")
        if error is not None and self.error is None:
            self.error = error
            self._pending = []
            log.warn("Cannot spool LMTP message data: {error}", error=error.strerror)
        if self.error is not None:
            self.backlog = 0
        self._next()
        if self._room and (self.backlog <= BACKLOG or self.error is not None):
            waiting, self._room = self._room, []
            for waiter in waiting:
                waiter.callback(None)


def _close(file) -> None:
    try:
        file.close()
    except OSError:
        # On a full disk closing flushes what is still buffered and fails
        # again; the file is anonymous, so closing it frees it all the same.
        pass
