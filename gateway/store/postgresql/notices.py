"""
The NOTIFY payloads that tell other nodes which mailboxes changed: a
wake-up only, "mailbox_id:modseq" pairs separated by spaces.  The modseq
change log in the tables stays the truth: a node that misses a payload
catches up by asking for the highest modseq.

A user's list of mailboxes changed (created, deleted, renamed) is told as
"@node/user", the user percent-encoded, and the node that changed it named
so that it does not tell its own sessions twice.  Pure.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote, unquote

CHANNEL = "gateway_changes"

# PostgreSQL refuses a payload of 8000 bytes or more.
PAYLOAD_LIMIT = 7900


def encode(changed: dict[int, int]) -> Iterator[str]:
    """Payloads under the limit that together name every change."""
    pairs: list[str] = []
    length = 0
    for mailbox_id, modseq in sorted(changed.items()):
        pair = f"{mailbox_id}:{modseq}"
        if pairs and length + 1 + len(pair) > PAYLOAD_LIMIT:
            yield " ".join(pairs)
            pairs, length = [], 0
        pairs.append(pair)
        length += len(pair) + (1 if length else 0)
    if pairs:
        yield " ".join(pairs)


def decode(payload: str) -> dict[int, int]:
    """The changes a payload names; anything unreadable in it is skipped."""
    changed: dict[int, int] = {}
    for pair in payload.split():
        mailbox_id, sep, modseq = pair.partition(":")
        if sep and mailbox_id.isdigit() and modseq.isdigit():
            changed[int(mailbox_id)] = max(int(modseq), changed.get(int(mailbox_id), 0))
    return changed


def encode_list(node: str, user: str) -> str:
    """
    The payload saying that ``node`` changed ``user``'s list of mailboxes;
    a name too long to fit says that any user's may have changed.
    """
    quoted = quote(user, safe="")
    if len(node) + len(quoted) + 2 > PAYLOAD_LIMIT:
        quoted = ""
    return f"@{node}/{quoted}"


def decode_lists(payload: str) -> list[tuple[str, str | None]]:
    """(node, user) for each list change a payload names; user None: any user's."""
    told = []
    for token in payload.split():
        node, sep, user = token[1:].partition("/")
        if not token.startswith("@") or not sep:
            continue
        try:
            told.append((node, unquote(user, errors="strict") if user else None))
        except UnicodeDecodeError:
            continue  # unreadable: skipped, as in ``decode``
    return told
