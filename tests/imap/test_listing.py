"""
Tests for gateway.imap.listing: LIST-EXTENDED (RFC 5258), SPECIAL-USE
selection (RFC 6154), RETURN (STATUS) parsing (RFC 5819) and LSUB
(RFC 3501 6.3.9); and gateway.imap.status.
"""

import datetime

import pytest

from gateway.imap.listing import (
    ListCommand,
    ListSyntaxError,
    format_entry,
    list_entries,
    lsub_entries,
    parse_list,
)
from gateway.imap.search_keys import tokenize_search
from gateway.imap.status import StatusItemError, check_items, format_status, status_values
from gateway.imap.wire import quote
from gateway.store.model import MailboxInfo, MessageRecord


def parsed(line: bytes) -> ListCommand:
    return parse_list(tokenize_search(line))


def test_parse_plain_list():
    assert parsed(b'"" "%"') == ListCommand(b"", (b"%",))


def test_parse_extended_list():
    assert parsed(b'(SUBSCRIBED RECURSIVEMATCH) "" ("INBOX" "Sent/%") RETURN (CHILDREN STATUS (MESSAGES UNSEEN))') == \
        ListCommand(b"", (b"INBOX", b"Sent/%"), frozenset({"SUBSCRIBED", "RECURSIVEMATCH"}),
                    frozenset({"SUBSCRIBED", "CHILDREN", "STATUS"}), ("MESSAGES", "UNSEEN"), True)
    # RFC 5258 example 3: an empty selection list is still the extended syntax.
    assert parsed(b'() "" "%" RETURN (CHILDREN)').extended
    assert parsed(b'"" "*" RETURN (special-use)').returns == {"SPECIAL-USE"}
    assert parsed(b'(special-use) "" "*"').selection == {"SPECIAL-USE"}


@pytest.mark.parametrize("line", [
    b'(RECURSIVEMATCH) "" "%"',          # RFC 5258 3.1: never alone
    b'(REMOTE RECURSIVEMATCH) "" "%"',
    b'(BOGUS) "" "%"',
    b'"" "%" RETURN (BOGUS)',
    b'"" "%" RETURN CHILDREN',
    b'"" "%" RETURN (STATUS)',
    b'"" ()',
    b'""',
])
def test_bad_list_arguments(line):
    with pytest.raises(ListSyntaxError):
        parsed(line)


def lines(entries, command=b"LIST"):
    return [b"* " + format_entry(command, entry, lambda name: quote(name.encode())) for entry in entries]


# RFC 5258 5, example 1's hierarchy (its inbox is INBOX here).
HIERARCHY = {"INBOX": None, "Fruit": None, "Fruit/Apple": None, "Fruit/Banana": None, "Tofu": None,
             "Vegetable": None, "Vegetable/Broccoli": None, "Vegetable/Corn": None}
SUBSCRIBED = ["INBOX", "Fruit/Banana", "Fruit/Peach", "Vegetable", "Vegetable/Broccoli"]


def test_rfc_5258_example_2():
    entries = list_entries(HIERARCHY, SUBSCRIBED, "", ["*"], frozenset({"SUBSCRIBED"}),
                           frozenset({"SUBSCRIBED"}), extended=True)
    assert lines(entries)[1:] == [
        b'* LIST (\\Subscribed) "/" "Fruit/Banana"',
        b'* LIST (\\Subscribed \\NonExistent) "/" "Fruit/Peach"',
        b'* LIST (\\Subscribed) "/" "Vegetable"',
        b'* LIST (\\Subscribed) "/" "Vegetable/Broccoli"',
    ]


def test_rfc_5258_example_3():
    entries = list_entries(HIERARCHY, SUBSCRIBED, "", ["%"], frozenset(), frozenset({"CHILDREN"}), extended=True)
    assert lines(entries)[1:] == [
        b'* LIST (\\HasChildren) "/" "Fruit"',
        b'* LIST (\\HasNoChildren) "/" "Tofu"',
        b'* LIST (\\HasChildren) "/" "Vegetable"',
    ]


def test_rfc_5258_example_6():
    entries = list_entries(HIERARCHY, SUBSCRIBED, "", ["*"], frozenset({"REMOTE"}), frozenset({"SUBSCRIBED"}),
                           extended=True)
    assert lines(entries) == [
        b'* LIST (\\Subscribed) "/" "INBOX"',
        b'* LIST () "/" "Fruit"',
        b'* LIST () "/" "Fruit/Apple"',
        b'* LIST (\\Subscribed) "/" "Fruit/Banana"',
        b'* LIST () "/" "Tofu"',
        b'* LIST (\\Subscribed) "/" "Vegetable"',
        b'* LIST (\\Subscribed) "/" "Vegetable/Broccoli"',
        b'* LIST () "/" "Vegetable/Corn"',
    ]


def test_rfc_5258_example_7_several_patterns():
    existing = {"INBOX": None, "Drafts": None, "Sent/March2004": None, "Sent/December2003": None,
                "Sent/August2004": None, "Trash": None}
    entries = list_entries(existing, [], "", ["INBOX", "Drafts", "Sent/%"], returns=frozenset(), extended=True)
    assert [entry.name for entry in entries] == \
        ["INBOX", "Drafts", "Sent/August2004", "Sent/December2003", "Sent/March2004"]


FOO = {"INBOX": None, "Foo": None, "Foo/Bar": None, "Foo/Baz": None, "Moo": None}


def test_rfc_5258_example_8():
    recursive = frozenset({"SUBSCRIBED", "RECURSIVEMATCH"})
    assert lines(list_entries(FOO, ["Foo/Baz"], "", ["*"], frozenset({"SUBSCRIBED"}), frozenset({"SUBSCRIBED"}),
                              extended=True)) == [b'* LIST (\\Subscribed) "/" "Foo/Baz"']
    assert list_entries(FOO, ["Foo/Baz"], "", ["%"], frozenset({"SUBSCRIBED"}), frozenset({"SUBSCRIBED"}),
                        extended=True) == []
    assert lines(list_entries(FOO, ["Foo/Baz"], "", ["%"], recursive, frozenset({"SUBSCRIBED"}), extended=True)) == \
        [b'* LIST () "/" "Foo" ("CHILDINFO" ("SUBSCRIBED"))']
    # A1
    assert lines(list_entries(FOO, ["Foo/Baz", "Foo"], "", ["%"], recursive, frozenset({"SUBSCRIBED"}),
                              extended=True)) == [b'* LIST (\\Subscribed) "/" "Foo" ("CHILDINFO" ("SUBSCRIBED"))']
    # A2: "Foo" does not exist.
    without_foo = {name: use for name, use in FOO.items() if name != "Foo"}
    assert lines(list_entries(without_foo, ["Foo/Baz"], "", ["%"], recursive, frozenset({"SUBSCRIBED"}),
                              extended=True)) == [b'* LIST (\\NonExistent) "/" "Foo" ("CHILDINFO" ("SUBSCRIBED"))']
    # B
    assert list_entries(FOO, [], "", ["%"], recursive, frozenset({"SUBSCRIBED"}), extended=True) == []
    # C
    assert lines(list_entries(FOO, ["Foo", "Moo"], "", ["%"], recursive, frozenset({"SUBSCRIBED", "CHILDREN"}),
                              extended=True)) == [
        b'* LIST (\\HasChildren \\Subscribed) "/" "Foo"',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "Moo"',
    ]


def test_rfc_5258_example_9():
    existing = {name: None for name in ["INBOX", "foo2", "foo2/bar1", "foo2/bar2", "baz2", "baz2/bar2", "baz2/bar22",
                                        "baz2/bar222", "eps2", "eps2/mamba", "qux2/bar2"]}
    subscribed = ["foo2/bar1", "foo2/bar2", "baz2/bar2", "baz2/bar22", "baz2/bar222", "eps2", "eps2/mamba",
                  "qux2/bar2"]
    entries = list_entries(existing, subscribed, "", ["*2"], frozenset({"RECURSIVEMATCH", "SUBSCRIBED"}),
                           frozenset({"SUBSCRIBED"}), extended=True)
    # The RFC's answer, in our (sorted) order.
    assert sorted(lines(entries)) == sorted([
        b'* LIST () "/" "foo2" ("CHILDINFO" ("SUBSCRIBED"))',
        b'* LIST (\\Subscribed) "/" "foo2/bar2"',
        b'* LIST (\\Subscribed) "/" "baz2/bar2"',
        b'* LIST (\\Subscribed) "/" "baz2/bar22"',
        b'* LIST (\\Subscribed) "/" "baz2/bar222"',
        b'* LIST (\\Subscribed) "/" "eps2" ("CHILDINFO" ("SUBSCRIBED"))',
        b'* LIST (\\Subscribed) "/" "qux2/bar2"',
    ])


def test_plain_list_keeps_its_imap4rev1_form():
    existing = {"INBOX": None, "Sent": "\\Sent", "a/b": None}
    assert lines(list_entries(existing, [], "", ["*"])) == [
        b'* LIST (\\HasNoChildren) "/" "INBOX"',
        b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"',
        b'* LIST (\\Noselect \\HasChildren) "/" "a"',
        b'* LIST (\\HasNoChildren) "/" "a/b"',
    ]
    # LIST-EXTENDED: a level that does not exist is \NonExistent (RFC 5258 3.5).
    assert lines(list_entries(existing, [], "", ["%"], extended=True))[2] == \
        b'* LIST (\\HasChildren \\NonExistent) "/" "a"'


def test_special_use_selection():
    # RFC 6154 5.1.
    existing = {"INBOX": None, "Sent": "\\Sent", "Trash": "\\Trash", "Work": None}
    entries = list_entries(existing, [], "", ["*"], frozenset({"SPECIAL-USE"}), frozenset({"SPECIAL-USE"}),
                           extended=True)
    assert lines(entries) == [b'* LIST (\\Sent) "/" "Sent"', b'* LIST (\\Trash) "/" "Trash"']


def test_lsub_names_the_level_a_percent_stops_at():
    # RFC 3501 6.3.9: "foo/bar" subscribed, "foo" not: LSUB "" "%" returns foo, \Noselect.
    existing = {"INBOX": None, "parent": None, "parent/child": None, "gone/x": None}
    subscribed = ["INBOX", "parent/child"]
    assert lines(lsub_entries(existing, subscribed, "", "%"), b"LSUB") == [
        b'* LSUB () "/" "INBOX"',
        b'* LSUB (\\Noselect) "/" "parent"',
    ]
    assert lines(lsub_entries(existing, subscribed, "", "parent/%"), b"LSUB") == [b'* LSUB () "/" "parent/child"']
    assert lines(lsub_entries(existing, subscribed, "", "*"), b"LSUB") == [
        b'* LSUB () "/" "INBOX"', b'* LSUB () "/" "parent/child"']
    # A deeper subscription: every level % reaches.
    assert lines(lsub_entries(existing, ["a/b/c"], "", "a/%"), b"LSUB") == [b'* LSUB (\\Noselect) "/" "a/b"']
    # A subscribed name that does not exist.
    assert lines(lsub_entries(existing, ["ghost"], "", "*"), b"LSUB") == [b'* LSUB (\\Noselect) "/" "ghost"']


# -- STATUS ------------------------------------------------------------------------


def test_status_items_and_values():
    assert check_items(["messages", "SIZE", "deleted"]) == ("MESSAGES", "SIZE", "DELETED")
    with pytest.raises(StatusItemError):
        check_items(["BIGNESS"])
    with pytest.raises(StatusItemError):
        check_items([])
    when = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    records = [MessageRecord(3, frozenset({"\\Seen"}), when, 100, 5),
               MessageRecord(7, frozenset({"\\Deleted"}), when, 250, 6)]
    info = MailboxInfo(1, "alice", "INBOX", 1234, 8, 9)
    values = status_values(check_items(["MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN",
                                        "HIGHESTMODSEQ", "SIZE", "DELETED"]), info, records, 1)
    assert format_status(b'"INBOX"', values) == \
        b'STATUS "INBOX" (MESSAGES 2 RECENT 1 UIDNEXT 8 UIDVALIDITY 1234 UNSEEN 1 HIGHESTMODSEQ 9 SIZE 350 DELETED 1)'
