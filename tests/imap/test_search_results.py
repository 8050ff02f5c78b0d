"""
SEARCH's answers through the real server: ESEARCH (RFC 4731) to SEARCH
RETURN and under IMAP4rev2, and SEARCHRES's ``$`` (RFC 5182) in SEARCH,
FETCH, STORE, COPY and UID EXPUNGE (gateway/imap/search_results.py).
"""

import pytest

from gateway.imap.search_results import uid_set
from gateway.imap.sequence import SequenceSet

from tests.imap.test_server import MESSAGE, Session


def message(n: int) -> bytes:
    return MESSAGE.replace(b"Subject: hello", b"Subject: message %d" % n)


def mailbox(store, flags):  # noqa: F811
    """A logged-in session with INBOX selected; ``flags[n]`` are message n's (1-based)."""
    s = Session(store).login()
    for n in range(1, len(flags) + 1):
        body = message(n)
        listed = b"(%s) " % flags[n - 1].encode() if flags[n - 1] else b""
        assert s.command(b"A APPEND INBOX %s{%d+}\r\n%s" % (listed, len(body), body))[-1].startswith(b"A OK")
    assert s.command(b"S SELECT INBOX")[-1].startswith(b"S OK")
    return s


# Eleven messages: 1-3 seen; 2, 10 and 11 flagged (RFC 4731 3.1's answers).
FLAGS = ["\\Seen", "\\Seen \\Flagged", "\\Seen"] + [""] * 6 + ["\\Flagged", "\\Flagged"]


@pytest.mark.parametrize("command, answer", [
    # RFC 4731 3.1, its examples in order.
    (b'A282 SEARCH RETURN (MIN COUNT) FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"',
     [b'* ESEARCH (TAG "A282") MIN 2 COUNT 3', b"A282 OK SEARCH completed"]),
    (b'A283 SEARCH RETURN () FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"',
     [b'* ESEARCH (TAG "A283") ALL 2,10:11', b"A283 OK SEARCH completed"]),
    (b"A284 SEARCH RETURN (MIN) UNSEEN", [b'* ESEARCH (TAG "A284") MIN 4', b"A284 OK SEARCH completed"]),
    (b"A285 UID SEARCH RETURN (MIN MAX) 1:5000",
     [b'* ESEARCH (TAG "A285") UID MIN 1 MAX 11', b"A285 OK SEARCH completed"]),
    (b"A286 SEARCH RETURN (COUNT) UNSEEN", [b'* ESEARCH (TAG "A286") COUNT 8', b"A286 OK SEARCH completed"]),
    # Nothing found: MIN, MAX and ALL left out, COUNT 0 kept.
    (b"A287 SEARCH RETURN (MIN MAX ALL COUNT) KEYWORD $Nothing",
     [b'* ESEARCH (TAG "A287") COUNT 0', b"A287 OK SEARCH completed"]),
    # Without RETURN, the IMAP4rev1 answer.
    (b"A288 SEARCH FLAGGED", [b"* SEARCH 2 10 11", b"A288 OK SEARCH completed"]),
    (b"A289 SEARCH RETURN (BIGGEST) ALL", [b"A289 BAD Invalid SEARCH result options"]),
    (b"A290 SEARCH RETURN MIN ALL", [b"A290 BAD Invalid SEARCH result options"]),
])
def test_rfc_4731_examples(store, command, answer):  # noqa: F811
    assert mailbox(store, FLAGS).command(command) == answer


def test_esearch_with_modseq(store):  # noqa: F811
    s = mailbox(store, FLAGS)
    assert s.command(b"a STORE 10 +FLAGS.SILENT (\\Answered)")[-1].startswith(b"a OK")
    # RFC 4731 3.2: MODSEQ of the one message MIN returns; of all found for ALL.
    lines = s.command(b"b SEARCH RETURN (MIN) MODSEQ 1")
    modseqs = s.command(b"c FETCH 1,10 (MODSEQ)")
    first = int(modseqs[0].split(b"MODSEQ (")[1].rstrip(b"))"))
    highest = int(modseqs[1].split(b"MODSEQ (")[1].rstrip(b"))"))
    assert first < highest
    assert lines[-2:] == [b'* ESEARCH (TAG "b") MIN 1 MODSEQ %d' % first, b"b OK SEARCH completed"]
    assert s.command(b"d SEARCH RETURN (ALL) MODSEQ 1") == [
        b'* ESEARCH (TAG "d") ALL 1:11 MODSEQ %d' % highest, b"d OK SEARCH completed"]


def test_saved_result_in_fetch_store_copy_and_search(store):  # noqa: F811
    s = mailbox(store, FLAGS)
    # RFC 5182 2: SAVE alone answers nothing but the tagged OK.
    assert s.command(b"A282 SEARCH RETURN (SAVE) FLAGGED") == [b"A282 OK SEARCH completed"]
    assert s.command(b"A283 FETCH $ (FLAGS)") == [
        b"* 2 FETCH (FLAGS (\\Flagged \\Recent \\Seen))",
        b"* 10 FETCH (FLAGS (\\Flagged \\Recent))",
        b"* 11 FETCH (FLAGS (\\Flagged \\Recent))",
        b"A283 OK FETCH completed",
    ]
    # As a search key, and after UID.
    assert s.command(b"A284 SEARCH $ UNSEEN") == [b"* SEARCH 10 11", b"A284 OK SEARCH completed"]
    assert s.command(b"A285 UID SEARCH UID $ SEEN") == [b"* SEARCH 2", b"A285 OK SEARCH completed"]
    # RFC 5182 4: pipelined, each command uses what the one before saved.
    lines = s.send(
        b"A300 CREATE Other\r\n"
        b"A301 SEARCH RETURN (SAVE ALL) UNSEEN SMALLER 4096\r\n"
        b"A302 COPY $ Other\r\n"
        b"A303 STORE $ +FLAGS.SILENT (\\Deleted)\r\n"
        b"A304 UID SEARCH RETURN (MIN MAX) $\r\n"
    ).split(b"\r\n")[:-1]
    assert lines[0] == b"A300 OK CREATE completed"
    assert lines[1:3] == [b'* ESEARCH (TAG "A301") ALL 4:11', b"A301 OK SEARCH completed"]
    assert lines[3].startswith(b"A302 OK [COPYUID ") and lines[3].endswith(b" 4:11 1:8] COPY completed")
    assert lines[4:] == [b"A303 OK STORE completed", b'* ESEARCH (TAG "A304") UID MIN 4 MAX 11',
                         b"A304 OK SEARCH completed"]
    assert s.command(b"A305 UID EXPUNGE $")[-1] == b"A305 OK EXPUNGE completed"
    assert s.command(b"A306 SEARCH ALL") == [b"* SEARCH 1 2 3", b"A306 OK SEARCH completed"]
    # The saved messages that were expunged are gone from $.
    assert s.command(b"A307 FETCH $ (UID)") == [b"A307 OK FETCH completed"]


def test_min_max_save_keeps_those_two(store):  # noqa: F811
    s = mailbox(store, FLAGS)
    # RFC 5182 2.4: with MIN and MAX and no ALL or COUNT, $ holds those two.
    assert s.command(b"a SEARCH RETURN (MIN MAX SAVE) UNSEEN") == [
        b'* ESEARCH (TAG "a") MIN 4 MAX 11', b"a OK SEARCH completed"]
    assert s.command(b"b UID FETCH $ (UID)") == [
        b"* 4 FETCH (UID 4)", b"* 11 FETCH (UID 11)", b"b OK FETCH completed"]


def test_saved_result_is_emptied(store):  # noqa: F811
    s = mailbox(store, FLAGS)
    assert s.command(b"a SEARCH RETURN (SAVE) ALL")[-1] == b"a OK SEARCH completed"
    # RFC 5182 2.1: a SEARCH with SAVE that fails empties it.
    assert s.command(b"b SEARCH RETURN (SAVE) BOGUS") == [b"b BAD Invalid search criteria"]
    assert s.command(b"c FETCH $ (UID)") == [b"c OK FETCH completed"]
    assert s.command(b"d SEARCH RETURN (SAVE) ALL")[-1] == b"d OK SEARCH completed"
    assert s.command(b"e UID SEARCH $") == [b"* SEARCH " + b" ".join(b"%d" % n for n in range(1, 12)),
                                            b"e OK SEARCH completed"]
    # ... and so does selecting a mailbox.
    assert s.command(b"f SELECT INBOX")[-1].startswith(b"f OK")
    assert s.command(b"g SEARCH $") == [b"* SEARCH", b"g OK SEARCH completed"]
    assert s.command(b"h STORE $ +FLAGS (\\Deleted)") == [b"h OK STORE completed"]


def test_imap4rev2_answers_every_search_with_esearch(store):  # noqa: F811
    s = Session(store).login()
    assert s.command(b"a ENABLE IMAP4rev2") == [b"* ENABLED IMAP4rev2", b"a OK ENABLE completed"]
    body = message(1)
    s.command(b"b APPEND INBOX {%d+}\r\n%s" % (len(body), body))
    s.command(b"c SELECT INBOX")
    # RFC 9051 6.4.4: ESEARCH, with RETURN (ALL) when nothing is asked.
    assert s.command(b"d SEARCH ALL") == [b'* ESEARCH (TAG "d") ALL 1', b"d OK SEARCH completed"]
    assert s.command(b"e UID SEARCH DELETED") == [b'* ESEARCH (TAG "e") UID', b"e OK SEARCH completed"]
    assert s.command(b"f SEARCH RETURN (COUNT) ALL") == [b'* ESEARCH (TAG "f") COUNT 1', b"f OK SEARCH completed"]


def test_a_saved_result_of_many_runs():
    # More runs than a client's sequence set may have (10,000): $ holds them all.
    saved = uid_set(list(range(1, 50_000, 2)) + [50_000, 50_001])
    assert len(saved.ranges) == 25_000
    assert saved.ranges[:2] == ((1, 1), (3, 3)) and saved.ranges[-1] == (49_999, 50_001)
    assert uid_set([]) == SequenceSet(())
