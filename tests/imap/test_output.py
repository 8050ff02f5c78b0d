"""
FETCH answers written in large pieces at the pace the client reads
(gateway/imap/output.py), through the real protocol on a transport that
pushes back like a TCP transport with a full buffer.
"""

import re

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import Portal
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.mail import imap4
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure

from gateway.auth import MailRealm
from gateway.config import Config
from gateway.imap import account
from gateway.imap.output import CHUNK, Output
from gateway.imap.server import build_factory
from tests.deferreds import result_of

SMALL = b"From: a@example.org\r\nSubject: small\r\n\r\nhello\r\n"


def big_message(size):
    line = b"x" * 76 + b"\r\n"
    return b"From: a@example.org\r\nSubject: big\r\n\r\n" + line * (size // len(line))


class PushingBackTransport(StringTransport):
    """
    Pauses its streaming producer once it holds more than ``limit`` bytes,
    as a TCP transport does past its buffer size; ``drain`` is the client
    reading it all.
    """

    def __init__(self, limit):
        super().__init__(hostAddress=IPv4Address("TCP", "127.0.0.1", 143),
                         peerAddress=IPv4Address("TCP", "127.0.0.1", 50000))
        self.limit = limit
        self.writes = 0
        self.most_held = 0

    def write(self, data):
        super().write(data)
        self._wrote()

    def writeSequence(self, data):
        super().writeSequence(data)
        self._wrote()

    def _wrote(self):
        self.writes += 1
        held = len(self.io.getvalue())
        self.most_held = max(self.most_held, held)
        if self.producer is not None and self.streaming and held > self.limit:
            self.producer.pauseProducing()

    def drain(self):
        data = self.value()
        self.clear()
        if self.producer is not None:
            self.producer.resumeProducing()
        return data


def selected_session(store, transport):
    checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
    realm = MailRealm({imap4.IAccount: account.avatar_factory(store, Config())})
    server = build_factory(Portal(realm, [checker]), store, Config(), Clock()).buildProtocol(None)
    server.makeConnection(transport)
    server.dataReceived(b"a LOGIN alice secret\r\nb SELECT INBOX\r\n")
    assert b"b OK" in transport.value()
    transport.clear()
    transport.writes = 0
    return server


def deliver(store, *messages):
    result_of(store.ensure_user("alice"))
    inbox = result_of(store.get_mailbox("alice", "INBOX"))
    for data in messages:
        result_of(store.append(inbox.id, data))


def test_a_big_body_waits_for_the_client_and_arrives_whole(store):
    body = big_message(5 * CHUNK)
    deliver(store, body, SMALL)
    transport = PushingBackTransport(limit=64 * 1024)
    server = selected_session(store, transport)
    server.dataReceived(b"f FETCH 1:2 (BODY.PEEK[])\r\n")
    received = []
    for _ in range(100):
        received.append(transport.drain())
        if received[-1].endswith(b"f OK FETCH completed\r\n"):
            break
    answer = b"".join(received)
    assert answer == (
        b"* 1 FETCH (BODY[] {%d}\r\n" % len(body) + body + b")\r\n"
        + b"* 2 FETCH (BODY[] {%d}\r\n" % len(SMALL) + SMALL + b")\r\n"
        + b"f OK FETCH completed\r\n"
    )
    # It waited for the reader instead of holding the whole body.
    assert len([part for part in received if part]) >= 5
    assert transport.most_held <= 64 * 1024 + CHUNK
    assert transport.producer is None


def test_small_messages_go_out_together(store):
    deliver(store, *[SMALL] * 50)
    transport = PushingBackTransport(limit=10 * CHUNK)
    server = selected_session(store, transport)
    server.dataReceived(b"f UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[])\r\n")
    answer = transport.value()
    assert answer.endswith(b"f OK FETCH completed\r\n")
    assert len(re.findall(rb"\* \d+ FETCH \(UID \d+ FLAGS \(\\Recent\) BODY\[HEADER\.FIELDS \(SUBJECT\)\] ", answer)) == 50
    # Fifty answers and the tagged line, in one write.
    assert transport.writes == 1


def test_a_connection_lost_while_the_client_is_not_reading_ends_the_fetch(store):
    deliver(store, big_message(3 * CHUNK))
    transport = PushingBackTransport(limit=1024)
    server = selected_session(store, transport)
    server.dataReceived(b"f FETCH 1 (BODY.PEEK[])\r\n")
    assert server.paused  # the command is waiting for the client
    producer = transport.producer
    held = transport.value()
    producer.stopProducing()
    server.connectionLost(Failure(ConnectionLost()))
    assert transport.value() == held
    assert transport.producer is None


def test_output_writes_nothing_after_bye():
    transport = StringTransport()
    closing = []
    out = Output(transport, lambda: bool(closing))
    out.write(b"* 1 FETCH (UID 1)\r\n")
    closing.append(True)
    out.finish()
    assert transport.value() == b""
    assert transport.producer is None
