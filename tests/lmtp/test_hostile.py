"""
Hostile LMTP input (issue 4): each abuse gets its documented reply, leaves
no spool file and no partial message behind, and the server goes on
serving.  The listener runs on a StringTransport over the real SQLite store,
configured the way ``service.py`` builds it (``build_factory``), so the DATA
spool lives in the store's own ``tmp/``; the last test repeats the
mid-DATA disconnect against the real server over a socket.
"""

from __future__ import annotations

import errno
import os
import re
import smtplib
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from gateway.config import Config, LimitsConfig, LmtpConfig
from gateway.lmtp.server import build_factory
from gateway.lmtp.spool import IN_MEMORY
from gateway.store.interfaces import NoSuchMailbox, NoSuchUser
from gateway.store.sqlite.store import SQLiteStore
from tests.deferreds import result_of
from tests.serverproc import GatewayProcess, run_gateway

PEER = IPv4Address("TCP", "127.0.0.1", 40000)
USERS = frozenset({"alice", "bob"})
# RFC 5321 4.2: a reply line is a three-digit code, then " " or "-", then text.
REPLY = re.compile(rb"^[2-5][0-9][0-9][ -][\x20-\x7e]*$")
# The trace fields on top of a copy (RFC 5321 4.4, Dovecot's shape); the
# transaction id is random and the date the wall clock's.
TRACE = re.compile(
    rb"Return-Path: <(?P<sender>[^>]*)>\r\n"
    rb"Delivered-To: (?P<recipient>\S+)\r\n"
    rb"Received: from (?P<helo>\S+) \(\[127\.0\.0\.1\]\)\r\n"
    rb"\tby (?P<host>\S+) with LMTP\r\n"
    rb"\tid [A-Za-z0-9+/]{22}\r\n"
    rb"\t\(envelope-from <(?P=sender)>\)\r\n"
    rb"\tfor <(?P=recipient)>; [A-Z][a-z]{2}, [0-9]{2} [A-Z][a-z]{2} [0-9]{4} [0-9:]{8} [+-][0-9]{4}\r\n"
)


def traced(body: bytes) -> tuple[dict, bytes]:
    """The trace fields' values and the message under them."""
    match = TRACE.match(body)
    assert match, body[:400]
    return match.groupdict(), body[match.end():]


def spool_files(directory) -> list[str]:
    """Files under ``directory`` that this process has open, deleted or not."""
    prefix = str(directory) + os.sep
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(prefix):
            found.append(target)
    return found


def bodies(store, user="alice"):
    """The user's INBOX messages, ascending by UID; none before the first delivery."""
    try:
        info = result_of(store.get_mailbox(user, "INBOX"))
    except (NoSuchUser, NoSuchMailbox):
        return []
    found = []
    for record in result_of(store.list_messages(info.id)):
        with result_of(store.open_message(info.id, record.uid)) as body:
            found.append(body.read())
    return found


class Session:
    """One LMTP session of the listener ``service.py`` would build."""

    def __init__(self, store, **limits):
        lmtp_keys = {"max_message_size", "max_recipients"}
        config = Config(
            hostname="mx.example.test",
            lmtp=LmtpConfig(**{k: v for k, v in limits.items() if k in lmtp_keys}),
            limits=LimitsConfig(**{k: v for k, v in limits.items() if k not in lmtp_keys}),
        )
        self.clock = Clock()
        self.server = build_factory(store, USERS, config, self.clock).buildProtocol(PEER)
        self.transport = StringTransport(peerAddress=PEER)
        self.server.makeConnection(self.transport)
        assert self.replies() == [b"220 mx.example.test LMTP ready"]

    def send(self, data: bytes) -> list[bytes]:
        self.server.dataReceived(data)
        # The end of the reactor turn: group commit stores what it gathered.
        self.clock.advance(0)
        return self.replies()

    def replies(self) -> list[bytes]:
        lines = self.transport.value().split(b"\r\n")
        self.transport.clear()
        assert lines[-1] == b""
        for line in lines[:-1]:
            assert REPLY.match(line) and len(line) <= 510, line
        return lines[:-1]

    def start(self, *recipients: bytes):
        self.send(b"LHLO client.example.test\r\nMAIL FROM:<sender@example.org>\r\n")
        for recipient in recipients or (b"<alice@example.test>",):
            assert self.send(b"RCPT TO:" + recipient + b"\r\n") == [b"250 2.1.5 OK"]
        assert self.send(b"DATA\r\n") == [b"354 Start mail input; end with <CRLF>.<CRLF>"]

    def closed(self) -> bool:
        return self.transport.disconnecting

    def close(self):
        self.server.connectionLost(None)


def still_serving(store, subject: bytes):
    """A fresh session on the same store delivers; returns its reply."""
    session = Session(store)
    session.start()
    reply = session.send(b"Subject: " + subject + b"\r\n\r\nfine\r\n.\r\n")
    session.close()
    return reply


def test_over_long_command_lines(store):
    session = Session(store, max_line_length=1000)
    assert session.send(b"NOOP " + b"x" * 1000 + b"\r\n") == [b"500 5.5.2 Line too long"]
    assert session.send(b"NOOP\r\n") == [b"250 2.0.0 OK"]
    # A line that never ends cannot be resynchronised: refused and closed,
    # and the buffer does not grow with it.
    assert session.send(b"y" * 1001) == [b"500 5.5.2 Line too long, closing connection"]
    assert session.closed()
    assert len(session.server._buffer) == 0
    assert still_serving(store, b"after long lines") == [b"250 2.0.0 <alice@example.test> Saved as UID 1"]


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"NO\x00OP", b"500 5.5.1 Command unrecognized"),
        (b"NOOP\x00", b"500 5.5.1 Command unrecognized"),
        (b"\x1b[31mLHLO x", b"500 5.5.1 Command unrecognized"),
        (b"\x00", b"500 5.5.1 Command unrecognized"),
        (b"\xff\xfe\xfd", b"500 5.5.1 Command unrecognized"),
        (b"   ", b"500 5.5.2 Syntax error"),
        (b"MAIL FROM:<a\x00b@example.org>", b"501 5.5.4 Syntax: MAIL FROM:<address>"),
        (b'MAIL FROM:<"a\x00b"@example.org>', b"553 5.1.7 Invalid sender address"),
        (b'MAIL FROM:<"a\rb"@example.org>', b"553 5.1.7 Invalid sender address"),
        # Unknown parameters are named in the reply only when they are keywords.
        (b"MAIL FROM:<a@example.org> X\x01Y=1", b"555 5.5.4 Unsupported parameter"),
        (b"MAIL FROM:<a@example.org> XFOO=\x01", b"555 5.5.4 Unsupported parameter XFOO"),
    ],
)
def test_nul_and_control_bytes(store, line, reply):
    session = Session(store)
    session.send(b"LHLO c\r\n")
    assert session.send(line + b"\r\n") == [reply]
    assert session.send(b"NOOP\r\n") == [b"250 2.0.0 OK"]
    assert not session.closed()


def test_commands_in_the_wrong_order(store):
    session = Session(store)
    assert session.send(b"MAIL FROM:<a@example.org>\r\n") == [b"503 5.5.1 Send LHLO first"]
    assert session.send(b"LHLO c\r\n")[-1] == b"250 SIZE 52428800"
    assert session.send(b"RCPT TO:<alice>\r\n") == [b"503 5.5.1 MAIL first"]
    assert session.send(b"DATA\r\n") == [b"503 5.5.1 MAIL first"]
    assert session.send(b"MAIL FROM:<a@example.org>\r\n") == [b"250 2.1.0 Sender OK"]
    # RFC 2033 4.2: DATA with no accepted recipient is 503.
    assert session.send(b"DATA\r\n") == [b"503 5.5.1 No valid recipients"]
    assert session.send(b"RCPT TO:<nobody>\r\n") == [b"550 5.1.1 <nobody@mx.example.test> User doesn't exist"]
    assert session.send(b"DATA\r\n") == [b"503 5.5.1 No valid recipients"]
    # The body the client sends anyway is read as commands, none of them valid.
    assert session.send(b"Subject: x\r\n.\r\n") == [b"500 5.5.1 Command unrecognized", b"500 5.5.1 Command unrecognized"]
    assert session.send(b"RCPT TO:<alice>\r\nDATA\r\nhi\r\n.\r\n") == [
        b"250 2.1.5 OK",
        b"354 Start mail input; end with <CRLF>.<CRLF>",
        b"250 2.0.0 <alice@mx.example.test> Saved as UID 1",
    ]
    [body] = bodies(store)
    assert traced(body) == (
        {"sender": b"a@example.org", "recipient": b"alice@mx.example.test", "helo": b"c", "host": b"mx.example.test"},
        b"hi\r\n",
    )


def test_ten_thousand_recipients(store):
    session = Session(store)
    session.send(b"LHLO c\r\nMAIL FROM:<s@example.org>\r\n")
    replies = session.send(b"".join(b"RCPT TO:<alice+%d@example.test>\r\n" % n for n in range(10_000)))
    # RFC 5321 4.5.3.1.10: the first max_recipients are taken, the rest get a
    # temporary 452 and the MTA sends them in another transaction.
    assert replies == [b"250 2.1.5 OK"] * 100 + [b"452 4.5.3 Too many recipients"] * 9_900
    assert len(session.server._recipients) == 100
    assert not session.closed()  # a 452 is not a bad command
    assert session.send(b"RSET\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<bob>\r\nDATA\r\nx\r\n.\r\n")[-1] == (
        b"250 2.0.0 <bob@mx.example.test> Saved as UID 1"
    )


def test_bare_lf_dot_does_not_end_data(store):
    # SMTP smuggling: "<LF>.<LF>" must not end the message and start a
    # forged one; only <CRLF>.<CRLF> does (RFC 5321 4.1.1.4).
    session = Session(store)
    session.start()
    smuggled = b"MAIL FROM:<ceo@example.org>\r\nRCPT TO:<bob>\r\nDATA\r\nSubject: forged\r\n"
    assert session.send(b"Subject: carrier\r\n\r\ntext\n.\n" + smuggled + b"\n.\r\n") == []
    assert session.send(b"\r\n.\r\n") == [b"250 2.0.0 <alice@example.test> Saved as UID 1"]
    assert len(bodies(store)) == 1
    assert b"Subject: forged" in bodies(store)[0]
    assert bodies(store, "bob") == []
    assert session.send(b"NOOP\r\n") == [b"250 2.0.0 OK"]


def test_final_dot_split_across_packets(store):
    session = Session(store)
    session.start()
    replies = []
    for packet in (b"Subject: split\r\n\r\nbody\r", b"\n", b".", b"\r", b"\n"):
        replies += session.send(packet)
    assert replies == [b"250 2.0.0 <alice@example.test> Saved as UID 1"]
    assert bodies(store)[0].endswith(b"\r\n\r\nbody\r\n")


@pytest.mark.parametrize("limit", [10_000, IN_MEMORY + 10_000])
def test_message_over_the_size_limit(store, limit):
    # Under IN_MEMORY the message is held in memory, over it in a spool file.
    session = Session(store, max_message_size=limit)
    assert session.send(b"LHLO c\r\n")[-1] == b"250 SIZE %d" % limit
    assert session.send(b"MAIL FROM:<s@example.org> SIZE=%d\r\n" % (limit + 1)) == [
        b"552 5.3.4 Message size exceeds fixed maximum message size"
    ]
    session.send(b"MAIL FROM:<s@example.org>\r\nRCPT TO:<alice>\r\nRCPT TO:<bob>\r\nDATA\r\n")
    assert session.send(b"Subject: big\r\n\r\n" + b"z" * (limit - 1_000) + b"\r\n") == []
    # The spool is where it should be: a file in the store's tmp/ only once
    # the message outgrows memory.
    assert bool(spool_files(store.root / "tmp")) == (limit > IN_MEMORY)
    assert session.send(b"z" * 9_000 + b"\r\n.\r\n") == [
        b"552 5.3.4 <alice@mx.example.test> Message size exceeds fixed maximum message size",
        b"552 5.3.4 <bob@mx.example.test> Message size exceeds fixed maximum message size",
    ]
    assert spool_files(store.root / "tmp") == []
    assert list((store.root / "tmp").iterdir()) == []
    assert bodies(store, "alice") == bodies(store, "bob") == []
    assert session.send(b"MAIL FROM:<s@example.org>\r\nRCPT TO:<alice>\r\nDATA\r\nsmall\r\n.\r\n")[-1] == (
        b"250 2.0.0 <alice@mx.example.test> Saved as UID 1"
    )


def test_disconnect_mid_data(store):
    session = Session(store)
    session.start(b"<alice>", b"<bob>")
    session.send(b"Subject: half\r\n\r\n" + b"half a message\r\n" * (IN_MEMORY // 16 + 1000))
    assert spool_files(store.root / "tmp")
    session.close()
    assert spool_files(store.root / "tmp") == []
    assert list((store.root / "tmp").iterdir()) == []
    assert bodies(store, "alice") == bodies(store, "bob") == []
    assert not session.clock.getDelayedCalls()
    assert still_serving(store, b"after a drop") == [b"250 2.0.0 <alice@example.test> Saved as UID 1"]


def no_space(*args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("size", [10, 100_000, IN_MEMORY + 10, IN_MEMORY + 100_000])
@pytest.mark.parametrize("recipients", [(b"<alice>", b"<bob>"), (b"<alice>",)])
def test_full_disk_while_spooling(store, monkeypatch, size, recipients):
    # A message in memory meets the full disk when the store writes it.  One
    # that spills meets it in its spool file, on /dev/full, which fails every
    # write with ENOSPC: a little over IN_MEMORY when the spool is flushed
    # at the final dot, a bigger one while it arrives, and the close fails
    # again.  With one recipient its trace fields are spooled first, into
    # the same full disk.  Either way a 452 and the session goes on.
    monkeypatch.setattr("gateway.lmtp.spill.anonymous_file", lambda directory: open("/dev/full", "w+b"))
    monkeypatch.setattr("gateway.store.sqlite.delivery._write_all", no_space)
    session = Session(store)
    session.start(*recipients)
    assert session.send(b"Subject: full\r\n\r\n" + b"x" * size + b"\r\n.\r\n") == [
        b"452 4.3.1 <%s@mx.example.test> Mail system full, try again later" % name
        for name in [b"alice", b"bob"][: len(recipients)]
    ]
    assert session.send(b"NOOP\r\n") == [b"250 2.0.0 OK"]
    assert bodies(store, "alice") == bodies(store, "bob") == []


@pytest.mark.parametrize(
    ("recipient", "reply"),
    [
        (b"<>", b"501 5.5.4 Syntax: RCPT TO:<address>"),
        (b"", b"501 5.5.4 Syntax: RCPT TO:<address>"),
        (b"<a@b@c>", b"501 5.1.3 Invalid recipient address"),
        (b"<@example.org>", b"501 5.1.3 Invalid recipient address"),
        (b'<"quoted\x01local"@example.org>', b"501 5.1.3 Invalid recipient address"),
        (b'<"quoted\rlocal"@example.org>', b"501 5.1.3 Invalid recipient address"),
        (b'<"quoted\x7flocal"@example.org>', b"501 5.1.3 Invalid recipient address"),
        (b'<"quoted local"@example.org>', b'550 5.1.1 <"quoted local"@example.org> User doesn\'t exist'),
        (b'<"alice"@example.org>', b'550 5.1.1 <"alice"@example.org> User doesn\'t exist'),
        (b"<" + b"a" * 1000 + b"@example.org>", b"550 5.1.1 Local part longer than 64 octets: no such user"),
        (b"<alice+" + b"f" * 1000 + b"@example.org>", b"550 5.1.1 Local part longer than 64 octets: no such user"),
        (b"<\xc3\xa9l\xc3\xa8ve@example.org>", b"501 5.5.4 Syntax: RCPT TO:<address>"),
        (b'<"\xc3\xa9l\xc3\xa8ve"@example.org>', b"550 5.1.1 User doesn't exist"),
        (b"<alice@" + b"d" * 300 + b".example>", b"501 5.1.3 Recipient address longer than 254 octets"),
    ],
)
def test_invalid_recipient_addresses(store, recipient, reply):
    session = Session(store)
    session.send(b"LHLO c\r\nMAIL FROM:<s@example.org>\r\n")
    assert session.send(b"RCPT TO:" + recipient + b"\r\n") == [reply]
    assert session.send(b"RCPT TO:<alice>\r\nDATA\r\nok\r\n.\r\n")[-1] == (
        b"250 2.0.0 <alice@mx.example.test> Saved as UID 1"
    )


def test_replies_held_for_one_write_go_out_before_the_session_closes(store):
    # Replies to pipelined commands wait for the end of the input to go
    # out together; the one that ends the session sends them first.
    session = Session(store, max_bad_commands=2)
    events = []
    write, lose = session.transport.write, session.transport.loseConnection
    session.transport.write = lambda data: (events.append(data), write(data))
    session.transport.loseConnection = lambda: (events.append("closed"), lose())
    session.server.dataReceived(b"NOOP\r\nBOGUS\r\nBOGUS\r\nNOOP\r\n")
    assert events == [
        b"250 2.0.0 OK\r\n500 5.5.1 Command unrecognized\r\n500 5.5.1 Command unrecognized\r\n"
        b"421 4.7.0 mx.example.test Too many bad commands, closing connection\r\n",
        "closed",
    ]


def test_too_many_bad_commands_closes_the_session(store):
    session = Session(store, max_bad_commands=3)
    assert session.send(b"LHLO c\r\nBOGUS\r\nRCPT TO:<alice>\r\nNOOP\r\n") == [
        b"250-mx.example.test", b"250-PIPELINING", b"250-ENHANCEDSTATUSCODES", b"250-8BITMIME", b"250 SIZE 52428800",
        b"500 5.5.1 Command unrecognized",
        b"503 5.5.1 MAIL first",
        b"250 2.0.0 OK",
    ]
    # Unknown users, size and recipient refusals are not bad commands.
    assert session.send(b"MAIL FROM:<s@x>\r\nRCPT TO:<nobody>\r\nRCPT TO:<nobody2>\r\n") == [
        b"250 2.1.0 Sender OK",
        b"550 5.1.1 <nobody@mx.example.test> User doesn't exist",
        b"550 5.1.1 <nobody2@mx.example.test> User doesn't exist",
    ]
    # The third bad command is answered, then the session ends; what was
    # pipelined after it is never run.
    assert session.send(b"HELO x\r\nRSET\r\n") == [
        b"500 5.5.1 This is an LMTP server: use LHLO",
        b"421 4.7.0 mx.example.test Too many bad commands, closing connection",
    ]
    assert session.closed()
    assert still_serving(store, b"after bad commands")[-1].startswith(b"250 2.0.0")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=8))
def test_fuzzed_command_lines_get_well_formed_replies(store, lines):
    # Whatever the client sends in command mode, every reply is a well-formed
    # reply line (no traceback, no echoed control byte) and nothing raises.
    session = Session(store)
    session.send(b"LHLO fuzz\r\n")
    for line in lines:
        session.send(line.replace(b"\n", b"") + b"\r\n")
    session.close()
    assert spool_files(store.root / "tmp") == []


def test_real_server_forgets_a_client_that_drops_mid_data(tmp_path):
    data = tmp_path / "data"
    run_gateway(data, "user", "add", "alice", input=b"alice-password\n")
    spool_dir = data / "store" / "tmp"
    with GatewayProcess(data, pop3=None, imap=None) as server:
        pid = server.process.pid

        def server_spools():
            found = []
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith(str(spool_dir) + os.sep):
                    found.append(target)
            return found

        def wait_for(predicate, what):
            for _ in range(400):
                if predicate():
                    return
                time.sleep(0.025)
            raise AssertionError(f"timed out waiting for {what}")

        with socket.create_connection(("127.0.0.1", server.port("lmtp")), timeout=30) as client:
            reader = client.makefile("rb")
            assert reader.readline().startswith(b"220 ")
            client.sendall(b"LHLO c\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<alice>\r\nDATA\r\n")
            while not reader.readline().startswith(b"354 "):
                pass
            # Enough to spill to a spool file (IN_MEMORY).
            client.sendall(b"Subject: dropped\r\n\r\n" + b"partial line\r\n" * 30_000)
            wait_for(server_spools, "the server to spool the message")
            # Drop the connection at once (RST), as a crashed MTA would.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            reader.close()
        wait_for(lambda: not server_spools(), "the spool to be closed")
        assert list(spool_dir.iterdir()) == []
        with smtplib.LMTP("127.0.0.1", server.port("lmtp"), timeout=30) as lmtp:
            lmtp.ehlo("c")
            lmtp.mail("s@example.org")
            lmtp.rcpt("alice")
            assert lmtp.data(b"Subject: next\r\n\r\n") == (250, b"2.0.0 <alice@localhost> Saved as UID 1")
    store = SQLiteStore(data / "store")
    try:
        assert [traced(b)[1] for b in bodies(store)] == [b"Subject: next\r\n\r\n"]
    finally:
        store.close()
