"""FETCH attribute parsing (gateway/imap/fetch.py)."""

import pytest

from gateway.imap.fetch import FetchSyntaxError, Section, needs_file, parse_fetch, sets_seen


def test_macros_and_simple_items():
    assert parse_fetch(b"FAST") == ["FLAGS", "INTERNALDATE", "RFC822.SIZE"]
    assert parse_fetch(b"(uid Flags RFC822.SIZE)") == ["UID", "FLAGS", "RFC822.SIZE"]
    assert parse_fetch(b"BODYSTRUCTURE") == ["BODYSTRUCTURE"]


def test_sections():
    items = parse_fetch(
        b"(BODY.PEEK[HEADER.FIELDS (From \"Subject\")] BODY[1.2.MIME] BODY[]<10.20> BODY[3.TEXT])"
    )
    assert items == [
        Section(peek=True, text="HEADER.FIELDS", fields=("FROM", "SUBJECT")),
        Section(peek=False, part=(1, 2), text="MIME"),
        Section(peek=False, partial=(10, 20)),
        Section(peek=False, part=(3,), text="TEXT"),
    ]
    assert sets_seen(items) and needs_file(items)
    assert not sets_seen(parse_fetch(b"BODY.PEEK[2]"))


def test_reply_names_use_only_the_origin_octet():
    # RFC 3501 7.4.2; Twisted answers BODY[]<10.20> (its issue 5613).
    assert Section(peek=False, partial=(10, 20)).reply_name() == b"BODY[]<10>"
    assert Section(peek=True, part=(1, 2), text="HEADER.FIELDS.NOT", fields=("TO",)).reply_name() == (
        b"BODY[1.2.HEADER.FIELDS.NOT (TO)]"
    )


@pytest.mark.parametrize(
    "bad",
    [b"", b"(FLAGS", b"FLAGZ", b"BODY[0]", b"BODY[1.0]", b"BODY[HEADER.FIELDS]", b"BODY[MIME]",
     b"BODY[]<1.0>", b"BODY[FOO]", b"UID[1]"],
)
def test_syntax_errors(bad):
    with pytest.raises(FetchSyntaxError):
        parse_fetch(bad)
