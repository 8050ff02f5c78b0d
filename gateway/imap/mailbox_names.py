"""
Mailbox names on the wire: modified UTF-7 (RFC 3501 5.1.3) by default,
UTF-8 once the client enables UTF8=ACCEPT (RFC 6855 3) or IMAP4rev2
(RFC 9051 5.1), whose names are UTF-8 both ways.

Pure: no Twisted.
"""

from __future__ import annotations

from gateway.imap.wire import canonical_name, quote
from gateway.mail import mutf7

class BadMailboxName(ValueError):
    """A name that is neither valid modified UTF-7 nor, in UTF-8 mode, valid UTF-8."""


def decode_name(wire: bytes, utf8: bool = False) -> str:
    """The store's name for ``wire`` (INBOX in any case is INBOX)."""
    if utf8:
        try:
            name = wire.decode("utf-8")
        except UnicodeDecodeError:
            raise BadMailboxName("not UTF-8") from None
        # RFC 6855 3: Net-Unicode, so no control characters.
        if any(ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0 for char in name):
            raise BadMailboxName("control characters")
        return canonical_name(name)
    try:
        return canonical_name(mutf7.decode_mailbox(wire))
    except mutf7.BadMailboxName:
        raise BadMailboxName("not modified UTF-7") from None


def encode_name(name: str, utf8: bool = False) -> bytes:
    """``name`` as a quoted string in the session's form."""
    return quote(name.encode("utf-8") if utf8 else mutf7.encode_mailbox(name))
