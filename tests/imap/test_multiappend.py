"""
MULTIAPPEND (RFC 3502) through the real protocol class: several messages
in one APPEND, all of them or none.
"""

from twisted.internet import defer

from gateway.config import AuthConfig, Config, QuotaConfig
from gateway.store.interfaces import TemporaryFailure
from gateway.store.sqlite.store import SQLiteStore
from tests.deferreds import result_of
from tests.imap.test_server import MESSAGE, Session

OTHER = MESSAGE.replace(b"hello", b"again")


def test_the_rfc_exchange(store):
    # RFC 3502 6.3.11's example: synchronizing literals, a continuation for each.
    s = Session(store).login()
    inbox = result_of(store.get_mailbox("alice", "INBOX"))
    assert s.command(b"A003 APPEND INBOX (\\Seen) {%d}" % len(MESSAGE)) == [b"+ Ready for literal data"]
    assert s.send(MESSAGE + b' (\\Seen) " 7-Feb-1994 22:43:04 -0800" {%d}\r\n' % len(OTHER)) == (
        b"+ Ready for literal data\r\n")
    assert s.command(OTHER) == [b"A003 OK [APPENDUID %d 1:2] APPEND completed" % inbox.uidvalidity]
    records = result_of(store.list_messages(inbox.id))
    assert [r.flags for r in records] == [{"\\Seen"}, {"\\Seen"}]
    assert records[1].internaldate.isoformat() == "1994-02-07T22:43:04-08:00"


def test_literal_plus_and_the_next_command_after(store):
    s = Session(store).login()
    lines = s.command(b"a APPEND Sent {%d+}\r\n" % len(MESSAGE) + MESSAGE + b" {%d+}\r\n" % len(OTHER) + OTHER
                      + b" ($Done) {%d+}\r\n" % len(MESSAGE) + MESSAGE + b"\r\nb NOOP")
    assert lines[0].startswith(b"a OK [APPENDUID ") and lines[0].endswith(b" 1:3] APPEND completed")
    assert lines[1] == b"b OK NOOP completed"


def test_a_bad_message_appends_none(store):
    s = Session(store).login()
    inbox = result_of(store.get_mailbox("alice", "INBOX"))
    lines = s.command(b"a APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE
                      + b" (\\Bogus) {%d+}\r\n" % len(OTHER) + OTHER)
    assert lines == [b"a BAD Bad flags or date-time"]
    assert result_of(store.list_messages(inbox.id)) == []
    assert s.command(b"b NOOP") == [b"b OK NOOP completed"]


def test_over_quota_appends_none(store):
    s = Session(store, config=Config(auth=AuthConfig(failure_delay=1.0), quota=QuotaConfig(messages=2))).login()
    inbox = result_of(store.get_mailbox("alice", "INBOX"))
    lines = s.command(b"a APPEND INBOX" + b"".join(b" {%d+}\r\n" % len(MESSAGE) + MESSAGE for _ in range(3)))
    assert lines == [b"a NO [OVERQUOTA] Quota exceeded"]
    assert result_of(store.list_messages(inbox.id)) == []


class FailingThird(SQLiteStore):
    """A store whose third append fails: the disk filled up mid-way."""

    appends = 0

    def append(self, *args, **kwargs):
        self.appends += 1
        if self.appends == 3:
            return defer.fail(TemporaryFailure("disk full"))
        return super().append(*args, **kwargs)


def test_a_store_failure_midway_takes_back_those_added(tmp_path):
    store = FailingThird(tmp_path / "store")
    try:
        s = Session(store).login()
        inbox = result_of(store.get_mailbox("alice", "INBOX"))
        watcher = Session(store).login()
        watcher.command(b"w SELECT INBOX")
        lines = s.command(b"a APPEND INBOX" + b"".join(b" {%d+}\r\n" % len(MESSAGE) + MESSAGE for _ in range(3)))
        assert lines[-1].startswith(b"a NO ")
        assert result_of(store.list_messages(inbox.id)) == []
        assert s.command(b"b APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE)[-1].startswith(b"b OK [APPENDUID")
    finally:
        store.close()
