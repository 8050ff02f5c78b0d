"""
The login policy over real sockets, against the real server (``twistd -n
gateway``), with imaplib and poplib, and raw sockets where a client library
would hide what is tested (forty logins sent at once, PROXY headers):

- forty wrong logins sent at once from one address get at most
  ``failed_logins_per_ip`` password checks, counted inside the server;
- twenty failures of one user lock out that user at that address and
  nobody else there: another user's right password is taken, over IMAP and
  POP3, from 127.0.0.1 and from ::1;
- through a trusted PROXY v2 balancer, IPv6 clients are locked out by /64;
- a trusted front end names its client with ID ``x-originating-ip``.

Every server here has ``failure_delay = 0``: the delays themselves are shown
with a Clock in tests/imap/test_hostile.py, tests/pop3/test_hostile.py and
tests/policy/.
"""

from __future__ import annotations

import imaplib
import poplib
import re
import socket
import sys

import bcrypt
import pytest

from gateway.auth import UsersFile
from tests.net.test_proxy import v2_header
from tests.serverproc import GatewayProcess

PASSWORD = "right horse battery"


class CountingGateway(GatewayProcess):
    """The real server, with every password check counted (tests/e2e/counting_twistd.py)."""

    def __init__(self, data_dir, **options):
        super().__init__(data_dir, **options)
        self.count_file = self.data_dir.parent / f"{self.data_dir.name}-checks"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "tests.e2e.counting_twistd", str(self.count_file), *super().command()[1:]]

    def checks(self) -> int:
        try:
            return len(self.count_file.read_bytes())
        except FileNotFoundError:
            return 0


def add_users(server: GatewayProcess, *names: str, quick: bool = True) -> None:
    """
    Users with PASSWORD; the running server re-reads the users file when it
    changes.  ``quick``: a bcrypt hash of the lowest cost, a real check in
    a millisecond, where the test is not about what a check costs.
    """
    users = UsersFile(server.data_dir / "users")
    for name in names:
        users.add(name, PASSWORD)
    if quick:
        path = server.data_dir / "users"
        lines = path.read_text().splitlines()
        stored = "{BLF-CRYPT}" + bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
        edited = [f"{line.split(':', 1)[0]}:{stored}" if line.split(":", 1)[0] in names else line for line in lines]
        temporary = path.with_name("users.tmp")
        temporary.write_text("".join(line + "\n" for line in edited))
        temporary.replace(path)


def auth_lines(server: GatewayProcess, user: str) -> list[str]:
    return re.findall(rf"login (?:ok|failed): protocol=\S+ user={user} ip=\S+(?: reason=\S+)?", server.log())


FAMILIES = {
    "ipv4": ("127.0.0.1", socket.AF_INET, "tcp:0:interface=127.0.0.1"),
    "ipv6": ("::1", socket.AF_INET6, "tcp6:0:interface=\\:\\:1"),
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def gateway(request, tmp_path_factory):
    host, family, endpoint = FAMILIES[request.param]
    base = tmp_path_factory.mktemp(f"logins-{request.param}")
    config = base / "gateway.toml"
    config.write_text("[auth]\nfailure_delay = 0\n")
    with CountingGateway(base / "data", pop3=endpoint, imap=endpoint, lmtp=None, config=config) as server:
        # Argon2, as ``gateway user add`` writes it: what a guess costs.
        add_users(server, "ann", "ben", quick=False)
        add_users(server, "amy", "cal", "bea")
        server.host, server.family = host, family
        yield server


def connect(server, protocol: str) -> tuple[socket.socket, object]:
    sock = socket.create_connection((server.host, server.port(protocol)), timeout=30)
    reader = sock.makefile("rb")
    assert reader.readline().startswith(b"* OK" if protocol == "imap" else b"+OK")
    return sock, reader


# -- attempts in flight count as failures ------------------------------------


# Over IPv4 only: the same code counts ::1, and each run costs ten argon2 hashes.
@pytest.mark.parametrize("gateway", ["ipv4"], indirect=True)
@pytest.mark.parametrize(
    ("protocol", "user", "command", "locked_out"),
    [
        ("imap", "ann", b"a LOGIN ann wrong\r\n", b"a NO [UNAVAILABLE] "),
        ("pop3", "ben", b"USER ben\r\nPASS wrong\r\n", b"-ERR [SYS/TEMP] "),
    ],
    ids=["imap", "pop3"],
)
def test_forty_parallel_wrong_logins_get_at_most_ten_password_checks(gateway, protocol, user, command, locked_out):
    connections = [connect(gateway, protocol) for _ in range(40)]
    before = gateway.checks()
    try:
        # All forty are on their way before the first check can end.
        for sock, _ in connections:
            sock.sendall(command)
        answers = []
        for _, reader in connections:
            if protocol == "pop3":
                assert reader.readline() == b"+OK Send PASS\r\n"
            answers.append(reader.readline())
    finally:
        for sock, reader in connections:
            reader.close()
            sock.close()
    checked = gateway.checks() - before
    assert 1 <= checked <= 10  # [limits] failed_logins_per_ip
    wrong = [a for a in answers if b"[AUTHENTICATIONFAILED]" in a or a.startswith(b"-ERR [AUTH]")]
    assert len(wrong) == checked
    assert sum(a.startswith(locked_out) for a in answers) == 40 - checked
    lines = auth_lines(gateway, user)
    assert sum(line.endswith("reason=bad-credentials") for line in lines) == checked
    assert sum(line.endswith("reason=blocked") for line in lines) == 40 - checked


# -- one user's failures lock out nobody else ----------------------------------


def imap_login(server, user: str, password: str) -> None:
    imap = imaplib.IMAP4(server.host, server.port("imap"), timeout=30)
    try:
        imap.login(user, password)
        assert imap.select("INBOX")[0] == "OK"
    finally:
        imap.logout()


def pop3_login(server, user: str, password: str) -> None:
    pop = poplib.POP3(server.host, server.port("pop3"), timeout=30)
    try:
        pop.user(user)
        pop.pass_(password)
        assert pop.stat() == (0, 0)
    finally:
        pop.quit()


def fail_twenty_times(server, protocol: str, user: str) -> None:
    if protocol == "imap":
        imap = imaplib.IMAP4(server.host, server.port("imap"), timeout=30)
        for _ in range(20):
            with pytest.raises(imaplib.IMAP4.error):
                imap.login(user, "stale password")
        imap.logout()
    else:
        pop = poplib.POP3(server.host, server.port("pop3"), timeout=30)
        for _ in range(20):
            pop.user(user)
            with pytest.raises(poplib.error_proto):
                pop.pass_("stale password")
        pop.quit()


@pytest.mark.parametrize(("protocol", "stale"), [("imap", "amy"), ("pop3", "cal")])
def test_one_users_failures_lock_out_that_user_at_the_address_and_nobody_else(gateway, protocol, stale):
    fail_twenty_times(gateway, protocol, stale)
    # Bea behind the same address logs in, over both protocols.
    imap_login(gateway, "bea", PASSWORD)
    pop3_login(gateway, "bea", PASSWORD)
    # The stale user is locked out at this address, right password or not,
    # over both protocols: the count is shared.
    with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\] Too many failed logins"):
        imap_login(gateway, stale, PASSWORD)
    with pytest.raises(poplib.error_proto, match=r"-ERR \[SYS/TEMP\] Too many failed logins"):
        pop3_login(gateway, stale, PASSWORD)
    lines = auth_lines(gateway, stale)
    failed = f"login failed: protocol={protocol} user={stale} ip={gateway.host} reason=bad-credentials"
    assert lines[:10] == [failed] * 10
    assert all(line.endswith("reason=blocked") for line in lines[10:]) and len(lines) == 22
    assert f"login ok: protocol=pop3 user=bea ip={gateway.host}" in auth_lines(gateway, "bea")


# -- IPv6 by /64 through a trusted PROXY v2 balancer ---------------------------


@pytest.fixture(scope="module")
def balanced(tmp_path_factory):
    base = tmp_path_factory.mktemp("balanced")
    config = base / "gateway.toml"
    # The PROXY header's source is the client whose password arrives in the
    # clear: these test networks may send it so.
    config.write_text('[auth]\nfailure_delay = 0\nplaintext_without_tls = ["2001:db8::/32"]\n')
    # IMAP reached over 127.0.0.1, POP3 over ::1: both trusted by default.
    with GatewayProcess(base / "data", imap="haproxy:tcp:0:interface=127.0.0.1",
                        pop3="haproxy:tcp6:0:interface=\\:\\:1", lmtp=None, config=config) as server:
        add_users(server, "ivy", "ida", "pat", "pia")
        yield server


def proxied_login(server, protocol: str, source: str, user: str, password: str) -> bytes:
    """The answer to a login from ``source``, as a balancer relays it."""
    host = "127.0.0.1" if protocol == "imap" else "::1"
    with socket.create_connection((host, server.port(protocol)), timeout=30) as sock:
        sock.sendall(v2_header(source))
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"* OK" if protocol == "imap" else b"+OK")
        if protocol == "imap":
            sock.sendall(f"a LOGIN {user} \"{password}\"\r\n".encode())
        else:
            sock.sendall(f"USER {user}\r\nPASS {password}\r\n".encode())
            assert reader.readline() == b"+OK Send PASS\r\n"
        return reader.readline()


@pytest.mark.parametrize(("protocol", "user", "other", "net"), [("imap", "ivy", "ida", 1), ("pop3", "pat", "pia", 2)])
def test_an_ipv6_64_is_locked_out_as_one_client(balanced, protocol, user, other, net):
    ok, locked = {"imap": (b"a OK", b"a NO [UNAVAILABLE]"), "pop3": (b"+OK Maildrop", b"-ERR [SYS/TEMP]")}[protocol]
    # Ten failures, each from another address of one /64.
    for n in range(1, 11):
        answer = proxied_login(balanced, protocol, f"2001:db8:{net}:2::{n:x}", user, "wrong")
        assert answer.startswith((b"a NO [AUTHENTICATIONFAILED]", b"-ERR [AUTH]")), answer
    assert proxied_login(balanced, protocol, f"2001:db8:{net}:2:ffff:ffff:ffff:fffe", user, PASSWORD).startswith(locked)
    # Another /64, and another user in this one, are not affected.
    assert proxied_login(balanced, protocol, f"2001:db8:{net}:3::1", user, PASSWORD).startswith(ok)
    assert proxied_login(balanced, protocol, f"2001:db8:{net}:2::abc", other, PASSWORD).startswith(ok)
    # The log names each address in full, for fail2ban.
    assert f"user={user} ip=2001:db8:{net}:2::a reason=bad-credentials" in balanced.log()


# -- a trusted front end names its clients (RFC 2971 ID) ------------------------


@pytest.fixture(scope="module")
def fronted(tmp_path_factory):
    base = tmp_path_factory.mktemp("fronted")
    config = base / "gateway.toml"
    config.write_text('[auth]\nfailure_delay = 0\n[proxy]\nlogin_trusted_networks = ["127.0.0.1/32"]\n')
    with GatewayProcess(base / "data", pop3=None, lmtp=None, config=config) as server:
        add_users(server, "zoe", "yan")
        yield server


def webmail_login(server, client_ip: str | None, user: str, password: str) -> None:
    imap = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=30)
    try:
        if client_ip is not None:
            typ, data = imap.xatom("ID", f'("name" "webmail" "x-originating-ip" "{client_ip}")')
            assert typ == "OK"
        imap.login(user, password)
    finally:
        imap.logout()


def test_a_trusted_front_end_names_its_client_with_id(fronted):
    for _ in range(10):
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            webmail_login(fronted, "192.0.2.10", "zoe", "wrong")
    # Locked out: zoe at 192.0.2.10, not zoe elsewhere, nor the front end.
    with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
        webmail_login(fronted, "192.0.2.10", "zoe", PASSWORD)
    webmail_login(fronted, "192.0.2.11", "zoe", PASSWORD)
    webmail_login(fronted, None, "zoe", PASSWORD)
    lines = auth_lines(fronted, "zoe")
    assert lines[:10] == ["login failed: protocol=imap user=zoe ip=192.0.2.10 reason=bad-credentials"] * 10
    assert lines[10:] == [
        "login failed: protocol=imap user=zoe ip=192.0.2.10 reason=blocked",
        "login ok: protocol=imap user=zoe ip=192.0.2.11",
        "login ok: protocol=imap user=zoe ip=127.0.0.1",
    ]


def test_id_from_an_untrusted_peer_names_nobody(fronted):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.bind(("127.0.0.2", 0))
        sock.connect(("127.0.0.1", fronted.port("imap")))
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"* OK")
        sock.sendall(b'a ID ("x-originating-ip" "192.0.2.20")\r\nb LOGIN yan wrong\r\n')
        assert reader.readline().startswith(b"* ID ")
        assert reader.readline() == b"a OK ID completed\r\n"
        assert reader.readline() == b"b NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
    assert auth_lines(fronted, "yan") == ["login failed: protocol=imap user=yan ip=127.0.0.2 reason=bad-credentials"]
