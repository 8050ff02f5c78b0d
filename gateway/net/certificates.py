"""
TLS certificates: the self-signed pairs a first run writes, and reading a
configured pair (PEM certificate, leaf first, and its unencrypted key) into
what a TLS context serves, with one clear line when it cannot be used.

A server may hold two pairs, one with an ECDSA key and one with an RSA
key: modern clients take the first, clients that know no ECDSA (Windows 7
Outlook, old Android, scanners and appliances) the second, each handshake
choosing by what the client offers (``gateway/net/tls.py``).
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.logger import Logger

from gateway.durable import write_atomic

log = Logger()

# Where the first run puts its self-signed pairs, relative to the data dir.
GENERATED_CERTIFICATE = "tls/cert.pem"
GENERATED_KEY = "tls/key.pem"
GENERATED_RSA_CERTIFICATE = "tls/rsa-cert.pem"
GENERATED_RSA_KEY = "tls/rsa-key.pem"

# NIST SP 800-57 and OpenSSL's security level 2: 2048 bits until 2030; what
# every client that knows no ECDSA can still take.
RSA_BITS = 2048


class CertificateError(Exception):
    """A certificate or key cannot be used; str() is one line naming the file."""


def generate_self_signed(
    cert_path: Path, key_path: Path, hostname: str, now: datetime.datetime | None = None, *, key_type: str = "ECDSA"
) -> None:
    """
    Write a self-signed certificate for ``hostname`` (also valid for
    localhost, 127.0.0.1 and ::1) and its key, ECDSA P-256 or RSA 2048
    (``key_type`` "RSA"), the key file 0600 from the moment it exists.  Both
    are written beside their final name and renamed, so a crash never leaves
    half a file.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if key_type == "RSA":
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    dns_names = dict.fromkeys([hostname, "localhost"])
    alt_names = [x509.DNSName(dns) for dns in dns_names] + [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    for path in (cert_path, key_path):
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(key_path, key_pem, 0o600)
    write_atomic(cert_path, certificate.public_bytes(serialization.Encoding.PEM), 0o644)


def ensure_certificate(
    data_dir: Path, certificate: str, key: str, hostname: str, *, key_type: str = "ECDSA", generate: bool = True
) -> tuple[Path, Path]:
    """
    The configured certificate and key paths, resolved against the data dir.
    When both are the defaults for ``key_type`` (``tls/cert.pem`` and
    ``tls/key.pem`` for ECDSA, ``tls/rsa-*.pem`` for RSA) and neither file
    exists yet, a self-signed pair is generated there first (unless
    ``generate`` is false: a check writes nothing); a configured pair is
    never written over.
    """
    cert_path = data_dir / certificate
    key_path = data_dir / key
    defaults = (GENERATED_RSA_CERTIFICATE, GENERATED_RSA_KEY) if key_type == "RSA" else (
        GENERATED_CERTIFICATE, GENERATED_KEY)
    if generate and (certificate, key) == defaults and not cert_path.exists() and not key_path.exists():
        try:
            generate_self_signed(cert_path, key_path, hostname, key_type=key_type)
        except OSError as e:
            raise CertificateError(f"{cert_path}: cannot generate a self-signed certificate: {e.strerror}") from e
        log.info("Generated a self-signed {key_type} certificate for {hostname} in {path}", key_type=key_type,
                 hostname=hostname, path=cert_path)
    return cert_path, key_path


def certificate_paths(
    data_dir: Path, certificate: str, key: str, rsa_certificate: str, rsa_key: str, hostname: str,
    generate: bool = True,
) -> list[tuple[Path, Path]]:
    """
    The pairs a server serves, from ``[tls]``: the main pair, then the RSA
    pair.  At its default paths the RSA pair is left out when the main
    certificate is RSA itself; otherwise it is generated beside the main
    pair at its default paths (a data dir from before RSA pairs existed gets
    one too), and taken only when present beside a configured one.  At paths
    of its own it must exist.  "" leaves it out.  Without ``generate``,
    the pairs that would be generated are named but not written.
    """
    main = ensure_certificate(data_dir, certificate, key, hostname, generate=generate)
    if not rsa_certificate:
        return [main]
    if (rsa_certificate, rsa_key) == (GENERATED_RSA_CERTIFICATE, GENERATED_RSA_KEY):
        absent = not (data_dir / rsa_certificate).exists() and not (data_dir / rsa_key).exists()
        main_at_default = (certificate, key) == (GENERATED_CERTIFICATE, GENERATED_KEY)
        if _has_rsa_key(main[0]) or (absent and not main_at_default):
            return [main]
    return [main, ensure_certificate(data_dir, rsa_certificate, rsa_key, hostname, key_type="RSA", generate=generate)]


def generated_key_type(data_dir: Path, cert_path: Path, key_path: Path) -> str | None:
    """The key type ``ensure_certificate`` would generate at these paths, None where it would generate nothing."""
    if cert_path.exists() or key_path.exists():
        return None
    for paths, key_type in (((GENERATED_CERTIFICATE, GENERATED_KEY), "ECDSA"),
                            ((GENERATED_RSA_CERTIFICATE, GENERATED_RSA_KEY), "RSA")):
        if (cert_path, key_path) == (data_dir / paths[0], data_dir / paths[1]):
            return key_type
    return None


def _has_rsa_key(cert_path: Path) -> bool:
    """Whether the certificate file's leaf has an RSA key (unreadable: no; loading says why)."""
    try:
        leaf = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
    except (OSError, ValueError):
        return False
    return isinstance(leaf.public_key(), rsa.RSAPublicKey)


def key_type_name(key) -> str:
    """How logs and errors name a key's type."""
    if isinstance(key, rsa.RSAPrivateKey):
        return "RSA"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "ECDSA"
    return type(key).__name__.removeprefix("_").removesuffix("PrivateKey") or "unknown"


@attrs.frozen
class CertificatePair:
    """A certificate chain (leaf first) and the key of its leaf, as read and checked."""

    cert_path: Path
    key_path: Path
    chain: tuple[x509.Certificate, ...]
    key: object = attrs.field(repr=False)

    @property
    def key_type(self) -> str:
        return key_type_name(self.key)


def load_pair(cert_path: Path, key_path: Path) -> CertificatePair:
    """Read and check a pair; raises CertificateError naming the file at fault."""
    try:
        cert_pem = cert_path.read_bytes()
    except OSError as e:
        raise CertificateError(f"{cert_path}: cannot read: {e.strerror}") from None
    try:
        key_pem = key_path.read_bytes()
    except OSError as e:
        raise CertificateError(f"{key_path}: cannot read: {e.strerror}") from None
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise CertificateError(f"{cert_path}: no PEM certificate in it") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise CertificateError(f"{key_path}: not an unencrypted PEM private key") from None
    except Exception as e:  # cryptography raises UnsupportedAlgorithm and friends
        raise CertificateError(f"{key_path}: unusable private key ({type(e).__name__})") from None
    if _public(chain[0].public_key()) != _public(key.public_key()):
        raise CertificateError(f"{key_path}: does not match the certificate in {cert_path}")
    return CertificatePair(cert_path, key_path, tuple(chain), key)


def _public(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
