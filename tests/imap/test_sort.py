"""
Tests for gateway.imap.sort: SORT (RFC 5256 3) and SORT=DISPLAY (RFC 5957).
"""

import datetime

import pytest
from hypothesis import given, strategies as st

from gateway.imap.sort import (
    SortCriterion,
    SortSyntaxError,
    casemap,
    format_sort,
    needs,
    parse_sort_program,
    sent_date,
    sort_numbers,
    sort_values,
)

UTC = datetime.timezone.utc
ARRIVED = datetime.datetime(2000, 3, 5, 12, 0, tzinfo=UTC)


def header(**fields) -> bytes:
    return b"".join(b"%s: %s\r\n" % (name.replace("_", "-").encode(), value.encode("utf-8"))
                    for name, value in fields.items()) + b"\r\n"


def test_parse_sort_program():
    criteria, rest = parse_sort_program(b"(SUBJECT REVERSE DATE) UTF-8 ALL")
    assert criteria == (SortCriterion("SUBJECT"), SortCriterion("DATE", reverse=True))
    assert rest == b" UTF-8 ALL"
    criteria, _ = parse_sort_program(b"(displayfrom reverse displayto) utf-8 all")
    assert criteria == (SortCriterion("DISPLAYFROM"), SortCriterion("DISPLAYTO", reverse=True))


@pytest.mark.parametrize("line", [b"SUBJECT UTF-8 ALL", b"() UTF-8 ALL", b"(NAME) UTF-8 ALL",
                                  b"(REVERSE) UTF-8 ALL", b"(REVERSE REVERSE DATE) UTF-8 ALL", b"", None])
def test_bad_sort_programs(line):
    with pytest.raises(SortSyntaxError):
        parse_sort_program(line)


def test_needs():
    assert needs([SortCriterion("SIZE")]) == {"record"}
    assert needs([SortCriterion("SUBJECT")]) == {"header"}
    assert needs([SortCriterion("DATE")]) == {"header", "record"}


def test_sent_date_is_utc():
    # RFC 5256 2.2's own example.
    assert sent_date(header(Date="31 Dec 2000 16:01:33 -0800"), ARRIVED) == \
        datetime.datetime(2001, 1, 1, 0, 1, 33, tzinfo=UTC).timestamp()


def test_sent_date_without_a_usable_date_is_the_internaldate():
    assert sent_date(header(Subject="x"), ARRIVED) == ARRIVED.timestamp()
    assert sent_date(header(Date="yesterday"), ARRIVED) == ARRIVED.timestamp()


def test_sent_date_with_an_unknown_zone_is_utc():
    assert sent_date(header(Date="1 Jan 2001 00:01:33 XYZ"), ARRIVED) == \
        datetime.datetime(2001, 1, 1, 0, 1, 33, tzinfo=UTC).timestamp()


def test_casemap_folds_case_and_compatibility_forms():
    assert casemap("hello") == casemap("HELLO")
    assert casemap("Ǆ") == casemap("ǆ")  # titlecase, not uppercase, is the mapping
    assert casemap("\u212b") == casemap("å")  # ANGSTROM SIGN: NFKD
    assert casemap("straße") != casemap("STRASSE")  # simple mappings only


def _sorted(program: bytes, messages):
    criteria, _ = parse_sort_program(program)
    entries = [(number, sort_values(criteria, head, arrived, size)) for number, head, arrived, size in messages]
    return sort_numbers(criteria, entries)


MAILBOX = [
    # number, header, internaldate, size
    (1, header(Subject="Re: beta", From="Zed <z@x>", To="b@x", Date="2 Mar 2000 10:00:00 +0000"),
     ARRIVED, 300),
    (2, header(Subject="alpha", From="adam@x", To="Carol <a@x>", Date="1 Mar 2000 10:00:00 +0000"),
     ARRIVED - datetime.timedelta(days=1), 100),
    (3, header(Subject="[list] Beta", From='"Bob" <c@x>', Date="3 Mar 2000 10:00:00 +0000"),
     ARRIVED + datetime.timedelta(days=1), 200),
    (4, header(Subject="Alpha (fwd)", From="=?utf-8?q?=C3=89mile?= <b@x>", Cc="k@x",
               Date="1 Mar 2000 09:00:00 +0000"),
     ARRIVED, 100),
    (5, header(Subject="gamma"), ARRIVED + datetime.timedelta(days=2), 50),
]


def test_sort_by_subject_then_date():
    # The base subjects: alpha alpha beta beta gamma.
    assert _sorted(b"(SUBJECT DATE)", MAILBOX) == [4, 2, 1, 3, 5]


def test_reverse_turns_one_key_only():
    # RFC 5256 3: REVERSE SUBJECT is not the reverse of SUBJECT; the
    # sequence number still breaks ties upwards.
    assert _sorted(b"(REVERSE SUBJECT)", MAILBOX) == [5, 1, 3, 2, 4]
    assert _sorted(b"(SUBJECT REVERSE DATE)", MAILBOX) == [2, 4, 3, 1, 5]


def test_sort_by_size_arrival_and_date():
    assert _sorted(b"(SIZE)", MAILBOX) == [5, 2, 4, 3, 1]
    assert _sorted(b"(ARRIVAL)", MAILBOX) == [2, 1, 4, 3, 5]
    # Message 5 has no Date: its INTERNALDATE counts.
    assert _sorted(b"(DATE)", MAILBOX) == [4, 2, 1, 3, 5]


def test_sort_by_address_mailbox():
    # RFC 5256 3: the addr-mailbox of the first address; absent is "" and first.
    assert _sorted(b"(FROM)", MAILBOX) == [5, 2, 4, 3, 1]
    assert _sorted(b"(TO)", MAILBOX) == [3, 4, 5, 2, 1]
    assert _sorted(b"(CC)", MAILBOX) == [1, 2, 3, 5, 4]


def test_sort_by_display_name():
    # RFC 5957 3: the decoded display name, else mailbox@host.
    # Display values: Zed, adam@x, Bob, Émile (an E), "".
    assert _sorted(b"(DISPLAYFROM)", MAILBOX) == [5, 2, 3, 4, 1]
    # To: b@x, Carol, "", "", "".
    assert _sorted(b"(DISPLAYTO)", MAILBOX) == [3, 4, 5, 1, 2]


def test_group_markers_are_not_addresses():
    messages = [(1, header(To="undisclosed-recipients:;"), ARRIVED, 1),
                (2, header(To="team: a@x, b@x;"), ARRIVED, 1),
                (3, header(To=""), ARRIVED, 1)]
    assert _sorted(b"(TO)", messages) == [1, 3, 2]


def test_format_sort():
    # RFC 5256 4.
    assert format_sort([2, 3, 6]) == b"SORT 2 3 6"
    assert format_sort([]) == b"SORT"


@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["a", "B", "c", ""])), max_size=30))
def test_sort_is_a_stable_permutation(values):
    entries = [(number, {"SIZE": size, "SUBJECT": casemap(subject)})
               for number, (size, subject) in enumerate(values, 1)]
    criteria = (SortCriterion("SIZE", reverse=True), SortCriterion("SUBJECT"))
    ordered = sort_numbers(criteria, entries)
    assert sorted(ordered) == list(range(1, len(values) + 1))
    keys = [(-values[n - 1][0], casemap(values[n - 1][1]), n) for n in ordered]
    assert keys == sorted(keys)
