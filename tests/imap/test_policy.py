"""
The pure decisions behind the IMAP framing (gateway/imap/policy.py) and the
LIST pattern matcher (gateway/imap/wire.py MailboxPattern).
"""

import re
import time

import pytest
from hypothesis import given, settings, strategies as st

from gateway.imap import policy, wire


@pytest.mark.parametrize(
    "line, marker",
    [
        (b"a LOGIN {5}", (5, False)),
        (b"a APPEND INBOX {5+}", (5, True)),
        (b"{0}", (0, False)),
        (b"{00012}", (12, False)),
        (b"a NOOP", None),
        (b"a LOGIN {5} ", None),  # nothing may follow the brace
        (b"a LOGIN {5}\n", None),
        # What int() accepts and RFC 3501 9 "number" does not.
        (b"{-1}", (None, False)),
        (b"{+5}", (None, False)),
        (b"{1_0}", (None, False)),
        (b"{ 5}", (None, False)),
        (b"{\xd9\xa3}", (None, False)),  # ARABIC-INDIC DIGIT THREE
        (b"{-1+}", (None, True)),
        (b"{}", (None, False)),
        (b"{+}", (None, True)),
        (b"{99999999999}", (99999999999, False)),
        (b"{" + b"9" * 5000 + b"}", (policy.HUGE, False)),
    ],
)
def test_literal_marker(line, marker):
    assert policy.literal_marker(line) == marker


def test_looks_like_tag():
    assert policy.looks_like_tag(b"a001")
    assert policy.looks_like_tag(b"A.b]c")
    for bad in (b"", b"+", b"a+b", b"*", b"(", b"a{", b'"a"', b"\x00", b"x" * 65):
        assert not policy.looks_like_tag(bad)


def _reference(pattern: str) -> re.Pattern:
    parts = [".*" if c == "*" else "[^/]*" if c == "%" else re.escape(c) for c in pattern]
    return re.compile("".join(parts), re.DOTALL)


@settings(max_examples=300, deadline=None)
@given(st.text("ab/*%", max_size=8), st.text("ab/", max_size=10))
def test_mailbox_pattern_agrees_with_a_regex(pattern, name):
    assert wire.MailboxPattern(pattern).fullmatch(name) == bool(_reference(pattern).fullmatch(name))


def test_pathological_patterns_are_linear():
    # As a regex, each of these takes exponential time on a near miss.
    name = "a" * 200 + "/b" * 100
    started = time.process_time()
    assert not wire.MailboxPattern("%*" * 500 + "x").fullmatch(name)
    assert not wire.MailboxPattern("*a" * 400 + "x").fullmatch(name)
    assert not wire.MailboxPattern("%a" * 400 + "%x").fullmatch(name)
    assert wire.MailboxPattern("*a" * 100 + "*").fullmatch(name)
    assert time.process_time() - started < 2.0
