"""
Mailbox names as the store accepts them (RFC 3501 5.1).  Pure.
"""

from __future__ import annotations

from gateway.store.interfaces import InvalidMailboxName
from gateway.store.model import HIERARCHY_SEPARATOR


def canonical_name(name: str) -> str:
    """
    RFC 3501 5.1: INBOX is case-insensitive, and so is the INBOX level of its
    inferiors ("inbox/Work" is "INBOX/Work", as in Dovecot); nothing else is.
    """
    head, sep, rest = name.partition(HIERARCHY_SEPARATOR)
    if head.upper() == "INBOX":
        return "INBOX" + sep + rest
    return name


def check_name(name: str) -> str:
    name = canonical_name(name)
    levels = name.split(HIERARCHY_SEPARATOR)
    if not name or any(level == "" for level in levels):
        raise InvalidMailboxName("Mailbox name has an empty hierarchy level")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise InvalidMailboxName("Mailbox name contains control characters")
    if any(c in name for c in "*%"):
        raise InvalidMailboxName("Mailbox name contains a wildcard character")
    return name
