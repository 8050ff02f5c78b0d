"""
The DATA spool of one LMTP transaction: the message kept in memory as it
arrives, up to ``IN_MEMORY`` bytes, and past that in an anonymous file in
the store's ``tmp/`` (``SpillFile``) that is made and written off the
reactor thread.

In memory, each copy is its recipient's trace fields on top of the message
bytes (``TracedMessage``): the store writes, fsyncs and parses it on its own
threads, so the reactor never makes a file nor writes one for a message that
fits.  A message that spills is on disk as it arrives, bounding what a
session holds in memory; with one recipient that recipient's trace fields go
in first, so the file is the whole copy to store (``WholeCopy``): when every
line ends in CRLF, as from any MTA that speaks LMTP, a store on the same file
system takes the file itself as the body, and it is written once.

No Twisted import here.
"""

from __future__ import annotations

from gateway.mail.message import crlf_throughout
from gateway.store.traced import TracedMessage, WholeCopy

# What one transaction keeps in memory before it spills to a file.  Most
# mail is far smaller (the benchmark corpus: median 7 KB, 90% under 200 KB),
# so nearly every message is never a file of its own before the store's;
# Dovecot's LMTP keeps 128 KB.  It bounds a session's memory: the MTA opens
# a handful of LMTP connections, but nothing stops a thousand, and 256 MB
# is a fair worst case where 1 GB would not be.
IN_MEMORY = 256 * 1024


class LineEnds:
    """Whether every line of data seen so far, in chunks, ends in CRLF."""

    def __init__(self):
        self.crlf = True
        # A CR that ended the last chunk waits for the next to show its LF.
        self._held_cr = False

    @property
    def normalised(self) -> bool:
        """Every line ends in CRLF: CRLF-normalising would change nothing."""
        return self.crlf and not self._held_cr

    def see(self, chunk: bytes) -> None:
        if not self.crlf or not chunk:
            return
        if self._held_cr:
            if chunk[0] != 0x0A:
                self.crlf = False
                return
            chunk = chunk[1:]
        self._held_cr = chunk.endswith(b"\r")
        if self._held_cr:
            chunk = chunk[:-1]
        if not crlf_throughout(chunk):
            self.crlf = False


class DataSpool:
    """
    The message of one transaction, as DATA arrives.  ``size`` counts the
    message data only (the size limit is the client's); ``fields``
    (CRLF-ended lines: the one recipient's trace fields, or empty) go on
    top of a spilled file.  ``spill(chunks)`` makes the ``SpillFile`` that
    takes the message once it is over ``in_memory`` bytes, starting with
    ``chunks``.  ``error`` is the first failure of the file, if any (a full
    disk), after which nothing more is written.
    """

    def __init__(self, fields: bytes, max_size: int, spill, in_memory: int = IN_MEMORY):
        self.fields = fields
        self.size = 0
        self._max_size = max_size
        self._spill = spill
        self._in_memory = in_memory
        self._chunks: list[bytes] = []
        self._data: bytes | None = None
        self.file = None

    @property
    def too_big(self) -> bool:
        return self.size > self._max_size

    @property
    def error(self) -> OSError | None:
        return None if self.file is None else self.file.error

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.too_big:
            # Refused at the end whatever follows: nothing more is kept.
            self._chunks = []
            return
        if self.file is not None:
            self.file.write(chunk)
            return
        self._chunks.append(chunk)
        if self.size > self._in_memory:
            chunks, self._chunks = self._chunks, []
            self.file = self._spill([self.fields, *chunks] if self.fields else chunks)

    def room(self):
        """None while the session may read on; else a Deferred that fires once it may (``SpillFile.room``)."""
        return None if self.file is None else self.file.room()

    def finish(self):
        """
        The end of DATA: an awaitable that is done once the message is all
        where ``copy_for`` finds it (a full disk may show only now, in
        ``error``).
        """
        if self.file is not None:
            return self.file.finish()
        self._data, self._chunks = b"".join(self._chunks), []
        return None

    def copy_for(self, fields: bytes):
        """The source to store for the recipient whose trace fields are ``fields``."""
        if self.file is None:
            return TracedMessage(fields, self._data)
        if self.fields:
            return WholeCopy(self.file.file, self.fields, normalised=self.file.normalised)
        return TracedMessage(fields, self.file.file)

    def close(self) -> None:
        """The data is no longer wanted (a store keeps what it linked)."""
        self._chunks, self._data = [], None
        if self.file is not None:
            self.file.close()
