"""
SEARCH over a whole selected view at once (RFC 3501 6.4.4), for keys made
of flags, \\Recent, message sequence numbers and UIDs alone: ``UID SEARCH
1:* NOT DELETED``, ``UID SEARCH UID 500:* UNSEEN``.  Pure: no Twisted.

Each key becomes one byte per message (1 where it matches), worked out a
key at a time and never a message at a time: a flags-only part asks the
view (one evaluation per distinct flag list), a set of numbers is ranges
of bytes, and AND, OR and NOT are integer operations over all the bytes
at once.  The tree is walked with an explicit stack, so a client's nesting
never becomes Python recursion.
"""

from __future__ import annotations

from gateway.imap.search_keys import All, And, Flag, Not, Or, Recent, SearchKey, SequenceNumbers, Uids, children
from gateway.imap.search import flag_matcher
from gateway.imap.view import SelectedView

_ANSWERABLE = (All, Flag, Recent, SequenceNumbers, Uids, And, Or, Not)


def answerable(key: SearchKey) -> bool:
    """Whether the view alone answers ``key`` (no dates, sizes, text)."""
    stack = [key]
    while stack:
        key = stack.pop()
        if not isinstance(key, _ANSWERABLE):
            return False
        stack.extend(children(key))
    return True


def search(view: SelectedView, key: SearchKey, uids: bool = False) -> list[int]:
    """
    The sequence numbers (UIDs with ``uids``), ascending, of the messages
    of ``view`` not expunged that ``key`` matches; ``key`` must be
    ``answerable``.
    """
    count = view.exists
    ones = int.from_bytes(b"\x01" * count, "big")
    matched = _evaluate(view, key, count, ones) & int.from_bytes(view.live_mask(), "big")
    return view.chosen(matched.to_bytes(count, "big"), uids)


def _evaluate(view: SelectedView, root: SearchKey, count: int, ones: int) -> int:
    """``root`` as an integer whose byte i is 1 where message i + 1 matches."""
    flags_only = _flags_only_parts(root)
    results: list[int] = []
    stack: list[tuple[SearchKey, bool]] = [(root, False)]
    while stack:
        key, children_done = stack.pop()
        if flags_only[id(key)]:
            results.append(int.from_bytes(view.flag_mask(flag_matcher(key)), "big"))
        elif isinstance(key, SequenceNumbers):
            ranges = [(low - 1, high) for low, high in key.numbers.resolve(count)]
            results.append(_ranges(ranges, count))
        elif isinstance(key, Uids):
            results.append(_ranges(view.index_ranges(key.uids, by_uid=True), count))
        elif not children_done:
            stack.append((key, True))
            stack.extend((child, False) for child in reversed(children(key)))
        else:
            parts = [results.pop() for _ in children(key)]
            if isinstance(key, Not):
                results.append(parts[0] ^ ones)
            elif isinstance(key, And):
                combined = ones
                for part in parts:
                    combined &= part
                results.append(combined)
            else:
                combined = 0
                for part in parts:
                    combined |= part
                results.append(combined)
    return results.pop()


def _flags_only_parts(root: SearchKey) -> dict[int, bool]:
    """By ``id``, whether each part of ``root`` looks at flags and \\Recent alone."""
    flags_only: dict[int, bool] = {}
    stack: list[tuple[SearchKey, bool]] = [(root, False)]
    while stack:
        key, children_done = stack.pop()
        combined = children(key)
        if combined and not children_done:
            stack.append((key, True))
            stack.extend((child, False) for child in combined)
        else:
            flags_only[id(key)] = isinstance(key, (All, Flag, Recent, And, Or, Not)) and all(
                flags_only[id(child)] for child in combined)
    return flags_only


def _ranges(ranges: list[tuple[int, int]], count: int) -> int:
    mask = bytearray(count)
    for start, end in ranges:
        mask[start:end] = b"\x01" * (end - start)
    return int.from_bytes(mask, "big")
