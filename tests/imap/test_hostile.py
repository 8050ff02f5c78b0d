"""
Hostile input against the IMAP server (issue 4): each case gets its
documented answer, the session (or the next one) goes on serving, and no
other user's mailbox is ever reached.

The first part talks to the protocol class on a StringTransport with a
Clock (gateway/imap/server.py, framing.py, login.py); the second to the
real server over sockets (tests/serverproc.py).
"""

from __future__ import annotations

import base64
import imaplib
import socket
import time

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ISSLTransport, ITLSTransport
from twisted.logger import globalLogPublisher
from zope.interface import directlyProvides

from gateway.config import AuthConfig, Config, ImapConfig, LimitsConfig, ProxyConfig
from gateway.imap import framing
from gateway.imap import server as imap_server
from tests.deferreds import result_of
from tests.serverproc import GatewayProcess
from tests.imap.test_compress import LaterStore
from tests.imap.test_server import MESSAGE, RecordingTransport, Session

NETWORK = IPv4Address("TCP", "192.0.2.1", 143)
REMOTE = IPv4Address("TCP", "198.51.100.7", 40000)
PRIVACY = (b" NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) "
           b"connections.")


def config(**limits) -> Config:
    return Config(auth=AuthConfig(failure_delay=1.0), limits=LimitsConfig(**limits))


def lines_of(data: bytes) -> list[bytes]:
    return data.split(b"\r\n")[:-1]


@pytest.fixture
def logged():
    events = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def login_lines(events):
    return [e["log_format"].format(**e) for e in events if e.get("log_namespace") == "gateway.auth"]


# -- plain-text login policy (RFC 3501 6.2.3, RFC 5530) --------------------


def test_off_loopback_without_tls_passwords_are_refused(store, logged):
    s = Session(store, host=NETWORK, peer=REMOTE)
    assert b"LOGINDISABLED" in s.greeting and b"AUTH=PLAIN" not in s.greeting
    caps = s.command(b"a CAPABILITY")[0].split()
    assert b"LOGINDISABLED" in caps and b"AUTH=PLAIN" not in caps
    assert s.command(b"b LOGIN alice secret") == [b"b" + PRIVACY]
    assert s.command(b"c AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==") == [b"c" + PRIVACY]
    assert s.command(b"d AUTHENTICATE PLAIN") == [b"d" + PRIVACY]
    assert s.server.state == "unauth"
    assert login_lines(logged) == [
        "login failed: protocol=imap user=alice ip=198.51.100.7 reason=plaintext-disallowed",
        "login failed: protocol=imap user=- ip=198.51.100.7 reason=plaintext-disallowed",
        "login failed: protocol=imap user=- ip=198.51.100.7 reason=plaintext-disallowed",
    ]
    assert not any("secret" in line for line in login_lines(logged))


def test_plaintext_allowed_by_config_or_under_tls(store):
    allowed = Config(auth=AuthConfig(failure_delay=1.0, plaintext_without_tls=True))
    s = Session(store, config=allowed, host=NETWORK, peer=REMOTE)
    assert b"AUTH=PLAIN" in s.greeting and b"LOGINDISABLED" not in s.greeting
    s.login()

    # An imaps listener: the transport is TLS from the first byte.
    transport = RecordingTransport(hostAddress=NETWORK, peerAddress=NETWORK)
    directlyProvides(transport, ISSLTransport, ITLSTransport)
    server = Session(store, host=NETWORK, peer=REMOTE).factory.buildProtocol(None)
    server.makeConnection(transport)
    greeting = transport.value()
    assert b"AUTH=PLAIN" in greeting and b"STARTTLS" not in greeting
    transport.clear()
    server.dataReceived(b"a LOGIN alice secret\r\n")
    assert transport.value().startswith(b"a OK [CAPABILITY ")


def test_starttls_off_loopback_then_login_and_nothing_pipelined_runs(store):
    s = Session(store, host=NETWORK, peer=REMOTE)
    factory = imap_server.build_factory(s.factory.portal, store, s.factory.config, s.clock, context_factory=object())
    server = factory.buildProtocol(None)
    transport = RecordingTransport(hostAddress=NETWORK, peerAddress=REMOTE)
    directlyProvides(transport, ITLSTransport)
    server.makeConnection(transport)
    assert b" STARTTLS" in transport.value() and b"LOGINDISABLED" in transport.value()
    transport.clear()
    # RFC 3501 6.2.1: the LOGIN pipelined in the clear must not run.
    server.dataReceived(b"a STARTTLS\r\nb LOGIN alice secret\r\n")
    assert transport.value() == b"a OK Begin TLS negotiation now\r\n"
    assert transport.tls is factory.context_factory
    transport.clear()
    # The next bytes come out of the TLS layer.
    server.dataReceived(b"c CAPABILITY\r\n")
    caps = lines_of(transport.value())[0].split()
    assert b"AUTH=PLAIN" in caps and b"STARTTLS" not in caps and b"LOGINDISABLED" not in caps
    transport.clear()
    server.dataReceived(b"d STARTTLS\r\ne LOGIN alice secret\r\n")
    answers = lines_of(transport.value())
    assert answers[0] == b"d NO [CANNOT] TLS not available"
    assert answers[1].startswith(b"e OK [CAPABILITY ")


# -- AUTHENTICATE PLAIN (RFC 4616, RFC 3501 6.2.2) --------------------------


def plain(authzid, authcid, password) -> bytes:
    return base64.b64encode(b"\0".join([authzid, authcid, password]))


def test_authenticate_plain_authzid_base64_and_cancel(store, logged):
    s = Session(store)
    assert s.command(b"a AUTHENTICATE PLAIN " + plain(b"bob", b"alice", b"secret")) == [
        b"a NO [AUTHORIZATIONFAILED] Cannot act as another user"
    ]
    assert s.command(b"b AUTHENTICATE PLAIN not*base64") == [b"b BAD Malformed PLAIN response"]
    assert s.command(b"c AUTHENTICATE PLAIN " + base64.b64encode(b"no separators")) == [
        b"c BAD Malformed PLAIN response"
    ]
    assert s.command(b"d AUTHENTICATE PLAIN") == [b"+ "]
    assert s.command(b"*") == [b"d BAD AUTHENTICATE cancelled"]
    assert s.command(b"e AUTHENTICATE PLAIN " + plain(b"alice", b"alice", b"secret"))[-1].startswith(b"e OK")
    assert s.server.account.user == "alice"
    assert "login failed: protocol=imap user=alice ip=127.0.0.1 reason=authzid-mismatch" in login_lines(logged)
    assert login_lines(logged)[-1] == "login ok: protocol=imap user=alice ip=127.0.0.1"


# -- failed logins per address, sessions per user --------------------------


def test_failures_wait_a_doubling_capped_delay_and_lock_out_only_that_user(store, logged):
    s = Session(store, config=config(failed_logins_per_ip=3))
    assert s.command(b"a LOGIN alice wrong") == []
    s.clock.advance(1.0)
    assert s.read() == b"a NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
    # The second failure waits twice as long as the first.
    assert s.command(b"b LOGIN alice wrong") == []
    s.clock.advance(1.9)
    assert s.read() == b""
    s.clock.advance(0.1)
    assert s.read() == b"b NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
    s.command(b"c LOGIN alice wrong")
    s.clock.advance(4.0)
    assert s.read() == b"c NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
    # Alice is locked out here: even her right password is not checked.
    s.command(b"d LOGIN alice secret")
    s.clock.advance(4.0)
    assert s.read() == b"d NO [UNAVAILABLE] Too many failed logins from your address; try again later\r\n"
    # Bob behind the same address logs in at once: never refused, never delayed.
    bob = Session(store, factory=s.factory, clock=s.clock)
    assert bob.command(b"e LOGIN bob other")[-1].startswith(b"e OK [CAPABILITY ")
    # Failures of any user from the address keep doubling the delay, up to 15 s.
    for tag, delay in ((b"f", 8.0), (b"g", 15.0), (b"h", 15.0)):
        s.command(tag + b" LOGIN " + tag + b"nobody wrong")
        s.clock.advance(delay - 0.01)
        assert s.read() == b""
        s.clock.advance(0.01)
        assert s.read() == tag + b" NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
    # Alice at another address is not affected.
    other = Session(store, factory=s.factory, peer=IPv4Address("TCP", "127.0.0.2", 5000), clock=s.clock)
    other.login()
    # The window slides: after failed_login_window the address may try again.
    s.clock.advance(300)
    Session(store, factory=s.factory, clock=s.clock).login()
    reasons = [line.rsplit("reason=", 1)[-1] for line in login_lines(logged) if "failed" in line]
    assert reasons == ["bad-credentials"] * 3 + ["blocked"] + ["bad-credentials"] * 3


def test_a_login_queued_for_its_check_leaves_the_queue_with_its_connection(store, logged):
    s = Session(store, config=config(password_checks_per_ip=1))
    # Alice's wrong password holds the address's one place through its delay.
    assert s.command(b"a LOGIN alice wrong") == []
    gone = Session(store, factory=s.factory, clock=s.clock)
    assert gone.command(b"a LOGIN bob wrong") == []
    waiting = Session(store, factory=s.factory, clock=s.clock)
    assert waiting.command(b"a LOGIN bob other") == []
    gone.server.connectionLost(None)
    s.clock.advance(1.0)
    assert s.read() == b"a NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
    assert waiting.read().startswith(b"a OK [CAPABILITY ")
    # The dropped login was never checked.
    assert login_lines(logged) == [
        "login failed: protocol=imap user=alice ip=127.0.0.1 reason=bad-credentials",
        "login ok: protocol=imap user=bob ip=127.0.0.1",
    ]
    assert s.factory.logins.addresses_checking() == 0


def test_id_names_the_client_only_from_a_trusted_front_end_and_before_login(store, logged):
    trusted = Config(auth=AuthConfig(failure_delay=1.0), proxy=ProxyConfig(login_trusted_networks=("127.0.0.1/32",)))
    s = Session(store, config=trusted)
    assert s.command(b'a ID ("name" "webmail" "x-originating-ip" "::ffff:192.0.2.9")') == [
        b'* ID ("name" "gateway" "version" "0.1.0")', b"a OK ID completed"]
    s.command(b"b LOGIN alice wrong")
    s.clock.advance(1.0)
    # Not an address: the claim is ignored, and the one before it stands.
    s.command(b'c ID ("x-originating-ip" "192.0.2.300")')
    s.command(b"d LOGIN alice wrong")
    s.clock.advance(2.0)
    s.login()
    # Once logged in, ID names nobody.
    s.command(b'e ID ("x-originating-ip" "192.0.2.10")')
    assert s.server.client_ip == "192.0.2.9"
    # From a peer outside login_trusted_networks the claim is ignored.
    other = Session(store, factory=s.factory, peer=IPv4Address("TCP", "127.0.0.2", 5000), clock=s.clock)
    other.command(b'a ID ("x-originating-ip" "192.0.2.11")')
    other.command(b"b LOGIN bob wrong")
    s.clock.advance(4.0)
    assert login_lines(logged) == [
        "login failed: protocol=imap user=alice ip=192.0.2.9 reason=bad-credentials",
        "login failed: protocol=imap user=alice ip=192.0.2.9 reason=bad-credentials",
        "login ok: protocol=imap user=alice ip=192.0.2.9",
        "login failed: protocol=imap user=bob ip=127.0.0.2 reason=bad-credentials",
    ]


def test_id_arguments_that_are_not_a_list_of_strings(store):
    s = Session(store)
    for argument in (b"", b" (name)", b' ("name")', b' ("a" "b"', b" NIL NIL"):
        assert s.command(b"a ID" + argument) == [b"a BAD ID takes a parenthesised list of strings or NIL"]
    assert s.command(b"b ID NIL")[-1] == b"b OK ID completed"


def test_sessions_per_user_are_limited(store):
    first = Session(store, config=config(max_connections_per_user=1)).login()
    second = Session(store, factory=first.factory, clock=first.clock)
    assert second.command(b"a LOGIN alice secret") == [b"a NO [LIMIT] Too many connections for this user"]
    assert second.server.state == "unauth"
    Session(store, factory=first.factory, clock=first.clock).login(b"bob", b"other")
    first.server.connectionLost(None)
    second.login()


# -- line and literal limits -----------------------------------------------


def test_input_behind_a_waiting_command_is_held_in_order_and_bounded(tmp_path):
    """
    While a command waits for the store, what the client pipelines behind
    it is read but not run, and the connection stays in the reactor's poll
    (not taken out and put back for every command); past HELD_INPUT octets
    it is not read until the command ends.  Then all of it runs, in order.
    """
    store = LaterStore(tmp_path / "store")
    try:
        s = Session(store).login()
        store.clock = s.clock
        assert s.send(b"a STATUS INBOX (MESSAGES)\r\nb NOOP\r\n") == b""
        assert s.server.paused and s.transport.producerState == "producing"
        s.clock.advance(0)
        tagged = [line for line in s.read().split(b"\r\n") if line[:1] in (b"a", b"b")]
        assert [line.split(b" ")[:2] for line in tagged] == [[b"a", b"OK"], [b"b", b"OK"]]
        assert s.transport.producerState == "producing"

        noops = framing.HELD_INPUT // 8
        assert s.send(b"c STATUS INBOX (MESSAGES)\r\n") == b""
        s.server.dataReceived(b"".join(b"n%05d NOOP\r\n" % n for n in range(noops)))
        assert s.read() == b""
        assert s.transport.producerState == "paused"
        s.clock.advance(0)
        assert s.transport.producerState == "producing"
        tagged = [line for line in s.read().split(b"\r\n") if line[:1] in (b"c", b"n")]
        assert tagged[0].startswith(b"c OK")
        assert tagged[1:] == [b"n%05d OK NOOP completed" % n for n in range(noops)]
    finally:
        store.close()


def test_over_long_line_is_answered_and_skipped_without_buffering(store):
    s = Session(store, config=config(max_line_length=100))
    assert s.command(b"a NOOP " + b"x" * 200) == [b"a BAD [TOOBIG] Command line too long"]
    assert s.command(b"b NOOP") == [b"b OK NOOP completed"]
    # Ten bytes at a time, a megabyte without a line end: held is bounded.
    s.send(b"c LOGIN ")
    for _ in range(100_000):
        s.server.dataReceived(b"y" * 10)
        assert len(s.server._buffer) <= 102
    # Answered at the end of the line, once it is known not to announce a
    # literal.
    assert s.read() == b""
    assert s.send(b"yyy\r\nd NOOP\r\n") == b"c BAD [TOOBIG] Command line too long\r\nd OK NOOP completed\r\n"
    # Not even a tag: the answer is untagged.
    assert s.command(b"(" * 300) == [b"* BAD [TOOBIG] Command line too long"]


def test_over_long_line_in_the_middle_of_a_command(store):
    s = Session(store, config=config(max_line_length=100))
    # The rest of a command after its literal: the answer carries its tag.
    assert s.command(b"a LOGIN {5}") == [b"+ Ready for literal data"]
    assert s.command(b"alice " + b"x" * 200) == [b"a BAD [TOOBIG] Command line too long"]
    assert s.command(b"b NOOP") == [b"b OK NOOP completed"]
    s.login()
    assert s.command(b"i IDLE") == [b"+ idling"]
    assert s.command(b"x" * 200) == [b"i BAD [TOOBIG] Command line too long"]
    assert s.command(b"c NOOP") == [b"c OK NOOP completed"]
    s.clock.advance(600)
    assert b"Still here" not in s.read()


def test_over_long_line_ending_in_a_non_synchronizing_literal_closes(store):
    s = Session(store, config=config(max_line_length=100))
    s.login()
    assert s.command(b"a APPEND INBOX " + b"x" * 200 + b" {5+}") == [b"* BYE [TOOBIG] Literal too big"]
    assert s.transport.disconnecting
    assert s.send(b"hello\r\nb NOOP\r\n") == b""


@pytest.mark.parametrize(
    "line, answer",
    [
        (b"a LOGIN {99999999999}", b"a BAD [TOOBIG] Literal too big"),
        (b"a LOGIN {" + b"9" * 50 + b"}", b"a BAD [TOOBIG] Literal too big"),
        (b"a LOGIN {-1}", b"a BAD Malformed literal"),
        (b"a LOGIN {+5}", b"a BAD Malformed literal"),
        (b"a LOGIN {1_0}", b"a BAD Malformed literal"),
        (b"a LOGIN { 5}", b"a BAD Malformed literal"),
        (b"a LOGIN {5} alice", b"a BAD Malformed literal"),
    ],
)
def test_bad_synchronizing_literals_are_refused_before_reading(store, line, answer):
    s = Session(store)
    assert s.command(line) == [answer]
    assert s.command(b"b NOOP") == [b"b OK NOOP completed"]


def test_literal_plus_before_and_after_login(store):
    s = Session(store)
    # LITERAL- (RFC 7888 5): up to 4096 octets before login is fine.
    assert s.send(b"a LOGIN {5+}\r\nalice {6+}\r\nsecret\r\n").startswith(b"a OK [CAPABILITY")
    inbox = result_of(store.get_mailbox("alice", "INBOX"))
    lines = lines_of(s.send(b"b APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE + b"\r\nc NOOP\r\n"))
    assert lines == [b"b OK [APPENDUID %d 1] APPEND completed" % inbox.uidvalidity, b"c OK NOOP completed"]
    big = Session(store)
    assert big.command(b"a LOGIN {5000+}") == [b"* BYE [TOOBIG] Literal too big"]
    assert big.transport.disconnecting


def test_append_over_appendlimit(store):
    s = Session(store, config=config(max_literal_size=1000)).login()
    assert b"APPENDLIMIT=1000" in s.command(b"a CAPABILITY")[0]
    # RFC 7889: a synchronizing literal is refused before it is sent.
    assert s.command(b"b APPEND INBOX {1001}") == [b"b NO [TOOBIG] Message exceeds APPENDLIMIT"]
    assert s.command(b"c APPEND INBOX {1000}") == [b"+ Ready for literal data"]
    assert s.send(b"x" * 1000 + b"\r\n").startswith(b"c OK [APPENDUID ")
    # RFC 7888 4: the client sends a non-synchronizing one at once; close.
    assert s.command(b"d APPEND INBOX {1001+}") == [b"* BYE [TOOBIG] Literal too big"]
    assert s.transport.disconnecting


def test_unclaimed_non_synchronizing_literal_never_runs_as_commands(store):
    s = Session(store).login()
    inbox = result_of(store.get_mailbox("alice", "INBOX"))
    # The APPEND fails before its literal; the message must not be commands.
    payload = b"x DELETE Sent\r\ny LOGOUT\r\n"
    lines = lines_of(s.send(b"a APPEND INBOX (\\Seen {%d+}\r\n" % len(payload) + payload + b"\r\nb NOOP\r\n"))
    assert lines == [b"a BAD Mismatched parenthesis", b"b OK NOOP completed"]
    # The rest of the command line after the literal goes too.
    lines = lines_of(s.send(b"c NOOP {10+}\r\n0123456789 d LOGOUT\r\ne NOOP\r\n"))
    assert lines == [b"c BAD Too many arguments", b"e OK NOOP completed"]
    assert result_of(store.list_messages(inbox.id)) == []
    assert "Sent" in [m.name for m in result_of(store.list_mailboxes("alice"))]
    # A size that is no number cannot be skipped: close.
    assert s.command(b"f NOOP {1_0+}")[-1] == b"* BYE [TOOBIG] Literal too big"
    assert s.transport.disconnecting


# -- bad commands, timeouts -------------------------------------------------


def test_too_many_bad_commands_close_the_session(store):
    s = Session(store, config=config(max_bad_commands=3))
    s.command(b"a BOGUS")
    s.command(b"b BOGUS")
    # A good command starts the count again.
    assert s.command(b"c NOOP") == [b"c OK NOOP completed"]
    s.command(b"d BOGUS")
    s.command(b"e BOGUS")
    lines = s.send(b"f BOGUS\r\ng NOOP\r\n")
    assert lines_of(lines) == [b"f BAD Unsupported command", b"* BYE Too many invalid IMAP commands."]
    assert s.transport.disconnecting


def test_pre_login_deadline_is_absolute(store):
    s = Session(store, config=config(prelogin_timeout=10))
    # A byte a second resets no timer.
    for byte in b"a NOOP\r":
        s.clock.advance(1)
        s.server.dataReceived(bytes([byte]))
    assert s.send(b"\n") == b"a OK NOOP completed\r\n"
    for byte in b"b LOGIN ali":
        s.clock.advance(0.25)
        s.server.dataReceived(bytes([byte]))
    assert not s.transport.disconnecting
    s.clock.advance(10 - 7 - 11 * 0.25)
    assert s.read() == b"* BYE Disconnected for inactivity.\r\n"
    assert s.transport.disconnecting


def test_idle_timeout_after_login_and_keepalive_while_idling(store):
    cfg = Config(auth=AuthConfig(failure_delay=1.0), imap=ImapConfig(idle_timeout=300),
                 limits=LimitsConfig(prelogin_timeout=10))
    s = Session(store, config=cfg).login()
    s.clock.advance(20)  # the pre-login deadline no longer applies
    assert s.read() == b""
    s.command(b"s SELECT INBOX")
    assert s.command(b"i IDLE") == [b"+ idling"]
    s.clock.advance(120)
    assert s.read() == b"* OK Still here\r\n"
    s.clock.advance(120)
    assert s.read() == b"* OK Still here\r\n"
    # RFC 2177: IDLE is activity only up to the timeout.
    s.clock.advance(60)
    assert s.read() == b"* BYE Disconnected for inactivity.\r\n"
    assert s.transport.disconnecting
    assert s.server.view is None


def test_idle_done_stops_the_keepalive(store):
    s = Session(store).login()
    s.command(b"i IDLE")
    assert s.command(b"DONE") == [b"i OK IDLE terminated"]
    s.clock.advance(600)
    assert b"Still here" not in s.read()


# -- sequence sets, SEARCH nesting, FETCH partials ---------------------------


@pytest.fixture
def full(store):
    result_of(store.ensure_user("alice"))
    inbox = result_of(store.get_mailbox("alice", "INBOX"))
    for _ in range(50):
        result_of(store.append(inbox.id, MESSAGE))
    return store


def test_sequence_sets(full):
    s = Session(full, config=config(max_line_length=200_000)).login()
    s.command(b"s SELECT INBOX")
    assert s.command(b"a FETCH 0 FLAGS") == [b"a BAD Invalid sequence set"]
    assert s.command(b"b UID FETCH 1:4294967296 FLAGS") == [b"b BAD Invalid sequence set"]
    assert len(s.command(b"c FETCH *:* UID")) == 2  # valid: the last message
    assert len(s.command(b"d UID FETCH 1:4294967295 UID")) == 51
    assert s.command(b"e FETCH 1:4294967295 UID") == [b"e BAD Invalid message sequence number"]
    ranges = b",".join(b"%d" % n for n in range(1, 20_001, 2))  # ten thousand
    assert len(s.command(b"f UID FETCH " + ranges + b" UID")) == 26
    assert s.command(b"g UID FETCH " + ranges + b",3 UID") == [b"g BAD Invalid sequence set"]
    assert s.command(b"h UID SEARCH UID 1:4294967295")[0].startswith(b"* SEARCH 1 2 3")


def test_sequence_sets_on_an_empty_mailbox(store):
    s = Session(store).login()
    s.command(b"s SELECT INBOX")
    assert s.command(b"a UID FETCH 1:4294967295 UID") == [b"a OK FETCH completed"]
    assert s.command(b"b FETCH *:* UID") == [b"b OK FETCH completed"]
    assert s.command(b"c UID SEARCH UID 1:4294967295") == [b"* SEARCH", b"c OK SEARCH completed"]


@pytest.mark.parametrize(
    "criteria, answer",
    [
        # {-100} hung the reactor in older Twisted releases.
        (b"SUBJECT {-100}", b"a BAD Malformed literal"),
        (b"SUBJECT {1_0}", b"a BAD Malformed literal"),
        (b"SUBJECT {99999999999}", b"a BAD [TOOBIG] Literal too big"),
    ],
)
def test_search_literals(full, criteria, answer):
    s = Session(full).login()
    s.command(b"s SELECT INBOX")
    assert s.command(b"a SEARCH " + criteria) == [answer]
    assert s.command(b"b SEARCH SUBJECT {5+}\r\nhello") == [b"* SEARCH 1 2 3" + b"".join(
        b" %d" % n for n in range(4, 51)), b"b OK SEARCH completed"]


def test_deep_search_nesting(full):
    s = Session(full, config=config(max_line_length=200_000, max_nesting=32)).login()
    s.command(b"s SELECT INBOX")
    for criteria in (b"(" * 10_000 + b"ALL" + b")" * 10_000, b"NOT " * 10_000 + b"ALL",
                     b"OR " * 10_000 + b"ALL " * 10_001):
        [answer] = s.command(b"a SEARCH " + criteria)
        assert answer == b"a BAD Invalid search criteria"
    lines = s.command(b"b SEARCH " + b"(" * 30 + b"UID 1" + b")" * 30)
    assert lines == [b"* SEARCH 1", b"b OK SEARCH completed"]
    assert s.command(b"c SEARCH " + b"NOT " * 29 + b"UID 2:*") == [b"* SEARCH 1", b"c OK SEARCH completed"]


@pytest.mark.parametrize(
    "items, answer",
    [
        (b"BODY[]<0.99999999999>", b"a BAD Invalid FETCH attributes"),
        (b"BODY[]<4294967296.1>", b"a BAD Invalid FETCH attributes"),
        (b"BODY[" + b"1" * 5000 + b"]", b"a BAD Invalid FETCH attributes"),
        (b"BODY[1.0]", b"a BAD Invalid FETCH attributes"),
        (b"((FLAGS))", b"a BAD Invalid FETCH attributes"),
    ],
)
def test_absurd_fetch_attributes(full, items, answer):
    s = Session(full).login()
    s.command(b"s SELECT INBOX")
    assert s.command(b"a FETCH 1 " + items) == [answer]
    assert s.command(b"b NOOP") == [b"b OK NOOP completed"]


def test_fetch_partials_past_the_end_and_deep_parts(full):
    s = Session(full).login()
    s.command(b"s SELECT INBOX")
    assert s.send(b"a FETCH 1 BODY.PEEK[]<4294967295.1>\r\n") == (
        b"* 1 FETCH (BODY[]<4294967295> {0}\r\n)\r\na OK FETCH completed\r\n"
    )
    assert s.command(b"b FETCH 1 BODY.PEEK[1.2.3.4.5.6.7.8.9.10.11]") == [
        b"* 1 FETCH (BODY[1.2.3.4.5.6.7.8.9.10.11] NIL)", b"b OK FETCH completed"
    ]


# -- mailbox names -------------------------------------------------------------


@pytest.mark.parametrize(
    "name, answer",
    [
        (b"&", b"NO Mailbox name is not modified UTF-7"),
        (b"&Jjo", b"NO Mailbox name is not modified UTF-7"),
        # RFC 3501 5.1.3: "&AGE-" encodes "a", which must be sent as is.
        (b"&AGE-", b"NO Mailbox name is not modified UTF-7"),
        (b'"a\x00b"', b"NO Mailbox name is not modified UTF-7"),
        (b'"a\x01b"', b"NO Mailbox name is not modified UTF-7"),
        (b'"a\x7fb"', b"NO Mailbox name is not modified UTF-7"),
        (b"..", b"NO [CANNOT] Not an acceptable mailbox name"),
        (b"a/../b", b"NO [CANNOT] Not an acceptable mailbox name"),
        (b"~bob", b"NO [CANNOT] Not an acceptable mailbox name"),
        (b"/a", b"NO [CANNOT] Not an acceptable mailbox name"),
        (b"a//b", b"NO [CANNOT] Not an acceptable mailbox name"),
        (b"a%b", b"NO [CANNOT] Not an acceptable mailbox name"),
        (b"x" * 1001, b"NO [CANNOT] Mailbox name too long"),
    ],
)
def test_refused_mailbox_names(store, name, answer):
    s = Session(store).login()
    assert s.command(b"a CREATE " + name) == [b"a " + answer]
    assert s.command(b"b RENAME Sent " + name) == [b"b " + answer]
    names = sorted(m.name for m in result_of(store.list_mailboxes("alice")))
    assert names == ["Drafts", "INBOX", "Junk", "Sent", "Trash"]


def test_trailing_separator_and_ten_thousand_character_names(store):
    s = Session(store, config=config(max_line_length=20_000)).login()
    # RFC 3501 6.3.3: a trailing separator says the name will have children.
    assert s.command(b"a CREATE work/") == [b"a OK CREATE completed"]
    assert s.command(b"b SELECT work") [-1] == b"b OK [READ-WRITE] SELECT completed"
    assert s.command(b"c CREATE {10000}") == [b"+ Ready for literal data"]
    assert s.command(b"y" * 10_000) == [b"c NO [CANNOT] Mailbox name too long"]
    # RFC 7162 3.2.11: the failed SELECT closed "work".
    assert s.command(b"d SELECT " + b"y" * 10_000) == [
        b"* OK [CLOSED] Previous mailbox closed", b"d NO [NONEXISTENT] No such mailbox"
    ]


def test_pathological_list_pattern_answers_at_once(store):
    s = Session(store).login()
    for name in (b"a" * 100, b"b/" * 50 + b"c"):
        s.command(b"c CREATE " + name)
    started = time.process_time()
    lines = s.command(b'l LIST "" ' + b"%*" * 500 + b"x")
    assert lines == [b"l OK LIST completed"]
    lines = s.command(b'l LIST "" ' + b"%a" * 1000)
    assert lines == [b"l OK LIST completed"]
    assert time.process_time() - started < 5.0


# -- state and other users ---------------------------------------------------


def test_commands_in_the_wrong_state(store):
    s = Session(store)
    assert s.command(b"a SELECT INBOX") == [b"a BAD Unsupported command"]
    assert s.command(b"b FETCH 1 FLAGS") == [b"b BAD Unsupported command"]
    s.login()
    assert s.command(b"c FETCH 1 FLAGS") == [b"c BAD Unsupported command"]
    assert s.command(b"d LOGIN alice secret") == [b"d BAD Unsupported command"]
    assert s.command(b"e AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==") == [b"e BAD Unsupported command"]
    assert s.command(b"f STARTTLS") == [b"f BAD Unsupported command"]
    assert s.command(b"g IDLE") == [b"+ idling"]
    assert s.command(b"h NOOP") == [b"g BAD Expected DONE"]
    assert s.command(b"i NOOP") == [b"i OK NOOP completed"]


@pytest.mark.parametrize(
    "name",
    [b"../bob/INBOX", b"~bob/INBOX", b'"#shared/bob/INBOX"', b"/bob/INBOX", b"bob/INBOX", b"../../bob",
     b'"#user/bob"', b"%", b"*"],
)
def test_another_users_mailbox_is_never_reachable(store, name):
    Session(store).login(b"bob", b"other")
    bob_inbox = result_of(store.get_mailbox("bob", "INBOX"))
    result_of(store.append(bob_inbox.id, b"Subject: bob's\r\n\r\nprivate\r\n"))
    s = Session(store).login()
    for command in (b"SELECT", b"EXAMINE", b"STATUS %s (MESSAGES)", b"APPEND %s {1+}\r\nx", b"DELETE"):
        line = command % name if b"%s" in command else command + b" " + name
        answer = s.command(b"a " + line)[-1]
        assert answer.startswith((b"a NO", b"a BAD")), (line, answer)
    listing = s.send(b'l LIST "" *\r\n')
    assert listing.endswith(b"l OK LIST completed\r\n") and b"bob" not in listing
    assert len(result_of(store.list_messages(bob_inbox.id))) == 1
    assert sorted(m.name for m in result_of(store.list_mailboxes("bob"))) == [
        "Drafts", "INBOX", "Junk", "Sent", "Trash"
    ]


# -- over real sockets ---------------------------------------------------------

CONFIG = """\
[auth]
failure_delay = 0

[limits]
max_line_length = 1000
max_literal_size = 100000
prelogin_timeout = 2
max_bad_commands = 5
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    config_path = root / "gateway.toml"
    config_path.write_text(CONFIG)
    process = GatewayProcess(root / "data", config=config_path).start()
    process.add_user("alice", "secret")
    process.add_user("bob", "other")
    yield process
    process.stop()


def connect(server) -> tuple[socket.socket, object]:
    sock = socket.create_connection(("127.0.0.1", server.port("imap")), timeout=10)
    reader = sock.makefile("rb")
    assert reader.readline().startswith(b"* OK [CAPABILITY ")
    return sock, reader


def still_serves(server):
    """Another client logs in, selects and reads its own mailbox."""
    imap = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=10)
    try:
        imap.login("alice", "secret")
        typ, _ = imap.select("INBOX")
        assert typ == "OK"
        typ, data = imap.uid("SEARCH", "ALL")
        assert typ == "OK"
    finally:
        imap.logout()


def test_e2e_over_long_line_and_huge_literal(server):
    sock, reader = connect(server)
    with sock:
        sock.sendall(b"a NOOP " + b"z" * 100_000 + b"\r\nb NOOP\r\n")
        assert reader.readline() == b"a BAD [TOOBIG] Command line too long\r\n"
        assert reader.readline() == b"b OK NOOP completed\r\n"
        sock.sendall(b"c LOGIN alice secret\r\nd APPEND INBOX {99999999999}\r\n")
        assert reader.readline().startswith(b"c OK")
        assert reader.readline() == b"d NO [TOOBIG] Message exceeds APPENDLIMIT\r\n"
        sock.sendall(b"e APPEND INBOX {100001+}\r\n" + b"x" * 1000)
        assert reader.readline() == b"* BYE [TOOBIG] Literal too big\r\n"
        assert reader.readline() == b""
    still_serves(server)


def test_e2e_byte_a_second_client_is_closed_at_the_deadline(server):
    sock, reader = connect(server)
    started = time.monotonic()
    with sock:
        sock.settimeout(0.25)
        answer = b""
        # Paced, not synchronised: whatever it sends, the server closes at
        # prelogin_timeout (2 s); the loop gives up after 40 bytes.
        for byte in (b"a LOGIN alice secret" * 2)[:40]:
            try:
                sock.sendall(bytes([byte]))
                chunk = sock.recv(1000)
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            answer += chunk
            if not chunk:
                break
        assert answer == b"* BYE Disconnected for inactivity.\r\n"
    assert time.monotonic() - started >= 1.5
    still_serves(server)


def test_e2e_bad_commands_and_pipelined_junk(server):
    sock, reader = connect(server)
    with sock:
        sock.sendall(b"".join(b"%d BOGUS\r\n" % n for n in range(10)))
        answers = [reader.readline() for _ in range(6)]
        assert answers[:5] == [b"%d BAD Unsupported command\r\n" % n for n in range(5)]
        assert answers[5] == b"* BYE Too many invalid IMAP commands.\r\n"
        assert reader.readline() == b""
    still_serves(server)


def test_e2e_other_user_and_garbage_bytes(server):
    sock, reader = connect(server)
    with sock:
        sock.sendall(b"\x00\xff\r\n\r\n   \r\na LOGIN alice secret\r\nb SELECT ../bob/INBOX\r\nc LOGOUT\r\n")
        data = reader.read()
    assert b"b NO [NONEXISTENT] No such mailbox\r\n" in data
    assert b"Traceback" not in data and b"rror" not in data
    still_serves(server)


def test_a_session_keeps_the_limits_it_started_with(store):
    from gateway.reload import LiveConfig

    live = LiveConfig(config(max_bad_commands=2))
    first = Session(store, config=live)
    # A SIGHUP reload swaps the config: new sessions see it, running ones not.
    live.current = config(max_bad_commands=100)
    second = Session(store, factory=first.factory, clock=first.clock)
    first.command(b"a BOGUS")
    assert first.command(b"b BOGUS")[-1] == b"* BYE Too many invalid IMAP commands."
    second.command(b"a BOGUS")
    assert second.command(b"b BOGUS") == [b"b BAD Unsupported command"]
