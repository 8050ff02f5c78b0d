"""Tests for gateway.imap.notify: NOTIFY (RFC 5465) parsed, checked and evaluated."""

import pytest

from gateway.imap.notify import (
    EventGroup,
    Notify,
    NotifySyntaxError,
    UnsupportedEvent,
    changed_status,
    parse_notify,
    status_items,
    tokenize,
)


def parsed(line: bytes) -> Notify:
    def decode(name: bytes) -> str:
        if name.startswith(b"&"):
            raise ValueError("not modified UTF-7")
        return name.decode("ascii")

    return parse_notify(tokenize(line), decode)


def test_the_rfc_example():
    # RFC 5465 3.1, whose events are not in a list (its section 8 has them
    # in one) and whose "subtree Lists MessageNew" lacks the MessageExpunge
    # section 5 asks for.
    notify = parsed(b"set status (selected MessageNew (uid body.peek[header.fields (from to subject)])"
                    b" MessageExpunge) (subtree Lists MessageNew MessageExpunge)")
    assert notify.status
    selected, lists = notify.groups
    assert selected == EventGroup("SELECTED", frozenset({"MessageNew", "MessageExpunge"}), (),
                                  b"uid body.peek[header.fields (from to subject)]")
    assert lists == EventGroup("SUBTREE", frozenset({"MessageNew", "MessageExpunge"}), ("Lists",))


def test_evolution_while_idling():
    notify = parsed(b"SET (selected (MessageNew MessageExpunge FlagChange))"
                    b" (personal (MessageNew MessageExpunge FlagChange MailboxName))")
    assert notify.selected_events() == {"MessageNew", "MessageExpunge", "FlagChange"}
    assert notify.events_for("Work") == {"MessageNew", "MessageExpunge", "FlagChange", "MailboxName"}
    assert notify.watches_mailbox_names()


def test_which_mailboxes_a_group_covers():
    notify = parsed(b"SET (mailboxes (INBOX misc) (MessageNew MessageExpunge)) (subtree Lists (MailboxName))"
                    b" (subscribed (MessageNew MessageExpunge FlagChange))")
    assert notify.events_for("INBOX") == {"MessageNew", "MessageExpunge"}
    assert notify.events_for("misc/sub") == frozenset()
    assert notify.events_for("Lists/x") == {"MailboxName"}
    assert notify.events_for("Listsx") == frozenset()
    assert notify.events_for("News", subscribed=["News"]) == {"MessageNew", "MessageExpunge", "FlagChange"}
    # No SELECTED group: no message events for the selected mailbox (RFC 5465 3.1).
    assert notify.selected_events() == frozenset()


def test_none():
    assert parsed(b"NONE") == Notify()
    assert parsed(b"SET (personal NONE)").events_for("x") == frozenset()


def test_a_name_that_is_no_mailbox_is_ignored():
    assert parsed(b"SET (mailboxes (&bad INBOX) (MessageNew MessageExpunge))").groups[0].names == ("INBOX",)


@pytest.mark.parametrize("line", [
    b"",
    b"SET",
    b"REPLACE (personal (MessageNew MessageExpunge))",
    b"NONE (personal (MessageNew))",
    b"SET (personal (MessageNew))",  # RFC 5465 5: with MessageExpunge
    b"SET (personal (MessageExpunge))",
    b"SET (personal (FlagChange))",  # and FlagChange needs both
    b"SET (selected (MailboxName))",  # message events only
    b"SET (selected (MessageNew MessageExpunge)) (selected-delayed (MessageNew MessageExpunge))",
    b"SET (personal (MessageNew (UID) MessageExpunge))",  # FETCH attributes for SELECTED only
    b"SET (elsewhere (MessageNew MessageExpunge))",
    b"SET personal",
])
def test_bad_notify(line):
    with pytest.raises(NotifySyntaxError):
        parsed(line)


@pytest.mark.parametrize("event", [b"AnnotationChange", b"SubscriptionChange", b"ServerMetadataChange", b"XFuture"])
def test_unsupported_events_are_no_badevent(event):
    with pytest.raises(UnsupportedEvent):
        parsed(b"SET (personal (" + event + b"))")
    assert UnsupportedEvent.code == b"[BADEVENT (MessageNew MessageExpunge FlagChange MailboxName)]"


def test_status_items():
    events = frozenset({"MessageNew", "MessageExpunge", "FlagChange"})
    assert status_items(events, False, False) == {
        "messages": ("MESSAGES", "UIDNEXT"), "flags": ("UNSEEN",), "initial": ("MESSAGES", "UIDNEXT", "UIDVALIDITY")}
    assert status_items(events, True, False) == {
        "messages": ("MESSAGES", "UIDNEXT", "HIGHESTMODSEQ"), "flags": ("HIGHESTMODSEQ", "UIDVALIDITY"),
        "initial": ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "HIGHESTMODSEQ")}
    assert status_items(frozenset({"MailboxName"}), False, False) == {}


def test_changed_status():
    items = status_items(frozenset({"MessageNew", "MessageExpunge", "FlagChange"}), False, False)
    before = {"MESSAGES": 5, "UIDNEXT": 9, "UNSEEN": 2}
    # RFC 5465 5.2: "* STATUS Lists/Lemonade (UIDNEXT 10002 MESSAGES 503)" - new mail.
    assert changed_status(items, before, {"MESSAGES": 6, "UIDNEXT": 10, "UNSEEN": 3}) == \
        ("MESSAGES", "UIDNEXT", "UNSEEN")
    assert changed_status(items, before, {"MESSAGES": 5, "UIDNEXT": 9, "UNSEEN": 1}) == ("UNSEEN",)
    assert changed_status(items, before, dict(before)) == ()


def test_tokenize():
    assert tokenize(b'SET (mailboxes ("a b" {3}\r\nx y) (MessageNew (BODY.PEEK[HEADER.FIELDS (From)] UID)))') == \
        [b"SET", [b"mailboxes", [b"a b", b"x y"], [b"MessageNew", [b"BODY.PEEK[HEADER.FIELDS (From)]", b"UID"]]]]
    for bad in (b"(a", b"a)", b'"a', b"BODY[x", b"{5}\r\nab"):
        with pytest.raises(NotifySyntaxError):
            tokenize(bad)
