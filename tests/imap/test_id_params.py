"""The ID command's argument (gateway/imap/id_params.py, RFC 2971 3.3)."""

import pytest
from hypothesis import given, strategies as st

from gateway.imap import wire
from gateway.imap.id_params import IdSyntaxError, parse_id_params


@pytest.mark.parametrize(
    ("argument", "fields"),
    [
        (b"NIL", {}),
        (b"nil", {}),
        (b"()", {}),
        (b'("name" "Thunderbird" "version" "115.3.1")', {"name": "Thunderbird", "version": "115.3.1"}),
        # Field names are not case-sensitive; a value may be NIL.
        (b'("Name" "iPhone Mail" "OS-Version" NIL)', {"name": "iPhone Mail", "os-version": None}),
        (b'("x-originating-ip" "192.0.2.7" "X-ORIGINATING-IP" "10.0.0.1")', {"x-originating-ip": "192.0.2.7"}),
        (b'( "a"  "b\\"c\\\\" )', {"a": 'b"c\\'}),
    ],
)
def test_fields(argument, fields):
    assert parse_id_params(argument) == fields


@pytest.mark.parametrize(
    "argument",
    [b"", b"(", b'("a")', b'("a" "b" "c")', b"(NIL \"x\")", b"(a b)", b'("a""b")', b'("a" NILX)',
     b'("a" {1}\r\nb)', b'("a\r\nb" "c")', b"NIL NIL", b'("a" "b") x'],
)
def test_refused(argument):
    with pytest.raises(IdSyntaxError):
        parse_id_params(argument)


# What a client quotes (wire.nstring would send anything else as a literal).
text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(str.encode)


@given(st.lists(st.tuples(text, st.none() | text), max_size=8))
def test_what_a_client_quotes_is_read_back(pairs):
    argument = b"(" + b" ".join(wire.quote(name) + b" " + wire.nstring(value) for name, value in pairs) + b")"
    expected = {}
    for name, value in pairs:
        expected.setdefault(name.decode().lower(), None if value is None else value.decode())
    assert parse_id_params(argument) == expected
