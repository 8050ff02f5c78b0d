"""
SORT and THREAD (RFC 5256) through the real server, UID forms and
charsets included, and a big mailbox sorted a slice at a time
(gateway/imap/sort_command.py).
"""

from twisted.internet.task import Clock

from tests.imap.test_server import Session


def message(subject: bytes, date: bytes, extra: bytes = b"") -> bytes:
    return (b"From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: " + subject
            + b"\r\nDate: " + date + b"\r\n" + extra + b"\r\nHello.\r\n")


# Chosen so that RFC 5256 4's example answers "* SORT 5 3 4 1 2".
SORTED = [
    message(b"c", b"Wed, 5 Jan 2000 10:00:00 +0000"),
    message(b"c", b"Sat, 1 Jan 2000 10:00:00 +0000"),
    message(b"b", b"Tue, 4 Jan 2000 10:00:00 +0000"),
    message(b"Re: b", b"Sun, 2 Jan 2000 10:00:00 +0000"),
    message(b"[list] A", b"Mon, 3 Jan 2000 10:00:00 +0000"),
]


def mailbox(store, messages, clock=None):  # noqa: F811
    s = Session(store, clock=clock).login()
    for body in messages:
        lines = s.command(b'A APPEND INBOX "01-Feb-2000 00:00:00 +0000" {%d+}\r\n%s' % (len(body), body))
        assert lines[-1].startswith(b"A OK"), lines
    assert s.command(b"S SELECT INBOX")[-1].startswith(b"S OK")
    return s


def test_rfc_5256_sort_examples(store):  # noqa: F811
    s = mailbox(store, SORTED)
    assert s.command(b"A282 SORT (SUBJECT) UTF-8 SINCE 1-Feb-1994") == [b"* SORT 5 3 4 1 2", b"A282 OK SORT completed"]
    assert s.command(b"A283 SORT (SUBJECT REVERSE DATE) UTF-8 ALL") == [b"* SORT 5 3 4 1 2", b"A283 OK SORT completed"]
    assert s.command(b'A284 SORT (SUBJECT) US-ASCII TEXT "not in mailbox"') == [b"* SORT", b"A284 OK SORT completed"]


def test_sort_keys_and_uid_sort(store):  # noqa: F811
    s = mailbox(store, SORTED)
    s.command(b"a STORE 2 +FLAGS (\\Deleted)")
    s.command(b"b EXPUNGE")
    # Now UIDs 1, 3, 4, 5 are sequence numbers 1 to 4.
    assert s.command(b"c SORT (DATE) UTF-8 ALL") == [b"* SORT 3 4 2 1", b"c OK SORT completed"]
    assert s.command(b"d UID SORT (DATE) UTF-8 ALL") == [b"* SORT 4 5 3 1", b"d OK SORT completed"]
    assert s.command(b"e UID SORT (REVERSE ARRIVAL) UTF-8 UID 3:*") == [b"* SORT 3 4 5", b"e OK SORT completed"]
    # One display name for all: REVERSE SIZE decides, then mailbox order.
    assert s.command(b'f SORT (DISPLAYFROM REVERSE SIZE) "UTF-8" ALL') == [b"* SORT 4 3 1 2", b"f OK SORT completed"]


def test_sort_and_thread_charsets(store):  # noqa: F811
    s = mailbox(store, SORTED)
    # RFC 5256 3: US-ASCII and UTF-8; any other is NO [BADCHARSET].
    assert s.command(b"a SORT (SUBJECT) KOI8-R ALL") == [b"a NO [BADCHARSET (US-ASCII UTF-8)] Unsupported charset"]
    assert s.command(b"b THREAD REFERENCES ISO-8859-1 ALL") == [
        b"b NO [BADCHARSET (US-ASCII UTF-8)] Unsupported charset"]
    assert s.command("c SORT (SUBJECT) UTF-8 SUBJECT {2+}\r\n\u00e9".encode()) == [
        b"* SORT", b"c OK SORT completed"]


def test_malformed_sort_and_thread(store):  # noqa: F811
    s = mailbox(store, SORTED)
    assert s.command(b"a SORT SUBJECT UTF-8 ALL") == [b"a BAD Invalid sort criteria"]
    assert s.command(b"b SORT (SUBJECT REVERSE) UTF-8 ALL") == [b"b BAD Invalid sort criteria"]
    assert s.command(b"c SORT (SUBJECT)") == [b"c BAD Missing argument"]
    assert s.command(b"d THREAD CHRONOLOGICAL UTF-8 ALL") == [b"d BAD Unknown threading algorithm"]
    assert s.command(b"e SORT (SUBJECT) UTF-8 BOGUS") == [b"e BAD Invalid search criteria"]
    # Not before a mailbox is selected.
    s.command(b"f UNSELECT")
    assert s.command(b"g SORT (SUBJECT) UTF-8 ALL")[0].startswith(b"g BAD")


THREADED = [
    message(b"hello", b"Mon, 3 Jan 2000 10:00:00 +0000", b"Message-ID: <1@x>\r\n"),
    message(b"Re: hello", b"Tue, 4 Jan 2000 10:00:00 +0000", b"Message-ID: <2@x>\r\nReferences: <1@x>\r\n"),
    message(b"other", b"Sun, 2 Jan 2000 10:00:00 +0000", b"Message-ID: <3@x>\r\n"),
    message(b"Re: hello", b"Wed, 5 Jan 2000 10:00:00 +0000", b"Message-ID: <4@x>\r\nIn-Reply-To: <1@x>\r\n"),
    message(b"Re: whatever", b"Thu, 6 Jan 2000 10:00:00 +0000",
            b"Message-ID: <5@x>\r\nReferences: <1@x> <2@x>\r\n"),
]


def test_thread_references_and_orderedsubject(store):  # noqa: F811
    s = mailbox(store, THREADED)
    assert s.command(b"a THREAD REFERENCES UTF-8 ALL") == [b"* THREAD (3)(1 (2 5)(4))", b"a OK THREAD completed"]
    assert s.command(b"b THREAD ORDEREDSUBJECT UTF-8 ALL") == [
        b"* THREAD (3)(1 (2)(4))(5)", b"b OK THREAD completed"]
    assert s.command(b"c UID THREAD REFERENCES US-ASCII NOT SUBJECT other") == [
        b"* THREAD (1 (2 5)(4))", b"c OK THREAD completed"]
    # RFC 5256 4: nothing found is an empty THREAD response.
    assert s.command(b'A284 THREAD ORDEREDSUBJECT US-ASCII TEXT "gewp"') == [
        b"* THREAD", b"A284 OK THREAD completed"]


class TickingClock(Clock):
    """
    A clock on which every reading costs a millisecond, so that work runs
    in slices; it counts the reactor turns asked for (``callLater(0, ...)``).
    """

    turns = 0

    def seconds(self):
        self.rightNow += 0.001
        return self.rightNow

    def callLater(self, delay, *args, **kwargs):
        self.turns += delay == 0
        return super().callLater(delay, *args, **kwargs)


def test_a_big_sort_gives_the_reactor_turns(store):  # noqa: F811
    messages = [message(b"subject %d" % (n % 97), b"Mon, 3 Jan 2000 10:00:00 +0000") for n in range(300)]
    clock = TickingClock()
    s = mailbox(store, messages, clock=clock)
    s.transport.clear()
    s.server.dataReceived(b"a SORT (SUBJECT) UTF-8 ALL\r\nb THREAD ORDEREDSUBJECT UTF-8 ALL\r\n")
    for _ in range(10_000):
        if b"b OK" in s.transport.value():
            break
        clock.advance(0)
    lines = s.read().split(b"\r\n")[:-1]
    # 20 ms slices of about 1 ms per message: ten or more turns for each command.
    assert clock.turns >= 20
    assert lines[1] == b"a OK SORT completed" and lines[3] == b"b OK THREAD completed"
    expected = sorted(range(1, 301), key=lambda n: (b"SUBJECT %d" % ((n - 1) % 97), n))
    assert lines[0] == b"* SORT " + b" ".join(b"%d" % n for n in expected)
