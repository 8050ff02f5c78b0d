"""Which certificate pairs a server serves, and the ones a first run writes (gateway/net/certificates.py)."""

import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.net.certificates import (
    GENERATED_CERTIFICATE,
    GENERATED_KEY,
    GENERATED_RSA_CERTIFICATE,
    GENERATED_RSA_KEY,
    CertificateError,
    certificate_paths,
    generate_self_signed,
    load_pair,
)

DEFAULTS = (GENERATED_CERTIFICATE, GENERATED_KEY, GENERATED_RSA_CERTIFICATE, GENERATED_RSA_KEY)


def key_of(path):
    return x509.load_pem_x509_certificate(path.read_bytes()).public_key()


def test_a_first_run_writes_an_ecdsa_and_an_rsa_pair(tmp_path):
    pairs = certificate_paths(tmp_path, *DEFAULTS, "mail.example.org")
    assert pairs == [
        (tmp_path / "tls/cert.pem", tmp_path / "tls/key.pem"),
        (tmp_path / "tls/rsa-cert.pem", tmp_path / "tls/rsa-key.pem"),
    ]
    assert isinstance(key_of(pairs[0][0]), ec.EllipticCurvePublicKey)
    rsa_key = key_of(pairs[1][0])
    assert isinstance(rsa_key, rsa.RSAPublicKey) and rsa_key.key_size == 2048
    assert stat.S_IMODE(pairs[1][1].stat().st_mode) == 0o600
    assert load_pair(*pairs[1]).key_type == "RSA" and load_pair(*pairs[0]).key_type == "ECDSA"
    # A second start keeps both.
    before = [path.read_bytes() for pair in pairs for path in pair]
    assert certificate_paths(tmp_path, *DEFAULTS, "other.example.org") == pairs
    assert [path.read_bytes() for pair in pairs for path in pair] == before


def test_a_data_dir_from_before_gets_its_rsa_pair(tmp_path):
    generate_self_signed(tmp_path / GENERATED_CERTIFICATE, tmp_path / GENERATED_KEY, "mail.example.org")
    ecdsa = (tmp_path / GENERATED_CERTIFICATE).read_bytes()
    pairs = certificate_paths(tmp_path, *DEFAULTS, "mail.example.org")
    assert len(pairs) == 2 and isinstance(key_of(pairs[1][0]), rsa.RSAPublicKey)
    assert (tmp_path / GENERATED_CERTIFICATE).read_bytes() == ecdsa


def test_an_rsa_certificate_at_the_default_paths_needs_no_second(tmp_path):
    generate_self_signed(tmp_path / GENERATED_CERTIFICATE, tmp_path / GENERATED_KEY, "mail.example.org",
                         key_type="RSA")
    assert certificate_paths(tmp_path, *DEFAULTS, "mail.example.org") == [
        (tmp_path / GENERATED_CERTIFICATE, tmp_path / GENERATED_KEY)]
    assert not (tmp_path / GENERATED_RSA_CERTIFICATE).exists()


def test_beside_a_configured_certificate_the_default_rsa_pair_is_taken_when_present(tmp_path):
    configured = (str(tmp_path / "mail.pem"), str(tmp_path / "mail.key"))
    generate_self_signed(tmp_path / "mail.pem", tmp_path / "mail.key", "mail.example.org")
    main = (tmp_path / "mail.pem", tmp_path / "mail.key")
    assert certificate_paths(tmp_path, *configured, *DEFAULTS[2:], "h") == [main]
    assert not (tmp_path / "tls").exists()
    generate_self_signed(tmp_path / GENERATED_RSA_CERTIFICATE, tmp_path / GENERATED_RSA_KEY, "h", key_type="RSA")
    assert certificate_paths(tmp_path, *configured, *DEFAULTS[2:], "h") == [
        main, (tmp_path / GENERATED_RSA_CERTIFICATE, tmp_path / GENERATED_RSA_KEY)]


def test_none_or_a_configured_rsa_pair(tmp_path):
    assert len(certificate_paths(tmp_path, *DEFAULTS[:2], "", "", "h")) == 1
    assert not (tmp_path / GENERATED_RSA_CERTIFICATE).exists()
    pairs = certificate_paths(tmp_path, *DEFAULTS[:2], "/etc/ssl/rsa.pem", "/etc/ssl/rsa.key", "h")
    assert pairs[1] == (tmp_path / "/etc/ssl/rsa.pem", tmp_path / "/etc/ssl/rsa.key")
    with pytest.raises(CertificateError, match=r"^/etc/ssl/rsa.pem: cannot read: No such file or directory$"):
        load_pair(*pairs[1])
