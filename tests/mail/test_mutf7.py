"""Modified UTF-7 mailbox names (gateway/mail/mutf7.py)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.mail import imap4  # noqa: F401  registers the imap4-utf-7 codec

from gateway.mail import mutf7


@pytest.mark.parametrize(
    "text, encoded",
    [
        ("INBOX", b"INBOX"),
        ("Entw\u00fcrfe", b"Entw&APw-rfe"),
        ("A&B", b"A&-B"),
        ("~peter/mail/\u53f0\u5317/\u65e5\u672c\u8a9e", b"~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
    ],
)
def test_modified_utf7_examples(text, encoded):
    # The last one is RFC 3501 5.1.3's own example.
    assert mutf7.encode_mailbox(text) == encoded
    assert mutf7.decode_mailbox(encoded) == text


@given(st.text(st.characters(blacklist_categories=("Cs",), min_codepoint=0x20)))
def test_modified_utf7_round_trip_and_agrees_with_twisted(text):
    encoded = mutf7.encode_mailbox(text)
    assert mutf7.decode_mailbox(encoded) == text
    assert encoded == text.encode("imap4-utf-7")


@pytest.mark.parametrize("bad", [b"&Jjo!", b"caf\xc3\xa9", b"&AGE-", b"&U,BTFw"])
def test_bad_modified_utf7_is_refused(bad):
    # &AGE- is "a" encoded where it must be plain: not the one canonical form.
    with pytest.raises(mutf7.BadMailboxName):
        mutf7.decode_mailbox(bad)
