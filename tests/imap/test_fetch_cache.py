"""
FETCH answered from parts kept rendered (gateway/imap/fetch_cache.py): the
budget, and through the real protocol class on a real SQLite store, that
what changes (FLAGS, expunges, a mailbox made again) always shows.
"""

import pytest

from gateway.config import loads
from gateway.imap.fetch_cache import RenderedParts
from tests.deferreds import result_of
from tests.imap.test_server import MESSAGE, Session
from tests.imap.test_shared_views import deliver, inbox_of

HEADER_SET = b"(UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE)"


class StoreReads:
    """Counts the store's reads of FETCH rows, and the UIDs each asked for."""

    def __init__(self, store, monkeypatch):
        self.asked: list[list[int]] = []
        original = store.fetch_rows

        def fetch_rows(mailbox_id, uids, columns):
            self.asked.append(sorted(uids))
            return original(mailbox_id, uids, columns)

        monkeypatch.setattr(store, "fetch_rows", fetch_rows)


# -- the budget -------------------------------------------------------------


def test_parts_are_kept_by_key_and_the_least_recently_used_go_first():
    kept = RenderedParts(budget=1000)
    kept.keep(("a",), {1: b"x" * 100, 2: b"y" * 100}, 2)
    kept.keep(("b",), {1: b"z" * 100}, 1)
    assert kept.lookup(("a",)) == {1: b"x" * 100, 2: b"y" * 100}
    assert kept.lookup(("c",)) == {}
    # Kept once, counted once.
    size = kept.size
    kept.keep(("a",), {1: b"x" * 100}, 2)
    assert kept.size == size
    # "b" is the least recently used now: it goes to make room.
    kept.keep(("c",), {uid: b"w" * 100 for uid in range(3)}, 3)
    assert kept.lookup(("b",)) == {}
    assert sorted(kept.lookup(("c",))) == [0, 1, 2]
    assert kept.size <= kept.budget


def test_what_does_not_fit_alone_is_not_kept():
    kept = RenderedParts(budget=1000)
    kept.keep(("a",), {uid: b"x" * 200 for uid in range(10)}, 10)
    # The first fit; the budget is never overdrawn.
    assert 0 < len(kept.lookup(("a",))) < 10
    assert kept.size <= kept.budget
    kept.keep(("a",), {1: (b"two", b"parts")}, 10)
    assert kept.size <= kept.budget


def test_a_mailbox_keeps_parts_of_expunged_messages_within_bounds():
    kept = RenderedParts(budget=48 << 20)
    for start in range(0, 5000, 100):
        # A mailbox of 100 messages, all expunged and delivered again.
        kept.keep(("a",), {uid: b"x" for uid in range(start, start + 100)}, 100)
        assert len(kept.lookup(("a",))) <= 2 * 100 + 1000
    assert kept.size == sum(len(parts) + 120 for parts in kept.lookup(("a",)).values())


def test_a_smaller_budget_lets_go_at_once_the_least_recently_used():
    kept = RenderedParts(budget=1000)
    kept.keep(("a",), {1: b"x" * 100}, 1)
    kept.keep(("b",), {1: b"y" * 100}, 1)
    kept.lookup(("a",))
    kept.resize(300)
    assert kept.lookup(("b",)) == {} and kept.lookup(("a",)) == {1: b"x" * 100}
    kept.resize(0)
    assert kept.size == 0 and kept.lookup(("a",)) == {}
    kept.keep(("a",), {1: b"x"}, 1)
    assert kept.lookup(("a",)) == {}


# -- through the protocol ---------------------------------------------------


def test_a_second_header_fetch_reads_no_rows_and_answers_the_same(store, monkeypatch):
    inbox = inbox_of(store)
    deliver(store, inbox, 5)
    s = Session(store).login()
    s.command(b"s EXAMINE INBOX")
    reads = StoreReads(store, monkeypatch)
    first = s.command(b"f UID FETCH 1:* " + HEADER_SET)
    assert reads.asked == [[1, 2, 3, 4, 5]]
    assert len(first) == 6 and first[-1] == b"f OK FETCH completed"
    assert first[1].startswith(b"* 2 FETCH (UID 2 FLAGS (\\Recent) RFC822.SIZE %d INTERNALDATE \"" % len(MESSAGE))
    assert s.command(b"f UID FETCH 1:* " + HEADER_SET) == first
    assert reads.asked == [[1, 2, 3, 4, 5]]
    # Another session of the process shares what this one rendered.
    other = Session(store, factory=s.factory).login()
    other.command(b"s EXAMINE INBOX")
    assert other.command(b"f UID FETCH 2:4 " + HEADER_SET) == first[1:4] + [b"f OK FETCH completed"]
    assert reads.asked == [[1, 2, 3, 4, 5]]


def test_item_orders_and_header_sections_from_kept_parts(store):
    inbox = inbox_of(store)
    deliver(store, inbox, 3)
    s = Session(store).login()
    s.command(b"s EXAMINE INBOX")
    command = b"f FETCH 2:3 (RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (Subject)] UID ENVELOPE)"
    first = s.command(command)
    assert first[0] == b"* 2 FETCH (RFC822.SIZE %d FLAGS (\\Recent) BODY[HEADER.FIELDS (SUBJECT)] {18}" % len(MESSAGE)
    assert first[1] == b"Subject: hello"
    assert first[2] == b"" and first[3].startswith(b" UID 2 ENVELOPE (\"Mon, 7 Feb 1994 21:52:25 -0800\" \"hello\"")
    assert s.command(command) == first
    # Another partial of the same section is another item list.
    partial = s.command(b"f FETCH 2 (BODY.PEEK[HEADER.FIELDS (Subject)]<0.7>)")
    assert partial == [b"* 2 FETCH (BODY[HEADER.FIELDS (SUBJECT)]<0> {7}", b"Subject)", b"f OK FETCH completed"]


def test_flags_changed_between_two_fetches_show_the_new_ones(store):
    inbox = inbox_of(store)
    deliver(store, inbox, 3)
    s = Session(store).login()
    s.command(b"s SELECT INBOX")
    before = s.command(b"f FETCH 1:3 (FLAGS ENVELOPE)")
    assert before[1].startswith(b"* 2 FETCH (FLAGS (\\Recent) ENVELOPE (")
    s.command(b"t STORE 2 +FLAGS.SILENT (\\Flagged)")
    after = s.command(b"f FETCH 1:3 (FLAGS ENVELOPE)")
    assert after[1] == before[1].replace(b"FLAGS (\\Recent)", b"FLAGS (\\Flagged \\Recent)")
    assert after[0] == before[0] and after[2] == before[2]
    # Another session's change, once this one has heard of it.
    other = Session(store).login()
    other.command(b"s SELECT INBOX")
    other.command(b"t STORE 3 +FLAGS.SILENT (\\Seen)")
    assert s.command(b"n NOOP") == [b"* 3 FETCH (UID 3 FLAGS (\\Recent \\Seen))", b"n OK NOOP completed"]
    assert s.command(b"f FETCH 3 (FLAGS ENVELOPE)")[0] == before[2].replace(
        b"FLAGS (\\Recent)", b"FLAGS (\\Recent \\Seen)")


@pytest.mark.parametrize("sequence_set", [b"1:*", b"1,2,3", b"2:3"])
def test_kept_parts_of_a_message_another_session_expunged_are_not_sent(store, sequence_set):
    inbox = inbox_of(store)
    deliver(store, inbox, 3)
    s, other = Session(store).login(), Session(store).login()
    s.command(b"s SELECT INBOX")
    other.command(b"s SELECT INBOX")
    warm = s.command(b"f FETCH 1:* (UID RFC822.SIZE ENVELOPE)")
    other.command(b"t STORE 2 +FLAGS.SILENT (\\Deleted)")
    other.command(b"e EXPUNGE")
    # RFC 2180 4.1.3: left out of FETCH, and the client is told why.
    expected = [line for line in warm[:3] if not line.startswith(b"* 2 ")]
    if sequence_set == b"2:3":
        expected = expected[1:]
    assert s.command(b"f FETCH %s (UID RFC822.SIZE ENVELOPE)" % sequence_set) == expected + [
        b"f OK [EXPUNGEISSUED] Some messages were expunged meanwhile; completed for the others"]
    assert s.command(b"n NOOP") == [b"* 2 EXPUNGE", b"n OK NOOP completed"]
    assert s.command(b"f FETCH 1:* (UID RFC822.SIZE ENVELOPE)") == [
        warm[0], warm[2].replace(b"* 3 ", b"* 2 "), b"f OK FETCH completed"]


def test_a_message_expunged_before_its_parts_were_kept(store):
    inbox = inbox_of(store)
    deliver(store, inbox, 4)
    s, other = Session(store).login(), Session(store).login()
    s.command(b"s SELECT INBOX")
    other.command(b"s SELECT INBOX")
    s.command(b"f FETCH 1:2 (UID ENVELOPE)")
    other.command(b"t STORE 2,3 +FLAGS.SILENT (\\Deleted)")
    other.command(b"e EXPUNGE")
    lines = s.command(b"f FETCH 1:4 (UID ENVELOPE)")
    assert [line.split(b" (")[0] for line in lines[:-1]] == [b"* 1 FETCH", b"* 4 FETCH"]
    assert lines[-1] == b"f OK [EXPUNGEISSUED] Some messages were expunged meanwhile; completed for the others"


def test_a_mailbox_made_again_shows_its_own_messages(store):
    result_of(store.ensure_user("alice"))
    s = Session(store).login()
    s.command(b"c CREATE Projects")
    box = result_of(store.get_mailbox("alice", "Projects"))
    deliver(store, box, 1)
    s.command(b"s EXAMINE Projects")
    assert b'"hello"' in s.command(b"f FETCH 1 (ENVELOPE)")[0]
    s.command(b"u UNSELECT")
    s.command(b"d DELETE Projects")
    s.command(b"c CREATE Projects")
    again = result_of(store.get_mailbox("alice", "Projects"))
    deliver(store, again, 1, message=MESSAGE.replace(b"Subject: hello", b"Subject: other"))
    s.command(b"s EXAMINE Projects")
    envelope = s.command(b"f FETCH 1 (ENVELOPE)")[0]
    assert b'"other"' in envelope and b'"hello"' not in envelope


def test_a_small_budget_answers_the_same(store, monkeypatch):
    inbox = inbox_of(store)
    deliver(store, inbox, 20)
    s = Session(store).login()
    s.command(b"s EXAMINE INBOX")
    first = s.command(b"f UID FETCH 1:* " + HEADER_SET)
    s.factory.fetch_parts = RenderedParts(budget=2000)
    reads = StoreReads(store, monkeypatch)
    assert s.command(b"f UID FETCH 1:* " + HEADER_SET) == first
    assert s.command(b"f UID FETCH 1:* " + HEADER_SET) == first
    # What did not fit is read again, nothing more.
    assert 0 < len(reads.asked[1]) < 20
    assert s.factory.fetch_parts.size <= 2000


def test_the_budget_is_the_configs_and_a_reload_applies_from_the_next_connection(store):
    inbox = inbox_of(store)
    deliver(store, inbox, 20)
    s = Session(store, config=loads("[imap]\nfetch_cache_size = 1\n")).login()
    assert s.factory.fetch_parts.budget == 1 << 20
    s.command(b"s EXAMINE INBOX")
    s.command(b"f UID FETCH 1:* " + HEADER_SET)
    assert s.factory.fetch_parts.size > 0
    s.factory.config = loads("[imap]\nfetch_cache_size = 0\n")
    s.factory.buildProtocol(None)
    assert s.factory.fetch_parts.size == 0


def test_messages_apart_in_the_view_all_there(store):
    inbox = inbox_of(store)
    deliver(store, inbox, 4)
    s = Session(store).login()
    s.command(b"s EXAMINE INBOX")
    whole = s.command(b"f FETCH 1:4 (ENVELOPE FLAGS RFC822.SIZE)")
    # Not one run of the view: the store says which are there, one by one.
    for _ in range(2):
        assert s.command(b"f FETCH 1,3:4 (ENVELOPE FLAGS RFC822.SIZE)") == [
            whole[0], whole[2], whole[3], b"f OK FETCH completed"]
