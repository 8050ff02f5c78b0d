"""
Claims of \\Recent on a PostgreSQL node (store/postgresql/recent.py): the
sessions a delivery wakes share one claim, a message is \\Recent in one
session only (RFC 3501 2.3.2), and one heard of later is still claimed.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred

from gateway.store.postgresql.recent import RecentClaims
from tests.deferreds import result_of
from tests.store.contract import MESSAGE, inbox
from tests.store.test_postgresql import listening, listening_nodes, settle, turn_until, wait_all  # noqa: F401


class Feed:
    def __init__(self):
        self.heard: dict[int, int] = {}
        self.listening = True

    def fresh(self, mailbox_id):
        return self.listening and mailbox_id in self.heard

    def known(self, mailbox_id):
        return self.heard.get(mailbox_id, 0)


class Queries:
    """Claims asked of the database, answered by the test."""

    def __init__(self):
        self.asked: list[Deferred] = []

    def __call__(self):
        d = Deferred()
        self.asked.append(d)
        return d


def outcomes(deferreds):
    got = []
    for d in deferreds:
        d.addCallback(got.append)
    return got


def test_sessions_woken_together_share_one_claim():
    feed, queries = Feed(), Queries()
    feed.heard[1] = 7
    claims = RecentClaims(feed)
    got = outcomes([claims.claim(1, queries) for _ in range(100)])
    assert len(queries.asked) == 1 and len(got) == 99 and not any(got)
    queries.asked[0].callback((frozenset({3, 4}), 7))
    assert sorted(got, key=len) == [frozenset()] * 99 + [frozenset({3, 4})]
    # Nothing is left to claim until a change is heard.
    assert result_of(claims.claim(1, queries)) == frozenset() and len(queries.asked) == 1
    feed.heard[1] = 8
    claims.forget(1)
    claims.claim(1, queries)
    assert len(queries.asked) == 2


def test_a_change_heard_during_a_claim_is_claimed_after_it():
    feed, queries = Feed(), Queries()
    feed.heard[1] = 7
    claims = RecentClaims(feed)
    first = outcomes([claims.claim(1, queries)])
    # The claim in flight may have read the mailbox before message 5 came.
    feed.heard[1] = 8
    claims.forget(1)
    later = outcomes([claims.claim(1, queries), claims.claim(1, queries)])
    assert len(queries.asked) == 1 and later == []
    queries.asked[0].callback((frozenset({4}), 7))
    assert first == [frozenset({4})] and len(queries.asked) == 2
    queries.asked[1].callback((frozenset({5}), 8))
    assert sorted(later, key=len) == [frozenset(), frozenset({5})] and len(queries.asked) == 2


def test_a_failed_claim_fails_its_caller_and_lets_the_others_ask():
    feed, queries = Feed(), Queries()
    feed.heard[1] = 7
    claims = RecentClaims(feed)
    failed, waiting = [], []
    claims.claim(1, queries).addErrback(failed.append)
    feed.heard[1] = 8
    claims.claim(1, queries).addCallback(waiting.append)
    queries.asked[0].errback(RuntimeError("connection lost"))
    assert len(failed) == 1 and len(queries.asked) == 2
    queries.asked[1].callback((frozenset({5}), 8))
    assert waiting == [frozenset({5})]


def test_without_a_fresh_feed_every_claim_asks():
    feed, queries = Feed(), Queries()
    claims = RecentClaims(feed)
    claims.claim(2, queries)  # nobody here watches mailbox 2
    feed.heard[1] = 7
    feed.listening = False
    claims.claim(1, queries)
    claims.claim(1, queries)
    assert len(queries.asked) == 3
    for d in queries.asked:
        d.callback((frozenset(), 7))
    feed.listening = True
    claims.clear()
    claims.claim(1, queries)
    assert len(queries.asked) == 4


def test_idlers_on_two_nodes_see_each_delivery_recent_once(listening_nodes, monkeypatch):
    a, b = listening_nodes
    box = inbox(a)
    heard = []
    a.changes.subscribe(box.id, lambda mailbox_id, modseq: heard.append(modseq))
    assert turn_until(lambda: listening(b), 10)
    settle(a, heard)
    wait_all([a.claim_recent(box.id)])
    writes = []
    write = a._db.write
    monkeypatch.setattr(a._db, "write", lambda *args: writes.append(args) or write(*args))

    record = result_of(b.append(box.id, MESSAGE))
    assert turn_until(lambda: heard, 1.0), "node A heard nothing of node B's delivery within 1 s"
    claimed = wait_all([a.claim_recent(box.id) for _ in range(50)] + [b.claim_recent(box.id)])
    assert len(writes) == 1
    assert sorted(claimed, key=len) == [frozenset()] * 50 + [frozenset({record.uid})]
    assert wait_all([a.claim_recent(box.id) for _ in range(5)]) == [frozenset()] * 5 and len(writes) == 1
    # Another delivery, heard: one more claim takes it.
    heard.clear()
    second = result_of(b.append(box.id, MESSAGE))
    assert turn_until(lambda: heard, 1.0)
    claimed = wait_all([a.claim_recent(box.id) for _ in range(20)])
    assert len(writes) == 2 and sorted(claimed, key=len) == [frozenset()] * 19 + [frozenset({second.uid})]
