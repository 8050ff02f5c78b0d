"""
TLS for old clients, end to end: one real server with the default listeners
(TLS 1.2 and later) beside a ``legacy`` pop3s that takes TLS 1.0 from the
office network only, and a ``legacy-stls`` POP3 whose STLS takes TLS 1.0;
driven by Debian's ``openssl s_client`` and Python's ssl clients (poplib,
imaplib).

Modern OpenSSL clients refuse TLS 1.0 themselves unless told
``@SECLEVEL=0``; the clients here say so, as an old client needs not: the
refusals tested are the server's.  127.0.0.0/24 stands for the office LAN
and 127.0.3.0/24 for everywhere else (tests/sources.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import warnings

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from gateway.net.certificates import generate_self_signed
from tests.serverproc import LOOPBACK, GatewayProcess, run_gateway
from tests.sources import connect_from, imap_from, pop3_from

MESSAGE = b"From: a@example.org\r\nSubject: old client\r\n\r\nread over TLS 1.0\r\n"
OUTSIDE = "127.0.3.7"

CONFIG = f"""
[networks]
office = ["127.0.0.0/24"]

[listeners]
pop3s = "{LOOPBACK}"
imaps = "{LOOPBACK}"

[listeners.legacy]
protocol = "pop3s"
endpoints = "{LOOPBACK}"
tls_min_version = "1.0"
networks = ["office"]

[listeners.legacy-stls]
protocol = "pop3"
endpoints = "{LOOPBACK}"
tls_min_version = "1.0"

[auth]
failure_delay = 0
"""


@pytest.fixture(scope="module")
def openssl():
    if shutil.which("openssl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("openssl is not installed (Debian package openssl)")
        pytest.skip("openssl is not installed")


def start(base, config_text=CONFIG) -> GatewayProcess:
    config = base / "gateway.toml"
    config.write_text(config_text)
    server = GatewayProcess(base / "data", lmtp=None, config=config).start()
    # Clients trust both self-signed pairs the first run wrote.
    tls = server.data_dir / "tls"
    (base / "both.pem").write_bytes((tls / "cert.pem").read_bytes() + (tls / "rsa-cert.pem").read_bytes())
    return server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("legacy")
    running = start(base)
    try:
        running.add_user("alice", "secret")
        running.deliver("alice", MESSAGE)
        yield running
    finally:
        running.stop()


def trusted(server, which="both.pem"):
    return str(server.data_dir.parent / which) if which == "both.pem" else str(server.data_dir / "tls" / which)


def s_client(server, listener, *args, trust="both.pem", stdin=b"CAPA\r\nQUIT\r\n"):
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{server.port(listener)}", "-CAfile", trusted(server, trust),
         "-verify_return_error", "-verify_ip", "127.0.0.1", "-ign_eof", *args],
        input=stdin, capture_output=True, timeout=30,
    )


def negotiated(result) -> dict[str, str]:
    """What s_client reports: protocol, cipher and the server's key."""
    out = result.stdout.decode(errors="replace")
    fields = {}
    for line in out.splitlines():
        line = line.strip()
        for key in ("Protocol", "Cipher", "Server public key is", "Peer signature type"):
            if line.startswith(key) and key not in fields:
                fields[key] = line.split(":", 1)[1].strip() if ":" in line else line[len(key):].strip()
    return fields


def old_client_context(server, version=ssl.TLSVersion.TLSv1, trust="both.pem") -> ssl.SSLContext:
    """A Python client that speaks ``version`` and nothing newer."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=trusted(server, trust))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = version
        context.maximum_version = version
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


LEGACY = ("-tls1", "-tls1_1")


@pytest.mark.parametrize("version", LEGACY)
def test_openssl_tls1_and_1_1_on_the_legacy_listener(server, openssl, version):
    result = s_client(server, "legacy", version, "-cipher", "DEFAULT:@SECLEVEL=0")
    assert result.returncode == 0, result.stderr
    assert b"+OK" in result.stdout and b"+OK Bye" in result.stdout
    assert negotiated(result)["Protocol"] == {"-tls1": "TLSv1", "-tls1_1": "TLSv1.1"}[version]


@pytest.mark.parametrize("listener", ["pop3s", "imaps"])
@pytest.mark.parametrize("version", LEGACY)
def test_openssl_tls1_is_refused_on_the_default_listeners(server, openssl, listener, version):
    result = s_client(server, listener, version, "-cipher", "DEFAULT:@SECLEVEL=0", stdin=b"a LOGOUT\r\n")
    assert result.returncode != 0
    assert b"alert protocol version" in result.stderr
    assert b"+OK" not in result.stdout and b"* OK" not in result.stdout


def test_python_tls1_client_reads_mail_on_the_legacy_listener(server):
    pop = pop3_from("127.0.0.9", server.port("legacy"), old_client_context(server))
    try:
        assert pop.sock.version() == "TLSv1"
        pop.user("alice")
        pop.pass_("secret")
        assert b"read over TLS 1.0" in b"\r\n".join(pop.retr(1)[1])
    finally:
        pop.quit()
    # TLS 1.1 too.
    pop = pop3_from("127.0.0.9", server.port("legacy"), old_client_context(server, ssl.TLSVersion.TLSv1_1))
    assert pop.sock.version() == "TLSv1.1"
    pop.quit()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_python_tls1_client_is_refused_on_the_default_listeners(server, version):
    with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL|WRONG_VERSION"):
        pop3_from("127.0.0.9", server.port("pop3s"), old_client_context(server, version))
    with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL|WRONG_VERSION"):
        imap_from("127.0.0.9", server.port("imaps"), old_client_context(server, version))


def test_stls_on_a_legacy_listener_takes_tls1_and_on_the_default_one_not(server, openssl):
    result = s_client(server, "legacy-stls", "-starttls", "pop3", "-tls1", "-cipher", "DEFAULT:@SECLEVEL=0")
    assert result.returncode == 0, result.stderr
    assert negotiated(result)["Protocol"] == "TLSv1"
    assert b"+OK Bye" in result.stdout
    refused = s_client(server, "pop3", "-starttls", "pop3", "-tls1", "-cipher", "DEFAULT:@SECLEVEL=0")
    assert refused.returncode != 0
    assert b"alert protocol version" in refused.stderr


@pytest.mark.parametrize("listener", ["pop3s", "imaps", "legacy"])
@pytest.mark.parametrize(
    "client",
    [
        ("-tls1_2", "-sigalgs", "RSA+SHA256"),
        ("-tls1_2", "-cipher", "aRSA"),
        ("-tls1_3", "-sigalgs", "rsa_pss_rsae_sha256"),
    ],
    ids=["sigalgs-rsa", "cipher-arsa", "tls1.3-rsa-pss"],
)
def test_an_rsa_only_client_gets_the_rsa_certificate(server, openssl, listener, client):
    # It trusts the RSA certificate alone: the handshake verifies only if that is served.
    result = s_client(server, listener, *client, trust="rsa-cert.pem", stdin=b"a LOGOUT\r\nQUIT\r\n")
    assert result.returncode == 0, result.stderr
    assert negotiated(result)["Server public key is"] == "2048 bit"


def test_an_old_rsa_only_client_on_the_legacy_listener(server, openssl):
    # Windows 7 Schannel's TLS 1.0 choice, RSA key exchange and all.
    for cipher in ("ECDHE-RSA-AES128-SHA", "AES128-SHA"):
        result = s_client(server, "legacy", "-tls1", "-cipher", f"{cipher}:@SECLEVEL=0", trust="rsa-cert.pem")
        assert result.returncode == 0, result.stderr
        assert negotiated(result)["Cipher"] == cipher


def test_modern_clients_keep_the_ecdsa_certificate(server):
    # Trusting the ECDSA certificate alone: what clients of the server before
    # the RSA pair existed accepted keeps being served to them.
    context = ssl.create_default_context(cafile=trusted(server, "cert.pem"))
    with connect_from("127.0.0.9", server.port("imaps")) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            key = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).public_key()
            assert isinstance(key, ec.EllipticCurvePublicKey)
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_the_legacy_listener_serves_its_networks_only(server):
    with connect_from(OUTSIDE, server.port("legacy")) as raw:
        # Closed before any handshake: nothing of TLS 1.0 is offered outside.
        assert raw.recv(100) == b""
    with pytest.raises((ssl.SSLError, ConnectionError)):
        pop3_from(OUTSIDE, server.port("legacy"), old_client_context(server))
    # The default listeners serve everyone.
    pop = pop3_from(OUTSIDE, server.port("pop3s"), ssl.create_default_context(cafile=trusted(server)))
    pop.quit()
    assert f"Refused a legacy connection from {OUTSIDE}: not a network it serves" in server.log()


def test_the_start_warns_naming_each_legacy_listener(server):
    warnings_logged = [line for line in server.log().splitlines() if "known weaknesses" in line]
    assert len(warnings_logged) == 2
    assert any("Listener legacy takes TLS 1.0" in line for line in warnings_logged)
    assert any("Listener legacy-stls takes TLS 1.0" in line for line in warnings_logged)


def served_common_name(port: int, context: ssl.SSLContext) -> str:
    with connect_from("127.0.0.9", port) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            certificate = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
    return certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def test_sighup_reloads_the_certificates_of_every_listener(tmp_path):
    server = start(tmp_path)
    try:
        tls = server.data_dir / "tls"
        generate_self_signed(tls / "rsa-cert.pem", tls / "rsa-key.pem", "renewed.example.org", key_type="RSA")
        generate_self_signed(tls / "cert.pem", tls / "key.pem", "renewed.example.org")
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while "TLS certificate reloaded" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        rsa_only = old_client_context(server, trust="rsa-cert.pem")
        rsa_only.set_ciphers("aRSA:@SECLEVEL=0")
        assert served_common_name(server.port("legacy"), rsa_only) == "renewed.example.org"
        modern = ssl.create_default_context(cafile=trusted(server, "cert.pem"))
        assert served_common_name(server.port("pop3s"), modern) == "renewed.example.org"
        assert served_common_name(server.port("imaps"), modern) == "renewed.example.org"
        certificate = x509.load_pem_x509_certificate((tls / "rsa-cert.pem").read_bytes())
        assert isinstance(certificate.public_key(), rsa.RSAPublicKey)
    finally:
        server.stop()


def test_tls1_without_a_certificate_old_clients_take_stops_the_start_with_one_line(tmp_path):
    generate_self_signed(tmp_path / "ec.pem", tmp_path / "ec.key", "mail.example.org")
    config = CONFIG.replace("[auth]", f'[tls]\ncertificate = "{tmp_path}/ec.pem"\nkey = "{tmp_path}/ec.key"\n'
                                      f'rsa_certificate = ""\nrsa_key = ""\n[auth]')
    with pytest.raises(RuntimeError) as raised:
        start(tmp_path, config)
    message = str(raised.value)
    assert "gateway: listeners.legacy: tls_min_version '1.0' needs an RSA certificate, which clients that old " \
           f"take, and [tls] gives none ({tmp_path}/ec.pem is ECDSA): set [tls] rsa_certificate and rsa_key\n" in message
    assert "Traceback" not in message


def test_check_config_says_the_same_line_before_the_start_and_writes_no_certificate(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    config = tmp_path / "gateway.toml"
    # At the defaults the server would generate an ECDSA and an RSA pair: fine, and nothing written now.
    config.write_text(CONFIG)
    checked = run_gateway(data, "check-config", "--config", str(config))
    assert checked.stdout.decode() == f"{config}: ok\n"
    assert not (data / "tls").exists()
    generate_self_signed(tmp_path / "ec.pem", tmp_path / "ec.key", "mail.example.org")
    config.write_text(CONFIG.replace("[auth]", f'[tls]\ncertificate = "{tmp_path}/ec.pem"\nkey = "{tmp_path}/ec.key"\n'
                                               f'rsa_certificate = ""\nrsa_key = ""\n[auth]'))
    refused = run_gateway(data, "check-config", "--config", str(config), check=False)
    assert refused.returncode == 1
    assert refused.stderr.decode() == (
        f"gateway: {config}: listeners.legacy: tls_min_version '1.0' needs an RSA certificate, which clients that "
        f"old take, and [tls] gives none ({tmp_path}/ec.pem is ECDSA): set [tls] rsa_certificate and rsa_key\n")
    config.write_text(CONFIG.replace("[auth]", f'[tls]\ncertificate = "{tmp_path}/ec.pem"\nkey = "{tmp_path}/ec.key"\n'
                                               f'rsa_certificate = "{tmp_path}/missing.pem"\n'
                                               f'rsa_key = "{tmp_path}/missing.key"\n[auth]'))
    missing = run_gateway(data, "check-config", "--config", str(config), check=False)
    assert missing.stderr.decode() == (
        f"gateway: {config}: tls: {tmp_path}/missing.pem: cannot read: No such file or directory\n")
