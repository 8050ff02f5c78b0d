"""
TLS and connection limits end to end: the real server with implicit-TLS
listeners (``--pop3s``/``--imaps``) on loopback ports the OS picks, driven by
Python's ssl-wrapped poplib and imaplib and by ``openssl s_client``, each
trusting only the self-signed certificate the first run generated.
"""

from __future__ import annotations

import imaplib
import os
import poplib
import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from gateway.net.certificates import generate_self_signed
from tests.serverproc import LOOPBACK, GatewayProcess

MESSAGE = b"From: a@example.org\r\nSubject: over TLS\r\n\r\nsecret body\r\n"
TLS_LISTENERS = ["--pop3s", LOOPBACK, "--imaps", LOOPBACK]


def client_context(data_dir) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(data_dir / "tls" / "cert.pem"))


def common_name(der: bytes) -> str:
    certificate = x509.load_der_x509_certificate(der)
    return certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def served_common_name(server, listener="imaps") -> str:
    context = client_context(server.data_dir)
    with socket.create_connection(("127.0.0.1", server.port(listener)), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return common_name(tls.getpeercert(binary_form=True))


def wait_for_log(server, text, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in server.log():
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the server log: {server.log()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("tls") / "data"
    with GatewayProcess(data, extra_args=TLS_LISTENERS) as running:
        running.add_user("alice", "secret")
        running.deliver("alice", MESSAGE)
        yield running


def test_pop3s_with_poplib(server):
    pop = poplib.POP3_SSL("127.0.0.1", server.port("pop3s"), context=client_context(server.data_dir), timeout=10)
    try:
        assert pop.getwelcome().startswith(b"+OK")
        assert pop.sock.version() in ("TLSv1.2", "TLSv1.3")
        pop.user("alice")
        pop.pass_("secret")
        assert pop.stat()[0] == 1
        assert b"secret body" in b"\r\n".join(pop.retr(1)[1])
    finally:
        pop.quit()


def test_imaps_with_imaplib(server):
    imap = imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=client_context(server.data_dir), timeout=10)
    try:
        imap.login("alice", "secret")
        assert imap.select("INBOX") == ("OK", [b"1"])
        status, data = imap.fetch("1", "(BODY[TEXT])")
        assert status == "OK"
        assert data[0][1] == b"secret body\r\n"
    finally:
        imap.logout()


def test_imaps_does_not_offer_starttls(server):
    imap = imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=client_context(server.data_dir), timeout=10)
    try:
        # RFC 8314 / RFC 3501 6.2.1: STARTTLS only on a session not yet in TLS.
        assert "STARTTLS" not in imap.capabilities
    finally:
        imap.logout()


def test_generated_certificate_names_the_host_and_the_key_is_private(server):
    assert served_common_name(server, "pop3s") == "localhost"
    assert oct(os.stat(server.data_dir / "tls" / "key.pem").st_mode & 0o777) == "0o600"


def test_a_client_that_trusts_nothing_is_refused(server):
    with socket.create_connection(("127.0.0.1", server.port("imaps")), timeout=10) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")


def s_client(server, *args, stdin=b""):
    return subprocess.run(
        ["openssl", "s_client", "-CAfile", str(server.data_dir / "tls" / "cert.pem"), "-verify_return_error",
         "-quiet", *args],
        input=stdin,
        capture_output=True,
        timeout=30,
    )


@pytest.fixture
def openssl():
    if shutil.which("openssl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("openssl is not installed (Debian package openssl)")
        pytest.skip("openssl is not installed")


def test_openssl_s_client_on_implicit_tls(server, openssl):
    result = s_client(server, "-connect", f"127.0.0.1:{server.port('pop3s')}", "-verify_ip", "127.0.0.1",
                      stdin=b"CAPA\r\nQUIT\r\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"+OK")
    assert b"+OK Bye" in result.stdout or result.stdout.rstrip().endswith(b"+OK")
    assert b"verify return:1" in result.stderr


def test_openssl_s_client_tls_1_1_is_refused(server, openssl):
    result = s_client(server, "-connect", f"127.0.0.1:{server.port('imaps')}", "-tls1_1", "-cipher",
                      "DEFAULT:@SECLEVEL=0", stdin=b"a LOGOUT\r\n")
    assert result.returncode != 0
    assert b"* OK" not in result.stdout


def test_openssl_s_client_starttls_imap_uses_the_same_certificate(server, openssl):
    result = s_client(server, "-starttls", "imap", "-connect", f"127.0.0.1:{server.port('imap')}",
                      stdin=b"a LOGOUT\r\n")
    assert result.returncode == 0, result.stderr
    assert b"a OK LOGOUT" in result.stdout
    assert b"CN = localhost" in result.stderr


def test_sighup_reloads_the_certificate_for_new_connections(tmp_path):
    data = tmp_path / "data"
    with GatewayProcess(data, extra_args=TLS_LISTENERS) as server:
        server.add_user("alice", "secret")
        before = imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=client_context(data), timeout=10)
        before.login("alice", "secret")
        assert served_common_name(server) == "localhost"

        # Renewed under the same names, as certbot would; the new pair is
        # trusted from now on by a client loading the new file.
        generate_self_signed(data / "tls" / "cert.pem", data / "tls" / "key.pem", "renewed.example.org")
        server.process.send_signal(signal.SIGHUP)
        wait_for_log(server, "(SIGHUP)")
        assert served_common_name(server) == "renewed.example.org"
        assert served_common_name(server, "pop3s") == "renewed.example.org"
        # A session from before the reload goes on undisturbed.
        assert before.noop()[0] == "OK"
        assert common_name(before.sock.getpeercert(binary_form=True)) == "localhost"
        before.logout()
        assert server.process.poll() is None


def test_a_broken_renewal_keeps_the_old_certificate(tmp_path):
    data = tmp_path / "data"
    with GatewayProcess(data, extra_args=TLS_LISTENERS) as server:
        # A handshake served means the services have started, SIGHUP handler
        # included (ports.json appears before that).
        assert served_common_name(server) == "localhost"
        (data / "tls" / "key.pem").write_text("half written\n")
        server.process.send_signal(signal.SIGHUP)
        wait_for_log(server, "not reloaded (SIGHUP), keeping the previous one")
        assert served_common_name(server) == "localhost"


def test_connection_limit_per_ip_refuses_the_next_one(tmp_path):
    config = tmp_path / "gateway.toml"
    config.write_text("[limits]\nmax_connections_per_ip = 2\n")
    with GatewayProcess(tmp_path / "data", config=config, extra_args=TLS_LISTENERS) as server:
        held = []
        for listener, greeting in (("pop3", b"+OK"), ("imap", b"* OK")):
            held.append(socket.create_connection(("127.0.0.1", server.port(listener)), timeout=10))
            assert held[-1].makefile("rb").readline().startswith(greeting)
        for listener, refusal in (("pop3", b"-ERR [SYS/TEMP] Too many connections\r\n"),
                                  ("imap", b"* BYE Too many connections\r\n")):
            with socket.create_connection(("127.0.0.1", server.port(listener)), timeout=10) as extra:
                reader = extra.makefile("rb")
                assert reader.readline() == refusal
                assert reader.read() == b""
        # Implicit TLS: a clean close, no plain text inside a TLS port.
        with socket.create_connection(("127.0.0.1", server.port("imaps")), timeout=10) as extra:
            with pytest.raises((ssl.SSLError, ConnectionError)):
                client_context(server.data_dir).wrap_socket(extra, server_hostname="127.0.0.1")
        # Closing one frees its place.
        held.pop().close()
        deadline = time.monotonic() + 15
        while True:
            with socket.create_connection(("127.0.0.1", server.port("imap")), timeout=10) as again:
                line = again.makefile("rb").readline()
            if line.startswith(b"* OK") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert line.startswith(b"* OK")
        for sock in held:
            sock.close()


def test_an_unusable_configured_certificate_stops_the_start_with_one_line(tmp_path):
    config = tmp_path / "gateway.toml"
    config.write_text(f'[tls]\ncertificate = "{tmp_path}/absent.pem"\nkey = "{tmp_path}/absent.key"\n')
    with pytest.raises(RuntimeError) as raised:
        GatewayProcess(tmp_path / "data", config=config, extra_args=TLS_LISTENERS).start()
    assert f"gateway: tls: {tmp_path}/absent.pem: cannot read: No such file or directory\n" in str(raised.value)
    assert "Traceback" not in str(raised.value)
    assert not (tmp_path / "absent.pem").exists()
