"""
POP3 against hostile and careless clients (issue 4): STLS and what was
pipelined behind it, plain-text logins off loopback, over-long lines, bad
commands, a client trickling bytes before login, password guessing, too many
sessions per user, and malformed arguments of every command.

The protocol class on a StringTransport with a Clock comes first; the real
server (``twistd -n gateway``) over loopback sockets last, where only real
sockets show it: the close of a trickling client, a flood on one connection,
and that the next client is still served and never sees another user's mail.
"""

from __future__ import annotations

import base64
import poplib
import socket
import time

import attrs
import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ISSLTransport
from twisted.logger import capturedLogs
from zope.interface import alsoProvides

from gateway.config import AuthConfig, LimitsConfig
from gateway.store.sqlite.store import SQLiteStore
from tests.deferreds import result_of
from tests.serverproc import GatewayProcess
from tests.pop3.test_server import FIRST, SECOND, Transport, make_server

REMOTE_HOST = IPv4Address("TCP", "192.0.2.1", 110)
REMOTE_PEER = IPv4Address("TCP", "198.51.100.7", 40000)
DISALLOWED = b"-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\r\n"


class ContextFactory:
    """Stands for gateway.net.tls.CurrentCertificate; the transport only records it."""


class TlsTransport(Transport):
    """A transport whose startTLS switches at once, as far as the protocol can tell."""

    tls_context = None

    def startTLS(self, context_factory, normal=True):
        self.tls_context = context_factory
        alsoProvides(self, ISSLTransport)


def auth_plain(*fields):
    return base64.b64encode(b"\0".join(fields))


def connect(server, host=None, peer=None, transport=TlsTransport):
    s = server.connect(*(a for a in (host, peer) if a is not None))
    # Swap in a transport that can start TLS, keeping the addresses.
    tls = transport(hostAddress=s.transport.getHost(), peerAddress=s.transport.getPeer())
    tls.write(s.transport.value())
    s.transport = tls
    s.protocol.transport = tls
    return s


@pytest.fixture
def server(tmp_path):
    s = make_server(tmp_path)
    yield s
    s.store.close()


@pytest.fixture
def tls_server(tmp_path):
    s = make_server(tmp_path, context_factory=ContextFactory())
    s.deliver(FIRST)
    yield s
    s.store.close()


# STLS (RFC 2595 4)


def test_capa_offers_stls_before_login_only(tls_server):
    s = connect(tls_server)
    s.read()
    assert s.ask(b"CAPA").split(b"\r\n")[1] == b"STLS"
    s.login()
    assert b"STLS" not in s.ask(b"CAPA")
    assert s.ask(b"STLS") == b"-ERR Command not valid in this state\r\n"


def test_stls_starts_tls_with_the_context_factory(tls_server):
    s = connect(tls_server)
    s.read()
    assert s.ask(b"STLS") == b"+OK Begin TLS negotiation\r\n"
    assert s.transport.tls_context is tls_server.factory.context_factory
    # The first bytes through TLS: STLS is gone from CAPA, a second STLS fails.
    capa = s.ask(b"CAPA")
    assert capa.startswith(b"+OK Capability list follows\r\nTOP\r\n") and b"STLS" not in capa
    assert s.ask(b"STLS") == b"-ERR TLS is already active\r\n"
    s.login()


def test_commands_pipelined_behind_stls_never_run(tls_server):
    s = connect(tls_server)
    s.read()
    s.send(b"USER alice\r\nSTLS\r\nUSER alice\r\nPASS secret\r\nDELE 1\r\nQUIT\r\n")
    assert s.read() == b"+OK Send PASS\r\n+OK Begin TLS negotiation\r\n"
    # RFC 2595 4: the USER before STLS is forgotten too.
    assert s.ask(b"PASS secret") == b"-ERR USER required before PASS\r\n"
    assert s.ask(b"STAT") == b"-ERR Command not valid in this state\r\n"
    assert tls_server.uids() != []
    assert not s.transport.disconnecting


def test_stls_without_certificate_is_unknown(server):
    s = connect(server)
    s.read()
    assert b"STLS" not in s.ask(b"CAPA")
    assert s.ask(b"STLS") == b"-ERR Unknown command\r\n"


def test_implicit_tls_session_is_secure(tls_server):
    def implicit(**addresses):
        transport = Transport(**addresses)
        alsoProvides(transport, ISSLTransport)
        return transport

    s = connect(tls_server, REMOTE_HOST, REMOTE_PEER, transport=implicit)
    s.read()
    capa = s.ask(b"CAPA")
    assert b"STLS" not in capa and b"\r\nUSER\r\n" in capa
    assert s.ask(b"STLS") == b"-ERR TLS is already active\r\n"
    s.login()


# Plain-text logins off loopback


def test_plaintext_refused_off_loopback_before_tls(tls_server):
    s = connect(tls_server, REMOTE_HOST, REMOTE_PEER)
    s.read()
    assert s.ask(b"CAPA") == (
        b"+OK Capability list follows\r\nSTLS\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
        b"PIPELINING\r\nEXPIRE NEVER\r\nIMPLEMENTATION gateway\r\n.\r\n"
    )
    with capturedLogs() as events:
        assert s.ask(b"USER alice") == DISALLOWED
        assert s.ask(b"PASS secret") == DISALLOWED
        assert s.ask(b"AUTH PLAIN " + auth_plain(b"", b"alice", b"secret")) == DISALLOWED
        assert s.ask(b"AUTH PLAIN") == DISALLOWED
    assert s.ask(b"AUTH") == b"+OK Supported mechanisms follow\r\n.\r\n"
    assert s.ask(b"STAT") == b"-ERR Command not valid in this state\r\n"
    text = "\n".join(str(event.get("log_format", "")).format(**event) for event in events)
    assert "reason=plaintext-disallowed" in text and "secret" not in text
    # After STLS the same client may log in.
    assert s.ask(b"STLS") == b"+OK Begin TLS negotiation\r\n"
    assert b"\r\nUSER\r\nSASL PLAIN\r\n" in s.ask(b"CAPA")
    s.login()


def test_plaintext_allowed_off_loopback_when_configured(tmp_path):
    server = make_server(tmp_path, auth=AuthConfig(failure_delay=2.0, plaintext_without_tls=True))
    s = server.connect(REMOTE_HOST, REMOTE_PEER)
    assert b"\r\nUSER\r\nSASL PLAIN\r\n" in s.ask(b"CAPA")
    s.login()
    server.store.close()


# Limits


def test_bad_commands_close_the_session_at_the_limit(tmp_path):
    server = make_server(tmp_path, limits=LimitsConfig(max_bad_commands=3))
    s = server.connect()
    s.read()
    s.send(b"HELO\r\nSTAT\r\nCAPA\r\nRETR\r\nNOOP\r\n")
    assert s.read() == (
        b"-ERR Unknown command\r\n-ERR Command not valid in this state\r\n+OK Capability list follows\r\n"
        b"TOP\r\nUIDL\r\nUSER\r\nSASL PLAIN\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nEXPIRE NEVER\r\n"
        b"IMPLEMENTATION gateway\r\n.\r\n"
        # The pipelined NOOP after the third bad command is not run.
        b"-ERR Command not valid in this state\r\n-ERR Too many bad commands\r\n"
    )
    assert s.transport.disconnecting
    server.store.close()


def test_a_session_keeps_the_limits_it_connected_under(tmp_path):
    from gateway.reload import LiveConfig

    server = make_server(tmp_path, limits=LimitsConfig(max_bad_commands=2))
    live = LiveConfig(server.config)
    server.factory.config = live
    first = server.connect()
    first.read()
    # A SIGHUP reload swaps the config: new sessions see it, running ones not.
    live.current = attrs.evolve(server.config, limits=LimitsConfig(max_bad_commands=100))
    second = server.connect()
    second.read()
    first.send(b"BOGUS\r\nBOGUS\r\n")
    assert first.read() == b"-ERR Unknown command\r\n-ERR Unknown command\r\n-ERR Too many bad commands\r\n"
    second.send(b"BOGUS\r\nBOGUS\r\n")
    assert second.read() == b"-ERR Unknown command\r\n-ERR Unknown command\r\n"
    assert not second.transport.disconnecting
    server.store.close()


def test_overlong_lines_count_as_bad_commands(tmp_path):
    server = make_server(tmp_path, limits=LimitsConfig(max_bad_commands=2, max_line_length=8192))
    s = server.connect()
    s.read()
    s.send(b"x" * 9000)
    s.send(b"y" * 9000)
    assert s.read() == b"-ERR Line too long\r\n"
    s.send(b"\r\n" + b"z" * 8193 + b"\r\n")
    assert s.read() == b"-ERR Line too long\r\n-ERR Too many bad commands\r\n"
    assert s.transport.disconnecting
    server.store.close()


def test_prelogin_deadline_closes_a_trickling_client(tmp_path):
    server = make_server(tmp_path, limits=LimitsConfig(prelogin_timeout=10))
    s = server.connect()
    s.read()
    # One byte a second resets an idle timer every time; the deadline is absolute.
    trickle = b"CAPA\r\nUSER alic"
    for byte in trickle:
        server.clock.advance(0.5)
        s.send(bytes([byte]))
        assert not s.transport.disconnecting
    assert s.read().endswith(b"IMPLEMENTATION gateway\r\n.\r\n")
    server.clock.advance(10 - 0.5 * len(trickle) - 0.01)
    assert s.read() == b""
    server.clock.advance(0.01)
    assert s.read() == b"-ERR [SYS/TEMP] Disconnected for inactivity\r\n"
    assert s.transport.disconnecting
    server.store.close()


def test_prelogin_deadline_ends_at_login(tmp_path):
    server = make_server(tmp_path, limits=LimitsConfig(prelogin_timeout=10))
    s = server.connect()
    server.clock.advance(9)
    s.login()
    server.clock.advance(100)
    assert not s.transport.disconnecting
    assert s.ask(b"STAT") == b"+OK 0 0\r\n"
    assert server.clock.getDelayedCalls() != []
    s.drop()
    # The idle timer and the deadline are gone with the connection.
    assert server.clock.getDelayedCalls() == []
    server.store.close()


def test_failures_wait_a_doubling_capped_delay_and_lock_out_only_that_user(tmp_path):
    limits = LimitsConfig(failed_logins_per_ip=3, failed_login_window=300)
    server = make_server(tmp_path, limits=limits, auth=AuthConfig(failure_delay=1.0))
    s = server.connect()
    s.read()
    for delay in (1.0, 2.0, 4.0):
        s.send(b"USER alice\r\nPASS guess\r\n")
        assert s.read() == b"+OK Send PASS\r\n"
        server.clock.advance(delay - 0.01)
        assert s.read() == b""
        server.clock.advance(0.01)
        assert s.read() == b"-ERR [AUTH] Authentication failed\r\n"
    # Alice is locked out here: even her right password is not checked.
    s.send(b"USER alice\r\nPASS secret\r\n")
    server.clock.advance(4.0)
    assert s.read() == b"+OK Send PASS\r\n-ERR [SYS/TEMP] Too many failed logins, try again later\r\n"
    # Bob behind the same address logs in at once: never refused, never delayed.
    bob = server.connect()
    bob.login(b"bob", b"hunter2")
    bob.ask(b"QUIT")
    bob.drop()
    # Failures of any user from the address keep doubling the delay, up to 15 s.
    for delay in (8.0, 15.0, 15.0):
        s.send(b"AUTH PLAIN " + auth_plain(b"", b"nobody", b"guess") + b"\r\n")
        server.clock.advance(delay - 0.01)
        assert s.read() == b""
        server.clock.advance(0.01)
        assert s.read() == b"-ERR [AUTH] Authentication failed\r\n"
    # Alice at another address is not affected.
    other = server.connect(peer=IPv4Address("TCP", "127.0.0.9", 40001))
    other.login()
    other.ask(b"QUIT")
    other.drop()
    # Once the failures leave the window, the first address may log in again.
    server.clock.advance(300)
    server.connect().login()
    server.store.close()


def test_a_login_queued_for_its_check_leaves_the_queue_with_its_connection(tmp_path):
    server = make_server(tmp_path, limits=LimitsConfig(password_checks_per_ip=1), auth=AuthConfig(failure_delay=1.0))
    first, gone, waiting = server.connect(), server.connect(), server.connect()
    with capturedLogs() as events:
        for session, user, password in ((first, b"alice", b"guess"), (gone, b"bob", b"guess"),
                                        (waiting, b"bob", b"hunter2")):
            session.read()
            session.send(b"USER " + user + b"\r\nPASS " + password + b"\r\n")
            assert session.read() == b"+OK Send PASS\r\n"
        gone.drop()
        server.clock.advance(1.0)
    assert first.read() == b"-ERR [AUTH] Authentication failed\r\n"
    assert waiting.read().startswith(b"+OK Maildrop has")
    # The dropped login was never checked.
    lines = [event["log_format"].format(**event) for event in events if event.get("log_namespace") == "gateway.auth"]
    assert lines == [
        "login failed: protocol=pop3 user=alice ip=127.0.0.1 reason=bad-credentials",
        "login ok: protocol=pop3 user=bob ip=127.0.0.1",
    ]
    assert not any("log_failure" in event for event in events)
    server.store.close()


def test_sessions_per_user_are_limited(tmp_path):
    server = make_server(tmp_path, limits=LimitsConfig(max_connections_per_user=1), lock_session=False)
    first = server.connect()
    first.login()
    second = server.connect()
    second.read()
    second.send(b"USER alice\r\nPASS secret\r\n")
    assert second.read() == b"+OK Send PASS\r\n-ERR [IN-USE] Too many sessions for this user\r\n"
    # Another user is not affected; the place frees when the first session ends.
    server.connect().login(b"bob", b"hunter2")
    first.ask(b"QUIT")
    first.drop()
    second.send(b"USER alice\r\nPASS secret\r\n")
    assert second.read().startswith(b"+OK Send PASS\r\n+OK Maildrop has")
    server.store.close()


def test_login_attempts_are_logged_without_passwords(server):
    s = server.connect()
    s.read()
    with capturedLogs() as events:
        s.send(b"USER alice\r\nPASS wrong-one\r\n")
        server.clock.advance(2)
        s.send(b"USER alice\r\nPASS secret\r\n")
    lines = [event["log_format"].format(**event) for event in events if event.get("log_namespace") == "gateway.auth"]
    assert lines == [
        "login failed: protocol=pop3 user=alice ip=127.0.0.1 reason=bad-credentials",
        "login ok: protocol=pop3 user=alice ip=127.0.0.1",
    ]
    assert not any("wrong-one" in repr(event) or "secret" in repr(event) for event in events)


# Malformed arguments and commands out of place


@pytest.mark.parametrize(
    ("command", "answer"),
    [
        (b"RETR -1", b"-ERR Invalid message number\r\n"),
        (b"RETR 0", b"-ERR Invalid message number\r\n"),
        (b"RETR 1 2 3", b"-ERR Syntax error\r\n"),
        (b"RETR 99999999999999999999", b"-ERR Invalid message number\r\n"),
        (b"RETR 3", b"-ERR No such message, only 2 messages in maildrop\r\n"),
        (b"TOP 1 -1", b"-ERR Invalid line count\r\n"),
        (b"TOP 1 99999999999999999999", b"-ERR Invalid line count\r\n"),
        (b"TOP 1 +1", b"-ERR Invalid line count\r\n"),
        (b"DELE 1\x00", b"-ERR Invalid message number\r\n"),
        (b"LIST \x1b[2J", b"-ERR Invalid message number\r\n"),
        (b"UIDL 1_0", b"-ERR Invalid message number\r\n"),
        (b"RE\x00TR 1", b"-ERR Unknown command\r\n"),
        (b"\x00", b"-ERR Unknown command\r\n"),
        (b"\x7f\x08\x07", b"-ERR Unknown command\r\n"),
        (b"STAT\r", b"-ERR Unknown command\r\n"),
        (b"do_STAT", b"-ERR Unknown command\r\n"),
        (b"__INIT__", b"-ERR Unknown command\r\n"),
        (b"USER bob", b"-ERR Command not valid in this state\r\n"),
        (b"PASS hunter2", b"-ERR Command not valid in this state\r\n"),
        (b"AUTH PLAIN " + auth_plain(b"", b"bob", b"hunter2"), b"-ERR Command not valid in this state\r\n"),
        (b"APOP bob 0123", b"-ERR Unknown command\r\n"),
    ],
)
def test_malformed_commands_after_login(server, command, answer):
    server.deliver(FIRST)
    server.deliver(SECOND)
    server.deliver(b"Subject: bob's\r\n\r\nbob only\r\n", user="bob")
    s = server.connect()
    s.login()
    with capturedLogs() as events:
        assert s.ask(command) == answer
    assert not any("log_failure" in event for event in events)
    assert s.ask(b"STAT") == b"+OK 2 %d\r\n" % (len(FIRST) + len(SECOND))


@pytest.mark.parametrize(
    ("command", "answer"),
    [
        (b"RETR 1", b"-ERR Command not valid in this state\r\n"),
        (b"TOP 1 0", b"-ERR Command not valid in this state\r\n"),
        (b"PASS secret", b"-ERR USER required before PASS\r\n"),
        (b"AUTH PLAIN !!!", b"-ERR Invalid BASE64 encoding\r\n"),
        (b"AUTH PLAIN " + auth_plain(b"bob", b"alice", b"secret"), b"-ERR Invalid authorization identity\r\n"),
        (b"AUTH PLAIN " + auth_plain(b"", b"", b""), b"-ERR Invalid PLAIN response\r\n"),
        (b"AUTH PLAIN " + auth_plain(b"", b"", b"secret"), b"-ERR Invalid PLAIN response\r\n"),
        (b"AUTH PLAIN " + auth_plain(b"alice", b"secret"), b"-ERR Invalid PLAIN response\r\n"),
        (b"AUTH PLAIN " + auth_plain(b"", b"alice", b"secret", b"x"), b"-ERR Invalid PLAIN response\r\n"),
        (b"AUTH PLAIN =", b"-ERR Invalid PLAIN response\r\n"),
        (b"AUTH GSSAPI", b"-ERR Unsupported authentication mechanism\r\n"),
        (b"AUTH PLAIN a b", b"-ERR Syntax error\r\n"),
        (b"USER", b"-ERR Syntax error\r\n"),
    ],
)
def test_malformed_commands_before_login(server, command, answer):
    s = server.connect()
    s.read()
    assert s.ask(command) == answer
    s.login()


def test_auth_plain_continuation_with_empty_parts_and_bad_base64(server):
    s = server.connect()
    s.read()
    for response in (b"=", b"%%%", auth_plain(b"", b"", b""), auth_plain(b"bob", b"alice", b"secret")):
        assert s.ask(b"AUTH PLAIN") == b"+ \r\n"
        assert s.ask(response).startswith(b"-ERR Invalid ")
    assert s.ask(b"AUTH PLAIN") == b"+ \r\n"
    assert s.ask(b"x" * 70_000) == b"-ERR Line too long\r\n"
    # Back in the AUTHORIZATION state, not stuck in the exchange.
    s.login()


# The real server over loopback sockets


ALICE_MESSAGE = b"From: a@example.org\r\nSubject: for alice\r\n\r\nalice's body\r\n"
BOB_MESSAGE = b"From: b@example.org\r\nSubject: for bob\r\n\r\nBOB-SECRET-BODY\r\n"


def hostile_gateway(base, prelogin_timeout: int):
    """A POP3 server holding a message of alice's and one of bob's."""
    config = base / "gateway.toml"
    config.write_text(
        "[auth]\nfailure_delay = 0.1\n[limits]\nprelogin_timeout = %d\nmax_bad_commands = 10\n"
        "failed_logins_per_ip = 50\n" % prelogin_timeout
    )
    data = base / "data"
    server = GatewayProcess(data, imap=None, lmtp=None, config=config)
    with server:
        server.add_user("alice", "secret")
        server.add_user("bob", "hunter2")
        store = SQLiteStore(data / "store")
        try:
            for user, message in (("alice", ALICE_MESSAGE), ("bob", BOB_MESSAGE)):
                result_of(store.ensure_user(user))
                inbox = result_of(store.get_mailbox(user, "INBOX"))
                result_of(store.append(inbox.id, message))
        finally:
            store.close()
        yield server


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    # A deadline no password check under load comes near: these tests are not about it.
    yield from hostile_gateway(tmp_path_factory.mktemp("hostile"), prelogin_timeout=120)


@pytest.fixture
def short_deadline_gateway(tmp_path):
    yield from hostile_gateway(tmp_path, prelogin_timeout=2)


def raw(gateway) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gateway.port("pop3")), timeout=10)
    assert sock.recv(1024).startswith(b"+OK ")
    return sock


def read_until_closed(sock, limit=1_000_000) -> bytes:
    """
    Everything the server sends until it closes; bounded by the socket
    timeout and ``limit``.  A server that closes with the client's input
    unread resets the connection (RFC 1122 4.2.2.13): the reset comes after
    all it sent, so it ends the stream as a close does.
    """
    received = b""
    while len(received) < limit:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"server kept sending: {received[:200]!r}")


def assert_still_serves_alice(gateway):
    client = poplib.POP3("127.0.0.1", gateway.port("pop3"), timeout=10)
    try:
        client.user("alice")
        client.pass_("secret")
        assert client.stat() == (1, len(ALICE_MESSAGE))
        assert b"\r\n".join(client.retr(1)[1]) + b"\r\n" == ALICE_MESSAGE
    finally:
        client.quit()


def test_e2e_trickling_client_is_closed_at_the_prelogin_deadline(short_deadline_gateway):
    gateway = short_deadline_gateway
    sock = raw(gateway)
    received = b""
    started = time.monotonic()
    sock.settimeout(0.2)
    try:
        # A byte every 0.2 s (the recv timeout paces it) is never idle for
        # long; the server must still close at its 2 s deadline.
        for byte in b"USER alice\r\nPASS secre" * 10:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            try:
                chunk = sock.recv(1024)
            except socket.timeout:
                continue
            if not chunk:
                break
            received += chunk
        else:
            raise AssertionError("still connected after 40 bytes")
    finally:
        sock.close()
    assert received.endswith(b"-ERR [SYS/TEMP] Disconnected for inactivity\r\n")
    assert time.monotonic() - started < 30
    assert_still_serves_alice(gateway)


def test_e2e_flood_of_bad_commands_is_cut_off(gateway):
    sock = raw(gateway)
    sock.sendall(b"".join(b"BOGUS %d\r\n" % n for n in range(10_000)))
    received = read_until_closed(sock)
    sock.close()
    assert received == b"-ERR Unknown command\r\n" * 10 + b"-ERR Too many bad commands\r\n"
    assert_still_serves_alice(gateway)


def test_e2e_overlong_lines_do_not_end_the_session(gateway):
    sock = raw(gateway)
    sock.sendall(b"A" * 1_000_000 + b"\r\nUSER alice\r\nPASS secret\r\nSTAT\r\nQUIT\r\n")
    received = read_until_closed(sock)
    sock.close()
    assert received == (
        b"-ERR Line too long\r\n+OK Send PASS\r\n+OK Maildrop has 1 messages (%d octets)\r\n+OK 1 %d\r\n"
        b"+OK Bye, 0 messages deleted\r\n" % (len(ALICE_MESSAGE), len(ALICE_MESSAGE))
    )
    assert_still_serves_alice(gateway)


def test_e2e_hostile_session_never_reaches_another_users_mail(gateway):
    sock = raw(gateway)
    commands = [
        b"AUTH PLAIN " + auth_plain(b"bob", b"alice", b"secret"),
        b"USER bob\x00alice",
        b"PASS hunter2",
        b"USER alice",
        b"PASS secret",
        b"RETR 1",
        b"RETR 2",
        b"RETR -1",
        b"RETR 1 2 3",
        b"TOP 1 -1",
        b"TOP 1 99999999999999999999",
        b"USER bob",
        b"AUTH PLAIN " + auth_plain(b"", b"bob", b"hunter2"),
        b"TOP 1 100",
        b"QUIT",
    ]
    sock.sendall(b"".join(command + b"\r\n" for command in commands))
    received = read_until_closed(sock)
    sock.close()
    assert b"BOB-SECRET-BODY" not in received and b"for bob" not in received
    dot_stuffed = ALICE_MESSAGE + b".\r\n"
    assert received == (
        b"-ERR Invalid authorization identity\r\n"
        b"+OK Send PASS\r\n-ERR [AUTH] Authentication failed\r\n"
        b"+OK Send PASS\r\n+OK Maildrop has 1 messages (%d octets)\r\n"
        b"+OK %d octets\r\n%s"
        b"-ERR No such message, only 1 messages in maildrop\r\n"
        b"-ERR Invalid message number\r\n"
        b"-ERR Syntax error\r\n"
        b"-ERR Invalid line count\r\n"
        b"-ERR Invalid line count\r\n"
        b"-ERR Command not valid in this state\r\n"
        b"-ERR Command not valid in this state\r\n"
        b"+OK Top of message follows\r\n%s"
        b"+OK Bye, 0 messages deleted\r\n"
        % (len(ALICE_MESSAGE), len(ALICE_MESSAGE), dot_stuffed, dot_stuffed)
    )
    assert_still_serves_alice(gateway)
