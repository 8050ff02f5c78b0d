"""
QRESYNC (RFC 7162 3.2): the pure parsers of gateway/imap/resync.py, and the
protocol byte for byte through the real server class on a StringTransport
over a real SQLite store.  A fresh mailbox starts at HIGHESTMODSEQ 1 and each
delivery, flag change or expunge adds one, so the mod-sequences are exact.
"""

import pytest

from gateway.imap.capabilities import BASE
from gateway.imap.resync import (
    FetchModifiers,
    ParameterError,
    Resync,
    SelectParameters,
    parse_select_parameters,
    split_fetch_modifiers,
)
from gateway.imap.sequence import parse_sequence_set
from tests.deferreds import result_of
from tests.imap.test_server import MESSAGE, Session

# -- parsing ---------------------------------------------------------------


@pytest.mark.parametrize(
    "line, expected",
    [
        (b"", SelectParameters()),
        (b"(CONDSTORE)", SelectParameters(condstore=True)),
        (b"(qresync (67890007 20050715194045000))", SelectParameters(qresync=Resync(67890007, 20050715194045000))),
        (
            b"(QRESYNC (67890007 90060115194045000 41:211,214:541) CONDSTORE)",
            SelectParameters(True, Resync(67890007, 90060115194045000, parse_sequence_set(b"41:211,214:541"))),
        ),
        # 3.2.5.2: the sequence match data is checked, then not needed.
        (
            b"(QRESYNC (67890007 90060115194045000 1:29997 (5000,7500,9000,9990:9999 15000,22500,27000,29970)))",
            SelectParameters(qresync=Resync(67890007, 90060115194045000, parse_sequence_set(b"1:29997"))),
        ),
    ],
)
def test_select_parameters(line, expected):
    assert parse_select_parameters(line) == expected


@pytest.mark.parametrize(
    "line",
    [b"()", b"CONDSTORE", b"(BOGUS)", b"(CONDSTORE  CONDSTORE)", b"(QRESYNC)", b"(QRESYNC (1))",
     b"(QRESYNC (0 5))", b"(QRESYNC (1 0))", b"(QRESYNC (1 9223372036854775808))", b"(QRESYNC (1 5 1:*))",
     b"(QRESYNC (1 5 0:3))", b"(QRESYNC (1 5) QRESYNC (1 5))", b"(QRESYNC (1 5 1:3 (1:2)))"],
)
def test_select_parameters_refused(line):
    with pytest.raises(ParameterError):
        parse_select_parameters(line)


@pytest.mark.parametrize(
    "rest, expected",
    [
        (b"(FLAGS)", (b"(FLAGS)", FetchModifiers())),
        (b"(UID FLAGS)", (b"(UID FLAGS)", FetchModifiers())),
        (b"FLAGS (CHANGEDSINCE 12345)", (b"FLAGS", FetchModifiers(12345))),
        (b"(FLAGS) (changedsince 5 vanished)", (b"(FLAGS)", FetchModifiers(5, True))),
        (b"(FLAGS) (VANISHED CHANGEDSINCE 5)", (b"(FLAGS)", FetchModifiers(5, True))),
        (b"BODY[HEADER.FIELDS (DATE)]", (b"BODY[HEADER.FIELDS (DATE)]", FetchModifiers())),
    ],
)
def test_fetch_modifiers(rest, expected):
    assert split_fetch_modifiers(rest) == expected


@pytest.mark.parametrize(
    "rest",
    [b"(FLAGS) (VANISHED)", b"(FLAGS) (CHANGEDSINCE 1 CHANGEDSINCE 2)", b"(FLAGS) (CHANGEDSINCE 9223372036854775808)"],
)
def test_fetch_modifiers_refused(rest):
    with pytest.raises(ParameterError):
        split_fetch_modifiers(rest)


# -- the protocol ----------------------------------------------------------


def test_qresync_is_advertised():
    assert b"QRESYNC" in BASE


def test_enable_qresync_brings_condstore(store):
    s = Session(store).login()
    assert s.command(b"e ENABLE QRESYNC CONDSTORE") == [b"* ENABLED QRESYNC CONDSTORE", b"e OK ENABLE completed"]
    assert s.command(b"f ENABLE CONDSTORE QRESYNC") == [b"* ENABLED", b"f OK ENABLE completed"]
    other = Session(store).login()
    assert other.command(b"e ENABLE QRESYNC") == [b"* ENABLED QRESYNC", b"e OK ENABLE completed"]
    assert other.server.condstore


def five_then_changes(store):
    """UIDs 1-5 (modseqs 2-6), then UID 4 flagged (7) and UID 2 expunged (8)."""
    result_of(store.ensure_user("alice"))
    inbox = result_of(store.get_mailbox("alice", "INBOX"))
    for _ in range(5):
        result_of(store.append(inbox.id, MESSAGE))
    result_of(store.store_flags(inbox.id, [4], {"\\Flagged"}, "add"))
    result_of(store.expunge(inbox.id, [2]))
    return inbox


def test_select_qresync_needs_enable(store):
    inbox = five_then_changes(store)
    s = Session(store).login()
    line = b"s SELECT INBOX (QRESYNC (%d 6))" % inbox.uidvalidity
    assert s.command(line) == [b"s BAD QRESYNC parameter without ENABLE QRESYNC"]
    assert s.server.view is None
    assert s.command(b"t SELECT INBOX (QRESYNC (1 2 3:x))")[-1].startswith(b"t BAD")


def test_select_qresync_reports_vanished_and_changed_flags(store):
    inbox = five_then_changes(store)
    s = Session(store).login()
    s.command(b"e ENABLE QRESYNC")
    lines = s.command(b"s SELECT INBOX (QRESYNC (%d 6))" % inbox.uidvalidity)
    assert lines[-6:] == [
        b"* OK [UIDVALIDITY %d] UIDs valid" % inbox.uidvalidity,
        b"* OK [UIDNEXT 6] Predicted next UID",
        b"* OK [HIGHESTMODSEQ 8] Highest",
        b"* VANISHED (EARLIER) 2",
        b"* 3 FETCH (UID 4 FLAGS (\\Flagged \\Recent) MODSEQ (7))",
        b"s OK [READ-WRITE] SELECT completed",
    ]
    # Only the known UIDs are spoken of.
    lines = s.command(b"t EXAMINE INBOX (QRESYNC (%d 6 3:5))" % inbox.uidvalidity)
    assert lines[-3:] == [
        b"* OK [HIGHESTMODSEQ 8] Highest",
        b"* 3 FETCH (UID 4 FLAGS (\\Flagged) MODSEQ (7))",
        b"t OK [READ-ONLY] EXAMINE completed",
    ]
    # Nothing changed since 8; another UIDVALIDITY: the client starts over.
    for line in (b"u EXAMINE INBOX (QRESYNC (%d 8))" % inbox.uidvalidity,
                 b"u EXAMINE INBOX (QRESYNC (%d 2))" % (inbox.uidvalidity + 1)):
        assert s.command(line)[-2:] == [b"* OK [HIGHESTMODSEQ 8] Highest", b"u OK [READ-ONLY] EXAMINE completed"]


def test_vanished_replaces_expunge(store):
    result_of(store.ensure_user("alice"))
    inbox = result_of(store.get_mailbox("alice", "INBOX"))
    for _ in range(4):
        result_of(store.append(inbox.id, MESSAGE))
    s = Session(store).login()
    s.command(b"e ENABLE QRESYNC")
    s.command(b"s SELECT INBOX")
    result_of(store.expunge(inbox.id, [1, 3]))
    # RFC 7162 3.2.10: not during FETCH, as EXPUNGE.
    assert s.command(b"f FETCH 4 (FLAGS)") == [
        b"* 4 FETCH (UID 4 FLAGS (\\Recent) MODSEQ (5))",
        b"f OK FETCH completed",
    ]
    assert s.command(b"n NOOP") == [b"* VANISHED 1,3", b"n OK NOOP completed"]
    s.command(b"a STORE 2 +FLAGS.SILENT (\\Deleted)")
    assert s.command(b"x EXPUNGE") == [b"* VANISHED 4", b"x OK EXPUNGE completed"]


def test_uid_fetch_vanished(store):
    five_then_changes(store)
    s = Session(store).login()
    s.command(b"e ENABLE QRESYNC")
    s.command(b"s SELECT INBOX")
    assert s.command(b"f UID FETCH 1:* (FLAGS) (CHANGEDSINCE 6 VANISHED)") == [
        b"* VANISHED (EARLIER) 2",
        b"* 3 FETCH (UID 4 FLAGS (\\Flagged \\Recent) MODSEQ (7))",
        b"f OK FETCH completed",
    ]
    assert s.command(b"g UID FETCH 3:5 (FLAGS) (CHANGEDSINCE 6 VANISHED)") == [
        b"* 3 FETCH (UID 4 FLAGS (\\Flagged \\Recent) MODSEQ (7))",
        b"g OK FETCH completed",
    ]
    assert s.command(b"h FETCH 1:* (FLAGS) (CHANGEDSINCE 6 VANISHED)")[-1].startswith(b"h BAD")
    assert s.command(b"i UID FETCH 1:* (FLAGS) (VANISHED)")[-1].startswith(b"i BAD")
    plain = Session(store).login()
    plain.command(b"s SELECT INBOX (CONDSTORE)")
    assert plain.command(b"j UID FETCH 1:* (FLAGS) (CHANGEDSINCE 6 VANISHED)") == [
        b"j BAD VANISHED needs UID FETCH and ENABLE QRESYNC"
    ]
