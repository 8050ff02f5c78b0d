"""
STATUS items (RFC 3501 6.3.10, HIGHESTMODSEQ of RFC 7162 3.1.2.2, SIZE of
RFC 8438, DELETED of RFC 9051 6.3.11): which are known, and their values
for one mailbox, for STATUS and for LIST's RETURN (STATUS ...) (RFC 5819).

Pure: no Twisted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gateway.store.model import MailboxInfo, MessageRecord

ITEMS = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ", "SIZE", "DELETED")


class StatusItemError(ValueError):
    """A STATUS item we do not know (tagged BAD)."""


def check_items(items: Iterable[str]) -> tuple[str, ...]:
    """The items in upper case, in the client's order; StatusItemError for an unknown one."""
    wanted = tuple(item.upper() for item in items)
    if not wanted:
        raise StatusItemError("no STATUS item")
    for item in wanted:
        if item not in ITEMS:
            raise StatusItemError(f"unknown STATUS item {item}")
    return wanted


def status_values(items: Sequence[str], info: MailboxInfo, records: Sequence[MessageRecord],
                  recent: int) -> list[tuple[str, int]]:
    """
    (item, value) pairs in ``items``' order.  ``records`` are the mailbox's
    messages as the store has them; ``recent`` is the \\Recent count this
    session may tell.
    """
    values = []
    for item in items:
        if item == "MESSAGES":
            value = len(records)
        elif item == "RECENT":
            value = recent
        elif item == "UIDNEXT":
            value = max(info.uidnext, records[-1].uid + 1 if records else 1)
        elif item == "UIDVALIDITY":
            value = info.uidvalidity
        elif item == "UNSEEN":
            value = sum(1 for record in records if "\\Seen" not in record.flags)
        elif item == "HIGHESTMODSEQ":
            value = info.highestmodseq
        elif item == "SIZE":
            value = sum(record.size for record in records)
        else:
            value = sum(1 for record in records if "\\Deleted" in record.flags)
        values.append((item, value))
    return values


def format_status(name: bytes, values: Iterable[tuple[str, int]]) -> bytes:
    """``STATUS name (item value ...)``, without the leading ``* ``; ``name`` on the wire already."""
    return b"STATUS %s (%s)" % (name, b" ".join(b"%s %d" % (item.encode("ascii"), value) for item, value in values))
