"""
IMAP over TLS against the real server: STARTTLS (RFC 3501 6.2.1, RFC 2595)
with Python's imaplib and ``openssl s_client -starttls imap`` (Debian
package openssl), implicit TLS on an imaps listener (RFC 8314), each client
trusting only DATA/tls/cert.pem; and plain text pipelined behind STARTTLS
never runs.
"""

from __future__ import annotations

import imaplib
import os
import shutil
import socket
import ssl
import subprocess

import pytest

from tests.serverproc import LOOPBACK, GatewayProcess

MESSAGE = b"From: a@example.org\r\nSubject: over TLS\r\n\r\nsecret body\r\n"


def client_context(data_dir) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(data_dir / "tls" / "cert.pem"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("imap-tls") / "data"
    with GatewayProcess(data, extra_args=["--imaps", LOOPBACK]) as running:
        running.add_user("alice", "secret")
        running.deliver("alice", MESSAGE)
        yield running


def test_starttls_with_imaplib(server):
    imap = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=10)
    try:
        assert "STARTTLS" in imap.capabilities
        typ, _ = imap.starttls(ssl_context=client_context(server.data_dir))
        assert typ == "OK"
        assert imap.sock.version() in ("TLSv1.2", "TLSv1.3")
        # imaplib asks again after the handshake (RFC 3501 6.2.1).
        assert "STARTTLS" not in imap.capabilities
        assert "AUTH=PLAIN" in imap.capabilities
        imap.login("alice", "secret")
        assert imap.select("INBOX") == ("OK", [b"1"])
        typ, data = imap.fetch("1", "(BODY.PEEK[TEXT])")
        assert typ == "OK" and data[0][1] == b"secret body\r\n"
        typ, data = imap.append("INBOX", None, None, b"Subject: up\r\n\r\nthrough TLS\r\n")
        assert typ == "OK" and data[0].startswith(b"[APPENDUID ")
    finally:
        imap.logout()


def test_imaps_offers_no_starttls_and_refuses_it(server):
    imap = imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=client_context(server.data_dir),
                             timeout=10)
    try:
        assert "STARTTLS" not in imap.capabilities
        assert "AUTH=PLAIN" in imap.capabilities and "LOGINDISABLED" not in imap.capabilities
        typ, data = imap._simple_command("STARTTLS")
        assert typ == "NO" and data == [b"[CANNOT] TLS not available"]
        imap.login("alice", "secret")
        assert imap.select("INBOX")[0] == "OK"
    finally:
        imap.logout()


def test_plain_text_pipelined_behind_starttls_never_runs(server):
    context = client_context(server.data_dir)
    with socket.create_connection(("127.0.0.1", server.port("imap")), timeout=10) as raw:
        reader = raw.makefile("rb")
        assert reader.readline().startswith(b"* OK")
        # One write: an attacker on the path appends LOGIN and SELECT.
        raw.sendall(b"a STARTTLS\r\nb LOGIN alice secret\r\nc SELECT INBOX\r\n")
        assert reader.readline() == b"a OK Begin TLS negotiation now\r\n"
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"d SELECT INBOX\r\ne LOGOUT\r\n")
            answer = b""
            while chunk := tls.recv(4096):
                answer += chunk
    assert answer == b"d BAD Unsupported command\r\n* BYE Logging out\r\ne OK LOGOUT completed\r\n"


@pytest.fixture
def openssl():
    if shutil.which("openssl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("openssl is not installed (Debian package openssl)")
        pytest.skip("openssl is not installed")


def test_openssl_s_client_starttls_imap_logs_in_and_reads(server, openssl):
    result = subprocess.run(
        ["openssl", "s_client", "-starttls", "imap", "-connect", f"127.0.0.1:{server.port('imap')}",
         "-CAfile", str(server.data_dir / "tls" / "cert.pem"), "-verify_return_error", "-verify_ip", "127.0.0.1",
         "-quiet"],
        input=b"a LOGIN alice secret\r\nb EXAMINE INBOX\r\nc FETCH 1 BODY.PEEK[TEXT]\r\nd LOGOUT\r\n",
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert b"a OK [CAPABILITY " in out
    assert b"b OK [READ-ONLY] EXAMINE completed" in out
    assert b"* 1 FETCH (BODY[TEXT] {13}\r\nsecret body\r\n)" in out
    assert b"d OK LOGOUT completed" in out
    assert b"verify return:1" in result.stderr
