"""Tests for gateway.imap.mailbox_names: modified UTF-7 or, under UTF8=ACCEPT and IMAP4rev2, UTF-8."""

import pytest
from hypothesis import given, strategies as st

from gateway.imap.mailbox_names import BadMailboxName, decode_name, encode_name


def test_modified_utf7_by_default():
    assert decode_name(b"Entw&APw-rfe") == "Entwürfe"
    assert encode_name("Entwürfe") == b'"Entw&APw-rfe"'
    assert decode_name(b"inbox") == "INBOX"
    with pytest.raises(BadMailboxName):
        decode_name(b"&Jjo!")  # RFC 3501 5.1.3: not a valid shift sequence
    with pytest.raises(BadMailboxName):
        decode_name("Entwürfe".encode("utf-8"))


def test_utf8_when_enabled():
    # RFC 6855 3: names are UTF-8 both ways; "&" is a character like any other.
    assert decode_name("Entwürfe".encode("utf-8"), utf8=True) == "Entwürfe"
    assert decode_name(b"A&B", utf8=True) == "A&B"
    assert encode_name("Entwürfe", utf8=True) == '"Entwürfe"'.encode("utf-8")
    assert decode_name(b"Inbox", utf8=True) == "INBOX"
    for wire in (b"\xff\xfe", b"a\x01b", "a\u0085b".encode("utf-8")):
        with pytest.raises(BadMailboxName):
            decode_name(wire, utf8=True)


@given(st.text(st.characters(min_codepoint=0x20, blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30)
       .filter(lambda name: not name.upper().startswith("INBOX")))
def test_either_form_reads_back(name):
    for utf8 in (False, True):
        assert decode_name(encode_name(name, utf8)[1:-1].replace(b'\\"', b'"').replace(b"\\\\", b"\\"), utf8) == name
