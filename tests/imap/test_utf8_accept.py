"""
UTF8=ACCEPT (RFC 6855) through the real protocol class: once enabled,
mailbox names are UTF-8 both ways, and APPEND takes UTF8 (literal8).
"""

from tests.deferreds import result_of
from tests.imap.test_server import Session

UTF8_MESSAGE = "From: Jörg <jörg@exämple.org>\r\nSubject: Grüße\r\n\r\nHallo\r\n".encode("utf-8")


def test_enable_then_utf8_names_both_ways(store):
    s = Session(store).login()
    assert s.command(b'a CREATE "Caf&AOk-"') == [b"a OK CREATE completed"]
    assert s.command(b"b ENABLE UTF8=ACCEPT") == [b"* ENABLED UTF8=ACCEPT", b"b OK ENABLE completed"]
    # RFC 6855 3: the names come as UTF-8, and are taken so.
    assert s.command(b'c LIST "" "Caf*"') == ['* LIST (\\HasNoChildren) "/" "Café"'.encode(), b"c OK LIST completed"]
    assert s.command('d CREATE "Ünïcode/Прочее"'.encode()) == [b"d OK CREATE completed"]
    assert s.command('e STATUS "Ünïcode/Прочее" (MESSAGES)'.encode()) == [
        '* STATUS "Ünïcode/Прочее" (MESSAGES 0)'.encode(), b"e OK STATUS completed"]
    assert s.command(b'f SELECT "Caf\xe9"') == [b"f NO Mailbox name is not UTF-8"]
    assert s.command(b"g ENABLE UTF8=ACCEPT") == [b"* ENABLED", b"g OK ENABLE completed"]
    # Another session without it still sees modified UTF-7.
    other = Session(store).login()
    assert b'* LIST (\\HasNoChildren) "/" "&ANw-n&AO8-code/&BB8EQAQ+BEcENQQ1-"' in other.command(b'h LIST "" "*"')


def test_append_utf8_literal8(store):
    s = Session(store).login()
    s.command(b"a ENABLE UTF8=ACCEPT")
    inbox = result_of(store.get_mailbox("alice", "INBOX"))
    lines = s.command(b"b APPEND INBOX (\\Seen) UTF8 (~{%d+}\r\n" % len(UTF8_MESSAGE) + UTF8_MESSAGE + b")")
    assert lines == [b"b OK [APPENDUID %d 1] APPEND completed" % inbox.uidvalidity]
    assert s.command(b"c APPEND INBOX UTF8 (~{3+}\r\nabc") == [b"c BAD Expected ) after the UTF8 literal"]
    s.command(b"s SELECT INBOX")
    assert s.send(b"d FETCH 1 BODY.PEEK[]\r\n") == (
        b"* 1 FETCH (BODY[] {%d}\r\n" % len(UTF8_MESSAGE) + UTF8_MESSAGE + b")\r\nd OK FETCH completed\r\n")
