"""
LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819), SPECIAL-USE selection
and return options and CREATE-SPECIAL-USE (RFC 6154), STATUS SIZE (RFC 8438)
and DELETED (RFC 9051) through the real server (gateway/imap/list_command.py).
"""

import pytest

from tests.imap.test_server import MESSAGE, Session

# What every new user has.
DEFAULT = [
    b'* LIST (\\HasNoChildren) "/" "INBOX"',
    b'* LIST (\\HasNoChildren \\Drafts) "/" "Drafts"',
    b'* LIST (\\HasNoChildren \\Junk) "/" "Junk"',
    b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"',
    b'* LIST (\\HasNoChildren \\Trash) "/" "Trash"',
]


def session(store):  # noqa: F811
    s = Session(store).login()
    for n in range(3):
        s.command(b"a APPEND INBOX %s{%d+}\r\n%s" % (b"(\\Seen) " if n == 0 else b"", len(MESSAGE), MESSAGE))
    s.command(b"b APPEND Trash (\\Deleted) {%d+}\r\n%s" % (len(MESSAGE), MESSAGE))
    assert s.command(b"c CREATE foo/bar")[-1] == b"c OK CREATE completed"
    return s


def test_rfc_3501_list_is_unchanged(store):  # noqa: F811
    s = session(store)
    assert s.command(b'A LIST "" %') == DEFAULT + [b'* LIST (\\Noselect \\HasChildren) "/" "foo"',
                                                   b"A OK LIST completed"]
    assert s.command(b'B LIST "" ""') == [b'* LIST (\\Noselect) "/" ""', b"B OK LIST completed"]


def test_rfc_5819_list_status(store):  # noqa: F811
    s = session(store)
    # RFC 5819 1's example, on this mailbox set: a STATUS after each LIST
    # of a mailbox that exists, none for the level that does not.
    assert s.command(b'A01 LIST "" % RETURN (STATUS (MESSAGES UNSEEN))') == [
        b'* LIST (\\HasNoChildren) "/" "INBOX"',
        b'* STATUS "INBOX" (MESSAGES 3 UNSEEN 2)',
        DEFAULT[1], b'* STATUS "Drafts" (MESSAGES 0 UNSEEN 0)',
        DEFAULT[2], b'* STATUS "Junk" (MESSAGES 0 UNSEEN 0)',
        DEFAULT[3], b'* STATUS "Sent" (MESSAGES 0 UNSEEN 0)',
        DEFAULT[4], b'* STATUS "Trash" (MESSAGES 1 UNSEEN 1)',
        b'* LIST (\\HasChildren \\NonExistent) "/" "foo"',
        b"A01 OK LIST completed",
    ]
    size = len(MESSAGE)
    assert s.command(b'A02 LIST "" "Trash" RETURN (STATUS (SIZE DELETED MESSAGES))') == [
        DEFAULT[4], b'* STATUS "Trash" (SIZE %d DELETED 1 MESSAGES 1)' % size, b"A02 OK LIST completed"]
    assert s.command(b'A03 LIST "" % RETURN (STATUS (BIGGEST))') == [b"A03 BAD Unknown STATUS item"]


def test_rfc_6154_special_use(store):  # noqa: F811
    s = session(store)
    # RFC 6154 5.2 (child information comes always, as RFC 5258 4 allows).
    assert s.command(b't2 LIST "" "%" RETURN (SPECIAL-USE)') == DEFAULT + [
        b'* LIST (\\HasChildren \\NonExistent) "/" "foo"', b"t2 OK LIST completed"]
    assert s.command(b't3 LIST (SPECIAL-USE) "" "*"') == DEFAULT[1:] + [b"t3 OK LIST completed"]
    # RFC 6154 5.3: one use per mailbox here, so two are NO [USEATTR].
    assert s.command(b"t4 CREATE MySpecial (USE (\\Drafts \\Sent))") == [
        b"t4 NO [USEATTR] Unknown or unsupported special-use attribute"]
    assert s.command(b"t5 CREATE Everything (USE (\\All))") == [b"t5 OK CREATE completed"]
    assert s.command(b"t6 CREATE Other (USE (\\Important))") == [
        b"t6 NO [USEATTR] Unknown or unsupported special-use attribute"]
    assert s.command(b"t7 CREATE Other (FOO)") == [b"t7 BAD Invalid CREATE parameters"]
    assert s.command(b't8 LIST (SPECIAL-USE) "" "E*"') == [
        b'* LIST (\\HasNoChildren \\All) "/" "Everything"', b"t8 OK LIST completed"]
    # Nothing was made of the refused ones.
    assert s.command(b't9 LIST "" "MySpecial"') == [b"t9 OK LIST completed"]
    assert s.command(b't10 LIST "" "Other"') == [b"t10 OK LIST completed"]


def test_rfc_5258_selection_and_several_patterns(store):  # noqa: F811
    s = session(store)
    s.command(b"a SUBSCRIBE foo/bar")
    s.command(b"b UNSUBSCRIBE Junk")
    assert s.command(b'c LIST () "" ("INBOX" "fo%")') == [
        DEFAULT[0], b'* LIST (\\HasChildren \\NonExistent) "/" "foo"', b"c OK LIST completed"]
    # RFC 5258 3.1: SUBSCRIBED selects and returns \Subscribed.
    assert s.command(b'd LIST (SUBSCRIBED) "" "*"') == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"',
        b'* LIST (\\HasNoChildren \\Subscribed \\Drafts) "/" "Drafts"',
        b'* LIST (\\HasNoChildren \\Subscribed \\Sent) "/" "Sent"',
        b'* LIST (\\HasNoChildren \\Subscribed \\Trash) "/" "Trash"',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "foo/bar"',
        b"d OK LIST completed",
    ]
    # RFC 5258 3.5: the level above a match below the pattern says why.
    assert s.command(b'e LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"')[4] == (
        b'* LIST (\\HasChildren \\NonExistent) "/" "foo" ("CHILDINFO" ("SUBSCRIBED"))')


@pytest.mark.parametrize("line", [
    b'f LIST (RECURSIVEMATCH) "" "%"', b'f LIST (BOGUS) "" "%"', b'f LIST "" "%" RETURN (BOGUS)',
    b'f LIST "" (', b'f LIST ""', b'f LIST "" "%" RETURN CHILDREN',
])
def test_bad_list_arguments(store, line):  # noqa: F811
    assert session(store).command(line) == [b"f BAD Invalid LIST arguments"]


def test_status_size_and_deleted(store):  # noqa: F811
    s = session(store)
    assert s.command(b"a STATUS INBOX (SIZE MESSAGES DELETED UNSEEN)") == [
        b'* STATUS "INBOX" (SIZE %d MESSAGES 3 DELETED 0 UNSEEN 2)' % (3 * len(MESSAGE)), b"a OK STATUS completed"]
    assert s.command(b"b STATUS INBOX (SIZE BIGGEST)") == [b"b BAD Unknown STATUS item"]
