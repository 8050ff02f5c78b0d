"""
Postfix (Debian's ``postfix``) delivering into the real server over LMTP on
a UNIX socket, the way deploy/postfix/ sets it up: a private Postfix
instance (its own config and queue directories under /tmp, smtpd on a free
loopback port, nothing chrooted) takes mail from smtplib and hands it to
``lmtp:unix:`` the gateway's socket; what arrived is read back with poplib
and imaplib.  Skipped where Postfix is not installed, except in CI.
"""

from __future__ import annotations

import email
import grp
import imaplib
import os
import poplib
import re
import shutil
import smtplib
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.ports import free_port
from tests.serverproc import LOOPBACK, ROOT, GatewayProcess, run_gateway, wait_for

SBIN = Path("/usr/sbin")
DEPLOY = ROOT / "deploy" / "postfix"
SOCKET_IN_DEPLOY = "/run/gateway/lmtp.sock"
# What a copy's trace fields look like: the gateway's on top (RFC 5321 4.4,
# Dovecot's shape; Postfix's LMTP client says LHLO with myhostname and,
# over a UNIX socket, has no IP address), then Postfix's own from smtpd.
GATEWAY_TRACE = (
    rb"Return-Path: <(?P<sender>[^>]*)>\r\n"
    rb"Delivered-To: (?P<recipient>\S+)\r\n"
    rb"Received: from mx\.example\.test\r\n"
    rb"\tby gateway\.example\.test with LMTP\r\n"
    rb"\tid [A-Za-z0-9+/]{22}\r\n"
    rb"\t\(envelope-from <(?P=sender)>\)\r\n"
    rb"\tfor <(?P=recipient)>; [A-Z][a-z]{2}, [0-9]{2} [A-Z][a-z]{2} [0-9]{4} [0-9:]{8} [+-][0-9]{4}\r\n"
    # Postfix's smtpd names the recipient only of a one-recipient transaction.
    rb"Received: from client\.example\.net \([^ \[]+ \[127\.0\.0\.1\]\)\r\n"
    rb"\tby mx\.example\.test \(Postfix\) with ESMTP id [0-9A-F]+(?:\r\n\tfor <(?P<postfix_for>[^>]+)>)?;"
)


class PostfixInstance:
    """A private Postfix: its own config_directory and queue_directory."""

    def __init__(self, root: Path, lmtp_socket: Path, smtp_port: int):
        self.root = root
        self.config = root / "etc"
        self.queue = root / "spool"
        self.maillog = root / "maillog"
        self.smtp_port = smtp_port
        for directory in (root, self.config, self.queue, root / "data"):
            directory.mkdir(mode=0o755)
        shutil.chown(root / "data", "postfix")
        # deploy/postfix/main.cf as shipped, pointed at this test's socket
        # and users map.
        additions = (DEPLOY / "main.cf").read_text()
        assert SOCKET_IN_DEPLOY in additions
        additions = additions.replace(SOCKET_IN_DEPLOY, str(lmtp_socket))
        additions = additions.replace("hash:/etc/postfix/gateway_users", f"hash:{self.config}/gateway_users")
        (self.config / "main.cf").write_text(
            f"""\
compatibility_level = 3.6
queue_directory = {self.queue}
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = loopback-only
inet_protocols = ipv4
myhostname = mx.example.test
mydomain = example.test
mydestination =
mynetworks = 127.0.0.0/8
relayhost =
alias_maps =
alias_database =
smtputf8_enable = no
biff = no
maillog_file = {self.maillog}
maillog_file_prefixes = {root}
{additions}"""
        )
        # deploy/postfix/master.cf's lmtp line (not chrooted), smtpd on a
        # free loopback port, and the services a delivery needs, none
        # chrooted: the queue directory is not set up as a chroot.
        lmtp_line = next(line for line in (DEPLOY / "master.cf").read_text().splitlines() if line.startswith("lmtp "))
        (self.config / "master.cf").write_text(
            "\n".join(
                [
                    f"127.0.0.1:{smtp_port} inet n - n - - smtpd",
                    "pickup unix n - n 60 1 pickup",
                    "cleanup unix n - n - 0 cleanup",
                    "qmgr unix n - n 300 1 qmgr",
                    "rewrite unix - - n - - trivial-rewrite",
                    "bounce unix - - n - 0 bounce",
                    "defer unix - - n - 0 bounce",
                    "trace unix - - n - 0 bounce",
                    "verify unix - - n - 1 verify",
                    "flush unix n - n 1000? 0 flush",
                    "proxymap unix - - n - - proxymap",
                    "showq unix n - n - - showq",
                    "error unix - - n - - error",
                    "retry unix - - n - - error",
                    "discard unix - - n - - discard",
                    "smtp unix - - n - - smtp",
                    "anvil unix - - n - 1 anvil",
                    "scache unix - - n - 1 scache",
                    "postlog unix-dgram n - n - 1 postlogd",
                    lmtp_line,
                    "",
                ]
            )
        )

    def run(self, command: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([str(SBIN / command), "-c", str(self.config), *args], capture_output=True, text=True,
                              timeout=60, check=check)

    def log(self) -> str:
        try:
            return self.maillog.read_text()
        except FileNotFoundError:
            return ""

    def running(self) -> bool:
        return self.run("postfix", "status", check=False).returncode == 0

    def start(self) -> None:
        started = self.run("postfix", "start", check=False)
        assert started.returncode == 0, started.stdout + started.stderr + self.log()

        def accepting():
            try:
                with socket.create_connection(("127.0.0.1", self.smtp_port), timeout=1) as client:
                    return client.recv(100).startswith(b"220 ")
            except OSError:
                return False

        wait_for(accepting, "Postfix's smtpd")

    def stop(self) -> None:
        if not self.running():
            return
        self.run("postfix", "stop", check=False)
        try:
            wait_for(lambda: not self.running(), "Postfix to stop", 20)
        except AssertionError:
            self.run("postfix", "abort", check=False)
            wait_for(lambda: not self.running(), "Postfix to abort", 10)


def require_postfix() -> None:
    """Skip where Postfix is missing, except in CI, where .ci/run installs it."""
    if not os.access(SBIN / "postfix", os.X_OK):
        if os.environ.get("CI") == "true":
            pytest.fail("postfix is not installed (apt package postfix)")
        pytest.skip("postfix is not installed (apt package postfix)")
    if os.geteuid() != 0:
        pytest.skip("a Postfix instance is started as root")
    try:
        grp.getgrnam("postfix")
    except KeyError:
        pytest.fail("the postfix group is missing: the postfix package creates it")


@pytest.fixture
def root():
    # Under /tmp itself: the postfix user must reach the queue and the
    # socket, and pytest's own directories are closed to other users.
    path = Path(tempfile.mkdtemp(prefix="gw-postfix-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def gateway(root):
    require_postfix()
    data = root / "gateway"
    for user in ("alice", "bob"):
        run_gateway(data, "user", "add", user, input=f"{user}-password\n".encode())
    config = root / "gateway.toml"
    config.write_text('hostname = "gateway.example.test"\n')
    run = root / "run"
    run.mkdir(mode=0o755)
    lmtp = run / "lmtp.sock"
    # The listener deploy/gateway.toml.example gives Postfix.
    server = GatewayProcess(data, pop3=LOOPBACK, imap=LOOPBACK, lmtp=f"unix:{lmtp}:mode=0660:group=postfix",
                            config=config)
    with server:
        server.lmtp_socket = lmtp
        yield server
    assert "Traceback" not in server.log()


@pytest.fixture
def postfix(root, gateway):
    instance = PostfixInstance(root / "postfix", gateway.lmtp_socket, free_port())
    # The users map, made the way deploy/postfix/main.cf says.
    users = run_gateway(gateway.data_dir, "user", "list").stdout.decode().split()
    (instance.config / "gateway_users").write_text("".join(f"{user}@example.org OK\n" for user in users))
    instance.run("postmap", f"hash:{instance.config}/gateway_users")
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()
    assert not instance.running()


def message(number: int, to: str, body: bytes = b"") -> bytes:
    return (
        b"From: Sender <sender@example.net>\r\n"
        b"To: " + to.encode() + b"\r\n"
        b"Subject: message %d\r\n"
        b"Date: Tue, 05 Mar 2024 12:00:00 +0100\r\n"
        b"Message-ID: <%d@example.net>\r\n"
        b"\r\n" % (number, number)
        + body + b"Message %d.\r\n" % number
    )


def pop3_messages(server, user: str) -> list[bytes]:
    pop = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=30)
    try:
        pop.user(user)
        pop.pass_(f"{user}-password")
        count = pop.stat()[0]
        return [b"\r\n".join(pop.retr(n)[1]) + b"\r\n" for n in range(1, count + 1)]
    finally:
        pop.quit()


def imap_messages(server, user: str) -> list[bytes]:
    client = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=30)
    try:
        client.login(user, f"{user}-password")
        client.select("INBOX", readonly=True)
        _, data = client.uid("FETCH", "1:*", "(BODY.PEEK[])")
        return [part[1] for part in data if isinstance(part, tuple)]
    finally:
        client.logout()


def message_id(stored: bytes) -> str:
    return email.message_from_bytes(stored)["Message-ID"]


def test_postfix_delivers_over_the_unix_socket(gateway, postfix):
    attachment = b"".join(b"%05d " % n + b"x" * 70 + b"\r\n" for n in range(5000))  # ~380 kB
    sent = {
        "alice": [message(1, "alice@example.org"), message(3, "alice+lists@example.org"),
                  message(4, "alice@example.org", b".leading dot\r\n..two\r\n" + attachment)],
        "bob": [],
    }
    both = message(2, "alice@example.org, bob@example.org")
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, local_hostname="client.example.net", timeout=30) as smtp:
        smtp.sendmail("sender@example.net", ["alice@example.org"], sent["alice"][0])
        # Two recipients: Postfix hands both over in one LMTP transaction.
        smtp.sendmail("sender@example.net", ["alice@example.org", "bob@example.org"], both)
        smtp.sendmail("sender@example.net", ["alice+lists@example.org"], sent["alice"][1])
        smtp.sendmail("sender@example.net", ["alice@example.org"], sent["alice"][2])
        # An unknown user is refused at RCPT (virtual_mailbox_maps): no bounce.
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            smtp.sendmail("sender@example.net", ["carol@example.org"], message(5, "carol@example.org"))
    sent["alice"].insert(1, both)
    sent["bob"].append(both)

    wait_for(lambda: len(pop3_messages(gateway, "alice")) == 4 and len(pop3_messages(gateway, "bob")) == 1,
             f"the deliveries; Postfix log:\n{postfix.log()}")
    # Nothing stays in Postfix's queue: every message was taken.
    assert "Mail queue is empty" in postfix.run("postqueue", "-p", check=False).stdout

    got = {"alice": pop3_messages(gateway, "alice"), "bob": imap_messages(gateway, "bob")}
    for user, stored_copies in got.items():
        # Delivery order is Postfix's; match the copies by Message-ID.
        stored_copies.sort(key=message_id)
        assert [message_id(s) for s in stored_copies] == [message_id(m) for m in sent[user]]
        for original, stored in zip(sent[user], stored_copies):
            trace = re.match(GATEWAY_TRACE, stored)
            assert trace, stored[:600]
            assert trace["sender"] == b"sender@example.net"
            expected = b"alice+lists@example.org" if b"alice+lists" in original else f"{user}@example.org".encode()
            assert trace["recipient"] == expected
            # The gateway's Received names each copy's recipient, even of
            # the message Postfix took for two at once.
            assert trace["postfix_for"] == (None if original is both else expected)
            # The message itself, whole: Postfix added no header to it.
            assert stored.endswith(original)
    # The +detail chooses no folder unless [lmtp] save_to_detail_mailbox.
    log = postfix.log()
    assert re.search(rf"to=<alice\+lists@example\.org>, relay=[^\[,]+\[{gateway.lmtp_socket}\], .*"
                     r"status=sent \(250 2\.0\.0 <alice\+lists@example\.org> Saved as UID \d+\)", log), log
    assert "status=deferred" not in log and "status=bounced" not in log
