"""
TLS for the listeners: a context per TLS policy, the certificates' reloading,
implicit TLS (RFC 8314) and a safe STARTTLS/STLS switch (RFC 2595).

One ``CertificateStore`` per server holds the current pairs
(``gateway/net/certificates.py``) and one OpenSSL context per ``TlsPolicy``
the listeners use.  Everything that starts TLS asks it for the context at
handshake time, through ``context_factory(policy)``, so reloaded
certificates are used by the next handshake on every listener while
sessions already running keep the ones they negotiated.

The contexts are built here rather than by Twisted's ``CertificateOptions``,
which falls short twice (tests/net/test_tls.py shows both): it serves one
certificate, where an ECDSA pair for today's clients and an RSA pair for
those that know no ECDSA must share a context, OpenSSL choosing per
handshake; and it expands its cipher string into cipher names, so a
security level (``@SECLEVEL=0``) never reaches OpenSSL, and OpenSSL 3 and
later refuse TLS 1.0 and 1.1 at any level above 0 (their handshake
signatures use SHA-1).  Otherwise they are what ``CertificateOptions``
makes: its ciphers, no compression, the server's cipher order, fresh
ephemeral keys, no session tickets or cache.

Protocols with STARTTLS (IMAP) or STLS (POP3) should switch with
``start_tls_discarding_buffer``, so that no command the client pipelined behind STARTTLS in plain text is ever
executed inside the TLS session (the command-injection class of bugs,
CVE-2011-0411 and its many relatives).
"""

from __future__ import annotations

import signal
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs
from OpenSSL import SSL
from twisted.application.service import Service
from twisted.internet.interfaces import IOpenSSLContextFactory, IOpenSSLServerConnectionCreator, ISSLTransport
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory
from zope.interface import implementer

from gateway.net.certificates import CertificateError, CertificatePair, load_pair

log = Logger()

_VERSIONS = {
    "1.0": SSL.TLS1_VERSION,
    "1.1": SSL.TLS1_1_VERSION,
    "1.2": SSL.TLS1_2_VERSION,
    "1.3": SSL.TLS1_3_VERSION,
}

# Twisted's default (twisted.internet._sslverify.defaultCiphers), for TLS 1.2
# and older; TLS 1.3 suites are OpenSSL's.  It already holds the CBC
# ciphers old clients need (ECDHE-RSA-AES128-SHA, AES128-SHA: Windows 7
# Schannel, Android 4); what TLS 1.0 and 1.1 lack is the security level.
CIPHERS = (
    "ECDH+AESGCM:ECDH+CHACHA20:DH+AESGCM:DH+CHACHA20:ECDH+AES256:DH+AES256:"
    "ECDH+AES128:DH+AES:RSA+AESGCM:RSA+AES:!aNULL:!MD5:!DSS"
)
# Level 0 lets TLS 1.0/1.1 sign their handshakes with MD5+SHA-1 and SHA-1;
# the cipher list above still keeps out NULL, export, RC4, DES and 3DES.
LEGACY_CIPHERS = CIPHERS + ":@SECLEVEL=0"

_OPTIONS = (
    SSL.OP_NO_COMPRESSION  # CRIME
    | SSL.OP_CIPHER_SERVER_PREFERENCE
    | SSL.OP_SINGLE_DH_USE
    | SSL.OP_SINGLE_ECDH_USE
    | SSL.OP_NO_TICKET
)


@attrs.frozen
class TlsPolicy:
    """What one listener's TLS takes: the oldest version, "1.0" to "1.3"."""

    min_version: str = attrs.field(default="1.2", validator=attrs.validators.in_(_VERSIONS))

    @property
    def legacy(self) -> bool:
        """Below TLS 1.2 (RFC 8996): old ciphers' security level, and an RSA certificate."""
        return _VERSIONS[self.min_version] < SSL.TLS1_2_VERSION


# RFC 8996, RFC 8314 4.1: TLS 1.2 at the least.
MODERN = TlsPolicy()


class NoRsaCertificate(CertificateError):
    """A policy below TLS 1.2 with no RSA pair: clients that old know no ECDSA."""

    def __init__(self, policy: TlsPolicy, pairs: Sequence[CertificatePair]) -> None:
        self.policy = policy
        self.pairs = tuple(pairs)
        held = ", ".join(f"{pair.cert_path} ({pair.key_type})" for pair in pairs)
        super().__init__(f"TLS {policy.min_version} needs an RSA certificate, and there is none: {held}")


def build_context(pairs: Sequence[CertificatePair], policy: TlsPolicy) -> SSL.Context:
    """
    A server context serving every pair (OpenSSL picks per handshake by
    what the client offers: its signature algorithms in TLS 1.3, its cipher
    suites before) at ``policy``.  Raises SSL.Error.
    """
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_options(_OPTIONS)
    context.set_mode(SSL.MODE_RELEASE_BUFFERS)
    context.set_min_proto_version(_VERSIONS[policy.min_version])
    for pair in pairs:
        # OpenSSL reads the file again, for a chain of each pair's own (the
        # extra chain pyOpenSSL offers is one for all pairs); a pair replaced
        # meanwhile no longer matches the key, and fails here.
        context.use_certificate_chain_file(str(pair.cert_path))
        context.use_privatekey(pair.key)
    context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    context.set_cipher_list((LEGACY_CIPHERS if policy.legacy else CIPHERS).encode("ascii"))
    return context


def check_key_types(pairs: Sequence[CertificatePair], policies: Iterable[TlsPolicy],
                    generated: Iterable[str] = ()) -> None:
    """
    Refuse two pairs of one key type (OpenSSL would keep the last), and a
    policy below TLS 1.2 with no RSA pair among ``pairs`` and the key types
    of pairs still to be ``generated``.
    """
    held: dict[str, CertificatePair] = {}
    for pair in pairs:
        if pair.key_type in held:
            raise CertificateError(
                f"{pair.cert_path}: a second {pair.key_type} certificate, beside {held[pair.key_type].cert_path}: "
                "serve one of each key type")
        held[pair.key_type] = pair
    for policy in policies:
        if policy.legacy and "RSA" not in held and "RSA" not in generated:
            raise NoRsaCertificate(policy, pairs)


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
    The current pairs, and a context for each policy in use.  ``context()``
    is what the next handshake under a policy uses; ``reload()`` re-reads
    every pair and, only if they all load and make a context for every
    policy, swaps them in.  The constructor raises CertificateError (or
    NoRsaCertificate): a server must not start with an unusable
    certificate, but a running one keeps its old pairs rather than stop.
    """

    def __init__(self, paths: Sequence[tuple[Path, Path]], policies: Iterable[TlsPolicy] = (MODERN,)) -> None:
        self.paths = tuple((Path(cert), Path(key)) for cert, key in paths)
        self.policies = tuple(dict.fromkeys((MODERN, *policies)))
        self._signature = _signature(self._files())
        self.pairs, self._contexts = self._load()

    def _files(self) -> tuple[Path, ...]:
        return tuple(path for pair in self.paths for path in pair)

    def _load(self) -> tuple[tuple[CertificatePair, ...], dict[TlsPolicy, SSL.Context]]:
        pairs = tuple(load_pair(cert, key) for cert, key in self.paths)
        check_key_types(pairs, self.policies)
        try:
            contexts = {policy: build_context(pairs, policy) for policy in self.policies}
        except SSL.Error as e:
            raise CertificateError(f"{pairs[0].cert_path}: OpenSSL refuses it: {e}") from None
        return pairs, contexts

    def context(self, policy: TlsPolicy = MODERN) -> SSL.Context:
        return self._contexts[policy]

    def context_factory(self, policy: TlsPolicy = MODERN) -> CurrentCertificate:
        """For ``transport.startTLS`` and ``IMAP4Server.ctx``: always the current pairs."""
        return CurrentCertificate(self, policy)

    def reload(self, reason: str = "asked") -> bool:
        """Re-read the files; True when the new pairs are now in use."""
        self._signature = _signature(self._files())
        try:
            self.pairs, self._contexts = self._load()
        except CertificateError as e:
            log.error("TLS certificate not reloaded ({why}), keeping the previous one: {reason}", why=reason,
                      reason=str(e))
            return False
        log.info("TLS certificate reloaded from {path} ({why})", path=", ".join(str(c) for c, _ in self.paths),
                 why=reason)
        return True

    def reload_if_changed(self) -> bool:
        """Reload when a file changed since the last (attempted) load."""
        if _signature(self._files()) == self._signature:
            return False
        return self.reload("files changed")


@implementer(IOpenSSLServerConnectionCreator, IOpenSSLContextFactory)
class CurrentCertificate:
    """A connection creator that asks the store for its policy's context per handshake."""

    def __init__(self, store: CertificateStore, policy: TlsPolicy = MODERN) -> None:
        self._store = store
        self.policy = policy

    def serverConnectionForTLS(self, tlsProtocol) -> SSL.Connection:
        return SSL.Connection(self._store.context(self.policy), None)

    def getContext(self) -> SSL.Context:
        return self._store.context(self.policy)


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


def implicit_tls_factory(
    wrapped_factory, store: CertificateStore, reactor, policy: TlsPolicy = MODERN
) -> TLSMemoryBIOFactory:
    """
    Wrap a protocol factory so its connections speak TLS from the first byte
    (RFC 8314 3.3: POP3S on 995, IMAPS on 993), with the store's current
    pairs under ``policy``; the protocol's transport provides ISSLTransport.
    """
    return _ImplicitTLSFactory(store.context_factory(policy), False, wrapped_factory, clock=reactor)


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
