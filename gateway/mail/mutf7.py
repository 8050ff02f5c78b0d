"""
Modified UTF-7, the wire form of IMAP mailbox names (RFC 3501 5.1.3), which
Maildir++ folder names use too.

Pure: no Twisted.
"""

from __future__ import annotations

import base64
import re


class BadMailboxName(ValueError):
    """The wire form of a mailbox name is not valid modified UTF-7."""


def encode_mailbox(name: str) -> bytes:
    """Text mailbox name -> modified UTF-7 (RFC 3501 5.1.3)."""
    out = []
    pending: list[str] = []

    def flush_pending():
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush_pending()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush_pending()
    return "".join(out).encode("ascii")


_SHIFTED = re.compile(rb"&([A-Za-z0-9+,]*)-")


def decode_mailbox(wire: bytes) -> str:
    """Modified UTF-7 -> text; raises L{BadMailboxName}."""
    out = []
    position = 0
    while position < len(wire):
        byte = wire[position]
        if byte == ord("&"):
            match = _SHIFTED.match(wire, position)
            if match is None:
                raise BadMailboxName("unterminated & sequence")
            chunk = match[1]
            if not chunk:
                out.append("&")
            else:
                padded = chunk.replace(b",", b"/") + b"=" * (-len(chunk) % 4)
                try:
                    out.append(base64.b64decode(padded, validate=True).decode("utf-16-be"))
                except ValueError as e:
                    raise BadMailboxName("bad base64 in & sequence") from e
            position = match.end()
        elif 0x20 <= byte <= 0x7E:
            out.append(chr(byte))
            position += 1
        else:
            raise BadMailboxName("8-bit or control character in mailbox name")
    name = "".join(out)
    if encode_mailbox(name) != wire:
        # RFC 3501 5.1.3: a name has exactly one encoding.
        raise BadMailboxName("not the canonical modified UTF-7 form")
    return name
