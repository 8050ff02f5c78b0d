"""
Tests for gateway.imap.esearch: ESEARCH (RFC 4731) and SEARCHRES (RFC
5182), against the RFCs' examples byte for byte.
"""

import pytest
from hypothesis import given, strategies as st

from gateway.imap.esearch import (
    SearchReturn,
    SearchReturnError,
    esearch_response,
    parse_search_return,
    saved_numbers,
)


def options(*names):
    return SearchReturn(frozenset(names))


def test_parse_search_return():
    assert parse_search_return(b'RETURN (MIN COUNT) FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"') == (
        options("MIN", "COUNT"), b'FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"')
    # RFC 4731 3.1: an empty list is ALL.
    assert parse_search_return(b"RETURN () FLAGGED")[0] == options("ALL")
    assert parse_search_return(b"return (save min) UNSEEN")[0] == options("SAVE", "MIN")
    assert parse_search_return(b"CHARSET UTF-8 ALL") == (None, b"CHARSET UTF-8 ALL")


@pytest.mark.parametrize("line", [b"RETURN (BIGGEST) ALL", b"RETURN MIN ALL", b"RETURN"])
def test_bad_return_options(line):
    with pytest.raises(SearchReturnError):
        parse_search_return(line)


# RFC 4731 3.1's examples; the messages found are chosen to give its answers.
@pytest.mark.parametrize("tag, uid, names, found, answer", [
    (b"A282", False, ("MIN", "COUNT"), [2, 10, 11], b'ESEARCH (TAG "A282") MIN 2 COUNT 3'),
    (b"A283", False, ("ALL",), [2, 10, 11], b'ESEARCH (TAG "A283") ALL 2,10:11'),
    (b"A284", False, ("MIN",), [4, 7], b'ESEARCH (TAG "A284") MIN 4'),
    (b"A285", True, ("MIN", "MAX"), [7, 100, 3800], b'ESEARCH (TAG "A285") UID MIN 7 MAX 3800'),
    (b"A286", False, ("COUNT",), list(range(1, 16)), b'ESEARCH (TAG "A286") COUNT 15'),
])
def test_rfc_4731_examples(tag, uid, names, found, answer):
    assert esearch_response(tag, uid, options(*names), found) == answer


def test_nothing_found_still_answers():
    # RFC 4731 3.1: MIN, MAX and ALL left out; COUNT always there.
    assert esearch_response(b"a", False, options("MIN", "MAX", "ALL"), []) == b'ESEARCH (TAG "a")'
    assert esearch_response(b"a", True, options("COUNT"), []) == b'ESEARCH (TAG "a") UID COUNT 0'


def test_rfc_4731_condstore_examples():
    # RFC 4731 3.2, its mod-sequences.
    modseqs = {2: 917162488, 23: 907162321, 5: 917162500}
    found = [2, 5, 7, 9, 11, 13, 15, 17, 19, 23]
    for number in found:
        modseqs.setdefault(number, 1)
    assert esearch_response(b"a1", False, options("MIN"), found, modseqs.get) == \
        b'ESEARCH (TAG "a1") MIN 2 MODSEQ 917162488'
    assert esearch_response(b"a2", False, options("MAX"), found, modseqs.get) == \
        b'ESEARCH (TAG "a2") MAX 23 MODSEQ 907162321'
    assert esearch_response(b"a3", False, options("MIN", "MAX"), found, modseqs.get) == \
        b'ESEARCH (TAG "a3") MIN 2 MAX 23 MODSEQ 917162488'
    assert esearch_response(b"a4", False, options("MIN", "COUNT"), found, modseqs.get) == \
        b'ESEARCH (TAG "a4") MIN 2 COUNT 10 MODSEQ 917162500'


def test_rfc_5182_example_10():
    found = [2, 10, 11, 12, 13, 14, 15, 21]
    cases = [
        (("ALL",), b'ESEARCH (TAG "C283") ALL 2,10:15,21', found),
        (("ALL", "SAVE"), b'ESEARCH (TAG "C283") ALL 2,10:15,21', found),
        (("SAVE", "MIN"), b'ESEARCH (TAG "C284") MIN 2', [2]),
        (("MAX", "SAVE", "MIN"), b'ESEARCH (TAG "C285") MIN 2 MAX 21', [2, 21]),
        (("MAX", "SAVE", "MIN", "COUNT"), b'ESEARCH (TAG "C286") MIN 2 MAX 21 COUNT 8', found),
        (("ALL", "SAVE", "MIN"), b'ESEARCH (TAG "C286") MIN 2 ALL 2,10:15,21', found),
    ]
    for names, answer, saved in cases:
        tag = answer.split(b'"')[1]
        assert esearch_response(tag, False, options(*names), found) == answer
        if "SAVE" in names:
            assert saved_numbers(options(*names), found) == saved


def test_save_alone_is_silent():
    # RFC 5182 1: SAVE alone suppresses the response; it keeps everything.
    assert not options("SAVE").answers
    assert options("SAVE", "COUNT").answers
    assert saved_numbers(options("SAVE"), [3, 4]) == [3, 4]
    assert saved_numbers(options("SAVE", "MIN"), []) == []


@given(st.lists(st.integers(1, 500), unique=True).map(sorted),
       st.sets(st.sampled_from(["MIN", "MAX", "ALL", "COUNT", "SAVE"])))
def test_saved_numbers_are_among_the_found(found, names):
    saved = saved_numbers(SearchReturn(frozenset(names) or frozenset({"ALL"})), found)
    assert set(saved) <= set(found)
    assert saved == sorted(saved)
