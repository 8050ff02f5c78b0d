"""
hypothesis drives random command lines and byte sequences, with literals,
into the IMAP server on a StringTransport, in each state (not
authenticated, authenticated, selected).  Whatever comes in, every response
is well formed (tagged, untagged or a continuation; literals match their
counts; a response code is followed by text), no exception text reaches the
wire, nothing is logged as a failure, and the session still answers a NOOP
afterwards unless it said BYE and closed.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import Portal
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.mail import imap4

from gateway.auth import MailRealm
from gateway.config import AuthConfig, Config, LimitsConfig
from gateway.imap import account
from gateway.imap.server import build_factory
from gateway.store.sqlite.store import SQLiteStore
from tests.deferreds import result_of
from tests.imap.test_server import MESSAGE, NESTED

CONFIG = Config(auth=AuthConfig(failure_delay=0.0), limits=LimitsConfig(max_line_length=2000, max_bad_commands=1000))

COMMANDS = [
    b"CAPABILITY", b"NOOP", b"LOGOUT", b"LOGIN", b"AUTHENTICATE", b"STARTTLS", b"SELECT", b"EXAMINE", b"CREATE",
    b"DELETE", b"RENAME", b"SUBSCRIBE", b"UNSUBSCRIBE", b"LIST", b"LSUB", b"STATUS", b"APPEND", b"CHECK",
    b"CLOSE", b"UNSELECT", b"EXPUNGE", b"SEARCH", b"FETCH", b"STORE", b"COPY", b"MOVE", b"UID", b"IDLE",
    b"NAMESPACE", b"ID", b"ENABLE", b"fetch", b"BOGUS",
]
WORDS = [
    b"INBOX", b"inbox", b"Sent", b"a/b", b"*", b"%", b"1", b"2", b"1:*", b"*:*", b"0", b"4294967296", b"1:4294967295",
    b"(", b")", b"()", b"NIL", b"ALL", b"NOT", b"OR", b"UID", b"FLAGS", b"FLAGS.SILENT", b"+FLAGS", b"-FLAGS",
    b"BODY[]", b"BODY.PEEK[1.2]<0.10>", b"BODY[HEADER.FIELDS (SUBJECT)]", b"BODY[2.MIME]", b"RFC822", b"ENVELOPE",
    b"BODYSTRUCTURE", b"\\Seen", b"\\Deleted", b"\\Bogus", b"&", b"&Jjo-", b"&AGE-", b'"', b'""', b"[", b"]",
    b"<", b"DONE", b"CHARSET", b"UTF-8", b"SUBJECT", b"BEFORE", b"1-Feb-1994", b"LARGER", b"MESSAGES", b"UIDNEXT",
    b"PLAIN", b"AGFsaWNlAHNlY3JldA==", b"alice", b"secret", b"..", b"~bob", b"FAST", b"FULL", b"\\", b"{", b"}",
    b"{5}", b"{-1}", b"{1_0+}", b"=",
]


def literal():
    return st.builds(
        lambda data, plus: b"{%d%s}\r\n" % (len(data), b"+" if plus else b"") + data,
        st.binary(max_size=30),
        st.booleans(),
    )


token = st.one_of(
    st.sampled_from(WORDS),
    st.integers(0, 2**40).map(lambda n: b"%d" % n),
    st.binary(min_size=1, max_size=6).filter(lambda b: b"\r\n" not in b),
    st.builds(lambda text: b'"' + text + b'"', st.binary(max_size=10).filter(lambda b: b"\r\n" not in b)),
)
argument = st.one_of(token, token, token, literal())
command_line = st.builds(
    lambda tag, command, args: tag + b" " + command + b"".join(b" " + a for a in args) + b"\r\n",
    st.sampled_from([b"a1", b"T", b"x.y", b"+", b"*", b"{1}"]),
    st.sampled_from(COMMANDS),
    st.lists(argument, max_size=6),
)
raw_bytes = st.binary(max_size=60).map(lambda b: b + b"\r\n")
session_input = st.lists(st.one_of(command_line, command_line, raw_bytes), min_size=1, max_size=6)
# Where the input is cut into the chunks the transport delivers.
cuts = st.lists(st.integers(0, 400), max_size=4)

_RESPONSE_CODE = re.compile(rb"\[[^\]]*\] \S")


def check_responses(data: bytes) -> bool:
    """Every response well formed; True when one was a BYE."""
    position = 0
    bye = False
    while position < len(data):
        end = data.find(b"\r\n", position)
        assert end >= 0, f"unterminated response {data[position:]!r}"
        line = data[position:end]
        position = end + 2
        whole = line
        while (marker := re.search(rb"\{(\d+)\}\Z", line)) is not None:
            size = int(marker[1])
            assert position + size <= len(data), f"literal shorter than {size}"
            end = data.find(b"\r\n", position + size)
            assert end >= 0
            line = data[position + size:end]
            whole += b"<literal>" + line
            position = end + 2
        assert b"Traceback" not in whole and b"Server error" not in whole and b"Internal error" not in whole, whole
        if whole == b"+" or whole.startswith(b"+ "):
            continue
        tag, _, rest = whole.partition(b" ")
        assert tag and rest, f"not a response: {whole!r}"
        bye = bye or (tag == b"*" and rest.startswith(b"BYE "))
        status = re.match(rb"(OK|NO|BAD|BYE|PREAUTH) (.*)", rest)
        if tag != b"*":
            assert status is not None and status[1] in (b"OK", b"NO", b"BAD"), f"bad tagged response {whole!r}"
        if status is not None:
            text = status[2]
            assert text.strip(), f"no text in {whole!r}"
            if text.startswith(b"["):
                assert _RESPONSE_CODE.match(text), f"response code without text in {whole!r}"
    return bye


@pytest.fixture
def failures():
    events = []

    def observe(event):
        if "log_failure" in event:
            events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


def new_session(directory: Path, state: str):
    store = SQLiteStore(directory / "store")
    clock = Clock()
    checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
    realm = MailRealm({imap4.IAccount: account.avatar_factory(store, CONFIG)})
    server = build_factory(Portal(realm, [checker]), store, CONFIG, clock).buildProtocol(None)
    transport = StringTransport(
        hostAddress=IPv4Address("TCP", "127.0.0.1", 143), peerAddress=IPv4Address("TCP", "127.0.0.1", 5000)
    )
    server.makeConnection(transport)
    if state != "unauth":
        server.dataReceived(b"L LOGIN alice secret\r\n")
        inbox = result_of(store.get_mailbox("alice", "INBOX"))
        result_of(store.append(inbox.id, MESSAGE, flags={"\\Seen"}))
        result_of(store.append(inbox.id, NESTED))
    if state == "select":
        server.dataReceived(b"S SELECT INBOX\r\n")
    assert server.state == state
    transport.clear()
    return store, clock, server, transport


def settle(server, transport, clock):
    """Finish whatever the input left half done: a literal, IDLE, a delay."""
    for _ in range(20):
        clock.advance(0)
        if transport.disconnecting:
            return
        if not server.line_mode:
            server.dataReceived(b"x" * server._pendingLiteral.size)
        elif server.parseState == "idle":
            server.dataReceived(b"DONE\r\n")
        elif server.parseState != "command" or server._overlong_tail is not None or server._buffer:
            server.dataReceived(b"\r\n")
        else:
            return


@pytest.mark.parametrize("state", ["unauth", "auth", "select"])
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=session_input, cuts=cuts)
def test_random_input_gets_well_formed_answers(state, failures, chunks, cuts):
    data = b"".join(chunks)
    with tempfile.TemporaryDirectory() as directory:
        store, clock, server, transport = new_session(Path(directory), state)
        try:
            previous = 0
            for cut in sorted(set(min(c, len(data)) for c in cuts)) + [len(data)]:
                server.dataReceived(data[previous:cut])
                previous = cut
            settle(server, transport, clock)
            output = transport.value()
            bye = check_responses(output)
            assert not failures, failures[0].get("log_failure")
            if transport.disconnecting:
                assert bye, output[-200:]
                return
            transport.clear()
            server.dataReceived(b"zz NOOP\r\n")
            clock.advance(0)
            answer = transport.value()
            check_responses(answer)
            assert answer.endswith(b"zz OK NOOP completed\r\n"), (output[-300:], answer[-300:])
        finally:
            server.connectionLost(None)
            store.close()
