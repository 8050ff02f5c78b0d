"""
Tests for gateway.imap.sequence: RFC 3501 9 sequence sets and 6.4.8 UID ranges.
"""

import time

import pytest
from hypothesis import given, strategies as st

from gateway.imap.sequence import (
    MAX_NUMBER,
    SequenceSet,
    SequenceSetError,
    format_sequence_set,
    parse_sequence_set,
)


def brute_force(text: str, largest: int) -> set[int]:
    """
    The RFC 3501 9 meaning of a sequence set, computed the slow way.
    """
    numbers = set()
    for element in text.split(","):
        ends = [largest if e == "*" else int(e) for e in element.split(":")]
        low, high = min(ends), max(ends)
        numbers.update(n for n in range(low, high + 1) if 1 <= n <= largest)
    return numbers


@pytest.mark.parametrize(
    "text, largest, expected",
    [
        ("1", 10, [(1, 1)]),
        ("1:5", 10, [(1, 5)]),
        ("5:1", 10, [(1, 5)]),
        ("*", 10, [(10, 10)]),
        ("3:*", 10, [(3, 10)]),
        ("*:3", 10, [(3, 10)]),
        ("*:*", 10, [(10, 10)]),
        ("1,3:5,9:*", 12, [(1, 1), (3, 5), (9, 12)]),
        # RFC 3501 9: 2,4:7,9,12:* with 15 messages.
        ("2,4:7,9,12:*", 15, [(2, 2), (4, 7), (9, 9), (12, 15)]),
        ("1:3,2:6,7", 10, [(1, 7)]),
        ("9,1", 10, [(1, 1), (9, 9)]),
        # RFC 3501 6.4.8: 559:* includes the last UID even when it is lower.
        ("559:*", 400, [(400, 400)]),
        ("1:5", 3, [(1, 3)]),
        ("7:9", 3, []),
        # Empty mailbox: * is 0 and nothing is in range.
        ("1:*", 0, []),
        ("*", 0, []),
        ("1:4294967295", 4294967295, [(1, 4294967295)]),
    ],
)
def test_resolve(text, largest, expected):
    assert parse_sequence_set(text).resolve(largest) == expected


def test_bytes_and_str_parse_alike():
    assert parse_sequence_set(b"1,3:*") == parse_sequence_set("1,3:*")


def test_str_round_trips_as_written():
    assert str(parse_sequence_set(b"5:1,*,3:*,7")) == "5:1,*,3:*,7"


def test_contains():
    seqset = parse_sequence_set("2,4:6,10:*")
    assert [n for n in range(0, 14) if seqset.contains(n, 12)] == [
        2, 4, 5, 6, 10, 11, 12,
    ]
    assert not seqset.contains(13, 12)


def test_contains_star_in_empty_mailbox():
    assert not parse_sequence_set("*").contains(0, 0)
    assert not parse_sequence_set("1:*").contains(1, 0)


def test_largest_number():
    assert parse_sequence_set("3,9:2,*").largest_number == 9
    assert parse_sequence_set("*:*").largest_number is None


def test_iterate_is_lazy_over_the_whole_uid_space():
    seqset = parse_sequence_set("1:4294967295")
    started = time.monotonic()
    numbers = seqset.iterate(MAX_NUMBER)
    assert [next(numbers) for _ in range(3)] == [1, 2, 3]
    assert list(seqset.iterate(MAX_NUMBER, limit=4)) == [1, 2, 3, 4]
    assert seqset.contains(4000000000, MAX_NUMBER)
    assert time.monotonic() - started < 2


def test_iterate_limit_spans_ranges():
    seqset = parse_sequence_set("1:2,5:9")
    assert list(seqset.iterate(20)) == [1, 2, 5, 6, 7, 8, 9]
    assert list(seqset.iterate(20, limit=3)) == [1, 2, 5]
    assert list(seqset.iterate(20, limit=0)) == []


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0",
        "0:5",
        "5:0",
        "1,,2",
        ",1",
        "1,",
        "+5",
        "-5",
        "1:+5",
        " 5",
        "5 ",
        "1, 2",
        "1_0",
        "\u0661",  # ARABIC-INDIC DIGIT ONE: int() would accept it
        "\uff11",  # FULLWIDTH DIGIT ONE
        "4294967296",
        "1:4294967296",
        "99999999999",
        "01",
        "1:2:3",
        "**",
        "1:",
        ":1",
        "a",
        "1\n",
        "$",
    ],
)
def test_refuses(text):
    with pytest.raises(SequenceSetError):
        parse_sequence_set(text)
    with pytest.raises(SequenceSetError):
        parse_sequence_set(text.encode("utf-8"))


def test_error_message_names_the_element():
    with pytest.raises(SequenceSetError, match="'1_0'"):
        parse_sequence_set("1,1_0")


def test_limits_are_enforced_quickly():
    started = time.monotonic()
    with pytest.raises(SequenceSetError, match="longer than 100000"):
        parse_sequence_set(b"1" * 100_001)
    with pytest.raises(SequenceSetError, match="more than 10000 ranges"):
        parse_sequence_set(",".join(["1"] * 10_001))
    with pytest.raises(SequenceSetError, match="longer than 10 characters"):
        parse_sequence_set("1:2,3:4,555", max_length=10)
    with pytest.raises(SequenceSetError, match="more than 2 ranges"):
        parse_sequence_set("1,2,3", max_ranges=2)
    assert time.monotonic() - started < 2


def test_limits_allow_up_to_the_maximum():
    assert len(parse_sequence_set(",".join(["1"] * 10_000)).ranges) == 10_000
    assert parse_sequence_set("1,2", max_ranges=2).resolve(5) == [(1, 2)]


@pytest.mark.parametrize(
    "numbers, text",
    [
        ([1], "1"),
        ([1, 2, 3, 5], "1:3,5"),
        ([4, 5, 6, 10, 11, 20], "4:6,10:11,20"),
        # RFC 4315 COPYUID pairs UIDs by position: order is kept.
        ([5, 3, 4], "5,3:4"),
        ([4294967295], "4294967295"),
    ],
)
def test_format(numbers, text):
    assert format_sequence_set(numbers) == text


@pytest.mark.parametrize("numbers", [[], [0], [-1], [4294967296]])
def test_format_refuses(numbers):
    with pytest.raises(SequenceSetError):
        format_sequence_set(numbers)


@given(st.lists(st.integers(1, MAX_NUMBER), min_size=1, max_size=50))
def test_format_then_parse_round_trips(numbers):
    numbers = sorted(set(numbers))
    seqset = parse_sequence_set(format_sequence_set(numbers))
    assert list(seqset.iterate(max(numbers))) == numbers


@given(st.lists(st.integers(1, 300), min_size=1, max_size=60, unique=True))
def test_format_keeps_order(numbers):
    seqset = parse_sequence_set(format_sequence_set(numbers))
    written = [
        n for first, last in seqset.ranges for n in range(first, last + 1)
    ]
    assert written == numbers


seq_number = st.one_of(st.integers(1, 40).map(str), st.just("*"))
seq_element = st.one_of(
    seq_number, st.tuples(seq_number, seq_number).map(":".join)
)


@given(st.lists(seq_element, min_size=1, max_size=8).map(",".join), st.integers(0, 40))
def test_resolve_matches_brute_force(text, largest):
    seqset = parse_sequence_set(text)
    expected = brute_force(text, largest)
    resolved = seqset.resolve(largest)
    assert {n for low, high in resolved for n in range(low, high + 1)} == expected
    # Sorted, non-overlapping and merged: a gap separates neighbours.
    for (_, high), (low, _) in zip(resolved, resolved[1:]):
        assert low > high + 1
    assert list(seqset.iterate(largest)) == sorted(expected)
    assert {n for n in range(0, 42) if seqset.contains(n, largest)} == expected


@given(st.text(max_size=30))
def test_random_text_parses_or_raises_sequence_set_error(text):
    try:
        seqset = parse_sequence_set(text)
    except SequenceSetError:
        return
    assert isinstance(seqset, SequenceSet)
    assert seqset.resolve(10) == seqset.resolve(10)


@given(st.binary(max_size=30))
def test_random_bytes_parse_or_raise_sequence_set_error(text):
    try:
        parse_sequence_set(text)
    except SequenceSetError:
        pass
