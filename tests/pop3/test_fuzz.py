"""
hypothesis drives arbitrary bytes and random command lines into a Pop3Server
on a StringTransport, logged in or not, and checks what goes out: every line
is a status line (``+OK``, ``-ERR``, or the SASL ``+ `` challenge) or part of
a multi-line response after its ``+OK``, properly ended; nothing looks like
an exception; nothing was logged as a failure.
"""

from __future__ import annotations

import base64
import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.logger import capturedLogs

from gateway.config import AuthConfig, LimitsConfig
from tests.pop3.test_server import FIRST, SECOND, make_server
from tests.pop3.test_hostile import ContextFactory, connect

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# The +OK texts that open a multi-line response (RFC 1939 3).
MULTI_LINE = re.compile(
    rb"\+OK (Capability list follows|Supported mechanisms follow|Unique-ID listing follows"
    rb"|\d+ messages \(\d+ octets\)|\d+ octets|Top of message follows)"
)
LEAKS = (b"Traceback", b"Exception", b"Error:", b".py", b"<twisted", b"<gateway", b"Failure")

VERBS = [b"USER", b"PASS", b"AUTH", b"CAPA", b"STAT", b"LIST", b"UIDL", b"RETR", b"TOP", b"DELE", b"RSET",
         b"NOOP", b"QUIT", b"STLS", b"APOP", b"LAST", b"RPOP", b"XTND", b"user", b"rEtR"]
ARGUMENTS = st.one_of(
    st.sampled_from([b"1", b"2", b"3", b"0", b"-1", b"+1", b"1_0", b"99999999999999999999", b"alice", b"bob",
                     b"secret", b"PLAIN", b"LOGIN", b"*", b"=", b"", b"\x00", b"\xff", b"\x1b[0m"]),
    st.builds(lambda parts: base64.b64encode(b"\0".join(parts)), st.lists(st.binary(max_size=8), max_size=4)),
    st.binary(max_size=12),
)
COMMAND_LINE = st.builds(
    lambda verb, args, separator: separator.join([verb, *args]),
    st.one_of(st.sampled_from(VERBS), st.binary(max_size=6)),
    st.lists(ARGUMENTS, max_size=4),
    st.sampled_from([b" ", b"  ", b"\t"]),
)


def check_wire(output: bytes) -> None:
    assert not any(leak in output for leak in LEAKS), output
    assert output == b"" or output.endswith(b"\r\n"), output[-100:]
    lines = output.split(b"\r\n")[:-1]
    in_multi_line = False
    for line in lines:
        if in_multi_line:
            # RFC 1939 3: inside, a line starting with "." is stuffed.
            if line == b".":
                in_multi_line = False
            else:
                assert not line.startswith(b".") or line.startswith(b".."), line
            continue
        assert line.startswith((b"+OK", b"-ERR")) or line == b"+ ", line
        in_multi_line = bool(MULTI_LINE.fullmatch(line))
    assert not in_multi_line, "multi-line response not ended"


def run_session(chunks: list[bytes], logged_in: bool) -> None:
    with tempfile.TemporaryDirectory() as directory:
        server = make_server(
            Path(directory),
            limits=LimitsConfig(max_line_length=1000, max_bad_commands=1000),
            auth=AuthConfig(failure_delay=0.5),
            context_factory=ContextFactory(),
        )
        try:
            server.deliver(FIRST)
            server.deliver(SECOND)
            s = connect(server)
            if logged_in:
                s.login()
            with capturedLogs() as events:
                for chunk in chunks:
                    s.send(chunk)
                    # Let failure delays and the pre-login deadline run out.
                    server.clock.advance(31)
                    s.pump()
            output = s.read()
            s.drop()
        finally:
            server.store.close()
    check_wire(output)
    failures = [event for event in events if "log_failure" in event]
    assert failures == [], failures


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=8), st.booleans())
def test_arbitrary_bytes(chunks, logged_in):
    run_session(chunks, logged_in)


@FUZZ
@given(st.lists(COMMAND_LINE, min_size=1, max_size=12), st.booleans(), st.sampled_from([1, 3, 1000]))
def test_random_command_lines(lines, logged_in, chunk_size):
    data = b"".join(line + b"\r\n" for line in lines)
    chunks = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]
    run_session(chunks, logged_in)


def test_the_wire_check_itself_catches_bad_output():
    check_wire(b"+OK Capability list follows\r\nTOP\r\n..x\r\n.\r\n-ERR no\r\n+ \r\n")
    for bad in (
        b"+OK 1 octets\r\nbody\r\n",  # never ended
        b"+OK 1 octets\r\n.body\r\n.\r\n",  # not dot-stuffed
        b"hello\r\n",
        b"-ERR Traceback (most recent call last)\r\n",
        b"+OK",
    ):
        try:
            check_wire(bad)
        except AssertionError:
            continue
        raise AssertionError(f"check_wire accepted {bad!r}")
