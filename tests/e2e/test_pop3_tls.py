"""
STLS (RFC 2595 4) end to end: the real server on a loopback port, driven by
poplib's ``stls()`` and by ``openssl s_client -starttls pop3``, each trusting
only the self-signed certificate the first run generated
(``DATA/tls/cert.pem``), and a raw socket that pipelines a login behind STLS
in plain text (it must not run).
"""

from __future__ import annotations

import os
import poplib
import shutil
import socket
import ssl
import subprocess

import pytest

from gateway.store.sqlite.store import SQLiteStore
from tests.deferreds import result_of
from tests.serverproc import LOOPBACK, GatewayProcess

MESSAGE = b"From: a@example.org\r\nSubject: over STLS\r\n\r\nsecret body\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("pop3tls")
    config = base / "gateway.toml"
    config.write_text("[auth]\nfailure_delay = 0.1\n")
    data = base / "data"
    with GatewayProcess(data, imap=None, lmtp=None, config=config, extra_args=["--pop3s", LOOPBACK]) as running:
        running.add_user("alice", "secret")
        store = SQLiteStore(data / "store")
        try:
            result_of(store.ensure_user("alice"))
            inbox = result_of(store.get_mailbox("alice", "INBOX"))
            result_of(store.append(inbox.id, MESSAGE))
        finally:
            store.close()
        yield running


@pytest.fixture
def stls_offered(server):
    client = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=10)
    try:
        capabilities = client.capa()
    finally:
        client.quit()
    assert "STLS" in capabilities


def client_context(server) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(server.data_dir / "tls" / "cert.pem"))


def test_poplib_stls_then_login(server, stls_offered):
    client = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=10)
    try:
        assert client.stls(client_context(server)) == b"+OK Begin TLS negotiation"
        assert isinstance(client.sock, ssl.SSLSocket)
        capabilities = client.capa()
        assert "STLS" not in capabilities and "USER" in capabilities
        client.user("alice")
        client.pass_("secret")
        assert b"\r\n".join(client.retr(1)[1]) + b"\r\n" == MESSAGE
        # RFC 2595 4: STLS is only for the AUTHORIZATION state.
        with pytest.raises(poplib.error_proto, match="not valid in this state"):
            client._shortcmd("STLS")
    finally:
        client.quit()


def test_login_pipelined_behind_stls_never_runs(server, stls_offered):
    with socket.create_connection(("127.0.0.1", server.port("pop3")), timeout=10) as raw:
        reader = raw.makefile("rb")
        assert reader.readline().startswith(b"+OK ")
        raw.sendall(b"STLS\r\nUSER alice\r\nPASS secret\r\nDELE 1\r\nQUIT\r\n")
        assert reader.readline() == b"+OK Begin TLS negotiation\r\n"
        with client_context(server).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls_reader = tls.makefile("rb")
            tls.sendall(b"STAT\r\n")
            assert tls_reader.readline() == b"-ERR Command not valid in this state\r\n"
            tls.sendall(b"USER alice\r\nPASS secret\r\nSTAT\r\nQUIT\r\n")
            assert tls_reader.readline() == b"+OK Send PASS\r\n"
            assert tls_reader.readline().startswith(b"+OK Maildrop has 1 messages")
            assert tls_reader.readline() == b"+OK 1 %d\r\n" % len(MESSAGE)
            assert tls_reader.readline() == b"+OK Bye, 0 messages deleted\r\n"


def test_pop3s_session_offers_no_stls(server, stls_offered):
    # RFC 2595 4 / RFC 8314: implicit TLS is already secure; STLS again is an error.
    client = poplib.POP3_SSL("127.0.0.1", server.port("pop3s"), context=client_context(server), timeout=10)
    try:
        assert "STLS" not in client.capa()
        with pytest.raises(poplib.error_proto, match="TLS is already active"):
            client._shortcmd("STLS")
        client.user("alice")
        client.pass_("secret")
        assert client.stat() == (1, len(MESSAGE))
    finally:
        client.quit()


def openssl_binary() -> str:
    binary = shutil.which("openssl")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("openssl is not installed (Debian package openssl)")
        pytest.skip("openssl is not installed (Debian package openssl)")
    return binary


def test_openssl_s_client_starttls_pop3(server, stls_offered):
    completed = subprocess.run(
        [
            openssl_binary(), "s_client", "-starttls", "pop3", "-connect", f"127.0.0.1:{server.port('pop3')}",
            "-CAfile", str(server.data_dir / "tls" / "cert.pem"), "-verify_return_error", "-crlf", "-quiet",
        ],
        input=b"USER alice\nPASS secret\nSTAT\nQUIT\n",
        capture_output=True,
        timeout=30,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == [
        b"+OK Send PASS",
        b"+OK Maildrop has 1 messages (%d octets)" % len(MESSAGE),
        b"+OK 1 %d" % len(MESSAGE),
        b"+OK Bye, 0 messages deleted",
    ]
