"""
A message as a delivery hands it to the store: header fields of its own
(trace fields: ``Return-Path``, ``Delivered-To``, ``Received``) on top of a
message file that the other copies of one LMTP transaction share
(``TracedMessage``), or a file that already is the whole copy
(``WholeCopy``).
No Twisted import here.
"""

from __future__ import annotations

import io
import os


class TracedMessage:
    """
    ``fields`` (whole CRLF-ended header lines) followed by ``message`` (bytes,
    or a binary file written and flushed: it is read by position, under any
    buffer), readable as any source ``IMailStore.append`` takes: the
    fields, then the message from its start.  Nothing is copied per copy.

    Several copies share ``message``, and a store may read them at once on
    several threads (copies that reach it in different groups, as those of
    recipients whose mailboxes are made on first delivery): each reads it at
    a position of its own, never by moving the file's.  A store that takes
    them together (``IGroupCommitStore.append_many``) may instead read
    ``message`` once (``from_start``), parse it once and put each copy's
    fields on top (``MessageStructure.with_fields_on_top``).
    """

    def __init__(self, fields: bytes, message):
        self.fields = fields
        self.message = message
        self._prefix = fields
        self._position = 0

    @classmethod
    def from_start(cls, message) -> TracedMessage:
        """``message`` alone, from its start, at a position of its own."""
        return cls(b"", message)

    def read(self, size: int = -1) -> bytes:
        if self._prefix:
            if size < 0:
                chunk, self._prefix = self._prefix + self._read(-1), b""
                return chunk
            chunk, self._prefix = self._prefix[:size], self._prefix[size:]
            return chunk
        return self._read(size)

    def _read(self, size: int) -> bytes:
        chunk = _read_at(self.message, self._position, size)
        self._position += len(chunk)
        return chunk


def _read_at(file, position: int, size: int) -> bytes:
    """Up to ``size`` bytes (all, if negative) of ``file`` from ``position``; its own position is left alone."""
    if isinstance(file, bytes):
        if position == 0 and (size < 0 or size >= len(file)):
            return file
        return file[position:] if size < 0 else file[position:position + size]
    try:
        fd = file.fileno()
    except (AttributeError, io.UnsupportedOperation):
        with file.getbuffer() as view:
            return bytes(view[position:] if size < 0 else view[position:position + size])
    if size >= 0:
        return os.pread(fd, size, position)
    chunks = []
    while chunk := os.pread(fd, 1 << 20, position):
        chunks.append(chunk)
        position += len(chunk)
    return b"".join(chunks)


class WholeCopy:
    """
    A copy that is a whole file: its trace ``fields`` already at the start
    of ``file`` (an LMTP transaction with one recipient spools them before
    the message), readable from its start as any source.  ``normalised``
    says every line already ends in CRLF, as a store writes bodies: a store
    on the file's file system may then take the file itself (``fileno``)
    as the body instead of writing it again.
    """

    def __init__(self, file, fields: bytes, normalised: bool):
        self.file = file
        self.fields = fields
        self.normalised = normalised
        self._started = False

    def fileno(self) -> int:
        return self.file.fileno()

    def read(self, size: int = -1) -> bytes:
        if not self._started:
            self._started = True
            self.file.seek(0)
        return self.file.read(size)


def read_again(source):
    """
    ``source`` (bytes, a L{TracedMessage} or a L{WholeCopy}) as a new source
    read from its start, however much of it was read; None for any other
    source, a stream that cannot be read twice.  A delivery the store
    refused before it stored anything is tried again with it.
    """
    if isinstance(source, bytes):
        return source
    if isinstance(source, TracedMessage):
        return TracedMessage(source.fields, source.message)
    if isinstance(source, WholeCopy):
        return WholeCopy(source.file, source.fields, source.normalised)
    return None
