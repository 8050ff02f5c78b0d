"""
NOTIFY (RFC 5465) through the real server: the selected mailbox's changes
pushed between commands, STATUS for other watched mailboxes, LIST for
MailboxName, and NOTIFY NONE (gateway/imap/notify_command.py).
"""

import pytest

from tests.imap.test_server import MESSAGE, Session


def append(session, mailbox=b"INBOX"):
    lines = session.command(b"A APPEND %s {%d+}\r\n%s" % (mailbox, len(MESSAGE), MESSAGE))
    assert lines[-1].startswith(b"A OK"), lines


def pair(store):  # noqa: F811
    """A session with INBOX selected, and another making changes."""
    watcher, other = Session(store).login(), Session(store).login()
    other.factory = watcher.factory
    for name in (b"Lists/imap", b"Lists/smtp", b"Work"):
        assert other.command(b"c CREATE " + name)[-1] == b"c OK CREATE completed"
    append(other)
    assert watcher.command(b"s SELECT INBOX")[-1].startswith(b"s OK")
    return watcher, other


def pushed(session) -> list[bytes]:
    """What the session sent on its own once the change feed has run."""
    session.clock.advance(0)
    return session.read().split(b"\r\n")[:-1]


def test_rfc_5465_example(store):  # noqa: F811
    s, other = pair(store)
    # RFC 5465 3.1's example, with the MessageExpunge its section 5 asks for.
    lines = s.command(b"a notify set status (selected MessageNew (uid body.peek[header.fields (from to subject)])"
                      b" MessageExpunge) (subtree Lists MessageNew MessageExpunge)")
    assert [line.split(b" (")[0] for line in lines] == [
        b'* STATUS "Lists/imap"', b'* STATUS "Lists/smtp"', b"a OK NOTIFY completed"]
    assert lines[0].endswith(b" (MESSAGES 0 UIDNEXT 1 UIDVALIDITY " + lines[0].rsplit(b" ", 1)[1])
    append(other)
    assert pushed(s) == [
        b"* 2 EXISTS", b"* 2 RECENT",
        b"* 2 FETCH (UID 2 BODY[HEADER.FIELDS (FROM TO SUBJECT)] {72}",
        b"From: Alice <alice@example.org>", b"To: bob@example.org", b"Subject: hello", b"", b")",
    ]
    append(other, b"Lists/imap")
    assert pushed(s) == [b'* STATUS "Lists/imap" (MESSAGES 1 UIDNEXT 2)']
    # Work is not watched.
    append(other, b"Work")
    assert pushed(s) == []
    other.command(b"s SELECT Lists/imap")
    other.command(b"e STORE 1 +FLAGS (\\Deleted)")
    other.command(b"f EXPUNGE")
    assert pushed(s) == [b'* STATUS "Lists/imap" (MESSAGES 0 UIDNEXT 2)']


def test_flag_changes_and_expunges_of_the_selected_mailbox(store):  # noqa: F811
    s, other = pair(store)
    assert s.command(b"a NOTIFY SET (SELECTED (MessageNew MessageExpunge FlagChange))") == [
        b"a OK NOTIFY completed"]
    other.command(b"s SELECT INBOX")
    other.command(b"b STORE 1 +FLAGS (\\Flagged)")
    assert pushed(s) == [b"* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent))"]
    other.command(b"c STORE 1 +FLAGS (\\Deleted)")
    other.command(b"d EXPUNGE")
    assert pushed(s) == [b"* 1 FETCH (UID 1 FLAGS (\\Deleted \\Flagged \\Recent))", b"* 1 EXPUNGE"]


def test_selected_delayed_keeps_expunge_for_a_command(store):  # noqa: F811
    s, other = pair(store)
    append(other)
    assert s.command(b"n NOOP")[-1] == b"n OK NOOP completed"
    assert s.command(b"a NOTIFY SET (SELECTED-DELAYED (MessageNew MessageExpunge))") == [b"a OK NOTIFY completed"]
    other.command(b"s SELECT INBOX")
    other.command(b"b STORE 1 +FLAGS.SILENT (\\Deleted)")
    other.command(b"c EXPUNGE")
    append(other)
    # RFC 5465 6.2: the new message is told, the expunge waits ...  (Its
    # \Recent is the appending session's, which has INBOX selected.)
    assert pushed(s) == [b"* 1 FETCH (UID 1 FLAGS (\\Deleted \\Recent))", b"* 3 EXISTS", b"* 2 RECENT"]
    # Still numbered 1 (RFC 2180 4.1.3: expunged meanwhile, left out).
    assert s.command(b"f FETCH 1 (UID)") == [
        b"f OK [EXPUNGEISSUED] Some messages were expunged meanwhile; completed for the others"]
    # ... for a command that allows it.
    assert s.command(b"n NOOP") == [b"* 1 EXPUNGE", b"n OK NOOP completed"]


def test_flag_changes_elsewhere_are_told_by_unseen_or_highestmodseq(store):  # noqa: F811
    s, other = pair(store)
    append(other, b"Work")
    assert s.command(b"a NOTIFY SET (MAILBOXES Work (MessageNew MessageExpunge FlagChange))") == [
        b"a OK NOTIFY completed"]
    other.command(b"s SELECT Work")
    other.command(b"b STORE 1 +FLAGS (\\Seen)")
    # RFC 5465 5.3: without CONDSTORE, UNSEEN.
    assert pushed(s) == [b'* STATUS "Work" (UNSEEN 0)']
    # RFC 7162 3.1: a CONDSTORE enabling command.
    assert s.command(b"e FETCH 1 (MODSEQ)")[-1] == b"e OK FETCH completed"
    other.command(b"c STORE 1 +FLAGS (\\Flagged)")
    (line,) = pushed(s)
    assert line.startswith(b'* STATUS "Work" (HIGHESTMODSEQ ') and b" UIDVALIDITY " in line


def test_mailbox_names(store):  # noqa: F811
    s, other = pair(store)
    assert s.command(b"a NOTIFY SET (PERSONAL (MailboxName))") == [b"a OK NOTIFY completed"]
    other.command(b"b CREATE New")
    assert pushed(s) == [b'* LIST (\\HasNoChildren) "/" "New"']
    other.command(b"c RENAME New Old")
    # RFC 5465 5.4
    assert pushed(s) == [b'* LIST (\\HasNoChildren) "/" "Old" ("OLDNAME" ("New"))']
    other.command(b"d DELETE Old")
    assert pushed(s) == [b'* LIST (\\NonExistent) "/" "Old"']


def test_notify_none_and_unwatched_sessions(store):  # noqa: F811
    s, other = pair(store)
    assert s.command(b"a NOTIFY SET (PERSONAL (MessageNew MessageExpunge MailboxName))")[-1] == (
        b"a OK NOTIFY completed")
    assert s.command(b"b NOTIFY NONE") == [b"b OK NOTIFY completed"]
    append(other, b"Work")
    other.command(b"c CREATE Another")
    append(other)
    assert pushed(s) == []
    # Without NOTIFY, the selected mailbox's news waits for a command (RFC 3501 7.4.1).
    assert s.command(b"n NOOP") == [b"* 2 EXISTS", b"* 2 RECENT", b"n OK NOOP completed"]


@pytest.mark.parametrize("line, answer", [
    (b"a NOTIFY SET (SELECTED (AnnotationChange))",
     b"a NO [BADEVENT (MessageNew MessageExpunge FlagChange MailboxName)] Unsupported event"),
    (b"a NOTIFY SET (SELECTED (MessageNew))", b"a BAD Invalid NOTIFY arguments"),
    (b"a NOTIFY SET (SELECTED (MailboxName))", b"a BAD Invalid NOTIFY arguments"),
    (b"a NOTIFY SET (NOWHERE (MessageNew MessageExpunge))", b"a BAD Invalid NOTIFY arguments"),
    (b"a NOTIFY SET (SELECTED (MessageNew (BOGUS) MessageExpunge))", b"a BAD Invalid FETCH attributes"),
    (b"a NOTIFY SET", b"a BAD Invalid NOTIFY arguments"),
    (b"a NOTIFY SET (selected", b"a BAD Invalid NOTIFY arguments"),
    (b"a NOTIFY", b"a BAD Invalid NOTIFY arguments"),
])
def test_refused(store, line, answer):  # noqa: F811
    s, _ = pair(store)
    assert s.command(line) == [answer]


EXTENSION_STATE = {"notify_set", "_watched", "_names", "_names_unsubscribe", "_notify_due", "_notify_fetch",
                   "saved_uids", "imap4rev2"}


def test_an_idle_session_holds_no_extension_state(store):  # noqa: F811
    # Memory per idle session: what NOTIFY, SEARCHRES and IMAP4rev2 keep
    # lives on the session only once it is used, and NOTIFY NONE and
    # SELECT drop it again.
    s, _ = pair(store)
    s.command(b"i IDLE")
    assert not EXTENSION_STATE & set(vars(s.server))
    s.send(b"DONE\r\n")
    s.command(b"a NOTIFY SET (SELECTED (MessageNew MessageExpunge)) (PERSONAL (MessageNew MessageExpunge MailboxName))")
    s.command(b"b SEARCH RETURN (SAVE) ALL")
    assert {"notify_set", "saved_uids"} <= set(vars(s.server))
    s.command(b"c NOTIFY NONE")
    s.command(b"d SELECT INBOX")
    assert not EXTENSION_STATE & set(vars(s.server))
