"""
Tests for gateway.mail.subject: the RFC 5256 2.1 base subject, and
gateway.mail.msgid: Message IDs as REFERENCES threading compares them.
"""

import time

import pytest
from hypothesis import given, strategies as st

from gateway.mail.msgid import first_message_id, message_ids
from gateway.mail.subject import base_subject


@pytest.mark.parametrize(
    "subject, base, reply",
    [
        ("Hello", "Hello", False),
        (None, "", False),
        ("", "", False),
        # (1) white space squashed; (2) trailers "(fwd)" and WSP.
        ("  Hello \t  world  ", "Hello world", False),
        ("Hello (fwd)", "Hello", True),
        ("Hello (FWD) (fwd)  ", "Hello", True),
        # (3) subj-leader: *subj-blob subj-refwd, or WSP; as often as found.
        ("Re: Hello", "Hello", True),
        ("RE:Hello", "Hello", True),
        ("re : Hello", "Hello", True),
        ("Fw: Hello", "Hello", True),
        ("FWD: Re: fwd:  Hello", "Hello", True),
        ("Re[2]: Hello", "Hello", True),
        ("Re [2] : Hello", "Hello", True),
        ("[list] Re: Hello", "Hello", True),
        ("[a][b] Re: [c] Fwd: Hello", "Hello", True),
        # (4) a subj-blob goes when something is left after it...
        ("[list] Hello", "Hello", False),
        ("[a] [b] Hello", "Hello", False),
        # ... and the last one stays when nothing is.
        ("[list]", "[list]", False),
        ("[a] [b]", "[b]", False),
        ("Re: [list]", "[list]", True),
        # (6) [fwd: ...] around the whole, then again from (2).
        ("[Fwd: Hello]", "Hello", True),
        ("[fwd: Re: Hello (fwd)]", "Hello", True),
        ("[fwd: [fwd: Hello]]", "Hello", True),
        ("[fwd: Hello] tail", "tail", False),
        # Not artifacts.
        ("Rex: Hello", "Rex: Hello", False),
        ("Hello: Re: x", "Hello: Re: x", False),
        ("Re", "Re", False),
        ("[unclosed Re: x", "[unclosed Re: x", False),
    ],
)
def test_base_subject(subject, base, reply):
    extracted = base_subject(subject)
    assert extracted.text == base
    assert extracted.reply is reply


_PIECES = st.sampled_from(["Re:", "re", "Fw", "Fwd:", "fwd", "[", "]", "[x]", "[fwd:", "(fwd)", " ", "\t",
                           ":", "a", "b", "é", "Subject"])
_SUBJECTS = st.lists(_PIECES, max_size=12).map("".join)


@given(_SUBJECTS)
def test_base_subject_is_a_fixed_point(subject):
    once = base_subject(subject).text
    assert base_subject(once).text == once


@given(_SUBJECTS)
def test_a_reply_has_the_base_subject_of_its_original(subject):
    original = base_subject(subject)
    for prefix in ("Re: ", "RE: ", "Fwd: ", "[list] Re: "):
        replied = base_subject(prefix + subject)
        assert replied.text == original.text
        assert replied.reply


@given(_SUBJECTS)
def test_base_subject_has_no_outer_white_space(subject):
    text = base_subject(subject).text
    assert text == text.strip(" \t")
    assert "  " not in text


def test_many_tags_cost_one_pass():
    # A hostile subject of tens of thousands of tags: linear, not one pass per tag.
    subject = "[x]" * 50_000 + " Hello"
    started = time.monotonic()
    assert base_subject(subject).text == "Hello"
    assert base_subject("[x]" * 50_000).text == "[x]"
    assert time.monotonic() - started < 2


# -- Message IDs -------------------------------------------------------------------


def test_quoted_and_plain_forms_are_one_id():
    # RFC 5256 3: the example of the REFERENCES algorithm.
    assert first_message_id('<"01KF8JCEOCBS0045PS"@xxx.yyy.com>') == "01KF8JCEOCBS0045PS@xxx.yyy.com"
    assert first_message_id("<01KF8JCEOCBS0045PS@xxx.yyy.com>") == "01KF8JCEOCBS0045PS@xxx.yyy.com"


def test_ids_stay_case_sensitive():
    assert first_message_id("<A@b>") != first_message_id("<a@b>")


def test_references_lists_every_valid_id_in_order():
    value = "<a@x> (comment) <b@y>\r\n <not an id> <c @ z> <d@e@f> <>"
    assert message_ids(value) == ["a@x", "b@y", "c@z"]


def test_in_reply_to_takes_the_first_valid_id():
    assert first_message_id("Alice's message of today <x@y> <z@w>") == "x@y"
    assert first_message_id("no id here") is None
    assert first_message_id(None) is None
