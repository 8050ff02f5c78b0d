"""
Build the running server: store, portal, listeners, from a data dir and config.

The store is the one ``open_store`` opens from the config (DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import attrs
from prometheus_client import CollectorRegistry

from twisted.application.service import MultiService, Service
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.mail import imap4, pop3 as twisted_pop3

from gateway.lmtp import server as lmtp
from gateway.net import nodemetrics
from gateway.pop3 import server as pop3
from gateway.auth import MailRealm, UsersFile, make_portal
from gateway.config import DEFAULT_TOML, Config, ConfigError, load_with_text
from gateway.datadir import StartupError, prepare_data_dir
from gateway.net.access import NetworkAccessFactory
from gateway.net.certificates import CertificateError, certificate_paths, generated_key_type, load_pair
from gateway.net.connlimit import ConnectionLimitFactory
from gateway.imap import account as imap_account, server as imap_server
from gateway.policy.addresses import Networks
from gateway.policy.limits import ConnectionLimiter
from gateway.policy.login import LoginPolicy
from gateway.policy.quota import Quotas
from gateway.net.dispatch import LeanDispatch
from gateway.net.metrics import Metrics, MetricsFactory, MetricsService, metrics_site
from gateway.net.balance import Loads
from gateway.net.ports import ListeningPorts, close_now, share_accepts
from gateway.net import unix
from gateway.net.proxy import TrustedProxyFactory, split_description
from gateway.net.writethrough import write_through
from gateway.reload import ConfigReloader, LiveConfig
from gateway.store.interfaces import StoreError
from gateway.store.opening import open_store
from gateway.net.tls import (
    MODERN,
    CertificateReloader,
    CertificateStore,
    NoRsaCertificate,
    TlsPolicy,
    check_key_types,
    implicit_tls_factory,
)

log = Logger()


def load_config(data_dir: Path, config_path: Path | None) -> Config:
    """
    The config named on the command line, else DATA/gateway.toml, written
    with every default (commented) when absent.
    """
    return load_config_text(data_dir, config_path)[0]


def load_config_text(data_dir: Path, config_path: Path | None) -> tuple[Config, str]:
    """``load_config``, with the text it read."""
    if config_path is None:
        config_path = data_dir / "gateway.toml"
        if not config_path.exists():
            config_path.write_text(DEFAULT_TOML)
    try:
        return load_with_text(config_path)
    except ConfigError as e:
        raise StartupError(str(e)) from None


class StoreService(Service):
    """
    Polls for other processes' changes while running; on stop, waits until
    the store has written what it was asked to and closed.
    """

    def __init__(self, store):
        self.store = store

    def startService(self):
        super().startService()
        self.store.changes.start_polling()

    def stopService(self):
        super().stopService()
        return self.store.close()


def _listen(reactor, description: str, factory):
    """
    Bind now, before the reactor runs (and before twistd drops privileges),
    so that a port in use is reported at once as one line.
    """
    if unix.is_unix(description):
        try:
            return unix.listen(reactor, unix.UnixListener.parse(description), factory)
        except unix.UnixListenerError as e:
            raise StartupError(f"listener {description!r}: {e}") from None
    try:
        endpoint = serverFromString(reactor, description)
    except (ValueError, TypeError, KeyError) as e:
        raise StartupError(f"listener {description!r}: not a valid endpoint ({e})") from None
    outcome = []
    endpoint.listen(factory).addBoth(outcome.append)
    if not outcome:
        raise StartupError(f"listener {description!r}: cannot listen synchronously on this endpoint type")
    result = outcome[0]
    if hasattr(result, "getHost"):
        write_through(result)
        return result
    reason = getattr(result.value, "socketError", None) or result.value
    text = getattr(reason, "strerror", None) or str(reason)
    raise StartupError(f"listener {description!r}: {text}")


@attrs.frozen
class Listener:
    """
    One entry of ``[listeners]``: a list of the built-in ones (named for
    their protocol) or a ``[listeners.NAME]`` table.  ``networks`` empty
    takes every peer.
    """

    name: str
    protocol: str
    implicit_tls: bool
    descriptions: tuple[str, ...]
    policy: TlsPolicy = MODERN
    networks: Networks = Networks()

    @property
    def kind(self) -> str:
        """The listener as its refusals know it: pop3, imap, lmtp, pop3s or imaps."""
        return self.protocol + ("s" if self.implicit_tls else "")


# Which application protocol each built-in listener serves, and whether it
# wraps it in implicit TLS (RFC 8314).
LISTENERS = {
    "pop3": ("pop3", False),
    "imap": ("imap", False),
    "lmtp": ("lmtp", False),
    "pop3s": ("pop3", True),
    "imaps": ("imap", True),
}


def planned_listeners(config: Config) -> list[Listener]:
    """Every listener the config asks for, the built-in ones first."""
    planned = [
        Listener(name, *LISTENERS[name], getattr(config.listeners, name))
        for name in LISTENERS
        if getattr(config.listeners, name)
    ]
    for name, table in config.listeners.named:
        protocol = table.protocol.removesuffix("s")
        planned.append(Listener(
            name, protocol, table.protocol != protocol, table.endpoints, TlsPolicy(table.tls_min_version),
            config.resolve(table.networks),
        ))
    return planned


def load_certificate(data_dir: Path, config: Config, policies=(MODERN,)) -> CertificateStore:
    """The [tls] pairs, generated on the first run when left at their defaults."""
    tls = config.tls
    with _certificate_errors(config):
        paths = certificate_paths(data_dir, tls.certificate, tls.key, tls.rsa_certificate, tls.rsa_key,
                                  config.hostname)
        return CertificateStore(paths, policies)


def check_certificates(data_dir: Path, config: Config) -> None:
    """
    What ``load_certificate`` would refuse for the listeners ``config``
    plans, raised as the same StartupError, with nothing generated: a pair
    left to be generated counts as the self-signed kind it would be.
    """
    tls = config.tls
    policies = [listener.policy for listener in planned_listeners(config)]
    with _certificate_errors(config):
        paths = certificate_paths(data_dir, tls.certificate, tls.key, tls.rsa_certificate, tls.rsa_key,
                                  config.hostname, generate=False)
        generated = [generated_key_type(data_dir, cert, key) for cert, key in paths]
        pairs = [load_pair(cert, key) for (cert, key), kind in zip(paths, generated) if kind is None]
        check_key_types(pairs, policies, generated)


@contextmanager
def _certificate_errors(config: Config):
    """A certificate the listeners cannot use, said in one line naming the listener or [tls] at fault."""
    try:
        yield
    except NoRsaCertificate as e:
        named = next(name for name, table in config.listeners.named
                     if TlsPolicy(table.tls_min_version) == e.policy)
        held = ", ".join(f"{pair.cert_path} is {pair.key_type}" for pair in e.pairs)
        raise StartupError(
            f"listeners.{named}: tls_min_version {e.policy.min_version!r} needs an RSA certificate, which clients "
            f"that old take, and [tls] gives none ({held}): set [tls] rsa_certificate and rsa_key"
        ) from None
    except CertificateError as e:
        raise StartupError(f"tls: {e}") from None


def _warn_legacy_tls(listeners) -> None:
    for listener in listeners:
        if listener.policy.legacy:
            log.warn(
                "Listener {listener} takes TLS {version}, which has known weaknesses (RFC 8996), with ciphers at "
                "OpenSSL security level 0: keep it to the clients that need it",
                listener=listener.name, version=listener.policy.min_version,
            )


def _admission(live: LiveConfig, listener: Listener):
    """
    Whom ``listener`` serves: its own networks (fixed at start, as
    listeners are) and its protocol's (``[pop3]``/``[imap] networks``, read
    at each connection, so a reload applies to the next).
    """

    def admits(host: str) -> bool:
        served = live.resolve(getattr(live, listener.protocol).networks)
        return (not listener.networks or host in listener.networks) and (not served or host in served)

    return admits


def make_service(
    data_dir: Path, config: Config, reactor, read_config: Callable[[], Config] | None = None, *,
    worker: int = 0, listen: Callable | None = None, loads: Loads | None = None,
) -> MultiService:
    """
    ``read_config``, when given, is how SIGHUP reads the config again (it
    raises ConfigError): see ``gateway/reload.py`` for what changes live.

    ``worker`` 0 is the process twistd runs, which binds the listeners;
    another (``gateway/worker.py``) gives ``listen(name, description,
    factory)``, returning the port it serves or None (the metrics page is
    served by worker 0 alone), in place of binding.  Everything around the
    ports is built the same in every process.  ``loads`` is a worker's view
    of the node's connection counts (``gateway/net/balance.py``); the main
    process of several makes the table (``top.loads``).
    """
    if listen is None:

        def listen(name, description, factory):
            return _listen(reactor, description, factory)

    prepare_data_dir(data_dir)
    # Several processes: the metrics page shows the node's counts.
    node = data_dir / "run" / "metrics" if config.server.workers > 1 else None
    if node is not None:
        nodemetrics.share(node, fresh=worker == 0)
    listeners = planned_listeners(config)
    certificates = load_certificate(data_dir, config, [listener.policy for listener in listeners])
    _warn_legacy_tls(listeners)
    # The server's own store: opening it puts right what a crash left.
    try:
        store = open_store(config, data_dir, reactor, serving=True)
    except StoreError as e:
        raise StartupError(f"store: {e}") from e
    users = UsersFile(data_dir / "users")
    # What a reload may change is read through this, at each use.
    live = LiveConfig(config)
    realm = MailRealm(
        {
            twisted_pop3.IMailbox: pop3.avatar_factory(store, live, reactor),
            imap4.IAccount: imap_account.avatar_factory(store, live),
        }
    )
    portal = make_portal(users, realm, reactor)
    logins = LoginPolicy(config, reactor)
    factories = {
        "pop3": lambda policy: pop3.build_factory(
            portal, live, reactor, context_factory=certificates.context_factory(policy), logins=logins
        ),
        "imap": lambda policy: imap_server.build_factory(
            portal, store, live, reactor, context_factory=certificates.context_factory(policy), logins=logins,
            quotas=Quotas(live, users.quota_limits),
        ),
        "lmtp": lambda policy: lmtp.build_factory(store, users, live, reactor, Quotas(live, users.quota_limits)),
    }
    limits = config.limits
    client_connections = ConnectionLimiter(
        limits.max_connections, limits.max_connections_per_ip, limits.ipv6_prefix,
        config.resolve(limits.per_ip_exempt_networks),
    )
    # LMTP gets a budget of its own: a flood of client connections from
    # loopback must not stop the MTA from delivering.
    delivery_connections = ConnectionLimiter(limits.max_connections, limits.max_connections, limits.ipv6_prefix)
    if loads is None and config.server.workers > 1:
        # The main process: the workers get the table at their start.
        loads = Loads.create(config.server.workers)
    counted = Metrics(CollectorRegistry(), listeners=[listener.name for listener in listeners], node=node)
    # One application factory per protocol and TLS policy, shared by its
    # plain and TLS listeners, so that a session is the same whichever port
    # it came in on; only what STLS/STARTTLS offers differs.
    built = {}
    ports = []
    # The client listeners' ports, for worker processes to serve too.
    serving = []
    try:
        for listener in listeners:
            key = (listener.protocol, listener.policy)
            if key not in built:
                built[key] = factories[listener.protocol](listener.policy)
            # Innermost: counts accepted sessions and the protocol's own bytes.
            factory = MetricsFactory(built[key], counted, listener.name)
            if listener.implicit_tls:
                factory = implicit_tls_factory(factory, certificates, reactor, listener.policy)
            limiter = delivery_connections if listener.protocol == "lmtp" else client_connections
            factory = ConnectionLimitFactory(factory, limiter, listener.name, listener.kind, loads)
            if listener.protocol != "lmtp":
                # Outside the limits: a refused client holds no place there.
                factory = NetworkAccessFactory(factory, _admission(live, listener), listener.name, listener.kind)
            for description in listener.descriptions:
                behind_proxy, endpoint = split_description(description)
                if behind_proxy:
                    # Outermost, so that everything inside sees the real client.
                    proxied = TrustedProxyFactory(factory, config.resolve(config.proxy.trusted), reactor)
                    port = listen(listener.name, endpoint, proxied)
                else:
                    port = listen(listener.name, endpoint, factory)
                if config.server.workers > 1:
                    share_accepts(port, loads)
                ports.append((listener.name, port))
                serving.append((listener.name, endpoint, port))
        for description in config.listeners.metrics:
            port = listen("metrics", description, metrics_site(counted))
            if port is not None:
                ports.append(("metrics", port))
    except StartupError:
        close_now(ports)
        store.close()
        raise
    top = MultiService()
    StoreService(store).setServiceParent(top)
    CertificateReloader(certificates, reactor).setServiceParent(top)
    LeanDispatch(reactor).setServiceParent(top)
    MetricsService(counted, reactor).setServiceParent(top)
    if read_config is not None:

        def apply(new: Config) -> None:
            client_connections.max_total = new.limits.max_connections
            client_connections.max_per_ip = new.limits.max_connections_per_ip
            client_connections.exempt = new.resolve(new.limits.per_ip_exempt_networks)
            delivery_connections.max_total = delivery_connections.max_per_ip = new.limits.max_connections
            client_connections.ipv6_prefix = delivery_connections.ipv6_prefix = new.limits.ipv6_prefix
            logins.retune(new)

        ConfigReloader(live, read_config, apply, users, reactor).setServiceParent(top)
    # Worker 0 alone publishes the addresses (the others serve the same).
    ports_file = data_dir / "run" / "ports.json" if worker == 0 else None
    ListeningPorts(ports, [*LISTENERS, *(name for name, _ in config.listeners.named), "metrics"],
                   ports_file).setServiceParent(top)
    top.store = store
    # For a start that fails after this returns (twistd's privilege drop).
    top.close_listeners = lambda: close_now(ports)
    top.certificates = certificates
    top.users = users
    top.metrics = counted
    top.serving = serving
    top.logins = logins
    top.node_metrics = node
    top.loads = loads
    return top

