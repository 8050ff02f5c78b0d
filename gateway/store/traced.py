"""
A message as a delivery hands it to the store: header fields of its own
(trace fields: ``Return-Path``, ``Delivered-To``, ``Received``) on top of a
message file that the other copies of one LMTP transaction share.
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
