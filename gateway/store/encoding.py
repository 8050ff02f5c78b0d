"""
How records, flag lists and part trees are kept in an index row, shared by
every backend: flags as one space-separated text, INTERNALDATE as Unix time
plus the zone's offset in minutes, the part tree as JSON.  Pure.
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Iterable

from gateway.store.model import MessageRecord, MessageStructure, Part, new_flags

# Bounds of the memos of this module and the stores'; past them a memo
# starts again empty.
MEMO_LIMIT = 4096


def flags_text(flags: Iterable[str]) -> str:
    return " ".join(sorted(set(flags)))


# A mailbox holds few distinct flag lists and time zones: a SELECT of
# thousands of messages parses each once.
_flag_sets: dict[str, frozenset[str]] = {}
_zones: dict[int, datetime.timezone] = {}


def flag_set(text: str) -> frozenset[str]:
    flags = _flag_sets.get(text)
    if flags is None:
        if len(_flag_sets) >= MEMO_LIMIT:
            _flag_sets.clear()
        flags = _flag_sets[text] = frozenset(text.split())
    return flags


def date_columns(internaldate: datetime.datetime) -> tuple[int, int]:
    """INTERNALDATE as (Unix time, offset of its zone in minutes)."""
    offset = internaldate.utcoffset() or datetime.timedelta(0)
    return int(internaldate.timestamp()), int(offset.total_seconds() // 60)


_MONTHS = (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec")


def date_text(internaldate: int, tzoffset: int) -> bytes:
    """INTERNALDATE's columns as an RFC 3501 date-time, quoted: ``b'"17-Jul-1996 02:44:25 -0700"'``."""
    when = time.gmtime(internaldate + tzoffset * 60)
    minutes = abs(tzoffset)
    return b'"%02d-%s-%04d %02d:%02d:%02d %s%02d%02d"' % (
        when.tm_mday, _MONTHS[when.tm_mon - 1], when.tm_year, when.tm_hour, when.tm_min, when.tm_sec,
        b"-" if tzoffset < 0 else b"+", minutes // 60, minutes % 60,
    )


def record_from_row(row) -> MessageRecord:
    uid, flags, internaldate, tzoffset, size, modseq = row
    return MessageRecord(uid, flag_set(flags), _internaldate(internaldate, tzoffset), size, modseq)


def _internaldate(internaldate: int, tzoffset: int) -> datetime.datetime:
    zone = _zones.get(tzoffset)
    if zone is None:
        zone = _zones[tzoffset] = datetime.timezone(datetime.timedelta(minutes=tzoffset))
    return datetime.datetime.fromtimestamp(internaldate, zone)


def flag_changes(rows, flags: frozenset[str], mode: str, unchangedsince: int | None,
                 modseq: int) -> tuple[list[MessageRecord], list[int], dict[str, list[int]]]:
    """
    What a STORE of ``flags`` (``mode`` "set", "add" or "remove") makes of
    the messages of index ``rows`` (``record_from_row``'s): the records it
    changes, at ``modseq``; the UIDs it must leave alone because they
    changed after ``unchangedsince`` (RFC 7162 3.1.3); and the changed UIDs
    by the text of their new flags, for the index to write.  A message
    whose flags would stay as they are is none of these.

    Each distinct flag list is worked out once (a mailbox holds few), and
    only a message that changes becomes a record: POP3 flags every message
    it sends \\Seen, and this runs on the store's writer for each.
    """
    changed, refused, written = [], [], {}
    outcomes: dict[str, tuple[frozenset[str], str] | None] = {}
    for uid, text, internaldate, tzoffset, size, row_modseq in rows:
        if unchangedsince is not None and row_modseq > unchangedsince:
            refused.append(uid)
            continue
        if text in outcomes:
            outcome = outcomes[text]
        else:
            old = flag_set(text)
            new = new_flags(old, flags, mode)
            outcome = outcomes[text] = None if new == old else (new, flags_text(new))
        if outcome is not None:
            changed.append(MessageRecord(uid, outcome[0], _internaldate(internaldate, tzoffset), size, modseq))
            written.setdefault(outcome[1], []).append(uid)
    return changed, refused, written


# Part trees by their JSON: parsing one costs more than the rest of a FETCH
# of ENVELOPE and BODYSTRUCTURE, and clients ask for the same messages again
# (the list, then the parts of the one opened).  Bodies never change, so an
# entry never goes stale.  Only trees of ordinary size are kept: a message
# of ten thousand parts has half a megabyte of JSON, and a mailbox of them
# must not fill the memory.
_part_trees: dict[str, Part] = {}
_LARGEST_MEMO_TREE = 16 << 10


def structure_from_row(envelope, body, bodystructure, header, parts) -> MessageStructure:
    root = _part_trees.get(parts)
    if root is None:
        root = part_from_json(json.loads(parts))
        if len(parts) <= _LARGEST_MEMO_TREE:
            if len(_part_trees) >= 4 * MEMO_LIMIT:
                _part_trees.clear()
            _part_trees[parts] = root
    return MessageStructure(envelope, body, bodystructure, header, root)


def structure_columns(structure: MessageStructure) -> tuple[bytes, bytes, bytes, bytes, str]:
    """What ``structure_from_row`` takes back."""
    return (
        structure.envelope,
        structure.body,
        structure.bodystructure,
        structure.header,
        json.dumps(part_to_json(structure.root)),
    )


def part_to_json(part: Part):
    return [
        part.header_start,
        part.body_start,
        part.end,
        part.content_type,
        [part_to_json(child) for child in part.children],
    ]


def part_from_json(value) -> Part:
    header_start, body_start, end, content_type, children = value
    return Part(header_start, body_start, end, content_type, tuple(map(part_from_json, children)) if children else ())
