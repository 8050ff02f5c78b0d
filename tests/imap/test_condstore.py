"""
CONDSTORE (RFC 7162 3.1) and the FLAGS/STATUS RECENT gaps, byte for byte,
through the real protocol class on a StringTransport over a real SQLite
store.  A fresh mailbox starts at HIGHESTMODSEQ 1 and every delivery or flag
change adds one, so the mod-sequences below are exact.
"""

from gateway.imap.capabilities import BASE
from tests.deferreds import result_of
from tests.imap.test_server import MESSAGE, Session


def inbox_with(store, *flag_sets):
    result_of(store.ensure_user("alice"))
    inbox = result_of(store.get_mailbox("alice", "INBOX"))
    for flags in flag_sets:
        result_of(store.append(inbox.id, MESSAGE, flags=flags))
    return inbox


def selected(store, line=b"s SELECT INBOX"):
    session = Session(store).login()
    answer = session.command(line)
    assert answer[-1].startswith(b"s OK"), answer
    return session


def test_condstore_is_advertised():
    assert b"CONDSTORE" in BASE


# -- RFC 3501 7.2.6: new keywords are announced before the FETCH ------------


def test_a_new_keyword_from_another_session_comes_with_flags_first(store):
    inbox_with(store, set(), {"work"})
    one = selected(store)
    two = selected(store)
    assert two.command(b"a STORE 1 +FLAGS ($Urgent)") == [
        b"* FLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen $Urgent work)",
        b"* OK [PERMANENTFLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen $Urgent work \\*)] Flags permitted",
        b"* 1 FETCH (UID 1 FLAGS ($Urgent))",
        b"a OK STORE completed",
    ]
    assert one.command(b"n NOOP") == [
        b"* FLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen $Urgent work)",
        b"* OK [PERMANENTFLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen $Urgent work \\*)] Flags permitted",
        b"* 1 FETCH (UID 1 FLAGS (\\Recent $Urgent))",
        b"n OK NOOP completed",
    ]
    # Known now: no FLAGS again.
    assert one.command(b"b STORE 2 +FLAGS ($Urgent)") == [
        b"* 2 FETCH (UID 2 FLAGS (\\Recent $Urgent work))",
        b"b OK STORE completed",
    ]


def test_a_new_keyword_in_an_examined_mailbox_keeps_permanentflags_empty(store):
    inbox_with(store, set())
    one = selected(store, b"s EXAMINE INBOX")
    selected(store).command(b"a STORE 1 +FLAGS (later)")
    assert one.command(b"n NOOP") == [
        b"* FLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen later)",
        b"* OK [PERMANENTFLAGS ()] Read-only mailbox",
        # EXAMINE showed it \Recent without claiming it (RFC 3501 6.3.2).
        b"* 1 FETCH (UID 1 FLAGS (\\Recent later))",
        b"n OK NOOP completed",
    ]


# -- STATUS RECENT of a mailbox not selected ------------------------------


def test_status_recent_counts_unclaimed_messages_without_claiming(store):
    inbox_with(store, set(), set())
    watcher = Session(store).login()
    for _ in range(2):
        assert watcher.command(b"a STATUS INBOX (RECENT MESSAGES)") == [
            b'* STATUS "INBOX" (RECENT 2 MESSAGES 2)', b"a OK STATUS completed"
        ]
    # STATUS claimed nothing: the first SELECT still gets both.
    assert b"* 2 RECENT" in Session(store).login().command(b"s SELECT INBOX")
    assert watcher.command(b"b STATUS INBOX (RECENT)") == [b'* STATUS "INBOX" (RECENT 0)', b"b OK STATUS completed"]


# -- enabling CONDSTORE -------------------------------------------------------


def test_select_condstore_answers_highestmodseq(store):
    inbox_with(store, set(), set())
    s = Session(store).login()
    plain = s.command(b"s SELECT INBOX")
    assert not any(b"HIGHESTMODSEQ" in line for line in plain)
    lines = s.command(b"t SELECT INBOX (CONDSTORE)")
    assert lines[-3:] == [
        b"* OK [UIDNEXT 3] Predicted next UID",
        b"* OK [HIGHESTMODSEQ 3] Highest",
        b"t OK [READ-WRITE] SELECT completed",
    ]
    # Once on, every later SELECT and EXAMINE says it too; CLOSED first
    # parts the old mailbox's responses from the new one's.
    lines = s.command(b"u EXAMINE INBOX")
    assert lines[0] == b"* OK [CLOSED] Previous mailbox closed"
    assert b"* OK [HIGHESTMODSEQ 3] Highest" in lines


def test_enable_condstore_then_select(store):
    inbox_with(store, set())
    s = Session(store).login()
    assert s.command(b"e ENABLE CONDSTORE X-UNKNOWN") == [b"* ENABLED CONDSTORE", b"e OK ENABLE completed"]
    assert s.command(b"f ENABLE CONDSTORE") == [b"* ENABLED", b"f OK ENABLE completed"]
    assert b"* OK [HIGHESTMODSEQ 2] Highest" in s.command(b"s SELECT INBOX")


def test_unknown_select_parameter_is_bad(store):
    s = Session(store).login()
    assert s.command(b"s SELECT INBOX (QRESYNC (1 2))")[-1].startswith(b"s BAD")
    assert s.command(b"s SELECT INBOX ()")[-1].startswith(b"s BAD")
    assert s.command(b'x EXAMINE "INBOX" (condstore)')[-1] == b"x OK [READ-ONLY] EXAMINE completed"


def test_first_enabling_command_while_selected_reports_highestmodseq(store):
    inbox_with(store, set(), set())
    s = selected(store)
    # RFC 7162 3.1: FETCH MODSEQ is an enabling command.
    assert s.command(b"f FETCH 1:2 (MODSEQ)") == [
        b"* OK [HIGHESTMODSEQ 3] Highest",
        b"* 1 FETCH (MODSEQ (2))",
        b"* 2 FETCH (MODSEQ (3))",
        b"f OK FETCH completed",
    ]
    assert s.command(b"g UID FETCH 2 (FLAGS)") == [
        b"* 2 FETCH (UID 2 FLAGS (\\Recent) MODSEQ (3))",
        b"g OK FETCH completed",
    ]


def test_status_highestmodseq(store):
    inbox_with(store, set(), {"\\Seen"})
    s = Session(store).login()
    assert s.command(b"a STATUS INBOX (MESSAGES HIGHESTMODSEQ)") == [
        b'* STATUS "INBOX" (MESSAGES 2 HIGHESTMODSEQ 3)', b"a OK STATUS completed"
    ]


# -- FETCH CHANGEDSINCE (RFC 7162 3.1.4.1) --------------------------------


def test_fetch_changedsince_returns_only_later_changes_with_modseq(store):
    inbox_with(store, set(), set(), set())
    s = selected(store, b"s SELECT INBOX (CONDSTORE)")
    other = selected(store)
    other.command(b"a STORE 2 +FLAGS (\\Flagged)")
    assert s.command(b"f UID FETCH 1:* (FLAGS) (CHANGEDSINCE 4)") == [
        # The other session's change is in this answer, not repeated after it.
        b"* 2 FETCH (UID 2 FLAGS (\\Flagged \\Recent) MODSEQ (5))",
        b"f OK FETCH completed",
    ]
    assert s.command(b"g FETCH 1:* (UID) (CHANGEDSINCE 3)") == [
        b"* 2 FETCH (UID 2 MODSEQ (5))",
        b"* 3 FETCH (UID 3 MODSEQ (4))",
        b"g OK FETCH completed",
    ]
    assert s.command(b"h FETCH 1:* (UID) (CHANGEDSINCE 5)") == [b"h OK FETCH completed"]
    assert s.command(b"i FETCH 1 (UID) (CHANGEDSINCE x)")[-1].startswith(b"i BAD")


def test_unsolicited_fetch_carries_modseq_once_enabled(store):
    inbox_with(store, set())
    s = selected(store, b"s SELECT INBOX (CONDSTORE)")
    selected(store).command(b"a STORE 1 +FLAGS.SILENT (\\Seen)")
    assert s.command(b"n NOOP") == [b"* 1 FETCH (UID 1 FLAGS (\\Recent \\Seen) MODSEQ (3))", b"n OK NOOP completed"]


# -- STORE UNCHANGEDSINCE (RFC 7162 3.1.3) -----------------------------------


def test_conditional_store_all_pass(store):
    # Example 3: .SILENT, yet each message gets a FETCH with its MODSEQ.
    inbox = inbox_with(store, set(), set(), set())
    s = selected(store)
    assert s.command(b"a UID STORE 3,1 (UNCHANGEDSINCE 4) +FLAGS.SILENT (\\Deleted)") == [
        b"* OK [HIGHESTMODSEQ 4] Highest",
        b"* 1 FETCH (UID 1 MODSEQ (5))",
        b"* 3 FETCH (UID 3 MODSEQ (5))",
        b"a OK STORE completed",
    ]
    assert result_of(store.get_records(inbox.id, [1, 2, 3]))[1].flags == frozenset()


def test_conditional_store_reports_modified_and_the_new_flags(store):
    # Example 6 with Example 10's unsolicited FETCH for the failed message.
    inbox = inbox_with(store, set(), set(), set())
    s = selected(store, b"s SELECT INBOX (CONDSTORE)")
    selected(store).command(b"x STORE 2 +FLAGS (\\Answered)")
    assert s.command(b"d STORE 1:3 (UNCHANGEDSINCE 4) +FLAGS.SILENT (\\Deleted)") == [
        b"* 1 FETCH (UID 1 MODSEQ (6))",
        b"* 3 FETCH (UID 3 MODSEQ (6))",
        b"* 2 FETCH (UID 2 FLAGS (\\Answered \\Recent) MODSEQ (5))",
        b"d OK [MODIFIED 2] Conditional STORE failed",
    ]
    assert result_of(store.get_records(inbox.id, [2]))[0].flags == {"\\Answered"}
    # Retried with the new mod-sequence, it goes through.
    assert s.command(b"e UID STORE 2 (UNCHANGEDSINCE 5) +FLAGS (\\Deleted)") == [
        b"* 2 FETCH (UID 2 FLAGS (\\Answered \\Deleted \\Recent) MODSEQ (7))",
        b"e OK STORE completed",
    ]


def test_conditional_store_with_zero_always_fails(store):
    # Example 8; UID STORE names the UIDs in MODIFIED.
    inbox = inbox_with(store, set(), set())
    s = selected(store, b"s SELECT INBOX (CONDSTORE)")
    assert s.command(b"a UID STORE 1:2 (UNCHANGEDSINCE 0) +FLAGS.SILENT ($MDNSent)") == [
        b"a OK [MODIFIED 1:2] Conditional STORE failed"
    ]
    assert result_of(store.changes_since(inbox.id, 3)).updated == ()


def test_plain_store_once_enabled(store):
    # Example 14: .SILENT answers MODSEQ of the changed messages only.
    inbox_with(store, set(), {"\\Seen"})
    s = selected(store, b"s SELECT INBOX (CONDSTORE)")
    assert s.command(b"a STORE 1:2 +FLAGS.SILENT (\\Seen)") == [
        b"* 1 FETCH (UID 1 MODSEQ (4))",
        b"a OK STORE completed",
    ]
    assert s.command(b"b STORE 1:2 +FLAGS (\\Seen)") == [
        b"* 1 FETCH (UID 1 FLAGS (\\Recent \\Seen) MODSEQ (4))",
        b"* 2 FETCH (UID 2 FLAGS (\\Recent \\Seen) MODSEQ (3))",
        b"b OK STORE completed",
    ]


def test_conditional_store_on_examined_mailbox_is_refused(store):
    inbox_with(store, set())
    s = selected(store, b"s EXAMINE INBOX")
    assert s.command(b"a STORE 1 (UNCHANGEDSINCE 5) +FLAGS (\\Seen)") == [
        b"a NO [READ-ONLY] Mailbox is read-only"
    ]


# -- SEARCH MODSEQ (RFC 7162 3.1.5) -------------------------------------------


def test_search_modseq(store):
    inbox_with(store, set(), set(), {"\\Draft"})
    s = selected(store)
    assert s.command(b"a SEARCH MODSEQ 3") == [
        b"* OK [HIGHESTMODSEQ 4] Highest",
        b"* SEARCH 2 3 (MODSEQ 4)",
        b"a OK SEARCH completed",
    ]
    # Example 15: the entry name and type are ignored (one modseq per message).
    assert s.command(b'b UID SEARCH MODSEQ "/flags/\\\\draft" all 4') == [
        b"* SEARCH 3 (MODSEQ 4)",
        b"b OK SEARCH completed",
    ]
    # Example 16: nothing found, no MODSEQ.
    assert s.command(b"c SEARCH OR NOT MODSEQ 1 LARGER 50000") == [b"* SEARCH", b"c OK SEARCH completed"]
    assert s.command(b"d SEARCH MODSEQ /flags/x bogus 4")[-1].startswith(b"d BAD")
    assert s.command(b"e SEARCH MODSEQ")[-1].startswith(b"e BAD")
