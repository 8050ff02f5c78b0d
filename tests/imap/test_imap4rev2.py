"""
IMAP4rev2 (RFC 9051) switched on by ENABLE IMAP4rev2: no \\Recent, no
UNSEEN on SELECT, a LIST response instead, ESEARCH for every SEARCH,
LIST-EXTENDED's answers to LIST, STATUS SIZE and DELETED.
"""

from tests.imap.test_server import MESSAGE, Session


def rev2(store):  # noqa: F811
    s = Session(store).login()
    assert b" IMAP4rev2 " in s.command(b"c CAPABILITY")[0] + b" "
    assert s.command(b"e ENABLE IMAP4rev2") == [b"* ENABLED IMAP4rev2", b"e OK ENABLE completed"]
    # RFC 5161 3.2: enabled once, not named again.
    assert s.command(b"e2 ENABLE IMAP4rev2") == [b"* ENABLED", b"e2 OK ENABLE completed"]
    return s


def append(s, mailbox=b"INBOX", flags=b""):
    lines = s.command(b"a APPEND %s %s{%d+}\r\n%s" % (mailbox, flags, len(MESSAGE), MESSAGE))
    assert lines[-1].startswith(b"a OK"), lines


def test_select_without_recent_or_unseen_and_with_list(store):  # noqa: F811
    s = rev2(store)
    append(s)
    append(s, flags=b"(\\Seen) ")
    lines = s.command(b"s SELECT INBOX")
    assert not [line for line in lines if b"RECENT" in line or b"UNSEEN" in line], lines
    assert b"* 2 EXISTS" in lines
    # RFC 9051 6.3.2: the mailbox's LIST response, last before the OK.
    assert lines[-2:] == [b'* LIST (\\HasNoChildren) "/" "INBOX"', b"s OK [READ-WRITE] SELECT completed"]
    assert s.command(b"f FETCH 1:* (FLAGS)") == [
        b"* 1 FETCH (FLAGS ())", b"* 2 FETCH (FLAGS (\\Seen))", b"f OK FETCH completed"]
    # A new message: EXISTS without RECENT, and no \Recent on it.
    other = Session(store).login()
    append(other)
    assert s.command(b"n NOOP") == [b"* 3 EXISTS", b"n OK NOOP completed"]
    assert s.command(b"g FETCH 3 (FLAGS)") == [b"* 3 FETCH (FLAGS ())", b"g OK FETCH completed"]
    # ... which an IMAP4rev1 session still sees as \Recent.
    assert b"* 3 RECENT" in other.command(b"s SELECT INBOX")
    lines = s.command(b"x EXAMINE Sent")
    assert lines[-2:] == [b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"', b"x OK [READ-ONLY] EXAMINE completed"]


def test_search_answers_esearch(store):  # noqa: F811
    s = rev2(store)
    append(s)
    s.command(b"s SELECT INBOX")
    assert s.command(b"t SEARCH ALL") == [b'* ESEARCH (TAG "t") ALL 1', b"t OK SEARCH completed"]
    assert s.command(b"u UID SEARCH SEEN") == [b'* ESEARCH (TAG "u") UID', b"u OK SEARCH completed"]


def test_list_answers_as_list_extended(store):  # noqa: F811
    s = rev2(store)
    assert s.command(b"c CREATE a/b")[-1] == b"c OK CREATE completed"
    # RFC 9051 6.3.9: a level that does not exist is \NonExistent.
    assert s.command(b'l LIST "" "a"') == [b'* LIST (\\HasChildren \\NonExistent) "/" "a"', b"l OK LIST completed"]
    append(s, b"a/b", b"(\\Deleted) ")
    assert s.command(b"st STATUS a/b (MESSAGES DELETED SIZE)") == [
        b'* STATUS "a/b" (MESSAGES 1 DELETED 1 SIZE %d)' % len(MESSAGE), b"st OK STATUS completed"]


def test_enable_is_per_session(store):  # noqa: F811
    rev2(store)
    s = Session(store).login()
    append(s)
    lines = s.command(b"s SELECT INBOX")
    assert b"* 1 RECENT" in lines and not [line for line in lines if line.startswith(b"* LIST")]
    assert s.command(b"t SEARCH ALL") == [b"* SEARCH 1", b"t OK SEARCH completed"]


def test_mailbox_names_are_utf8(store):  # noqa: F811
    s = Session(store).login()
    assert s.command(b'a CREATE "Caf&AOk-"') == [b"a OK CREATE completed"]
    s.command(b"e ENABLE IMAP4rev2")
    # RFC 9051 5.1: no modified UTF-7 under IMAP4rev2, both ways.
    assert s.command(b'l LIST "" "Caf*"') == ['* LIST (\\HasNoChildren) "/" "Café"'.encode(), b"l OK LIST completed"]
    assert s.command('c CREATE "Прочее"'.encode()) == [b"c OK CREATE completed"]
    other = Session(store).login()
    assert b'* LIST (\\HasNoChildren) "/" "&BB8EQAQ+BEcENQQ1-"' in other.command(b'h LIST "" "*"')
