"""Wire forms: dates, LIST matching (gateway/imap/wire.py)."""

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.mail import imap4  # noqa: F401  registers the imap4-utf-7 codec

from gateway.imap import wire


def test_datetime_round_trip():
    when = wire.parse_datetime(b" 7-Jul-1996 02:44:25 -0700")
    assert when == datetime.datetime(
        1996, 7, 7, 2, 44, 25, tzinfo=datetime.timezone(-datetime.timedelta(hours=7))
    )
    assert wire.format_datetime(when) == b'"07-Jul-1996 02:44:25 -0700"'
    with pytest.raises(wire.BadDateTime):
        wire.parse_datetime(b"31-Feb-2020 00:00:00 +0000")


def test_nstring_uses_a_literal_for_8bit():
    assert wire.nstring(None) == b"NIL"
    assert wire.nstring(b'a "b"') == b'"a \\"b\\""'
    assert wire.nstring(b"caf\xc3\xa9") == b"{5}\r\ncaf\xc3\xa9"


EXISTING = {"INBOX": None, "Sent": "\\Sent", "a/b/c": None, "a/x": None, "ab": None}


def test_list_star_and_percent():
    assert wire.list_matches(EXISTING, "", "*") == [
        ("INBOX", ("\\HasNoChildren",)),
        ("Sent", ("\\HasNoChildren", "\\Sent")),
        ("a", ("\\Noselect", "\\HasChildren")),
        ("a/b", ("\\Noselect", "\\HasChildren")),
        ("a/b/c", ("\\HasNoChildren",)),
        ("a/x", ("\\HasNoChildren",)),
        ("ab", ("\\HasNoChildren",)),
    ]
    assert [n for n, _ in wire.list_matches(EXISTING, "", "%")] == ["INBOX", "Sent", "a", "ab"]
    assert [n for n, _ in wire.list_matches(EXISTING, "a/", "%")] == ["a/b", "a/x"]
    assert [n for n, _ in wire.list_matches(EXISTING, "", "inbox")] == ["INBOX"]

