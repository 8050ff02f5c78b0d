"""
The real server (``twistd -n gateway``) listening on UNIX sockets, driven
by smtplib's LMTP (which takes a socket path), poplib and imaplib: every
protocol works there, the sockets have the mode asked for and are gone
after a stop, a crashed run's socket is replaced, a live one is not, and a
start that fails leaves nothing behind.
"""

from __future__ import annotations

import imaplib
import json
import os
import poplib
import re
import smtplib
import socket
import stat

import pytest

from tests.serverproc import GatewayProcess, run_gateway

MESSAGE = b"From: bob@example.org\r\nSubject: over a socket\r\n\r\nHello.\r\n"
# Dovecot's shape (RFC 5321 4.4); no "([ip])": a UNIX-socket peer has none.
RECEIVED = re.compile(
    rb"Received: from client\.example\.org\r\n"
    rb"\tby localhost with LMTP\r\n"
    rb"\tid [A-Za-z0-9+/]{22}\r\n"
    rb"\t\(envelope-from <bob@example\.org>\)\r\n"
    rb"\tfor <alice@example\.org>; [A-Z][a-z]{2}, [0-9]{2} [A-Z][a-z]{2} [0-9]{4} [0-9:]{8} [+-][0-9]{4}\r\n"
)


def unix_socket(path, timeout):
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(timeout)
    client.connect(str(path))
    return client


class UnixPOP3(poplib.POP3):
    """poplib over a UNIX socket: ``host`` is the path."""

    def _create_socket(self, timeout):
        return unix_socket(self.host, timeout)


class UnixIMAP4(imaplib.IMAP4):
    """imaplib over a UNIX socket: ``host`` is the path."""

    def _create_socket(self, timeout):
        return unix_socket(self.host, timeout)


def deliver(path) -> tuple[int, bytes]:
    with smtplib.LMTP(str(path), local_hostname="client.example.org", timeout=30) as lmtp:
        lmtp.ehlo_or_helo_if_needed()
        assert lmtp.mail("bob@example.org") == (250, b"2.1.0 Sender OK")
        assert lmtp.rcpt("alice@example.org") == (250, b"2.1.5 OK")
        return lmtp.data(MESSAGE)


@pytest.fixture
def data(tmp_path):
    data = tmp_path / "data"
    run_gateway(data, "user", "add", "alice", input=b"alice-password\n")
    return data


@pytest.fixture
def sockets(tmp_path):
    directory = tmp_path / "s"
    directory.mkdir()
    return directory


def test_every_protocol_over_unix_sockets(data, sockets):
    lmtp, pop3, imap = sockets / "lmtp.sock", sockets / "pop3.sock", sockets / "imap.sock"
    server = GatewayProcess(data, pop3=f"unix:{pop3}:mode=0666", imap=f"unix:{imap}", lmtp=f"unix:{lmtp}:mode=0660")
    with server:
        assert server.ports["lmtp"] == [f"unix:{lmtp}"] and server.ports["pop3"] == [f"unix:{pop3}"]
        assert {p.name: stat.S_IMODE(os.stat(p).st_mode) for p in (lmtp, pop3, imap)} == {
            "lmtp.sock": 0o660, "pop3.sock": 0o666, "imap.sock": 0o600,
        }
        assert deliver(lmtp) == (250, b"2.0.0 <alice@example.org> Saved as UID 1")

        pop = UnixPOP3(str(pop3), timeout=30)
        pop.user("alice")
        pop.pass_("alice-password")
        body = b"\r\n".join(pop.retr(1)[1]) + b"\r\n"
        pop.quit()
        header = b"Return-Path: <bob@example.org>\r\nDelivered-To: alice@example.org\r\n"
        assert body.startswith(header)
        assert RECEIVED.match(body, len(header))
        assert body.endswith(b"\r\n" + MESSAGE)

        client = UnixIMAP4(str(imap), timeout=30)
        client.login("alice", "alice-password")
        client.select("INBOX")
        _, fetched = client.uid("FETCH", "1", "(BODY.PEEK[])")
        assert fetched[0][1] == body
        client.logout()
    assert not any(p.exists() for p in (lmtp, pop3, imap))
    assert list(sockets.iterdir()) == []
    # The login lines name a UNIX-socket client "local", never a traceback.
    log = server.log()
    assert "login ok: protocol=pop3 user=alice ip=local" in log
    assert "login ok: protocol=imap user=alice ip=local" in log
    assert "Traceback" not in log
    assert f"lmtp listening on unix:{lmtp}" in log


def test_a_killed_servers_socket_is_replaced(data, sockets):
    lmtp = sockets / "lmtp.sock"
    first = GatewayProcess(data, pop3=None, imap=None, lmtp=f"unix:{lmtp}").start()
    first.kill()
    assert stat.S_ISSOCK(os.lstat(lmtp).st_mode)
    with GatewayProcess(data, pop3=None, imap=None, lmtp=f"unix:{lmtp}"):
        assert deliver(lmtp)[0] == 250
    assert not lmtp.exists()


def test_a_socket_in_use_is_left_to_its_server(data, sockets, tmp_path):
    lmtp = sockets / "lmtp.sock"
    with GatewayProcess(data, pop3=None, imap=None, lmtp=f"unix:{lmtp}"):
        second = GatewayProcess(tmp_path / "second", pop3=None, imap=None, lmtp=f"unix:{lmtp}")
        with pytest.raises(RuntimeError) as excinfo:
            second.start()
        assert str(excinfo.value) == (
            f"server exited with 1: gateway: listener 'unix:{lmtp}': {lmtp} is in use by another process\n"
        )
        assert deliver(lmtp)[0] == 250


@pytest.mark.parametrize(
    ("lmtp", "problem"),
    [
        ("unix:{s}/missing/lmtp.sock", "listener 'unix:{s}/missing/lmtp.sock': directory {s}/missing does not exist"),
        ("unix:{s}/pop3.log", "listener 'unix:{s}/pop3.log': {s}/pop3.log exists and is not a socket"),
        ("unix:{s}/l.sock:user=no-such-user", "listener 'unix:{s}/l.sock:user=no-such-user': user=no-such-user: "
         "no such user"),
        ("haproxy:unix:{s}/l.sock", "command line: --lmtp: 'haproxy:unix:{s}/l.sock': the PROXY protocol is taken "
         "on TCP listeners only"),
        ("unix:{s}/l.sock:mode=888", "command line: --lmtp: 'unix:{s}/l.sock:mode=888': mode=888: give octal "
         "permissions such as 0660"),
    ],
)
def test_a_failed_start_is_one_line_and_leaves_nothing(data, sockets, lmtp, problem):
    (sockets / "pop3.log").write_text("not a socket")
    pop3 = sockets / "pop3.sock"
    server = GatewayProcess(data, pop3=f"unix:{pop3}", imap=None, lmtp=lmtp.format(s=sockets))
    with pytest.raises(RuntimeError) as excinfo:
        server.start()
    assert str(excinfo.value) == f"server exited with 1: gateway: {problem.format(s=sockets)}\n"
    # The POP3 socket bound before the LMTP one failed is gone again, and no
    # lock file was ever made.
    assert sorted(p.name for p in sockets.iterdir()) == ["pop3.log"]
    assert not (data / "run" / "ports.json").exists()


def test_status_reads_metrics_over_a_unix_socket(data, sockets):
    lmtp, metrics = sockets / "lmtp.sock", sockets / "metrics.sock"
    with GatewayProcess(data, pop3=None, imap=None, lmtp=f"unix:{lmtp}", extra_args=["--metrics", f"unix:{metrics}"]):
        deliver(lmtp)
        assert json.loads((data / "run" / "ports.json").read_text())["metrics"] == [f"unix:{metrics}"]
        status = run_gateway(data, "status").stdout.decode()
    assert "deliveries: ok 1" in status
    assert re.search(r"^lmtp\s+0\s+1$", status, re.M)
