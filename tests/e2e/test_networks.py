"""
Networks by name, end to end: the real server with a ``[networks]`` table,
driven by poplib, imaplib and raw sockets from addresses in 127.0.0.0/8,
each standing for a network (tests/sources.py):

    office    127.0.0.0/24   not held to the per-IP cap, never locked out
    scanners  127.0.2.0/24   may log in in plain text (no TLS)
    branch    127.0.4.0/24   POP3 and IMAP, passwords under TLS only
    elsewhere 127.0.3.0/24   IMAP only

and a trusted PROXY balancer, whose header's source is what is matched.
"""

from __future__ import annotations

import imaplib
import poplib
import socket
import ssl

import pytest

from tests.e2e.test_login_policy import PASSWORD, add_users
from tests.net.test_proxy import v2_header
from tests.serverproc import LOOPBACK, GatewayProcess
from tests.sources import connect_from, imap_from, pop3_from

OFFICE, SCANNER, BRANCH, ELSEWHERE = "127.0.0.9", "127.0.2.5", "127.0.4.5", "127.0.3.5"

CONFIG = f"""
[networks]
office = ["127.0.0.0/24"]
scanners = ["127.0.2.0/24"]
branch = ["127.0.4.0/24", "fd00:4::/64"]

[listeners]
pop3s = "{LOOPBACK}"

[listeners.balanced]
protocol = "pop3"
endpoints = "haproxy:{LOOPBACK}"

[pop3]
networks = ["office", "scanners", "branch"]

[auth]
failure_delay = 0
plaintext_without_tls = ["scanners"]

[limits]
max_connections_per_ip = 2
per_ip_exempt_networks = ["office"]
failed_logins_per_ip = 2
lockout_exempt_networks = ["office"]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("networks")
    config = base / "gateway.toml"
    config.write_text(CONFIG)
    with GatewayProcess(base / "data", lmtp=None, config=config) as running:
        add_users(running, "alice", "bob", "carol")
        running.deliver("alice", b"Subject: scanned\r\n\r\npage 1\r\n")
        yield running


def tls_context(server) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(server.data_dir / "tls" / "cert.pem"))


def test_a_scanner_logs_in_in_plain_text(server):
    pop = pop3_from(SCANNER, server.port("pop3"))
    try:
        assert "USER" in pop.capa() and pop.capa()["SASL"] == ["PLAIN"]
        pop.user("alice")
        pop.pass_(PASSWORD)
        assert pop.stat()[0] == 1
    finally:
        pop.quit()
    imap = imap_from(SCANNER, server.port("imap"))
    try:
        assert "AUTH=PLAIN" in imap.capabilities and "LOGINDISABLED" not in imap.capabilities
        assert imap.login("alice", PASSWORD)[0] == "OK"
    finally:
        imap.logout()


@pytest.mark.parametrize("source", [BRANCH, OFFICE], ids=["branch", "office"])
def test_elsewhere_plain_text_is_refused_until_tls(server, source):
    pop = pop3_from(source, server.port("pop3"))
    try:
        capabilities = pop.capa()
        assert "USER" not in capabilities and "SASL" not in capabilities and "STLS" in capabilities
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\] Plaintext authentication disallowed"):
            pop.user("alice")
        pop.stls(tls_context(server))
        assert "USER" in pop.capa()
        pop.user("alice")
        pop.pass_(PASSWORD)
    finally:
        pop.quit()
    imap = imap_from(source, server.port("imap"))
    try:
        assert "LOGINDISABLED" in imap.capabilities and "AUTH=PLAIN" not in imap.capabilities
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
            imap.login("alice", PASSWORD)
        imap.starttls(tls_context(server))
        assert imap.login("alice", PASSWORD)[0] == "OK"
    finally:
        imap.logout()


def test_pop3_is_served_to_its_networks_only(server):
    for listener in ("pop3", "pop3s"):
        with connect_from(ELSEWHERE, server.port(listener)) as raw:
            reader = raw.makefile("rb")
            if listener == "pop3":
                assert reader.readline() == b"-ERR [SYS/PERM] Not served to your network\r\n"
            assert reader.read() == b""
    # IMAP is served there.
    imap = imap_from(ELSEWHERE, server.port("imap"))
    assert imap.welcome.startswith(b"* OK")
    imap.logout()
    assert f"Refused a pop3 connection from {ELSEWHERE}: not a network it serves" in server.log()


def greeted(source: str, port: int) -> tuple[socket.socket, bytes]:
    sock = connect_from(source, port)
    return sock, sock.makefile("rb").readline()


def test_the_office_is_not_held_to_the_per_ip_cap(server):
    held = []
    try:
        for _ in range(4):
            sock, line = greeted(OFFICE, server.port("imap"))
            held.append(sock)
            assert line.startswith(b"* OK")
        for _ in range(2):
            sock, line = greeted("127.0.4.77", server.port("imap"))
            held.append(sock)
            assert line.startswith(b"* OK")
        sock, line = greeted("127.0.4.77", server.port("imap"))
        held.append(sock)
        assert line == b"* BYE Too many connections\r\n"
    finally:
        for sock in held:
            sock.close()


def test_the_office_is_never_locked_out_and_others_are(server):
    # Two failures lock bob out at a scanner's address...
    for _ in range(2):
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            _login(pop3_from("127.0.2.30", server.port("pop3")), "bob", "wrong")
    with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\] Too many failed logins"):
        _login(pop3_from("127.0.2.30", server.port("pop3")), "bob", PASSWORD)
    # ...but never in the office: its failures are still counted and delayed.
    for _ in range(4):
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            _login(pop3_from(OFFICE, server.port("pop3s"), tls_context(server)), "carol", "wrong")
    _login(pop3_from(OFFICE, server.port("pop3s"), tls_context(server)), "carol", PASSWORD).quit()


def _login(pop: poplib.POP3, user: str, password: str) -> poplib.POP3:
    try:
        pop.user(user)
        pop.pass_(password)
    except poplib.error_proto:
        pop.close()
        raise
    return pop


def proxied(server, source: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port("balanced")), timeout=10)
    sock.sendall(v2_header(source))
    return sock


def test_behind_a_trusted_balancer_the_clients_address_is_matched(server):
    # The balancer itself (127.0.0.1) is in the office, where plain text is
    # refused; what counts is the client its header names.
    with proxied(server, SCANNER) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"+OK")
        sock.sendall(b"CAPA\r\nUSER alice\r\nQUIT\r\n")
        answer = b"".join(iter(reader.readline, b""))
        assert b"\r\nUSER\r\n" in answer and b"+OK Send PASS\r\n" in answer
    with proxied(server, BRANCH) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"+OK")
        sock.sendall(b"CAPA\r\nUSER alice\r\nQUIT\r\n")
        answer = b"".join(iter(reader.readline, b""))
        assert b"\r\nUSER\r\n" not in answer and b"-ERR [AUTH] Plaintext authentication disallowed" in answer
    with proxied(server, ELSEWHERE) as sock:
        reader = sock.makefile("rb")
        assert reader.readline() == b"-ERR [SYS/PERM] Not served to your network\r\n"
        assert reader.read() == b""
    # An IPv6 client of a named network.
    with proxied(server, "fd00:4::7") as sock:
        assert sock.makefile("rb").readline().startswith(b"+OK")
