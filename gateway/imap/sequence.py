"""
IMAP sequence sets: message sequence numbers and UID sets.

RFC 3501 9 (``sequence-set``) and 6.4.8 (UID ranges).  Pure: no Twisted.

A set is parsed once from client text into ``SequenceSet`` and resolved
against the mailbox as it is at the moment of the command, where ``*``
means the largest number in use (the message count, or the largest UID).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator

import attrs

# RFC 3501 9: nz-number is a 32-bit unsigned value.
MAX_NUMBER = 4294967295

# nz-number = digit-nz *DIGIT.  Spelled out as [0-9] rather than \d, which
# also matches non-ASCII digits.
_SEQ_NUMBER = rb"(?:[1-9][0-9]{0,9}|\*)"
_ELEMENT = re.compile(rb"(" + _SEQ_NUMBER + rb")(?::(" + _SEQ_NUMBER + rb"))?")


class SequenceSetError(ValueError):
    """
    Client text is not a valid sequence set, or exceeds our limits.
    """


@attrs.frozen
class SequenceSet:
    """
    A parsed sequence set, before ``*`` is known.

    ``ranges`` holds the elements as written, each as an inclusive
    ``(first, last)`` pair in either order; ``None`` stands for ``*``.
    A single number ``n`` is ``(n, n)``.
    """

    ranges: tuple[tuple[int | None, int | None], ...]

    @property
    def largest_number(self) -> int | None:
        """
        The largest number written explicitly, ignoring ``*``; ``None`` if
        the set is only ``*``.  RFC 3501 9 asks for BAD when a message
        sequence number exceeds the message count: callers check this.
        """
        numbers = [n for pair in self.ranges for n in pair if n is not None]
        return max(numbers, default=None)

    def resolve(self, largest: int) -> list[tuple[int, int]]:
        """
        Sorted, merged, non-overlapping inclusive ranges within
        ``1..largest``, with ``*`` standing for ``largest``.

        A range reaching past ``largest`` is clamped to it, so ``559:*``
        includes ``largest`` even when 559 is higher (RFC 3501 6.4.8).
        In an empty mailbox (``largest == 0``) every set resolves to ``[]``.
        """
        bounded = []
        for first, last in self.ranges:
            first = largest if first is None else first
            last = largest if last is None else last
            low, high = min(first, last), min(max(first, last), largest)
            low = max(low, 1)
            if low <= high:
                bounded.append((low, high))
        bounded.sort()
        merged: list[tuple[int, int]] = []
        for low, high in bounded:
            if merged and low <= merged[-1][1] + 1:
                if high > merged[-1][1]:
                    merged[-1] = (merged[-1][0], high)
            else:
                merged.append((low, high))
        return merged

    def contains(self, number: int, largest: int) -> bool:
        """
        Whether ``number`` is in the set when ``*`` is ``largest``.
        """
        ranges = self.resolve(largest)
        index = bisect_right(ranges, (number, MAX_NUMBER + 1)) - 1
        return index >= 0 and ranges[index][0] <= number <= ranges[index][1]

    def iterate(self, largest: int, limit: int | None = None) -> Iterator[int]:
        """
        The numbers in the set, ascending, at most ``limit`` of them.

        Lazy: ``1:4294967295`` costs nothing until consumed.
        """
        remaining = limit
        for low, high in self.resolve(largest):
            if remaining is not None:
                high = min(high, low + remaining - 1)
                remaining -= high - low + 1
            yield from range(low, high + 1)
            if remaining is not None and remaining <= 0:
                return

    def __str__(self) -> str:
        def number(n: int | None) -> str:
            return "*" if n is None else str(n)

        return ",".join(
            number(first) if first == last else f"{number(first)}:{number(last)}"
            for first, last in self.ranges
        )


def parse_sequence_set(
    text: bytes | str, *, max_length: int = 100_000, max_ranges: int = 10_000
) -> SequenceSet:
    """
    Parse an RFC 3501 ``sequence-set`` such as ``1,3:5,9:*``.

    Raises ``SequenceSetError`` for anything outside the grammar: 0, empty
    elements, signs, spaces, underscores, non-ASCII digits, numbers above
    2**32-1, and for text longer than ``max_length`` characters or with
    more than ``max_ranges`` elements.
    """
    if len(text) > max_length:
        raise SequenceSetError(
            f"sequence set longer than {max_length} characters"
        )
    if isinstance(text, str):
        if not text.isascii():
            raise SequenceSetError("sequence set contains non-ASCII characters")
        text = text.encode("ascii")
    if not text:
        raise SequenceSetError("empty sequence set")
    if text.count(b",") >= max_ranges:
        raise SequenceSetError(f"sequence set has more than {max_ranges} ranges")
    ranges = []
    for element in text.split(b","):
        match = _ELEMENT.fullmatch(element)
        if match is None:
            raise SequenceSetError(
                f"invalid sequence set element {_show(element)}"
            )
        first = _seq_number(match.group(1))
        last = first if match.group(2) is None else _seq_number(match.group(2))
        ranges.append((first, last))
    return SequenceSet(tuple(ranges))


def format_sequence_set(numbers: Iterable[int]) -> str:
    """
    Compress numbers into sequence-set text: ``[1, 2, 3, 5]`` -> ``1:3,5``.

    Order is kept (RFC 4315 COPYUID pairs source and destination UIDs by
    position), so only ascending runs of consecutive numbers are joined;
    ascending input gives the shortest text.
    """
    runs: list[list[int]] = []
    for number in numbers:
        if not 1 <= number <= MAX_NUMBER:
            raise SequenceSetError(f"{number} is not a valid sequence number")
        if runs and number == runs[-1][1] + 1:
            runs[-1][1] = number
        else:
            runs.append([number, number])
    if not runs:
        raise SequenceSetError("cannot format an empty sequence set")
    return ",".join(
        str(first) if first == last else f"{first}:{last}" for first, last in runs
    )


def _seq_number(text: bytes) -> int | None:
    if text == b"*":
        return None
    number = int(text)  # only ASCII digits, at most 10: checked by _ELEMENT
    if number > MAX_NUMBER:
        raise SequenceSetError(f"{number} is larger than {MAX_NUMBER}")
    return number


def _show(element: bytes) -> str:
    shown = element[:20].decode("ascii", "backslashreplace")
    return repr(shown + ("..." if len(element) > 20 else ""))
