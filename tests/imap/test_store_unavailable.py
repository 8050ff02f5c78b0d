"""
An IMAP session whose store cannot answer for a while (a shared store's
database restarting): every command still gets its tagged answer, and what
changed meanwhile is told once the store answers again.
"""

from twisted.internet import defer

from gateway.store.interfaces import TemporaryFailure
from tests.deferreds import result_of
from tests.imap.test_server import MESSAGE, Session


def test_a_command_is_answered_when_the_view_cannot_be_brought_up_to_date(store, monkeypatch):
    s = Session(store).login()
    box = result_of(store.get_mailbox("alice", "INBOX"))
    result_of(store.append(box.id, MESSAGE))
    assert s.command(b"s SELECT INBOX")[-1].startswith(b"s OK [READ-WRITE]")
    result_of(store.append(box.id, MESSAGE))
    with monkeypatch.context() as patch:
        patch.setattr(store, "changes_since",
                      lambda *args: defer.fail(TemporaryFailure("database unavailable")))
        patch.setattr(store, "store_flags",
                      lambda *args: defer.fail(TemporaryFailure("database unavailable")))
        assert s.command(b"n NOOP") == [b"n OK NOOP completed"]
        assert s.command(b"f STORE 1 +FLAGS (\\Seen)") == [b"f NO [UNAVAILABLE] Temporary failure, try again later"]
    # The store answers again: the delivery made meanwhile is told.
    lines = s.command(b"m NOOP")
    assert lines[0] == b"* 2 EXISTS" and lines[-1] == b"m OK NOOP completed"
