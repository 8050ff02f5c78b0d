"""
A message as a delivery hands it to the store: header fields of its own
(trace fields: ``Return-Path``, ``Delivered-To``, ``Received``) on top of a
message file that the other copies of one LMTP transaction share
(``TracedMessage``), or a file that already is the whole copy
(``WholeCopy``).
No Twisted import here.
"""

from __future__ import annotations


class TracedMessage:
    """
    ``fields`` (whole CRLF-ended header lines) followed by ``message`` (a
    binary file), readable as any source ``IMailStore.append`` takes: the
    fields, then the message from its start.  Nothing is copied per copy.

    Several copies share ``message``: read one after the other, each rewinds
    it when it starts.  A store that takes them together
    (``IGroupCommitStore.append_many``) may instead read ``message`` once,
    parse it once and put each copy's fields on top
    (``MessageStructure.with_fields_on_top``).
    """

    def __init__(self, fields: bytes, message):
        self.fields = fields
        self.message = message
        self._prefix = fields
        self._started = False

    def read(self, size: int = -1) -> bytes:
        if not self._started:
            self._started = True
            self.message.seek(0)
        if self._prefix:
            if size < 0:
                chunk, self._prefix = self._prefix + self.message.read(), b""
                return chunk
            chunk, self._prefix = self._prefix[:size], self._prefix[size:]
            return chunk
        return self.message.read(size)


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
