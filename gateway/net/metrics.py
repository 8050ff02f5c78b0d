"""
Prometheus metrics: what the server counts, and the resource that serves them.

Every metric lives in a ``Metrics`` object over a registry it is given, so
that tests (and two servers in one process) never share counts.  The parts of
the server that only see one connection or one login (the protocols,
``authlog``, LMTP) report through the module functions below, which go to the
``Metrics`` the running service activated and do nothing when none is (the
``gateway`` CLI, unit tests of a protocol).

Exported names (the Grafana dashboard in deploy/ uses only these):

- ``gateway_connections_open{protocol}``: sessions connected now
- ``gateway_connections_total{protocol}``: connections accepted
- ``gateway_received_bytes_total{protocol}``, ``gateway_sent_bytes_total{protocol}``:
  application bytes (the protocol's own text, after TLS is taken off)
- ``gateway_logins_total{protocol,result}``: result ``ok`` or ``failed``
- ``gateway_command_duration_seconds{protocol,command}``: a histogram; its
  ``_count`` is the number of commands
- ``gateway_deliveries_total{result}``: LMTP recipients, ``ok``,
  ``tempfail`` (4xx from the store) or ``error`` (an unexpected failure)
- ``gateway_store_errors_total{operation}``
- ``gateway_config_last_reload_successful``: 1, or 0 after a refused reload
- ``gateway_reactor_turn_cpu_seconds``: a histogram of the reactor thread's
  CPU per turn, from one wait for events to the next (``gateway.net.turns``)
- ``gateway_reactor_longest_turn_cpu_seconds``: the longest such turn since
  the server started

The counts every connection or command moves (bytes each way, command
durations) are kept by the reactor thread in plain numbers (``_Tally``,
``_HistogramTally``) and added to the Prometheus values when the registry
is read (a scrape, ``get_sample_value``) and, in a process of a node of
several, at least once a second: a multiprocess value takes a lock and
writes its mmap'ed file on every change, a good share of what a RETR
costs.  Counting in the histogram this way relies on ``Histogram``'s
``_buckets``, ``_sum`` and ``_upper_bounds`` (tests/net/test_metrics.py
fails if prometheus_client renames them).

``protocol`` is the listener's name (``pop3``, ``pop3s``, ``imap``,
``imaps``, ``lmtp``, or a ``[listeners.NAME]``'s NAME) for connections and
bytes, and ``pop3``/``imap`` for logins.
"""

from __future__ import annotations

from bisect import bisect_left
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString
from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import directlyProvides, providedBy

from gateway.net.nodemetrics import SharedTurns, node_registry
from gateway.net.turns import TurnTimer, time_turns

# Command names are client input: only these become label values, anything
# else is counted as OTHER, so a client cannot grow the label set at will.
KNOWN_COMMANDS = {
    "pop3": frozenset(
        "USER PASS APOP AUTH STAT LIST RETR DELE NOOP RSET QUIT TOP UIDL CAPA STLS".split()
    ),
    "imap": frozenset(
        "CAPABILITY NOOP LOGOUT STARTTLS AUTHENTICATE LOGIN SELECT EXAMINE CREATE DELETE RENAME "
        "SUBSCRIBE UNSUBSCRIBE LIST LSUB STATUS APPEND CHECK CLOSE EXPUNGE SEARCH FETCH STORE COPY "
        "MOVE UID IDLE NAMESPACE ID ENABLE UNSELECT GETQUOTA GETQUOTAROOT"
        .split()
    ),
    "lmtp": frozenset("LHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY".split()),
}
# RFC 3501 6.4.8: UID prefixes these; they are timed as "UID FETCH" etc.
_UID_COMMANDS = frozenset("FETCH STORE COPY MOVE SEARCH EXPUNGE".split())

LOGIN_PROTOCOLS = ("pop3", "imap")
DELIVERY_RESULTS = ("ok", "tempfail", "error")

# Seconds; a command answered from the index takes about a millisecond, a
# failed login waits for [auth] failure_delay (2 s by default).
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def command_label(protocol: str, command: str | bytes) -> str:
    """The label a command is counted under: its upper-case name, or OTHER."""
    if isinstance(command, bytes):
        command = command.decode("ascii", "replace")
    words = command.upper().split()
    known = KNOWN_COMMANDS.get(protocol, frozenset())
    if not words or words[0] not in known:
        return "OTHER"
    if words[0] == "UID" and protocol == "imap":
        return f"UID {words[1]}" if len(words) > 1 and words[1] in _UID_COMMANDS else "OTHER"
    return words[0]


class Metrics:
    """
    Every metric the server exports, registered in ``registry``.  With
    ``node`` (a directory), this is one process of a node serving from
    several (``nodemetrics``): its counts go to files there after
    ``nodemetrics.share``, and the page shows the whole node's.
    """

    def __init__(self, registry: CollectorRegistry, listeners=(), node: Path | None = None) -> None:
        self.registry = registry
        # By label, and by the command as the protocols spell it.
        self._command_tallies: dict[tuple[str, str | bytes], _HistogramTally] = {}
        self._tallies: list[_Tally | _HistogramTally] = []
        # First in the registry: whoever reads it sees every count so far.
        registry.register(_TallyPublisher(self))
        self.connections_open = Gauge(
            "gateway_connections_open", "Connections open now", ["protocol"], registry=registry,
            multiprocess_mode="livesum",
        )
        self.connections = Counter(
            "gateway_connections", "Connections accepted", ["protocol"], registry=registry
        )
        self.received_bytes = Counter(
            "gateway_received_bytes", "Bytes received from clients, after TLS", ["protocol"], registry=registry
        )
        self.sent_bytes = Counter(
            "gateway_sent_bytes", "Bytes sent to clients, before TLS", ["protocol"], registry=registry
        )
        self.logins = Counter("gateway_logins", "Login attempts", ["protocol", "result"], registry=registry)
        self.commands = Histogram(
            "gateway_command_duration_seconds",
            "Time from a command to its final answer",
            ["protocol", "command"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.deliveries = Counter(
            "gateway_deliveries", "LMTP deliveries per recipient", ["result"], registry=registry
        )
        self.store_errors = Counter(
            "gateway_store_errors", "Store operations that failed", ["operation"], registry=registry
        )
        self.config_reload_ok = Gauge(
            "gateway_config_last_reload_successful",
            "1 when the last SIGHUP reload was applied, 0 when it was refused",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.config_reload_ok.set(1)
        # Series that exist from the start read 0, not "no data", on a
        # dashboard and in `gateway status`.
        for listener in listeners:
            for metric in (self.connections_open, self.connections, self.received_bytes, self.sent_bytes):
                metric.labels(listener)
        for protocol in LOGIN_PROTOCOLS:
            for result in ("ok", "failed"):
                self.logins.labels(protocol, result)
        for result in DELIVERY_RESULTS:
            self.deliveries.labels(result)
        self.store_errors.labels("deliver")
        # Counted by the reactor thread on every turn, so at the least cost
        # (no lock, no labels), and exported only when scraped.
        self.turns = TurnTimer()
        if node is None:
            registry.register(_TurnCollector(self.turns))
            self.exposed = registry
            self.shared_turns = None
        else:
            self.shared_turns = SharedTurns(self.turns, registry)
            self.exposed = node_registry(node)

    def publish(self) -> None:
        """Bring what only this process holds (its tallies, its turns) to the Prometheus values and node's files."""
        self.publish_tallies()
        if self.shared_turns is not None:
            self.shared_turns.publish()

    def publish_tallies(self) -> None:
        for tally in self._tallies:
            tally.publish()

    def tally(self, child) -> _Tally:
        """A counter's labelled child, counted in a plain number until published."""
        tally = _Tally(child)
        self._tallies.append(tally)
        return tally

    def observe_command(self, protocol: str, command: str | bytes, seconds: float) -> None:
        # labels() takes a lock and rebuilds the key each call; the tallies
        # are kept by label, which command_label bounds to known commands
        # plus OTHER.
        tally = self._command_tallies.get((protocol, command))
        if tally is None:
            tally = self._command_tally(protocol, command)
        tally.observe(seconds)

    def _command_tally(self, protocol: str, command: str | bytes) -> _HistogramTally:
        key = (protocol, command_label(protocol, command))
        tally = self._command_tallies.get(key)
        if tally is None:
            tally = self._command_tallies[key] = _HistogramTally(self.commands.labels(*key))
            self._tallies.append(tally)
        spelled = command.decode("ascii", "replace") if isinstance(command, bytes) else command
        if spelled == key[1]:
            # Passed as its label (b"RETR"): found at once next time.  Only
            # known commands are, so what a client sends cannot grow this.
            self._command_tallies[(protocol, command)] = tally
        return tally

    def count_login(self, protocol: str, ok: bool) -> None:
        self.logins.labels(protocol, "ok" if ok else "failed").inc()

    def count_delivery(self, result: str) -> None:
        if result not in DELIVERY_RESULTS:
            raise ValueError(f"delivery result {result!r} is not one of {DELIVERY_RESULTS}")
        self.deliveries.labels(result).inc()

    def count_store_error(self, operation: str) -> None:
        self.store_errors.labels(operation).inc()


class _Tally:
    """Increments of one counter child, held until ``publish``."""

    __slots__ = ("child", "pending")

    def __init__(self, child) -> None:
        self.child = child
        self.pending = 0

    def inc(self, amount: int = 1) -> None:
        self.pending += amount

    def publish(self) -> None:
        if self.pending:
            pending, self.pending = self.pending, 0
            self.child.inc(pending)


class _HistogramTally:
    """Observations of one histogram child, held until ``publish``; counted into its buckets as ``observe`` would."""

    __slots__ = ("child", "bounds", "counts", "total")

    def __init__(self, child) -> None:
        self.child = child
        self.bounds = tuple(child._upper_bounds)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        # Histogram.observe's bucket: the first bound at or above the value.
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def publish(self) -> None:
        counts = self.counts
        if not any(counts):
            return
        self.counts = [0] * len(self.bounds)
        total, self.total = self.total, 0.0
        for value, count in zip(self.child._buckets, counts):
            if count:
                value.inc(count)
        self.child._sum.inc(total)


class _TallyPublisher:
    """Registered first: a read of the registry publishes the tallies before the values are collected."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self):
        self.metrics.publish_tallies()
        return ()


class _TurnCollector:
    """The reactor's turns as Prometheus sees them, read at each scrape."""

    def __init__(self, turns: TurnTimer) -> None:
        self.turns = turns

    def collect(self):
        turns = self.turns
        cumulative, buckets = 0, []
        for bound, count in zip((*turns.buckets, float("inf")), turns.counts):
            cumulative += count
            buckets.append((floatToGoString(bound), cumulative))
        yield HistogramMetricFamily(
            "gateway_reactor_turn_cpu_seconds",
            "CPU of the reactor thread from one wait for events to the next",
            buckets=buckets,
            sum_value=turns.total,
        )
        yield GaugeMetricFamily(
            "gateway_reactor_longest_turn_cpu_seconds",
            "The longest turn of the reactor thread since start, in its CPU seconds",
            value=turns.longest,
        )


_active: Metrics | None = None


def activate(metrics: Metrics | None) -> Metrics | None:
    """Send the module functions' counts to ``metrics``; returns the previous one."""
    global _active
    previous, _active = _active, metrics
    return previous


def observe_command(protocol: str, command: str | bytes, seconds: float) -> None:
    """
    A command of ``protocol`` ("pop3", "imap", "lmtp") took ``seconds`` from
    its line arriving to its final (tagged, +OK/-ERR, or reply code) answer.
    """
    if _active is not None:
        _active.observe_command(protocol, command, seconds)


def count_login(protocol: str, ok: bool) -> None:
    if _active is not None:
        _active.count_login(protocol, ok)


def count_delivery(result: str) -> None:
    if _active is not None:
        _active.count_delivery(result)


def count_store_error(operation: str) -> None:
    if _active is not None:
        _active.count_store_error(operation)


def record_config_reload(ok: bool) -> None:
    if _active is not None:
        _active.config_reload_ok.set(1 if ok else 0)


class _CountedConnection(ProtocolWrapper):
    """One connection: open while it lives; every byte each way counted."""

    def makeConnection(self, transport):
        self.factory.connections.inc()
        self.factory.connections_open.inc()
        super().makeConnection(transport)

    # Counted after the bytes are passed on: a command's answer goes to the
    # socket (and the client wakes) before the counters take their locks.

    # The transport and the protocol are called directly, not through
    # ProtocolWrapper's methods: one Python call less for every command.

    def write(self, data):
        size = len(data)
        self.transport.write(data)
        self.factory.sent_bytes.inc(size)

    def writeSequence(self, data):
        size = sum(map(len, data))
        self.transport.writeSequence(data)
        self.factory.sent_bytes.inc(size)

    def dataReceived(self, data):
        try:
            self.wrappedProtocol.dataReceived(data)
        finally:
            self.factory.received_bytes.inc(len(data))

    def startTLS(self, context_factory, normal=True):
        # STARTTLS/STLS through this wrapper: the protocol asks its transport
        # (this wrapper) whether it is an ISSLTransport now.
        self.transport.startTLS(context_factory, normal)
        directlyProvides(self, providedBy(self.transport))

    def connectionLost(self, reason):
        self.factory.connections_open.dec()
        super().connectionLost(reason)


class MetricsFactory(WrappingFactory):
    """
    Wrap a listener's application factory to count its connections and
    bytes under ``listener``.  It sits right around the application
    protocol, inside implicit TLS and the connection limits, so it counts
    accepted sessions and the protocol's own bytes.
    """

    protocol = _CountedConnection

    def __init__(self, wrapped_factory, metrics: Metrics, listener: str) -> None:
        super().__init__(wrapped_factory)
        self.connections = metrics.connections.labels(listener)
        self.connections_open = metrics.connections_open.labels(listener)
        self.received_bytes = metrics.tally(metrics.received_bytes.labels(listener))
        self.sent_bytes = metrics.tally(metrics.sent_bytes.labels(listener))


class MetricsPage(Resource):
    """
    ``GET /metrics`` in Prometheus' text format.  Rendered in the reactor
    thread: ``prometheus_client.twisted.MetricsResource`` would import the
    global reactor and use its thread pool, for an answer that takes well
    under a millisecond for the few hundred series here.
    """

    isLeaf = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request):
        if request.postpath not in ([b"metrics"], [b"metrics", b""]):
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"Not found: the metrics are at /metrics\n"
        # What the scraper asks for: Prometheus' text format, or OpenMetrics.
        accept = request.getHeader(b"accept")
        encoder, content_type = choose_encoder(accept.decode("latin-1") if accept else None)
        request.setHeader(b"content-type", content_type.encode("ascii"))
        self.metrics.publish()
        return encoder(self.metrics.exposed)


class _QuietSite(Site):
    # One access-log line per scrape, every 15 s, would bury the mail log.
    def log(self, request):
        pass


def metrics_site(metrics: Metrics) -> Site:
    """The ``twisted.web`` site for the metrics listener."""
    return _QuietSite(MetricsPage(metrics))


class MetricsService(Service):
    """
    Makes this server's metrics the ones the protocols' counts go to, and
    times the reactor's turns into them.
    """

    def __init__(self, metrics: Metrics, reactor):
        self.metrics = metrics
        self.reactor = reactor
        self._previous = None
        self._stop_timing = None
        self._publishing = None

    def startService(self):
        super().startService()
        self._previous = activate(self.metrics)
        self._stop_timing = time_turns(self.reactor, self.metrics.turns)
        if self.metrics.shared_turns is not None:
            # Another process serves the page: what only this one holds (its
            # tallies, its turns) goes to the node's files at most a second late.
            self._publishing = LoopingCall(self.metrics.publish)
            self._publishing.clock = self.reactor
            self._publishing.start(1.0)

    def stopService(self):
        if self._publishing is not None:
            self._publishing.stop()
            self.metrics.publish()
        self._stop_timing()
        activate(self._previous)
        return super().stopService()
