"""Tests for gateway.imap.capabilities: the CAPABILITY list before and after login."""

from gateway.imap.capabilities import CapabilityState, capability_line

# The extensions of the issue that asked for them that the server has, by
# the name clients look for.
EXTENSIONS = {
    b"LIST-EXTENDED", b"LIST-STATUS", b"SPECIAL-USE", b"CREATE-SPECIAL-USE", b"STATUS=SIZE", b"ESEARCH", b"SEARCHRES", b"SORT", b"SORT=DISPLAY",
    b"THREAD=ORDEREDSUBJECT", b"THREAD=REFERENCES", b"UNSELECT", b"NOTIFY", b"IMAP4rev1", b"IMAP4rev2",
    b"COMPRESS=DEFLATE", b"QUOTA", b"QUOTA=RES-STORAGE", b"QUOTA=RES-MESSAGE", b"BINARY", b"MULTIAPPEND",
    b"UTF8=ACCEPT",
}


def test_after_login_every_extension():
    names = capability_line(CapabilityState(authenticated=True, appendlimit=1000)).split()
    assert EXTENSIONS <= set(names)
    assert names[:2] == [b"IMAP4rev1", b"IMAP4rev2"]
    assert b"LITERAL+" in names and b"APPENDLIMIT=1000" in names
    assert len(names) == len(set(names))


def test_before_login_what_login_needs():
    names = capability_line(CapabilityState(authenticated=False, appendlimit=1000, starttls=True)).split()
    assert {b"IMAP4rev1", b"IMAP4rev2", b"LITERAL-", b"STARTTLS", b"AUTH=PLAIN"} <= set(names)
    assert b"SORT" not in names and b"LITERAL+" not in names and b"COMPRESS=DEFLATE" not in names
    names = capability_line(CapabilityState(authenticated=False, appendlimit=1000, plaintext=False)).split()
    assert b"LOGINDISABLED" in names and b"AUTH=PLAIN" not in names


def test_compress_is_not_offered_twice():
    names = capability_line(CapabilityState(authenticated=True, appendlimit=1, compressed=True)).split()
    assert b"COMPRESS=DEFLATE" not in names
