"""
Selected sessions through the real protocol class (tests/imap/test_server.py's
Session, a real SQLite store): FETCH FLAGS and SEARCH on flags answered from
the view, and sessions on one mailbox sharing one snapshot of it.
"""

from gateway.imap.sequence import parse_sequence_set
from tests.deferreds import result_of
from tests.imap.test_server import MESSAGE, Session


def inbox_of(store, user="alice"):
    result_of(store.ensure_user(user))
    return result_of(store.get_mailbox(user, "INBOX"))


def deliver(store, mailbox, count, flags=frozenset(), message=MESSAGE):
    return [result_of(store.append(mailbox.id, message, flags=flags)).uid for _ in range(count)]


class CountingLists:
    """Counts the store's whole-mailbox reads that a SELECT may make."""

    def __init__(self, store, monkeypatch):
        self.calls = 0
        original = store.list_flags

        def list_flags(mailbox_id):
            self.calls += 1
            return original(mailbox_id)

        monkeypatch.setattr(store, "list_flags", list_flags)


def test_fetch_flags_from_the_view_in_every_item_order(store):
    inbox = inbox_of(store)
    deliver(store, inbox, 2)
    deliver(store, inbox, 2, flags={"\\Seen", "work"})
    s = Session(store).login()
    s.command(b"s SELECT INBOX")
    result_of(store.append(inbox.id, MESSAGE, flags={"\\Flagged"}))
    # The four before were claimed \Recent by the SELECT.
    assert s.command(b"n NOOP") == [b"* 5 EXISTS", b"* 5 RECENT", b"n OK NOOP completed"]
    assert s.command(b"f UID FETCH 2:4,5 (FLAGS)") == [
        b"* 2 FETCH (UID 2 FLAGS (\\Recent))",
        b"* 3 FETCH (UID 3 FLAGS (\\Recent \\Seen work))",
        b"* 4 FETCH (UID 4 FLAGS (\\Recent \\Seen work))",
        b"* 5 FETCH (UID 5 FLAGS (\\Flagged \\Recent))",
        b"f OK FETCH completed",
    ]
    assert s.command(b"f FETCH 4:3 (FLAGS UID)") == [
        b"* 3 FETCH (FLAGS (\\Recent \\Seen work) UID 3)",
        b"* 4 FETCH (FLAGS (\\Recent \\Seen work) UID 4)",
        b"f OK FETCH completed",
    ]
    assert s.command(b"f FETCH 1 FLAGS") == [b"* 1 FETCH (FLAGS (\\Recent))", b"f OK FETCH completed"]
    assert s.command(b"f UID FETCH 1 UID") == [b"* 1 FETCH (UID 1)", b"f OK FETCH completed"]
    assert s.command(b"f UID FETCH 6:* FLAGS") == [
        # RFC 3501 6.4.8: n:* names the largest UID even above n.
        b"* 5 FETCH (UID 5 FLAGS (\\Flagged \\Recent))", b"f OK FETCH completed"]
    assert s.command(b"f FETCH 6 FLAGS")[-1].startswith(b"f BAD")
    # Twice the same item is answered once (RFC 3501 7.4.2).
    assert s.command(b"f FETCH 1 (FLAGS FLAGS)") == [b"* 1 FETCH (FLAGS (\\Recent))", b"f OK FETCH completed"]


def test_fetch_flags_leaves_out_what_another_session_expunged(store):
    inbox = inbox_of(store)
    deliver(store, inbox, 3)
    s, other = Session(store).login(), Session(store).login()
    s.command(b"s SELECT INBOX")
    other.command(b"s SELECT INBOX")
    other.command(b"t STORE 2 +FLAGS.SILENT (\\Deleted)")
    other.command(b"e EXPUNGE")
    # RFC 3501 7.4.1: no EXPUNGE during SEARCH; message 2 keeps its number.
    assert s.command(b"a SEARCH ALL") == [b"* SEARCH 1 3", b"a OK SEARCH completed"]
    # RFC 2180 4.1.3: left out of FETCH, and the client is told why.
    assert s.command(b"f FETCH 1:* (UID FLAGS)") == [
        b"* 1 FETCH (UID 1 FLAGS (\\Recent))",
        b"* 3 FETCH (UID 3 FLAGS (\\Recent))",
        b"f OK [EXPUNGEISSUED] Some messages were expunged meanwhile; completed for the others",
    ]
    assert s.command(b"f FETCH 1 FLAGS") == [b"* 1 FETCH (FLAGS (\\Recent))", b"f OK FETCH completed"]
    assert s.command(b"n NOOP") == [b"* 2 EXPUNGE", b"n OK NOOP completed"]
    assert s.command(b"f FETCH 1:* (UID FLAGS)") == [
        b"* 1 FETCH (UID 1 FLAGS (\\Recent))", b"* 2 FETCH (UID 3 FLAGS (\\Recent))", b"f OK FETCH completed"]


def test_search_on_flags_counts_own_changes_recent_and_pending_expunges(store):
    inbox = inbox_of(store)
    deliver(store, inbox, 4, flags={"\\Seen"})
    s, other = Session(store).login(), Session(store).login()
    other.command(b"s SELECT INBOX")
    deliver(store, inbox, 2)
    s.command(b"s SELECT INBOX")  # claims the two new ones as \Recent
    assert s.command(b"a UID SEARCH UNSEEN") == [b"* SEARCH 5 6", b"a OK SEARCH completed"]
    assert s.command(b"a SEARCH RECENT") == [b"* SEARCH 5 6", b"a OK SEARCH completed"]
    assert s.command(b"t STORE 1 -FLAGS.SILENT (\\Seen)") == [b"t OK STORE completed"]
    assert s.command(b"a SEARCH OR UNSEEN FLAGGED") == [b"* SEARCH 1 5 6", b"a OK SEARCH completed"]
    other.command(b"n NOOP")
    other.command(b"t STORE 5 +FLAGS.SILENT (\\Seen \\Deleted)")
    other.command(b"e EXPUNGE")
    assert s.command(b"a SEARCH NOT SEEN") == [b"* SEARCH 1 6", b"a OK SEARCH completed"]
    assert s.command(b"a SEARCH ALL") == [b"* SEARCH 1 2 3 4 6", b"a OK SEARCH completed"]
    assert s.command(b"a UID SEARCH UNDELETED") == [b"* SEARCH 1 2 3 4 6", b"a OK SEARCH completed"]
    assert s.command(b"a SEARCH DELETED") == [b"* SEARCH", b"a OK SEARCH completed"]


def test_expunge_finds_deleted_messages_in_the_view(store):
    inbox = inbox_of(store)
    deliver(store, inbox, 5)
    s = Session(store).login()
    s.command(b"s SELECT INBOX")
    s.command(b"t STORE 2,4,5 +FLAGS.SILENT (\\Deleted)")
    assert s.command(b"e UID EXPUNGE 1:4") == [b"* 4 EXPUNGE", b"* 2 EXPUNGE", b"e OK EXPUNGE completed"]
    assert s.command(b"e EXPUNGE") == [b"* 3 EXPUNGE", b"e OK EXPUNGE completed"]
    assert [r.uid for r in result_of(store.list_messages(inbox.id))] == [1, 3]


def test_second_session_starts_from_the_first_ones_snapshot(store, monkeypatch):
    inbox = inbox_of(store)
    deliver(store, inbox, 3, flags={"\\Seen"})
    deliver(store, inbox, 1, flags={"$Later"})
    reads = CountingLists(store, monkeypatch)
    first = Session(store).login()
    first.command(b"s SELECT INBOX")
    assert reads.calls == 1
    # Changes after the first SELECT, by someone else.
    result_of(store.store_flags(inbox.id, [2], {"\\Seen"}, "remove"))
    result_of(store.expunge(inbox.id, [1]))
    result_of(store.append(inbox.id, MESSAGE, flags={"$New"}))
    second = Session(store, factory=first.factory).login()
    lines = second.command(b"s SELECT INBOX")
    assert reads.calls == 1
    assert lines[:6] == [
        b"* FLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen $Later $New)",
        b"* OK [PERMANENTFLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen $Later $New \\*)] Flags permitted",
        b"* 4 EXISTS",
        b"* 1 RECENT",
        b"* OK [UNSEEN 1] First unseen message",
        b"* OK [UIDVALIDITY %d] UIDs valid" % inbox.uidvalidity,
    ]
    assert second.command(b"f FETCH 1:* (UID FLAGS)") == [
        b"* 1 FETCH (UID 2 FLAGS ())",
        b"* 2 FETCH (UID 3 FLAGS (\\Seen))",
        b"* 3 FETCH (UID 4 FLAGS ($Later))",
        b"* 4 FETCH (UID 5 FLAGS (\\Recent $New))",
        b"f OK FETCH completed",
    ]
    # The first session still numbers what it was told, until told more
    # (RFC 3501 7.4.1: no EXPUNGE during FETCH; FLAGS before the keyword).
    assert first.command(b"f FETCH 1 UID") == [
        b"* 1 FETCH (UID 1)",
        b"* FLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen $Later $New)",
        b"* OK [PERMANENTFLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen $Later $New \\*)] Flags permitted",
        b"* 5 EXISTS",
        b"* 4 RECENT",
        b"* 2 FETCH (UID 2 FLAGS (\\Recent))",
        b"f OK FETCH completed",
    ]
    assert first.command(b"n NOOP") == [b"* 1 EXPUNGE", b"n OK NOOP completed"]
    # Both now hold the same picture, as one object.
    assert first.server.view.snapshot is second.server.view.snapshot


def test_select_again_starts_from_the_view_it_replaces(store, monkeypatch):
    inbox = inbox_of(store)
    deliver(store, inbox, 3)
    reads = CountingLists(store, monkeypatch)
    s = Session(store).login()
    s.command(b"s SELECT INBOX")
    result_of(store.append(inbox.id, MESSAGE))
    assert s.command(b"s SELECT INBOX")[:5] == [
        b"* OK [CLOSED] Previous mailbox closed",
        b"* FLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen)",
        b"* OK [PERMANENTFLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen \\*)] Flags permitted",
        b"* 4 EXISTS",
        b"* 1 RECENT",
    ]
    assert s.command(b"s EXAMINE INBOX")[3:5] == [b"* 4 EXISTS", b"* 0 RECENT"]
    assert reads.calls == 1
    # Nobody holds it once everyone has gone: the next SELECT reads again.
    s.command(b"c CLOSE")
    Session(store, factory=s.factory).login().command(b"s SELECT INBOX")
    assert reads.calls == 2


def test_view_index_ranges_follow_uid_gaps(store):
    inbox = inbox_of(store)
    deliver(store, inbox, 6)
    result_of(store.expunge(inbox.id, [2, 3, 5]))
    s = Session(store).login()
    s.command(b"s SELECT INBOX")
    view = s.server.view
    assert view.index_ranges(parse_sequence_set(b"2:5"), by_uid=True) == [(1, 2)]
    assert view.index_ranges(parse_sequence_set(b"1,3:*"), by_uid=True) == [(0, 1), (1, 3)]
    assert view.index_ranges(parse_sequence_set(b"7:*"), by_uid=True) == [(2, 3)]
    assert view.index_ranges(parse_sequence_set(b"7:9"), by_uid=True) == []
    assert view.index_ranges(parse_sequence_set(b"2,3"), by_uid=True) == []
    assert view.pairs(view.index_ranges(parse_sequence_set(b"3:*,1"), by_uid=False)) == [(1, 1), (3, 6)]


def test_search_on_flags_with_numbers_is_answered_from_the_view(store, monkeypatch):
    inbox = inbox_of(store)
    deliver(store, inbox, 3, flags={"\\Seen"})
    deliver(store, inbox, 3)
    s = Session(store).login()
    s.command(b"s SELECT INBOX")
    s.command(b"t STORE 2 +FLAGS.SILENT (\\Deleted)")
    # Nothing of the store but the flags the view holds is asked.
    for name in ("get_records", "get_structures", "open_message"):
        monkeypatch.setattr(store, name, None)
    assert s.command(b"a UID SEARCH 1:* NOT DELETED") == [b"* SEARCH 1 3 4 5 6", b"a OK SEARCH completed"]
    assert s.command(b"a SEARCH UID 3:* UNSEEN") == [b"* SEARCH 4 5 6", b"a OK SEARCH completed"]
    assert s.command(b"a SEARCH OR 1:2 UID 6 NOT SEEN") == [b"* SEARCH 6", b"a OK SEARCH completed"]
    assert s.command(b"a SEARCH OR 1:2 UID 6") == [b"* SEARCH 1 2 6", b"a OK SEARCH completed"]


def test_fetch_changedsince_reads_only_the_changed_records(store, monkeypatch):
    inbox = inbox_of(store)
    deliver(store, inbox, 50)
    s = Session(store).login()
    lines = s.command(b"s SELECT INBOX (CONDSTORE)")
    modseq = int(next(line for line in lines if b"HIGHESTMODSEQ" in line).split()[3].rstrip(b"]"))
    result_of(store.store_flags(inbox.id, [7, 30], {"\\Flagged"}, "add"))
    asked = []
    original = store.fetch_rows

    def fetch_rows(mailbox_id, uids, columns):
        asked.extend(uids)
        return original(mailbox_id, uids, columns)

    monkeypatch.setattr(store, "fetch_rows", fetch_rows)
    lines = s.command(b"f UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % modseq)
    answer = [b"* 7 FETCH (UID 7 FLAGS (\\Flagged \\Recent) MODSEQ (%d))" % (modseq + 1),
              b"* 30 FETCH (UID 30 FLAGS (\\Flagged \\Recent) MODSEQ (%d))" % (modseq + 1)]
    # Another session's change, merged into the answer: not told twice.
    assert lines == answer + [b"f OK FETCH completed"]
    assert sorted(asked) == [7, 30]


def test_a_fetch_of_many_tells_the_flag_updates_it_carries_once(store):
    inbox = inbox_of(store)
    deliver(store, inbox, 6)
    s = Session(store).login()
    s.command(b"s SELECT INBOX (CONDSTORE)")
    other = Session(store).login()
    other.command(b"s SELECT INBOX")
    other.command(b"a STORE 2,5 +FLAGS.SILENT (\\Flagged)")
    # With MODSEQ the view takes in the change first: both updates are owed.
    lines = [line.split(b" MODSEQ")[0] for line in s.command(b"f FETCH 1:3 (FLAGS RFC822.SIZE MODSEQ)")]
    # Message 2's went in the answer, once; message 5's follows it.
    assert lines == [
        b"* 1 FETCH (FLAGS (\\Recent) RFC822.SIZE 123",
        b"* 2 FETCH (FLAGS (\\Flagged \\Recent) RFC822.SIZE 123",
        b"* 3 FETCH (FLAGS (\\Recent) RFC822.SIZE 123",
        b"* 5 FETCH (UID 5 FLAGS (\\Flagged \\Recent)",
        b"f OK FETCH completed",
    ]
