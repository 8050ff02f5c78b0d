"""
Finding lines that start with a dot in mail data: where POP3 stuffs one
(RFC 1939 3) and where LMTP's DATA may end (RFC 5321 4.1.1.4, 4.5.2).

Pure: no Twisted.
"""

from __future__ import annotations

# Dots searched for one at a time before a plain two-byte search takes over.
_DOT_PROBES = 32


def find_dot_line(data: bytes, start: int = 0) -> int:
    """
    ``data.find(b"\\n.", start)``, faster: a one-byte find is a memchr,
    while CPython runs a byte loop for a two-byte needle, and most message
    bytes (base64 attachments) hold no dot at all.  After a few dots that
    start no line, the plain search takes over, so text full of dots costs
    about what it did.
    """
    find = data.find
    dot = find(b".", start + 1)
    for _ in range(_DOT_PROBES):
        if dot < 0:
            return -1
        if data[dot - 1] == 0x0A:
            return dot - 1
        dot = find(b".", dot + 1)
    return -1 if dot < 0 else find(b"\n.", dot - 1)
