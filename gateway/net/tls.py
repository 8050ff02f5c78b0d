"""
TLS for the listeners: the certificate, its reloading, implicit TLS
(RFC 8314) and a safe STARTTLS/STLS switch (RFC 2595).

One ``CertificateStore`` per server holds the current
``twisted.internet.ssl.CertificateOptions``.  Everything that starts TLS asks
it for the options at handshake time, through ``context_factory()``, so a
reloaded certificate is used by the next handshake while sessions already
running keep the one they negotiated.

Protocols with STARTTLS (IMAP) or STLS (POP3) should switch with
``start_tls_discarding_buffer``, so that no command the client pipelined behind STARTTLS in plain text is ever
executed inside the TLS session (the command-injection class of bugs,
CVE-2011-0411 and its many relatives).
"""

from __future__ import annotations

import datetime
import ipaddress
import signal
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from twisted.application.service import Service
from twisted.internet.interfaces import IOpenSSLContextFactory, IOpenSSLServerConnectionCreator, ISSLTransport
from twisted.internet.ssl import CertificateOptions, TLSVersion
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory
from zope.interface import implementer

from gateway.durable import write_atomic

log = Logger()

# Where the first run puts its self-signed pair, relative to the data dir.
GENERATED_CERTIFICATE = "tls/cert.pem"
GENERATED_KEY = "tls/key.pem"


class CertificateError(Exception):
    """A certificate or key cannot be used; str() is one line naming the file."""


def generate_self_signed(cert_path: Path, key_path: Path, hostname: str, now: datetime.datetime | None = None) -> None:
    """
    Write a self-signed certificate for ``hostname`` (also valid for
    localhost, 127.0.0.1 and ::1) and its key, the key file 0600 from the
    moment it exists.  Both are written beside their final name and renamed,
    so a crash never leaves half a file.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
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


def ensure_certificate(data_dir: Path, certificate: str, key: str, hostname: str) -> tuple[Path, Path]:
    """
    The configured certificate and key paths, resolved against the data dir.
    When both are the defaults and neither file exists yet, a self-signed pair
    is generated there first; a configured pair is never written over.
    """
    cert_path = data_dir / certificate
    key_path = data_dir / key
    generated = (certificate, key) == (GENERATED_CERTIFICATE, GENERATED_KEY)
    if generated and not cert_path.exists() and not key_path.exists():
        try:
            generate_self_signed(cert_path, key_path, hostname)
        except OSError as e:
            raise CertificateError(f"{cert_path}: cannot generate a self-signed certificate: {e.strerror}") from e
        log.info("Generated a self-signed certificate for {hostname} in {path}", hostname=hostname, path=cert_path)
    return cert_path, key_path


def load_options(cert_path: Path, key_path: Path) -> CertificateOptions:
    """
    Server TLS options from a PEM certificate file (leaf first, then any
    intermediates) and a PEM key file.  TLS 1.2 is the minimum (RFC 8996,
    RFC 8314 4.1); ciphers are Twisted's defaults.  Raises CertificateError.
    """
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
    if chain[0].public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise CertificateError(f"{key_path}: does not match the certificate in {cert_path}")
    # cryptography objects, not pyOpenSSL's X509/PKey: pyOpenSSL deprecates
    # those, and CertificateOptions only hands them on to the OpenSSL context.
    options = CertificateOptions(
        privateKey=key,
        certificate=chain[0],
        extraCertChain=list(chain[1:]),
        raiseMinimumTo=TLSVersion.TLSv1_2,
    )
    try:
        # Build the OpenSSL context now: a pair OpenSSL refuses must fail the
        # load, not the next client's handshake.
        options.getContext()
    except SSL.Error as e:
        raise CertificateError(f"{cert_path}: OpenSSL refuses it: {e}") from None
    return options


def _signature(paths: tuple[Path, ...]) -> tuple:
    """What changes when a file is rewritten or replaced (mtime, size, inode)."""
    stamps = []
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            stamps.append(None)
        else:
            stamps.append((stat.st_mtime_ns, stat.st_size, stat.st_ino))
    return tuple(stamps)


class CertificateStore:
    """
    The current certificate and key.  ``options()`` is what the next
    handshake uses; ``reload()`` re-reads both files and, only if they make a
    usable pair, swaps them in.  The constructor raises CertificateError: a
    server must not start with an unusable certificate, but a running one
    keeps its old pair rather than stop.
    """

    def __init__(self, cert_path: Path, key_path: Path) -> None:
        self.cert_path = Path(cert_path)
        self.key_path = Path(key_path)
        self._signature = _signature((self.cert_path, self.key_path))
        self._options = load_options(self.cert_path, self.key_path)

    def options(self) -> CertificateOptions:
        return self._options

    def context_factory(self) -> CurrentCertificate:
        """For ``transport.startTLS`` and ``IMAP4Server.ctx``: always the current pair."""
        return CurrentCertificate(self)

    def reload(self, reason: str = "asked") -> bool:
        """Re-read the files; True when the new pair is now in use."""
        self._signature = _signature((self.cert_path, self.key_path))
        try:
            options = load_options(self.cert_path, self.key_path)
        except CertificateError as e:
            log.error("TLS certificate not reloaded ({why}), keeping the previous one: {reason}", why=reason,
                      reason=str(e))
            return False
        self._options = options
        log.info("TLS certificate reloaded from {path} ({why})", path=self.cert_path, why=reason)
        return True

    def reload_if_changed(self) -> bool:
        """Reload when either file changed since the last (attempted) load."""
        if _signature((self.cert_path, self.key_path)) == self._signature:
            return False
        return self.reload("files changed")


@implementer(IOpenSSLServerConnectionCreator, IOpenSSLContextFactory)
class CurrentCertificate:
    """A connection creator that asks the store for its options per handshake."""

    def __init__(self, store: CertificateStore) -> None:
        self._store = store

    def serverConnectionForTLS(self, tlsProtocol) -> SSL.Connection:
        return SSL.Connection(self._store.options().getContext(), None)

    def getContext(self) -> SSL.Context:
        return self._store.options().getContext()


@implementer(ISSLTransport)
class _ImplicitTLSConnection(BufferingTLSTransport):
    """
    TLSMemoryBIOProtocol does not say it is an ISSLTransport (it copies the
    interfaces of the TCP transport under it); the protocols ask exactly
    that, already in connectionMade, to decide whether to offer STARTTLS and
    accept a plain-text password.
    """


class _ImplicitTLSFactory(TLSMemoryBIOFactory):
    protocol = _ImplicitTLSConnection


def implicit_tls_factory(wrapped_factory, store: CertificateStore, reactor) -> TLSMemoryBIOFactory:
    """
    Wrap a protocol factory so its connections speak TLS from the first byte
    (RFC 8314 3.3: POP3S on 995, IMAPS on 993), with the store's current
    pair; the protocol's transport provides ISSLTransport.
    """
    return _ImplicitTLSFactory(store.context_factory(), False, wrapped_factory, clock=reactor)


class CertificateReloader(Service):
    """
    Reload the certificate on SIGHUP and when its files change (polled every
    ``interval`` seconds: inotify is not everywhere and a few seconds of
    delay do not matter for a certificate renewal).

    The SIGHUP handler only schedules the reload in the reactor thread, and
    calls a handler that was installed before it, so another part of the
    process that listens to SIGHUP keeps working.
    """

    def __init__(self, store: CertificateStore, reactor, interval: float = 5.0) -> None:
        self.store = store
        self.reactor = reactor
        self.interval = interval
        self._poll = LoopingCall(store.reload_if_changed)
        self._poll.clock = reactor
        self._previous_handler = None

    def startService(self) -> None:
        super().startService()
        self._poll.start(self.interval, now=False)
        self._previous_handler = signal.signal(signal.SIGHUP, self._on_hangup)

    def stopService(self):
        if signal.getsignal(signal.SIGHUP) == self._on_hangup:
            signal.signal(signal.SIGHUP, self._previous_handler)
        if self._poll.running:
            self._poll.stop()
        return super().stopService()

    def _on_hangup(self, signum, frame) -> None:
        self.reactor.callFromThread(self.store.reload, "SIGHUP")
        if callable(self._previous_handler):
            self._previous_handler(signum, frame)


def start_tls_discarding_buffer(protocol, context_factory) -> None:
    """
    Switch ``protocol`` (a ``LineReceiver`` or ``LineOnlyReceiver``) to TLS
    after its positive answer to STARTTLS/STLS has been written, and make
    sure that no line the client sent behind the command in plain text is
    ever executed.  RFC 2595 3.1, RFC 3207 4.2: the client must wait for the
    answer, so nothing it sent before the handshake is a command.

    Pipelined plain text can sit in three places, and each is emptied:
    the unparsed ``_buffer``; a ``blocked`` list of queued lines, as our
    IMAP and POP3 servers keep; and lines already taken off by a loop that
    is still running, out of reach of this function: ``LineOnlyReceiver``
    (Twisted's POP3) splits a whole packet before dispatching, and an
    ``_unblock`` loop holds the rest of its queue in a local list.  Those
    last lines are dropped by shadowing ``lineReceived`` on the instance
    until the first bytes come out of the TLS layer: once the transport has
    switched, every new byte arrives that way, so any line delivered before
    is pipelined plain text.  Shadowing the instance, not mixing a class in,
    works whatever the protocol's own classes override.
    """
    protocol._buffer = b""
    blocked = getattr(protocol, "blocked", None)
    if isinstance(blocked, list):
        del blocked[:]

    def discard_plaintext_line(line):
        log.warn("Discarded a line pipelined before the TLS handshake")

    def first_tls_bytes(data):
        del protocol.lineReceived
        del protocol.dataReceived
        return protocol.dataReceived(data)

    protocol.lineReceived = discard_plaintext_line
    protocol.dataReceived = first_tls_bytes
    protocol.transport.startTLS(context_factory)
