"""
TLS: the generated certificate, loading and reloading, implicit TLS, and
discarding plain text pipelined behind STARTTLS.

Handshakes here are real: Python's ``ssl`` module on memory BIOs talks to
Twisted's TLSMemoryBIOProtocol on a StringTransport, bytes pumped by hand.
"""

import datetime
import ipaddress
import os
import signal
import ssl
import stat
import warnings

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from zope.interface import implementer
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ISSLTransport, ITLSTransport
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.ssl import AcceptableCiphers, CertificateOptions, TLSVersion
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.mail import imap4
from twisted.protocols.basic import LineOnlyReceiver, LineReceiver
from twisted.protocols.tls import TLSMemoryBIOFactory

from gateway.net.certificates import (
    GENERATED_CERTIFICATE,
    GENERATED_KEY,
    GENERATED_RSA_CERTIFICATE,
    GENERATED_RSA_KEY,
    CertificateError,
    ensure_certificate,
    generate_self_signed,
    load_pair,
)
from gateway.net.tls import (
    CIPHERS,
    MODERN,
    CertificateReloader,
    CertificateStore,
    NoRsaCertificate,
    TlsPolicy,
    implicit_tls_factory,
    start_tls_discarding_buffer,
)

PEER = IPv4Address("TCP", "127.0.0.1", 40000)


@pytest.fixture
def pair(tmp_path):
    cert_path, key_path = ensure_certificate(tmp_path, GENERATED_CERTIFICATE, GENERATED_KEY, "mail.example.org")
    return cert_path, key_path


@pytest.fixture
def log_lines():
    lines = []

    def observer(event):
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    yield lines
    globalLogPublisher.removeObserver(observer)


class TLSClient:
    """Python's ssl client on memory BIOs: what poplib/imaplib would negotiate."""

    def __init__(self, cafile, server_hostname="localhost"):
        context = ssl.create_default_context(cafile=str(cafile))
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.ssl = context.wrap_bio(self.incoming, self.outgoing, server_hostname=server_hostname)
        self.received = b""

    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.ssl.getpeercert(binary_form=True))

    def common_name(self) -> str:
        return self.certificate().subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def pump(client, deliver, transport, clock):
    """
    Move bytes both ways until neither side has anything to say, handshaking
    first; ``deliver`` hands the server bytes from the client.
    """
    for _ in range(50):
        if not client.ssl.server_side and client.ssl.version() is None:
            try:
                client.ssl.do_handshake()
            except ssl.SSLWantReadError:
                pass
        clock.advance(0)
        to_server = client.outgoing.read()
        if to_server:
            deliver(to_server)
        clock.advance(0)
        to_client = transport.value()
        transport.clear()
        if to_client:
            client.incoming.write(to_client)
        if client.ssl.version() is not None:
            while True:
                try:
                    chunk = client.ssl.read(65536)
                except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                    break
                if not chunk:
                    break
                client.received += chunk
        if not to_server and not to_client:
            return
    raise AssertionError("the TLS conversation did not settle")


class Echo(Protocol):
    secure_at_connect = None

    def connectionMade(self):
        self.secure_at_connect = ISSLTransport.providedBy(self.transport)

    def dataReceived(self, data):
        self.transport.write(b"echo " + data)


def implicit_connection(store):
    clock = Clock()
    factory = implicit_tls_factory(ServerFactory.forProtocol(Echo), store, clock)
    protocol = factory.buildProtocol(PEER)
    transport = StringTransport(peerAddress=PEER)
    protocol.makeConnection(transport)
    return protocol, transport, clock


def replace_pair(cert_path, key_path, hostname, mtime):
    generate_self_signed(cert_path, key_path, hostname)
    # Explicit, distinct times: the change must not depend on clock granularity.
    for path in (cert_path, key_path):
        os.utime(path, ns=(mtime, mtime))


# The generated pair


def test_first_run_generates_a_self_signed_pair(tmp_path, pair):
    cert_path, key_path = pair
    assert cert_path == tmp_path / "tls" / "cert.pem"
    assert key_path == tmp_path / "tls" / "key.pem"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_path.parent.stat().st_mode) == 0o700
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "mail.example.org"
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["mail.example.org", "localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert certificate.not_valid_after_utc > datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=365)
    assert not list((tmp_path / "tls").glob("*.tmp"))


def test_existing_pair_is_kept(tmp_path, pair):
    cert_path, _ = pair
    before = cert_path.read_bytes()
    ensure_certificate(tmp_path, GENERATED_CERTIFICATE, GENERATED_KEY, "other.example.org")
    assert cert_path.read_bytes() == before


def test_configured_pair_is_never_generated(tmp_path):
    cert_path, key_path = ensure_certificate(tmp_path, "/nonexistent/cert.pem", "/nonexistent/key.pem", "h")
    assert not cert_path.exists()
    with pytest.raises(CertificateError, match=r"^/nonexistent/cert.pem: cannot read: No such file"):
        CertificateStore([(cert_path, key_path)])


def test_half_a_default_pair_is_not_overwritten(tmp_path, pair):
    cert_path, key_path = pair
    key_path.unlink()
    ensure_certificate(tmp_path, GENERATED_CERTIFICATE, GENERATED_KEY, "mail.example.org")
    assert not key_path.exists()


# Loading


def test_load_errors_are_one_line(tmp_path, pair):
    cert_path, key_path = pair
    other_cert, other_key = tmp_path / "other.pem", tmp_path / "other.key"
    generate_self_signed(other_cert, other_key, "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases = [
        (garbage, key_path, f"{garbage}: no PEM certificate in it"),
        (cert_path, garbage, f"{garbage}: not an unencrypted PEM private key"),
        (cert_path, other_key, f"{other_key}: does not match the certificate in {cert_path}"),
        (tmp_path / "absent.pem", key_path, f"{tmp_path / 'absent.pem'}: cannot read: No such file or directory"),
    ]
    for cert, key, message in cases:
        with pytest.raises(CertificateError) as raised:
            load_pair(cert, key)
        assert str(raised.value) == message
        assert "\n" not in str(raised.value)


def test_implicit_tls_handshake_with_python_ssl(pair):
    cert_path, _ = pair
    store = CertificateStore([pair])
    protocol, transport, clock = implicit_connection(store)
    client = TLSClient(cert_path)
    pump(client, protocol.dataReceived, transport, clock)
    assert client.ssl.version() in ("TLSv1.2", "TLSv1.3")
    assert client.common_name() == "mail.example.org"
    client.ssl.write(b"hello")
    pump(client, protocol.dataReceived, transport, clock)
    assert client.received == b"echo hello"
    # What a protocol asks before accepting a plain-text password.
    assert ISSLTransport.providedBy(protocol.wrappedProtocol.transport)
    assert protocol.wrappedProtocol.secure_at_connect is True


def test_tls_1_1_is_refused_by_the_server(pair):
    cert_path, _ = pair
    store = CertificateStore([pair])
    protocol, transport, clock = implicit_connection(store)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(cert_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    # Let this client offer TLS 1.1 at all, so that the refusal is the server's.
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    client = TLSClient(cert_path)
    client.ssl = context.wrap_bio(client.incoming, client.outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLError, match="ALERT_PROTOCOL_VERSION"):
        pump(client, protocol.dataReceived, transport, clock)


# Reloading


def test_reload_serves_the_new_pair_to_new_handshakes_only(tmp_path, pair):
    cert_path, key_path = pair
    store = CertificateStore([pair])
    old_protocol, old_transport, old_clock = implicit_connection(store)
    old_client = TLSClient(cert_path)
    pump(old_client, old_protocol.dataReceived, old_transport, old_clock)

    replace_pair(cert_path, key_path, "renewed.example.org", 2_000_000_000_000_000_000)
    assert store.reload() is True

    new_protocol, new_transport, new_clock = implicit_connection(store)
    new_client = TLSClient(cert_path)
    pump(new_client, new_protocol.dataReceived, new_transport, new_clock)
    assert new_client.common_name() == "renewed.example.org"
    # The session negotiated before the reload goes on with its certificate.
    old_client.ssl.write(b"still here")
    pump(old_client, old_protocol.dataReceived, old_transport, old_clock)
    assert old_client.received == b"echo still here"
    assert old_client.common_name() == "mail.example.org"


def test_bad_new_pair_keeps_the_old_one_and_says_why(tmp_path, pair, log_lines):
    cert_path, key_path = pair
    store = CertificateStore([pair])
    before = store.context()
    other_cert, other_key = tmp_path / "other.pem", tmp_path / "other.key"
    generate_self_signed(other_cert, other_key, "other")
    # A renewal caught half way: new certificate, old key.
    cert_path.write_bytes(other_cert.read_bytes())
    assert store.reload() is False
    assert store.context() is before
    assert any(
        "not reloaded (asked), keeping the previous one" in line and "does not match the certificate" in line
        for line in log_lines
    )
    protocol, transport, clock = implicit_connection(store)
    client = TLSClient(other_cert)
    # The client trusting only the new certificate is refused: the old pair is served.
    with pytest.raises(ssl.SSLCertVerificationError):
        pump(client, protocol.dataReceived, transport, clock)


def test_reload_if_changed_follows_the_files(pair, log_lines):
    cert_path, key_path = pair
    store = CertificateStore([pair])
    assert store.reload_if_changed() is False
    before = store.context()
    replace_pair(cert_path, key_path, "renewed.example.org", 2_000_000_000_000_000_000)
    assert store.reload_if_changed() is True
    assert store.context() is not before
    assert store.reload_if_changed() is False
    assert any(line.endswith("(files changed)") for line in log_lines)


class FakeReactor(Clock):
    def __init__(self):
        super().__init__()
        self.from_thread = []

    def callFromThread(self, f, *args, **kwargs):
        self.from_thread.append((f, args, kwargs))


def test_reloader_polls_for_changed_files(pair):
    cert_path, key_path = pair
    store = CertificateStore([pair])
    reactor = FakeReactor()
    reloader = CertificateReloader(store, reactor, interval=5)
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        reloader.startService()
        before = store.context()
        reactor.advance(5)
        assert store.context() is before
        replace_pair(cert_path, key_path, "renewed.example.org", 2_000_000_000_000_000_000)
        reactor.advance(5)
        assert store.context() is not before
        reloader.stopService()
        assert not reactor.getDelayedCalls()
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_sighup_reloads_in_the_reactor_and_chains_the_previous_handler(pair):
    cert_path, key_path = pair
    store = CertificateStore([pair])
    reactor = FakeReactor()
    reloader = CertificateReloader(store, reactor)
    earlier_calls = []

    def earlier(signum, frame):
        earlier_calls.append(signum)

    previous = signal.signal(signal.SIGHUP, earlier)
    try:
        reloader.startService()
        before = store.context()
        replace_pair(cert_path, key_path, "renewed.example.org", 2_000_000_000_000_000_000)
        os.kill(os.getpid(), signal.SIGHUP)
        # The handler only schedules; the reload runs in the reactor thread.
        assert store.context() is before
        assert earlier_calls == [signal.SIGHUP]
        assert len(reactor.from_thread) == 1
        f, args, kwargs = reactor.from_thread[0]
        assert args == ("SIGHUP",)
        f(*args, **kwargs)
        assert store.context() is not before
        reloader.stopService()
        assert signal.getsignal(signal.SIGHUP) is earlier
    finally:
        signal.signal(signal.SIGHUP, previous)


# STARTTLS: plain text pipelined before the handshake


@implementer(ITLSTransport)
class StartTLSTransport(StringTransport):
    """
    A StringTransport that starts TLS the way Twisted's TCP transport does
    (``twisted.internet._newtls.startTLS``): the protocol keeps writing to
    this transport, which encrypts from then on; the bytes it receives from
    then on must go through ``tls.dataReceived``.
    """

    def __init__(self, protocol, clock):
        super().__init__(peerAddress=PEER)
        self.protocol = protocol
        self.clock = clock
        self.tls = None
        self.wire = StringTransport()

    def startTLS(self, context_factory, normal=True):
        factory = TLSMemoryBIOFactory(context_factory, False, None, clock=self.clock)
        self.tls = factory.protocol(factory, self.protocol, False)
        self.tls.makeConnection(self.wire)

    def write(self, data):
        if self.tls is None:
            super().write(data)
        else:
            self.tls.write(data)

    def writeSequence(self, data):
        self.write(b"".join(data))


class Toy(LineReceiver):
    """STARTTLS, SLOW (holds later lines in ``blocked`` until released) and anything else echoed."""

    blocked = None

    def __init__(self, context_factory):
        self.context_factory = context_factory
        self.executed = []
        self.slow = None

    def lineReceived(self, line):
        if self.blocked is not None:
            self.blocked.append(line)
            return
        self.executed.append(line)
        if line == b"STARTTLS":
            self.sendLine(b"OK begin TLS")
            start_tls_discarding_buffer(self, self.context_factory)
        elif line == b"SLOW":
            self.blocked = []
            self.slow = defer.Deferred()
            self.slow.addCallback(self._unblock)
        else:
            self.sendLine(b"OK " + line)

    def _unblock(self, _):
        # The shape of IMAP4Server._unblock: the rest of the queue in a local list.
        lines, self.blocked = self.blocked, None
        while lines and self.blocked is None:
            self.lineReceived(lines.pop(0))
        if self.blocked is not None:
            self.blocked.extend(lines)


class ToyOnly(LineOnlyReceiver):
    """The same commands on LineOnlyReceiver (Twisted's POP3 base), which splits whole packets."""

    blocked = None
    __init__ = Toy.__init__
    lineReceived = Toy.lineReceived
    _unblock = Toy._unblock


def starttls_session(cls, pair):
    store = CertificateStore([pair])
    clock = Clock()
    toy = cls(store.context_factory())
    transport = StartTLSTransport(toy, clock)
    toy.makeConnection(transport)
    return toy, transport, clock


@pytest.mark.parametrize("cls", [Toy, ToyOnly])
def test_lines_pipelined_after_starttls_are_not_executed(cls, pair):
    toy, transport, clock = starttls_session(cls, pair)
    toy.dataReceived(b"STARTTLS\r\nINJECTED\r\nHALF")
    assert transport.value() == b"OK begin TLS\r\n"
    assert toy.executed == [b"STARTTLS"]
    assert transport.tls is not None

    client = TLSClient(pair[0])
    pump(client, transport.tls.dataReceived, transport.wire, clock)
    assert client.ssl.version() is not None
    client.ssl.write(b"AFTER\r\n")
    pump(client, transport.tls.dataReceived, transport.wire, clock)
    assert toy.executed == [b"STARTTLS", b"AFTER"]
    assert client.received == b"OK AFTER\r\n"


@pytest.mark.parametrize("cls", [Toy, ToyOnly])
def test_lines_queued_behind_starttls_are_not_executed(cls, pair):
    toy, transport, clock = starttls_session(cls, pair)
    toy.dataReceived(b"SLOW\r\nSTARTTLS\r\nINJECTED\r\n")
    assert toy.executed == [b"SLOW"]
    toy.slow.callback(None)
    assert toy.executed == [b"SLOW", b"STARTTLS"]
    assert transport.value() == b"OK begin TLS\r\n"

    client = TLSClient(pair[0])
    pump(client, transport.tls.dataReceived, transport.wire, clock)
    client.ssl.write(b"AFTER\r\n")
    pump(client, transport.tls.dataReceived, transport.wire, clock)
    assert toy.executed == [b"SLOW", b"STARTTLS", b"AFTER"]


def test_twisted_imap4server_executes_lines_pipelined_after_starttls(pair):
    """The weakness issue 4 names, confirmed: stock STARTTLS keeps dispatching."""
    store = CertificateStore([pair])
    clock = Clock()
    server = imap4.IMAP4Server(contextFactory=store.context_factory())
    transport = StartTLSTransport(server, clock)
    server.makeConnection(transport)
    transport.clear()
    server.dataReceived(b"a STARTTLS\r\nb CAPABILITY\r\n")
    assert transport.value() == b"a OK Begin TLS negotiation now\r\n"
    assert transport.tls is not None
    client = TLSClient(pair[0])
    pump(client, transport.tls.dataReceived, transport.wire, clock)
    # "b" came in plain text, yet its answer arrives inside the TLS session.
    assert b"b OK CAPABILITY completed" in client.received
    server.connectionLost(None)


# Policies: a context per listener's oldest TLS version, and two pairs


def old_client(cafile, version=ssl.TLSVersion.TLSv1, ciphers="DEFAULT:@SECLEVEL=0"):
    """A client speaking ``version`` and nothing newer (its own security level lowered, as old clients have none)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(cafile))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = version
        context.maximum_version = version
    context.set_ciphers(ciphers)
    client = TLSClient(cafile)
    client.ssl = context.wrap_bio(client.incoming, client.outgoing, server_hostname="localhost")
    return client


@pytest.fixture
def two_pairs(tmp_path, pair):
    rsa_pair = ensure_certificate(tmp_path, GENERATED_RSA_CERTIFICATE, GENERATED_RSA_KEY, "mail.example.org",
                                  key_type="RSA")
    bundle = tmp_path / "both.pem"
    bundle.write_bytes(pair[0].read_bytes() + rsa_pair[0].read_bytes())
    return [pair, rsa_pair], bundle


def handshake(store, client, policy=MODERN):
    clock = Clock()
    factory = implicit_tls_factory(ServerFactory.forProtocol(Echo), store, clock, policy)
    protocol = factory.buildProtocol(PEER)
    transport = StringTransport(peerAddress=PEER)
    protocol.makeConnection(transport)
    pump(client, protocol.dataReceived, transport, clock)
    return client


LEGACY = TlsPolicy("1.0")


def test_twisted_certificate_options_cannot_serve_tls_1_0_under_openssl_3(two_pairs):
    """
    The gap net/tls.py fills: CertificateOptions expands its cipher string
    into cipher names, so the security level OpenSSL 3 needs for TLS 1.0
    never reaches OpenSSL, and the handshake fails however low the minimum.
    """
    pairs, _ = two_pairs
    pair = pairs[1]
    cert_path = pair[0]
    loaded = load_pair(*pair)
    options = CertificateOptions(
        privateKey=loaded.key,
        certificate=loaded.chain[0],
        insecurelyLowerMinimumTo=TLSVersion.TLSv1_0,
        acceptableCiphers=AcceptableCiphers.fromOpenSSLCipherString(CIPHERS + ":@SECLEVEL=0"),
    )
    clock = Clock()
    protocol = TLSMemoryBIOFactory(options, False, ServerFactory.forProtocol(Echo), clock=clock).buildProtocol(PEER)
    transport = StringTransport(peerAddress=PEER)
    protocol.makeConnection(transport)
    with pytest.raises(ssl.SSLError):
        pump(old_client(cert_path), protocol.dataReceived, transport, clock)
    # Ours, from the same pair, takes it.
    client = handshake(CertificateStore([pair], [LEGACY]), old_client(cert_path), LEGACY)
    assert client.ssl.version() == "TLSv1"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_a_legacy_policy_takes_tls_1_0_and_1_1_and_the_default_one_does_not(two_pairs, version):
    pairs, bundle = two_pairs
    store = CertificateStore(pairs, [TlsPolicy("1.0")])
    assert handshake(store, old_client(bundle, version), TlsPolicy("1.0")).ssl.version() == version.name.replace(
        "_", ".").replace("TLSv1.0", "TLSv1")
    with pytest.raises(ssl.SSLError, match="ALERT_PROTOCOL_VERSION"):
        handshake(store, old_client(bundle, version))
    # A TLS 1.1 policy refuses 1.0.
    if version is ssl.TLSVersion.TLSv1:
        store = CertificateStore(pairs, [TlsPolicy("1.1")])
        with pytest.raises(ssl.SSLError, match="ALERT_PROTOCOL_VERSION"):
            handshake(store, old_client(bundle, version), TlsPolicy("1.1"))


def test_each_client_gets_the_pair_it_can_use(two_pairs):
    pairs, bundle = two_pairs
    store = CertificateStore(pairs, [LEGACY])
    modern = handshake(store, TLSClient(bundle))
    assert isinstance(modern.certificate().public_key(), ec.EllipticCurvePublicKey)
    for policy, version in ((MODERN, ssl.TLSVersion.TLSv1_2), (LEGACY, ssl.TLSVersion.TLSv1)):
        rsa_only = handshake(store, old_client(bundle, version, "aRSA:@SECLEVEL=0"), policy)
        assert isinstance(rsa_only.certificate().public_key(), rsa.RSAPublicKey)


def test_legacy_ciphers_are_what_old_clients_offer(two_pairs):
    pairs, bundle = two_pairs
    store = CertificateStore(pairs, [LEGACY])
    for cipher in ("ECDHE-RSA-AES128-SHA", "AES128-SHA", "ECDHE-RSA-AES256-SHA", "AES256-SHA"):
        client = handshake(store, old_client(bundle, ciphers=cipher + ":@SECLEVEL=0"), LEGACY)
        assert client.ssl.cipher()[0] == cipher
    for cipher in ("DES-CBC3-SHA", "RC4-SHA", "NULL-SHA"):
        with pytest.raises(ssl.SSLError):
            handshake(store, old_client(bundle, ciphers=cipher + ":@SECLEVEL=0"), LEGACY)


def test_a_legacy_policy_needs_an_rsa_pair(pair):
    with pytest.raises(NoRsaCertificate) as raised:
        CertificateStore([pair], [TlsPolicy("1.1")])
    assert raised.value.policy == TlsPolicy("1.1")
    assert str(raised.value) == f"TLS 1.1 needs an RSA certificate, and there is none: {pair[0]} (ECDSA)"
    CertificateStore([pair], [TlsPolicy("1.3")])


def test_one_pair_per_key_type(tmp_path, pair):
    other = (tmp_path / "other.pem", tmp_path / "other.key")
    generate_self_signed(*other, "other")
    with pytest.raises(CertificateError) as raised:
        CertificateStore([pair, other])
    assert str(raised.value) == (f"{other[0]}: a second ECDSA certificate, beside {pair[0]}: "
                                 "serve one of each key type")


def test_a_reload_renews_every_policys_context_or_none(tmp_path, two_pairs, log_lines):
    pairs, bundle = two_pairs
    store = CertificateStore(pairs, [LEGACY])
    before = {policy: store.context(policy) for policy in (MODERN, LEGACY)}
    (rsa_cert, rsa_key) = pairs[1]
    replace_pair(rsa_cert, rsa_key, "renewed.example.org", 2_000_000_000_000_000_000)
    generate_self_signed(rsa_cert, rsa_key, "renewed.example.org", key_type="RSA")
    assert store.reload_if_changed() is True
    assert all(store.context(policy) is not before[policy] for policy in before)
    renewed = handshake(store, old_client(rsa_cert, ciphers="aRSA:@SECLEVEL=0"), LEGACY)
    assert renewed.common_name() == "renewed.example.org"
    # An RSA pair gone bad: nothing is swapped, for any policy.
    current = {policy: store.context(policy) for policy in before}
    rsa_key.write_text("half written\n")
    assert store.reload() is False
    assert all(store.context(policy) is current[policy] for policy in before)
