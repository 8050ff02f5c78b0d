"""
The DATA spool of one LMTP transaction: an anonymous file in the store's
``tmp/`` that takes the message as it arrives.

With one recipient, that recipient's trace fields go in first, so the file
is the whole copy to store (``WholeCopy``): when every line of the message
already ends in CRLF, as from any MTA that speaks LMTP, a store on the same
file system takes the file itself as the body, and the message is written
once.  With several recipients each copy is its own fields on top of the
shared spool (``TracedMessage``).

No Twisted import here.
"""

from __future__ import annotations

import errno
import os
import tempfile

from gateway.store.traced import TracedMessage, WholeCopy

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


class DataSpool:
    """
    The message of one transaction, spooled as DATA arrives.  ``size``
    counts the message data only (the size limit is the client's), ``error``
    is the first write that failed (a full disk), after which nothing more
    is written; ``fields`` (CRLF-ended lines) are already at the start of
    the file.
    """

    def __init__(self, directory: str | None, fields: bytes, max_size: int):
        self.file = anonymous_file(directory)
        self.fields = fields
        self.size = 0
        self.error: OSError | None = None
        self._max_size = max_size
        # Every line so far ends in CRLF; a CR that ended the last chunk
        # waits for the next to show its LF.
        self._crlf = True
        self._held_cr = False
        if fields:
            self._write(fields)

    @property
    def too_big(self) -> bool:
        return self.size > self._max_size

    def write(self, chunk: bytes) -> OSError | None:
        """Spool ``chunk``; the error if this is the write that failed."""
        self.size += len(chunk)
        if self.error is not None or self.too_big:
            return None
        if self._crlf:
            self._check_line_ends(chunk)
        return self._write(chunk)

    def _write(self, chunk: bytes) -> OSError | None:
        try:
            self.file.write(chunk)
        except OSError as e:
            self.error = e
            return e
        return None

    def _check_line_ends(self, chunk: bytes) -> None:
        if self._held_cr:
            if not chunk.startswith(b"\n"):
                self._crlf = False
                return
            chunk = chunk[1:]
        self._held_cr = chunk.endswith(b"\r")
        if self._held_cr:
            chunk = chunk[:-1]
        line_feeds = chunk.count(b"\n")
        if not line_feeds == chunk.count(b"\r") == chunk.count(b"\r\n"):
            self._crlf = False

    def finish(self) -> None:
        """The end of DATA: write out what is buffered (a full disk may show only now)."""
        if self.error is None and not self.too_big:
            try:
                self.file.flush()
            except OSError as e:
                self.error = e

    def copy_for(self, fields: bytes):
        """The source to store for the recipient whose trace fields are ``fields``."""
        if self.fields:
            return WholeCopy(self.file, self.fields, normalised=self._crlf and not self._held_cr)
        return TracedMessage(fields, self.file)

    def close(self) -> None:
        """Close the file; the data is no longer wanted (a store keeps what it linked)."""
        try:
            self.file.close()
        except OSError:
            # On a full disk closing flushes what is still buffered and fails
            # again; the file is anonymous, so closing it frees it all the same.
            pass
