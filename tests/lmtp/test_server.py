"""
LMTP (RFC 2033) conversations with the real protocol class on a
StringTransport, byte for byte.  The store is an in-memory double recording
exactly what the listener hands to ``append``, so that failures and slow
deliveries can be injected; the end-to-end tests use the real store.
"""

from __future__ import annotations

import datetime
import errno
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.mail import smtp
from zope.interface import implementer

from gateway.net import metrics
from gateway.lmtp.recipients import resolve_recipient
from gateway.config import Config, LimitsConfig, LmtpConfig
from gateway.lmtp.server import LMTPFactory
from gateway.lmtp.spool import IN_MEMORY
from gateway.lmtp.trace import transaction_id
from gateway.net.metrics import Metrics
from gateway.store.interfaces import NoSuchMailbox, StoreFull, TemporaryFailure
from gateway.store.model import MailboxInfo, MessageRecord
from gateway.store.sqlite.store import SQLiteStore
from tests.deferreds import result_of

HOST = "mx.example.test"
PEER = IPv4Address("TCP", "127.0.0.1", 40000)
TRANSACTION_ID = b"3ZqkGrbd9mWzHgAAZ4D0yA"
# 2024-03-05 11:00:00 UTC.
MARCH_5 = 1709636400


@pytest.fixture(autouse=True)
def local_time_is_utc(monkeypatch):
    """Received dates are local time: pin the zone so that the bytes are known."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


class MemoryStore:
    """
    Just enough of IMailStore for delivery.  ``failures[user]`` makes appends
    for that user fail; with ``hold`` set, appends wait until released.
    """

    def __init__(self):
        self.mailboxes: dict[tuple[str, str], int] = {}
        self.special_use: dict[int, str | None] = {}
        self.messages: dict[int, list[bytes]] = {}
        self.failures: dict[str, Exception] = {}
        self.hold = False
        self.held: list[defer.Deferred] = []

    def create(self, user, name, special_use=None):
        mailbox_id = len(self.mailboxes) + 1
        self.mailboxes[(user, name)] = mailbox_id
        self.special_use[mailbox_id] = special_use
        self.messages[mailbox_id] = []
        return mailbox_id

    def ensure_user(self, user):
        if (user, "INBOX") not in self.mailboxes:
            self.create(user, "INBOX")
        return defer.succeed(None)

    def get_mailbox(self, user, name):
        name = "INBOX" if name.upper() == "INBOX" else name
        mailbox_id = self.mailboxes.get((user, name))
        if mailbox_id is None:
            return defer.fail(NoSuchMailbox(name))
        return defer.succeed(MailboxInfo(mailbox_id, user, name, 1, 1, 1, self.special_use[mailbox_id]))

    def append(self, mailbox_id, source, flags=frozenset(), internaldate=None):
        user = next(user for (user, _), known in self.mailboxes.items() if known == mailbox_id)
        if user in self.failures:
            return defer.fail(self.failures[user])
        chunks = []
        # Small reads, as a store streaming a big message would do.
        while chunk := source.read(7):
            chunks.append(chunk)
        stored = self.messages[mailbox_id]
        stored.append(b"".join(chunks))
        record = MessageRecord(len(stored), frozenset(), datetime.datetime.now(datetime.UTC), 0, len(stored))
        if not self.hold:
            return defer.succeed(record)
        held = defer.Deferred()
        self.held.append(held)
        return held.addCallback(lambda _: record)

    def inbox(self, user, name="INBOX"):
        return self.messages[self.mailboxes[(user, name)]]


@implementer(ITCPTransport)
class TCPStringTransport(StringTransport):
    nodelay = False

    def setTcpNoDelay(self, enabled):
        self.nodelay = enabled


def lmtp_config(max_message_size=10_000, save_to_detail_mailbox=False, transaction_deadline=60) -> Config:
    """The config of the sessions here: [lmtp], and the deadline to DATA from [limits]."""
    return Config(
        hostname=HOST,
        lmtp=LmtpConfig(max_message_size=max_message_size, save_to_detail_mailbox=save_to_detail_mailbox),
        limits=LimitsConfig(prelogin_timeout=transaction_deadline),
    )


class Session:
    def __init__(self, store=None, users=frozenset({"alice", "bob", "carol+x"}), max_message_size=10_000,
                 save_to_detail_mailbox=False, peer=PEER, new_transaction_id=lambda: TRANSACTION_ID, now=0, **limits):
        self.store = store or MemoryStore()
        self.clock = Clock()
        self.clock.rightNow = now
        config = lmtp_config(max_message_size=max_message_size, save_to_detail_mailbox=save_to_detail_mailbox, **limits)
        factory = LMTPFactory(self.store, users, config, self.clock, new_transaction_id=new_transaction_id)
        self.server = factory.buildProtocol(peer)
        transport = StringTransport if isinstance(peer, UNIXAddress) else TCPStringTransport
        self.transport = transport(peerAddress=peer)
        self.server.makeConnection(self.transport)

    def send(self, data: bytes) -> list[bytes]:
        """Feed ``data``; return the reply lines it produced."""
        self.transport.clear()
        self.server.dataReceived(data)
        return self.replies()

    def replies(self) -> list[bytes]:
        lines = self.transport.value().split(b"\r\n")
        self.transport.clear()
        assert lines[-1] == b""
        return lines[:-1]

    def start(self, sender=b"<sender@example.org>", recipients=(b"<alice@example.test>",)):
        self.send(b"LHLO client.example.test\r\nMAIL FROM:" + sender + b"\r\n")
        for recipient in recipients:
            self.send(b"RCPT TO:" + recipient + b"\r\n")
        assert self.send(b"DATA\r\n") == [b"354 Start mail input; end with <CRLF>.<CRLF>"]


def trace(recipient=b"alice@example.test", sender=b"sender@example.org", helo=b"client.example.test"):
    """
    The fields put on top of each copy, Dovecot's way: Return-Path,
    Delivered-To, then Received (RFC 5321 4.4), one clause per folded line,
    dated at MAIL in local time (here the Clock's epoch, in UTC).
    """
    return (
        b"Return-Path: <" + sender + b">\r\n"
        + b"Delivered-To: " + recipient + b"\r\n"
        + b"Received: from " + helo + b" ([127.0.0.1])\r\n"
        + b"\tby mx.example.test with LMTP\r\n"
        + b"\tid " + TRANSACTION_ID + b"\r\n"
        + b"\t(envelope-from <" + sender + b">)\r\n"
        + b"\tfor <" + recipient + b">; Thu, 01 Jan 1970 00:00:00 +0000\r\n"
    )


def test_greeting_and_lhlo_reply():
    session = Session()
    assert session.replies() == [b"220 mx.example.test LMTP ready"]
    assert session.send(b"LHLO client.example.test\r\n") == [
        b"250-mx.example.test",
        b"250-PIPELINING",
        b"250-ENHANCEDSTATUSCODES",
        b"250-8BITMIME",
        b"250 SIZE 10000",
    ]


def test_helo_and_ehlo_are_refused():
    # RFC 2033 4.1: never a positive reply to HELO or EHLO.
    session = Session()
    session.replies()
    assert session.send(b"HELO client\r\n") == [b"500 5.5.1 This is an LMTP server: use LHLO"]
    assert session.send(b"EHLO client\r\n") == [b"500 5.5.1 This is an LMTP server: use LHLO"]
    assert session.send(b"MAIL FROM:<a@b>\r\n") == [b"503 5.5.1 Send LHLO first"]


def test_tcp_nodelay_is_set():
    assert Session().transport.nodelay is True


def test_a_session_keeps_the_config_it_connected_under():
    from gateway.reload import LiveConfig

    live = LiveConfig(lmtp_config(max_message_size=10_000))
    factory = LMTPFactory(MemoryStore(), frozenset({"alice"}), live, Clock())
    first = factory.buildProtocol(PEER)
    # A SIGHUP reload swaps the config: new sessions see it, running ones not.
    live.current = lmtp_config(max_message_size=20_000)
    second = factory.buildProtocol(PEER)
    sizes = []
    for server in (first, second):
        transport = TCPStringTransport(peerAddress=PEER)
        server.makeConnection(transport)
        server.dataReceived(b"LHLO client.example.test\r\n")
        sizes.append(transport.value().split(b"\r\n")[-2])
    assert sizes == [b"250 SIZE 10000", b"250 SIZE 20000"]


def test_one_message_to_one_recipient():
    session = Session()
    session.start()
    assert session.send(b"Subject: hi\r\n\r\nHello.\r\n.\r\n") == [
        b"250 2.0.0 <alice@example.test> Saved as UID 1"
    ]
    assert session.store.inbox("alice") == [trace() + b"Subject: hi\r\n\r\nHello.\r\n"]
    assert session.send(b"QUIT\r\n") == [b"221 2.0.0 mx.example.test closing connection"]
    assert session.transport.disconnecting


def test_unknown_recipient_gets_550_and_others_still_deliver():
    session = Session()
    session.send(b"LHLO c\r\nMAIL FROM:<s@example.org>\r\n")
    assert session.send(b"RCPT TO:<nobody@example.test>\r\n") == [
        b"550 5.1.1 <nobody@example.test> User doesn't exist"
    ]
    assert session.send(b"DATA\r\n") == [b"503 5.5.1 No valid recipients"]
    assert session.send(b"RCPT TO:<bob@elsewhere.test>\r\n") == [b"250 2.1.5 OK"]
    assert session.send(b"DATA\r\n") == [b"354 Start mail input; end with <CRLF>.<CRLF>"]
    assert session.send(b"x\r\n.\r\n") == [b"250 2.0.0 <bob@elsewhere.test> Saved as UID 1"]


def test_one_reply_per_recipient_with_a_failure_in_between():
    store = MemoryStore()
    store.failures["bob"] = TemporaryFailure("index is busy")
    session = Session(store)
    session.start(recipients=[b"<alice@a.test>", b"<bob@b.test>", b"<alice@a.test>"])
    assert session.send(b"Subject: x\r\n\r\nbody\r\n.\r\n") == [
        b"250 2.0.0 <alice@a.test> Saved as UID 1",
        b"451 4.3.0 <bob@b.test> Temporary failure, try again later",
        b"250 2.0.0 <alice@a.test> Saved as UID 2",
    ]
    # Each accepted RCPT gets its own copy (RFC 2033 4.2), whole.
    assert store.inbox("alice") == [trace(b"alice@a.test") + b"Subject: x\r\n\r\nbody\r\n"] * 2


def test_a_full_store_is_452_mail_system_full():
    # RFC 3463 3.4: X.3.1, the mail system's storage; the MTA retries.
    store = MemoryStore()
    store.failures["alice"] = StoreFull("cannot write to the store: No space left on device")
    session = Session(store)
    session.start()
    assert session.send(b"x\r\n.\r\n") == [b"452 4.3.1 <alice@example.test> Mail system full, try again later"]


def test_other_temporary_failures_are_451_whatever_their_cause():
    # The listener reads the contract's error, not what the backend raised.
    store = MemoryStore()
    try:
        raise TemporaryFailure("index is busy") from OSError(errno.ENOSPC, "No space left on device")
    except TemporaryFailure as e:
        store.failures["alice"] = e
    session = Session(store)
    session.start()
    assert session.send(b"x\r\n.\r\n") == [b"451 4.3.0 <alice@example.test> Temporary failure, try again later"]


def test_unexpected_store_error_is_temporary():
    store = MemoryStore()
    store.failures["alice"] = RuntimeError("bug")
    session = Session(store)
    session.start()
    assert session.send(b"x\r\n.\r\n") == [b"451 4.3.0 <alice@example.test> Temporary internal error"]
    assert session.send(b"NOOP\r\n") == [b"250 2.0.0 OK"]


def test_dot_unstuffing():
    session = Session()
    session.start()
    session.send(b"Subject: dots\r\n\r\n..\r\n...leading\r\n.x\r\nmid.dle\r\n.\r\n")
    assert session.store.inbox("alice") == [trace() + b"Subject: dots\r\n\r\n.\r\n..leading\r\nx\r\nmid.dle\r\n"]


def test_bare_lf_line_endings_are_accepted_but_only_crlf_dot_crlf_ends_data():
    # Commands and message lines may end in LF alone (the data is passed on
    # as sent and the store normalises it to CRLF), but a dot line next to a
    # bare LF is data: RFC 5321 4.1.1.4, and no "SMTP smuggling".
    session = Session()
    assert session.send(b"LHLO c\nMAIL FROM:<s@example.org>\nRCPT TO:<alice>\nDATA\n")[-1].startswith(b"354")
    assert session.send(b"Subject: lf\n\n..body\n.\nMAIL FROM:<forged@x>\n.\r\n") == []
    assert session.send(b"\r\n.\r\n") == [b"250 2.0.0 <alice@mx.example.test> Saved as UID 1"]
    assert session.store.inbox("alice") == [
        trace(b"alice@mx.example.test", b"s@example.org", b"c") + b"Subject: lf\n\n.body\n.\nMAIL FROM:<forged@x>\n.\r\n\r\n"
    ]


MESSAGE = b"Subject: split\r\n\r\n.\r\n..\r\n.x.\r\nline.\r\n" + b"y" * 300 + b"\r\n"
SESSION = (
    b"LHLO c\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<alice>\r\nRCPT TO:<bob>\r\nDATA\r\n"
    + MESSAGE.replace(b"\r\n.", b"\r\n..")
    + b".\r\nNOOP\r\nQUIT\r\n"
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(SESSION)), max_size=12))
def test_any_split_of_the_input_gives_the_same_conversation(cuts):
    # h11-style: TCP may cut the stream anywhere, even inside "\r\n.\r\n".
    session = Session()
    session.replies()
    replies = []
    bounds = [0, *sorted(cuts), len(SESSION)]
    for start, end in zip(bounds, bounds[1:]):
        replies += session.send(SESSION[start:end])
    assert replies == [
        b"250-mx.example.test",
        b"250-PIPELINING",
        b"250-ENHANCEDSTATUSCODES",
        b"250-8BITMIME",
        b"250 SIZE 10000",
        b"250 2.1.0 Sender OK",
        b"250 2.1.5 OK",
        b"250 2.1.5 OK",
        b"354 Start mail input; end with <CRLF>.<CRLF>",
        b"250 2.0.0 <alice@mx.example.test> Saved as UID 1",
        b"250 2.0.0 <bob@mx.example.test> Saved as UID 1",
        b"250 2.0.0 OK",
        b"221 2.0.0 mx.example.test closing connection",
    ]
    assert session.store.inbox("bob") == [trace(b"bob@mx.example.test", b"s@example.org", b"c") + MESSAGE]


def recorded_writes(session) -> list[bytes]:
    """Every write the session makes from now on, as it makes it."""
    writes = []
    write = session.transport.write

    def recording(data):
        writes.append(data)
        write(data)

    session.transport.write = recording
    session.transport.writeSequence = lambda pieces: recording(b"".join(pieces))
    return writes


def test_pipelined_commands_are_answered_in_one_write():
    # RFC 2920 3.2: the replies to a group of pipelined commands may go
    # together; one write is one send on a write-through connection.
    session = Session()
    session.replies()
    writes = recorded_writes(session)
    session.server.dataReceived(b"LHLO c\r\nMAIL FROM:<s@x>\r\nRCPT TO:<alice>\r\nRCPT TO:<nobody>\r\nDATA\r\n")
    assert writes == [
        b"250-mx.example.test\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250 SIZE 10000\r\n"
        b"250 2.1.0 Sender OK\r\n250 2.1.5 OK\r\n"
        b"550 5.1.1 <nobody@mx.example.test> User doesn't exist\r\n"
        b"354 Start mail input; end with <CRLF>.<CRLF>\r\n"
    ]


def test_a_message_alone_in_its_input_does_not_stop_reading_while_stored():
    # Pausing and resuming the connection is two system calls a message;
    # only input that arrives while the message is stored has to wait.
    store = MemoryStore()
    store.hold = True
    session = Session(store)
    session.start()
    assert session.send(b"one\r\n.\r\n") == []
    assert session.transport.producerState == "producing"
    assert session.send(b"NOOP\r\n") == []
    assert session.transport.producerState == "paused"
    store.held.pop(0).callback(None)
    assert session.replies() == [b"250 2.0.0 <alice@example.test> Saved as UID 1", b"250 2.0.0 OK"]
    assert session.transport.producerState == "producing"


def test_pipelined_commands_wait_for_the_data_replies():
    store = MemoryStore()
    store.hold = True
    session = Session(store)
    session.replies()
    assert session.send(b"LHLO c\r\nMAIL FROM:<s@x>\r\nRCPT TO:<alice>\r\nRCPT TO:<bob>\r\nDATA\r\n") == [
        b"250-mx.example.test",
        b"250-PIPELINING",
        b"250-ENHANCEDSTATUSCODES",
        b"250-8BITMIME",
        b"250 SIZE 10000",
        b"250 2.1.0 Sender OK",
        b"250 2.1.5 OK",
        b"250 2.1.5 OK",
        b"354 Start mail input; end with <CRLF>.<CRLF>",
    ]
    # The next transaction is pipelined right behind the final dot.
    assert session.send(b"one\r\n.\r\nMAIL FROM:<s@x>\r\nRCPT TO:<nobody>\r\nNOOP\r\n") == []
    assert session.transport.producerState == "paused"
    store.held.pop(0).callback(None)
    assert session.replies() == [b"250 2.0.0 <alice@mx.example.test> Saved as UID 1"]
    store.held.pop(0).callback(None)
    assert session.replies() == [
        b"250 2.0.0 <bob@mx.example.test> Saved as UID 1",
        b"250 2.1.0 Sender OK",
        b"550 5.1.1 <nobody@mx.example.test> User doesn't exist",
        b"250 2.0.0 OK",
    ]
    assert session.transport.producerState == "producing"


def test_plus_detail_delivers_into_inbox_by_default():
    # As Dovecot without lmtp_save_to_detail_mailbox: the detail chooses no
    # folder, so an outside sender cannot plant mail in Sent.
    store = MemoryStore()
    store.ensure_user("alice")
    store.create("alice", "Lists")
    store.create("alice", "Sent", "\\Sent")
    session = Session(store)
    session.start(recipients=[b"<alice+Lists@a.test>", b"<alice+Sent@a.test>", b"<carol+x@a.test>"])
    assert session.send(b"m\r\n.\r\n") == [
        b"250 2.0.0 <alice+Lists@a.test> Saved as UID 1",
        b"250 2.0.0 <alice+Sent@a.test> Saved as UID 2",
        b"250 2.0.0 <carol+x@a.test> Saved as UID 1",
    ]
    assert store.inbox("alice", "Lists") == store.inbox("alice", "Sent") == []
    assert store.inbox("alice") == [trace(b"alice+Lists@a.test") + b"m\r\n", trace(b"alice+Sent@a.test") + b"m\r\n"]
    assert store.inbox("carol+x") == [trace(b"carol+x@a.test") + b"m\r\n"]


def test_save_to_detail_mailbox_never_chooses_a_special_use_folder():
    store = MemoryStore()
    store.ensure_user("alice")
    store.create("alice", "Work")
    store.create("alice", "Sent", "\\Sent")
    store.create("alice", "Drafts", "\\Drafts")
    store.create("alice", "Sent/Old")
    session = Session(store, save_to_detail_mailbox=True)
    recipients = [b"alice+Work", b"alice+Sent", b"alice+Drafts", b"alice+nosuch", b"alice+Sent/Old"]
    session.start(recipients=[b"<" + r + b"@a.test>" for r in recipients])
    assert session.send(b"m\r\n.\r\n") == [
        b"250 2.0.0 <alice+Work@a.test> Saved as UID 1",
        b"250 2.0.0 <alice+Sent@a.test> Saved as UID 1",
        b"250 2.0.0 <alice+Drafts@a.test> Saved as UID 2",
        b"250 2.0.0 <alice+nosuch@a.test> Saved as UID 3",
        b"250 2.0.0 <alice+Sent/Old@a.test> Saved as UID 1",
    ]
    assert store.inbox("alice", "Work") == [trace(b"alice+Work@a.test") + b"m\r\n"]
    assert store.inbox("alice", "Sent") == store.inbox("alice", "Drafts") == []
    assert store.inbox("alice") == [
        trace(b"alice+" + name + b"@a.test") + b"m\r\n" for name in (b"Sent", b"Drafts", b"nosuch")
    ]
    # A folder under Sent has no special use of its own.
    assert store.inbox("alice", "Sent/Old") == [trace(b"alice+Sent/Old@a.test") + b"m\r\n"]


def test_resolve_recipient():
    users = {"alice", "a+b"}
    assert resolve_recipient("alice", users) == ("alice", "INBOX")
    assert resolve_recipient("alice+Work/Todo", users) == ("alice", "Work/Todo")
    assert resolve_recipient("a+b", users) == ("a+b", "INBOX")
    assert resolve_recipient("alice+", users) is None
    assert resolve_recipient("bob+alice", users) is None
    assert resolve_recipient("Alice", users) is None
    # Virtual users named by their whole address come first.
    virtual = {"alice", "alice@example.org", "b+c@example.org"}
    assert resolve_recipient("alice", virtual, "example.org") == ("alice@example.org", "INBOX")
    assert resolve_recipient("alice+Lists", virtual, "example.org") == ("alice@example.org", "Lists")
    assert resolve_recipient("b+c", virtual, "example.org") == ("b+c@example.org", "INBOX")
    assert resolve_recipient("alice", virtual, "example.net") == ("alice", "INBOX")
    assert resolve_recipient("bob", virtual, "example.org") is None


def test_virtual_user_named_by_the_whole_address():
    session = Session(users=frozenset({"alice", "alice@example.org"}))
    session.start(recipients=[b"<alice@example.org>", b"<alice@example.net>"])
    assert session.send(b"m\r\n.\r\n") == [
        b"250 2.0.0 <alice@example.org> Saved as UID 1",
        b"250 2.0.0 <alice@example.net> Saved as UID 1",
    ]
    assert session.store.inbox("alice@example.org") == [trace(b"alice@example.org") + b"m\r\n"]
    assert session.store.inbox("alice") == [trace(b"alice@example.net") + b"m\r\n"]


def test_null_sender_and_bounce_trace():
    session = Session()
    session.start(sender=b"<>")
    session.send(b"bounce\r\n.\r\n")
    assert session.store.inbox("alice") == [trace(sender=b"") + b"bounce\r\n"]
    assert session.store.inbox("alice")[0].startswith(b"Return-Path: <>\r\n")


def received_fields(message: bytes) -> list[bytes]:
    """Each Received field of a stored copy, with its folding."""
    header = message.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    return re.findall(rb"^Received: .*?\r\n(?:\t.*?\r\n)*", header, re.M)


def test_received_per_copy_with_one_id_per_transaction():
    ids = iter([b"FirstTransactionIdAAAA", b"SecondTransactionIdAAA"])
    session = Session(new_transaction_id=lambda: next(ids), now=MARCH_5)
    session.start(recipients=[b"<alice@a.test>", b"<bob@b.test>"])
    # Dated at MAIL (Dovecot's transaction timestamp), not at the final dot.
    session.clock.advance(30)
    session.send(b"Subject: one\r\n\r\nbody\r\n.\r\n")
    session.start(recipients=[b"<alice@a.test>"])
    session.send(b"Subject: two\r\n\r\nbody\r\n.\r\n")
    first, second = session.store.inbox("alice")
    # RFC 5321 4.4: one Received field, added on top (after Dovecot's
    # Return-Path and Delivered-To), naming the copy's own recipient.
    assert received_fields(first) == [
        b"Received: from client.example.test ([127.0.0.1])\r\n"
        b"\tby mx.example.test with LMTP\r\n"
        b"\tid FirstTransactionIdAAAA\r\n"
        b"\t(envelope-from <sender@example.org>)\r\n"
        b"\tfor <alice@a.test>; Tue, 05 Mar 2024 11:00:00 +0000\r\n"
    ]
    assert received_fields(session.store.inbox("bob")[0]) == [
        received_fields(first)[0].replace(b"<alice@a.test>", b"<bob@b.test>")
    ]
    assert b"\tid SecondTransactionIdAAA\r\n" in received_fields(second)[0]
    assert first.index(b"Received: ") < first.index(b"Subject: one")


@pytest.mark.parametrize(
    ("peer", "origin"),
    [
        (IPv6Address("TCP", "::1", 40000), b"from client.example.test ([IPv6:::1])\r\n"),
        (IPv6Address("TCP", "::ffff:192.0.2.7", 40000), b"from client.example.test ([192.0.2.7])\r\n"),
        # A UNIX-socket peer has no IP address: Dovecot then writes none.
        (UNIXAddress(None), b"from client.example.test\r\n"),
    ],
)
def test_received_names_the_peer_it_has(peer, origin):
    session = Session(peer=peer)
    session.start()
    assert session.send(b"m\r\n.\r\n") == [b"250 2.0.0 <alice@example.test> Saved as UID 1"]
    assert received_fields(session.store.inbox("alice")[0])[0].startswith(b"Received: " + origin + b"\tby ")


@pytest.mark.parametrize("name", [b"not_a.domain", b"host name", b"[300.1.1.1]", b"x" * 300])
def test_received_calls_a_client_with_a_bad_lhlo_name_unknown(name):
    session = Session()
    session.send(b"LHLO " + name + b"\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<alice>\r\nDATA\r\n")
    session.send(b"m\r\n.\r\n")
    assert received_fields(session.store.inbox("alice")[0])[0].startswith(b"Received: from unknown ([127.0.0.1])\r\n")


def test_default_transaction_ids_differ():
    session = Session(new_transaction_id=transaction_id)
    for _ in range(2):
        session.start()
        session.send(b"m\r\n.\r\n")
    ids = [re.search(rb"\tid (\S+)\r\n", message).group(1) for message in session.store.inbox("alice")]
    assert ids[0] != ids[1] and all(re.fullmatch(rb"[A-Za-z0-9+/]{22}", i) for i in ids)


def test_long_sender_is_refused():
    # RFC 5321 4.5.3.1.3: 256 octets with the brackets; the Return-Path and
    # Received lines stay within RFC 5322's 998.
    session = Session()
    session.send(b"LHLO c\r\n")
    assert session.send(b"MAIL FROM:<" + b"s" * 243 + b"@example.org>\r\n") == [
        b"501 5.1.7 Sender address longer than 254 octets"
    ]
    assert session.send(b"MAIL FROM:<" + b"s" * 242 + b"@example.org>\r\n") == [b"250 2.1.0 Sender OK"]


def test_command_sequence_errors():
    session = Session()
    session.send(b"LHLO c\r\n")
    assert session.send(b"RCPT TO:<alice>\r\n") == [b"503 5.5.1 MAIL first"]
    assert session.send(b"DATA\r\n") == [b"503 5.5.1 MAIL first"]
    assert session.send(b"MAIL TO:<a@b>\r\n") == [b"501 5.5.4 Syntax: MAIL FROM:<address>"]
    assert session.send(b"MAIL FROM:<a@b>\r\n") == [b"250 2.1.0 Sender OK"]
    assert session.send(b"MAIL FROM:<a@b>\r\n") == [b"503 5.5.1 Sender already given"]
    assert session.send(b"RCPT TO:<alice> NOTIFY=NEVER\r\n") == [b"555 5.5.4 Unsupported parameter"]
    assert session.send(b"RCPT TO:<alice>\r\n") == [b"250 2.1.5 OK"]
    assert session.send(b"RSET\r\n") == [b"250 2.0.0 OK"]
    assert session.send(b"RCPT TO:<alice>\r\n") == [b"503 5.5.1 MAIL first"]
    assert session.send(b"LHLO\r\n") == [b"501 5.5.4 Syntax: LHLO hostname"]
    assert session.send(b"FROB\r\n") == [b"500 5.5.1 Command unrecognized"]
    assert session.send(b"\xff\xfe x\r\n") == [b"500 5.5.1 Command unrecognized"]
    assert session.send(b"\r\n") == [b"500 5.5.2 Syntax error"]
    assert session.send(b"VRFY alice\r\n") == [b"252 2.3.3 Try RCPT instead"]
    assert not session.transport.disconnecting


def test_mail_parameters():
    session = Session()
    session.send(b"LHLO c\r\n")
    assert session.send(b"MAIL FROM:<a@b> SIZE=10001\r\n") == [
        b"552 5.3.4 Message size exceeds fixed maximum message size"
    ]
    assert session.send(b"MAIL FROM:<a@b> XFOO=1\r\n") == [b"555 5.5.4 Unsupported parameter XFOO"]
    assert session.send(b"MAIL FROM:<a@b> SIZE=10000 BODY=8BITMIME\r\n") == [b"250 2.1.0 Sender OK"]


def test_address_with_control_character_is_refused():
    session = Session()
    session.send(b"LHLO c\r\n")
    assert session.send(b'MAIL FROM:<"a\rb"@example.org>\r\n') == [b"553 5.1.7 Invalid sender address"]


def test_oversized_message_is_refused_per_recipient_and_session_goes_on():
    session = Session(max_message_size=1000)
    session.start(recipients=[b"<alice>", b"<bob>"])
    assert session.send(b"Subject: big\r\n\r\n" + b"z" * 2000 + b"\r\n.\r\n") == [
        b"552 5.3.4 <alice@mx.example.test> Message size exceeds fixed maximum message size",
        b"552 5.3.4 <bob@mx.example.test> Message size exceeds fixed maximum message size",
    ]
    assert session.store.messages == {}
    assert session.send(b"NOOP\r\n") == [b"250 2.0.0 OK"]


def test_long_line_in_data_is_message_data():
    # No line limit inside DATA: a 50 kB line is stored whole, not executed.
    session = Session(max_message_size=100_000)
    session.start()
    line = b"a" * 50_000
    assert session.send(b"Subject: long\r\n\r\n" + line + b"\r\nRSET\r\n.\r\n") == [
        b"250 2.0.0 <alice@example.test> Saved as UID 1"
    ]
    assert session.store.inbox("alice") == [trace() + b"Subject: long\r\n\r\n" + line + b"\r\nRSET\r\n"]


def test_stock_smtp_reads_message_body_as_commands_after_a_long_line():
    # The gap in twisted.mail.smtp.SMTP that gateway/lmtp/server.py replaces: a DATA line
    # over LineOnlyReceiver.MAX_LENGTH drops the session to command mode and
    # the rest of the body is executed.
    @implementer(smtp.IMessage)
    class Discard:
        def lineReceived(self, line):
            pass

        def eomReceived(self):
            return defer.succeed(None)

        def connectionLost(self):
            pass

    @implementer(smtp.IMessageDelivery)
    class AcceptAll:
        def receivedHeader(self, helo, origin, recipients):
            return None

        def validateFrom(self, helo, origin):
            return origin

        def validateTo(self, user):
            return Discard

    server = smtp.SMTP(delivery=AcceptAll())
    transport = StringTransport(peerAddress=PEER)
    server.makeConnection(transport)
    server.dataReceived(b"HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
    server.dataReceived(b"x" * 20_000 + b"\r\n")
    transport.clear()
    server.dataReceived(b"RSET\r\n")
    assert transport.value() == b"250 I remember nothing.\r\n"
    server.connectionLost(None)


def test_long_command_line_is_refused():
    session = Session()
    session.replies()
    assert session.send(b"NOOP " + b"x" * 70_000 + b"\r\nNOOP\r\n") == [b"500 5.5.2 Line too long", b"250 2.0.0 OK"]
    assert session.send(b"y" * 70_000) == [b"500 5.5.2 Line too long, closing connection"]
    assert session.transport.disconnecting


def test_idle_timeout_inside_data():
    # In DATA only the idle timeout applies (the size limit bounds the rest).
    session = Session()
    session.start()
    session.send(b"Subject: slow\r\n")
    session.clock.advance(599)
    assert not session.transport.disconnecting
    session.clock.advance(1)
    assert session.replies() == [b"421 4.4.2 mx.example.test Idle timeout, closing connection"]
    assert session.transport.disconnecting
    assert session.store.messages == {}


def test_busy_client_without_a_message_meets_the_absolute_deadline():
    # A command every few seconds resets the idle timer, not the deadline:
    # from connecting (or the last message) to DATA takes at most 60 s.
    session = Session()
    session.replies()
    for _ in range(11):
        assert session.send(b"NOOP\r\n") == [b"250 2.0.0 OK"]
        session.clock.advance(5)
    session.clock.advance(4)
    assert not session.transport.disconnecting
    session.clock.advance(1)
    assert session.replies() == [b"421 4.4.2 mx.example.test No message within the time allowed, closing connection"]
    assert session.transport.disconnecting


def test_each_delivered_message_restarts_the_deadline():
    session = Session(transaction_deadline=30)
    for uid in (1, 2, 3):
        session.clock.advance(29)
        session.start()
        session.clock.advance(100)  # inside DATA: the idle timeout only
        assert session.send(b"m\r\n.\r\n") == [b"250 2.0.0 <alice@example.test> Saved as UID %d" % uid]
    session.clock.advance(30)
    assert session.replies()[-1].startswith(b"421 4.4.2 ")
    assert session.transport.disconnecting
    session.server.connectionLost(None)
    assert not session.clock.getDelayedCalls()


@pytest.mark.parametrize("lines", [1, IN_MEMORY // 8 + 10])
def test_connection_lost_mid_data_delivers_nothing(lines):
    # In memory, or spilled to a file (IN_MEMORY), what was spooled goes.
    session = Session(max_message_size=2 * IN_MEMORY)
    session.start()
    session.send(b"Subject: half\r\n\r\n" + b"a line\r\n" * lines + b"half a mess")
    spool = session.server._spool
    spilled = spool.file.file if spool.file is not None else None
    assert (spilled is not None) == (lines > 1)
    session.server.connectionLost(None)
    assert session.server._spool is None
    assert spilled is None or spilled.closed
    assert session.store.messages == {}
    assert not session.clock.getDelayedCalls()


def test_unreadable_users_file_is_a_temporary_failure():
    class BrokenUsers:
        def __contains__(self, name):
            raise OSError("users file vanished")

    session = Session(users=BrokenUsers())
    session.send(b"LHLO c\r\nMAIL FROM:<s@x>\r\n")
    assert session.send(b"RCPT TO:<alice>\r\n") == [b"451 4.3.0 Temporary failure looking up the recipient"]
    assert session.send(b"NOOP\r\n") == [b"250 2.0.0 OK"]


# -- the end of data among many dots -----------------------------------------


def test_many_dots_before_the_final_dot():
    session = Session()
    session.start()
    body = b"Subject: dots\r\n\r\n" + b"a. " * 200 + b"\r\n..stuffed\r\n"
    assert session.send(body + b".\r\n") == [b"250 2.0.0 <alice@example.test> Saved as UID 1"]
    assert session.store.inbox("alice") == [trace() + body.replace(b"\r\n..", b"\r\n.")]


# -- metrics ---------------------------------------------------------------------


@pytest.fixture
def counted():
    m = Metrics(CollectorRegistry())
    previous = metrics.activate(m)
    yield m
    metrics.activate(previous)


def command_counts(m):
    text = generate_latest(m.registry).decode()
    return {
        sample.labels["command"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "gateway_command_duration_seconds_count" and sample.labels["protocol"] == "lmtp"
    }


def test_every_command_is_timed(counted):
    session = Session()
    session.send(b"LHLO c\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<alice@a.test>\r\nRCPT TO:<bob@a.test>\r\n")
    session.send(b"XYZZY\r\nNOOP\r\n")
    assert command_counts(counted) == {"LHLO": 1, "MAIL": 1, "RCPT": 2, "OTHER": 1, "NOOP": 1}


def test_data_is_timed_once_when_its_last_reply_is_sent(counted):
    store = MemoryStore()
    store.hold = True
    session = Session(store)
    session.start(recipients=[b"<alice@a.test>", b"<bob@b.test>"])
    assert "DATA" not in command_counts(counted)  # 354 is not the final answer
    session.send(b"x\r\n.\r\n")
    store.held.pop(0).callback(None)
    assert "DATA" not in command_counts(counted)
    store.held.pop(0).callback(None)
    assert command_counts(counted)["DATA"] == 1


# -- group commit over the real store ------------------------------------------


class StoreSession(Session):
    """A session of a factory shared with others, over the SQLite store."""

    def __init__(self, factory):
        self.store = factory.store
        self.clock = factory.reactor
        self.server = factory.buildProtocol(PEER)
        self.transport = TCPStringTransport(peerAddress=PEER)
        self.server.makeConnection(self.transport)
        self.replies()


@pytest.fixture
def sqlite_factory(tmp_path):
    store = SQLiteStore(tmp_path / "store")
    # Users with mailboxes: a first delivery takes a second group, once the
    # store refused the first for want of an INBOX.
    for user in ("alice", "bob"):
        result_of(store.ensure_user(user))
    calls = []
    append_many = store.append_many
    store.append_many = lambda deliveries: calls.append(len(deliveries)) or append_many(deliveries)
    factory = LMTPFactory(store, frozenset({"alice", "bob"}), Config(hostname=HOST), Clock(),
                          new_transaction_id=lambda: TRANSACTION_ID)
    factory.append_many_calls = calls
    yield factory
    store.close()


def inbox_bodies(store, user):
    info = result_of(store.get_mailbox(user, "INBOX"))
    bodies = []
    for record in result_of(store.list_messages(info.id)):
        with result_of(store.open_message(info.id, record.uid)) as body:
            bodies.append(body.read())
    return bodies


def test_sessions_ending_data_in_one_turn_share_one_commit(sqlite_factory):
    first, second = StoreSession(sqlite_factory), StoreSession(sqlite_factory)
    first.start(recipients=[b"<alice@a.test>"])
    second.start(recipients=[b"<bob@b.test>"])
    assert first.send(b"Subject: 1\r\n\r\none\r\n.\r\n") == []
    assert second.send(b"Subject: 2\r\n\r\ntwo\r\n.\r\n") == []
    # Nothing is acknowledged before the commit at the end of the turn.
    sqlite_factory.reactor.advance(0)
    assert first.replies() == [b"250 2.0.0 <alice@a.test> Saved as UID 1"]
    assert second.replies() == [b"250 2.0.0 <bob@b.test> Saved as UID 1"]
    assert sqlite_factory.append_many_calls == [2]
    assert inbox_bodies(sqlite_factory.store, "alice") == [trace(b"alice@a.test") + b"Subject: 1\r\n\r\none\r\n"]
    assert inbox_bodies(sqlite_factory.store, "bob") == [trace(b"bob@b.test") + b"Subject: 2\r\n\r\ntwo\r\n"]


def test_all_recipients_of_a_message_share_one_commit(sqlite_factory):
    session = StoreSession(sqlite_factory)
    session.start(recipients=[b"<alice@a.test>", b"<bob@b.test>", b"<alice+x@a.test>"])
    session.send(b"Subject: all\r\n\r\nbody\r\n.\r\n")
    sqlite_factory.reactor.advance(0)
    assert session.replies() == [
        b"250 2.0.0 <alice@a.test> Saved as UID 1",
        b"250 2.0.0 <bob@b.test> Saved as UID 1",
        b"250 2.0.0 <alice+x@a.test> Saved as UID 2",
    ]
    assert sqlite_factory.append_many_calls == [3]
    # Each copy whole, with its own trace headers: the shared spool is
    # rewound for each.
    assert inbox_bodies(sqlite_factory.store, "alice") == [
        trace(b"alice@a.test") + b"Subject: all\r\n\r\nbody\r\n",
        trace(b"alice+x@a.test") + b"Subject: all\r\n\r\nbody\r\n",
    ]


def test_failed_group_commit_answers_every_recipient(sqlite_factory):
    def full(deliveries):
        return defer.succeed([StoreFull("cannot write to the store: No space left on device")] * len(deliveries))

    sqlite_factory.store.append_many = full
    session = StoreSession(sqlite_factory)
    session.start(recipients=[b"<alice@a.test>", b"<bob@b.test>"])
    session.send(b"x\r\n.\r\n")
    sqlite_factory.reactor.advance(0)
    assert session.replies() == [
        b"452 4.3.1 <alice@a.test> Mail system full, try again later",
        b"452 4.3.1 <bob@b.test> Mail system full, try again later",
    ]


def test_pipelined_transaction_waits_for_the_group_commit(sqlite_factory):
    session = StoreSession(sqlite_factory)
    session.start(recipients=[b"<alice@a.test>"])
    assert session.send(b"x\r\n.\r\nNOOP\r\n") == []
    sqlite_factory.reactor.advance(0)
    assert session.replies() == [b"250 2.0.0 <alice@a.test> Saved as UID 1", b"250 2.0.0 OK"]


# -- Twisted's SMTP engine ---------------------------------------------------------


def test_no_private_name_of_twisted_smtp_is_used_or_shadowed():
    # LMTP needs no adapter module: it relies on smtp.SMTP's public API
    # alone, and none of its own names collides with a private one of Twisted's.
    from pathlib import Path

    import gateway.lmtp
    from tests.twisted_private import private_uses

    assert private_uses(Path(gateway.lmtp.__file__).parent, smtp.SMTP, adapter=None) == {}
