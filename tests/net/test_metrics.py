import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.web.test.requesthelper import DummyRequest
from zope.interface import alsoProvides, implementer

from gateway.net import metrics
from gateway.net.metrics import Metrics, MetricsFactory, MetricsPage, command_label


def samples(m: Metrics) -> dict:
    """Every sample of a scrape as {(name, sorted labels): value}, parsed back from the text."""
    text = generate_latest(m.registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
def active():
    m = Metrics(CollectorRegistry(), listeners=["pop3", "imap"])
    previous = metrics.activate(m)
    yield m
    metrics.activate(previous)


def test_series_exist_at_zero_before_any_traffic():
    m = Metrics(CollectorRegistry(), listeners=["pop3", "imaps", "lmtp"])
    values = samples(m)
    for listener in ("pop3", "imaps", "lmtp"):
        assert values[("gateway_connections_open", (("protocol", listener),))] == 0
        assert values[("gateway_connections_total", (("protocol", listener),))] == 0
        assert values[("gateway_sent_bytes_total", (("protocol", listener),))] == 0
        assert values[("gateway_received_bytes_total", (("protocol", listener),))] == 0
    assert values[("gateway_logins_total", (("protocol", "imap"), ("result", "failed")))] == 0
    assert values[("gateway_deliveries_total", (("result", "tempfail"),))] == 0
    assert values[("gateway_store_errors_total", (("operation", "deliver"),))] == 0
    assert values[("gateway_config_last_reload_successful", ())] == 1


def test_registries_are_separate():
    one = Metrics(CollectorRegistry())
    two = Metrics(CollectorRegistry())
    one.count_login("pop3", True)
    assert samples(one)[("gateway_logins_total", (("protocol", "pop3"), ("result", "ok")))] == 1
    assert samples(two)[("gateway_logins_total", (("protocol", "pop3"), ("result", "ok")))] == 0


def test_module_functions_do_nothing_without_an_active_metrics():
    previous = metrics.activate(None)
    try:
        metrics.count_login("imap", False)
        metrics.observe_command("imap", "NOOP", 0.1)
        metrics.count_delivery("ok")
        metrics.count_store_error("deliver")
    finally:
        metrics.activate(previous)


def test_module_functions_reach_the_active_metrics(active):
    metrics.count_login("imap", False)
    metrics.count_login("imap", False)
    metrics.count_login("pop3", True)
    metrics.count_delivery("ok")
    metrics.count_delivery("tempfail")
    metrics.count_store_error("deliver")
    metrics.observe_command("imap", b"uid fetch", 0.003)
    metrics.observe_command("pop3", "RETR", 0.5)
    values = samples(active)
    assert values[("gateway_logins_total", (("protocol", "imap"), ("result", "failed")))] == 2
    assert values[("gateway_logins_total", (("protocol", "pop3"), ("result", "ok")))] == 1
    assert values[("gateway_deliveries_total", (("result", "ok"),))] == 1
    assert values[("gateway_deliveries_total", (("result", "tempfail"),))] == 1
    assert values[("gateway_store_errors_total", (("operation", "deliver"),))] == 1
    uid_fetch = (("command", "UID FETCH"), ("protocol", "imap"))
    assert values[("gateway_command_duration_seconds_count", uid_fetch)] == 1
    assert values[("gateway_command_duration_seconds_sum", uid_fetch)] == pytest.approx(0.003)
    assert values[("gateway_command_duration_seconds_bucket", (*uid_fetch[:1], ("le", "0.0025"), uid_fetch[1]))] == 0
    assert values[("gateway_command_duration_seconds_bucket", (*uid_fetch[:1], ("le", "0.005"), uid_fetch[1]))] == 1


def test_unknown_delivery_result_is_a_programming_error(active):
    with pytest.raises(ValueError):
        metrics.count_delivery("bounced")


@pytest.mark.parametrize(
    ("protocol", "command", "label"),
    [
        ("pop3", "retr", "RETR"),
        ("pop3", b"UIDL", "UIDL"),
        ("pop3", "SELECT", "OTHER"),
        ("imap", "select", "SELECT"),
        ("imap", "UID fetch", "UID FETCH"),
        ("imap", "UID", "OTHER"),
        ("imap", "UID LOGIN", "OTHER"),
        ("imap", "X" * 1000, "OTHER"),
        ("imap", "", "OTHER"),
        ("imap", b"\xff\xfe", "OTHER"),
        ("lmtp", "lhlo", "LHLO"),
        ("smtp", "HELO", "OTHER"),
    ],
)
def test_command_labels_are_bounded(protocol, command, label):
    assert command_label(protocol, command) == label


def test_hostile_command_names_do_not_grow_the_label_set(active):
    for n in range(200):
        metrics.observe_command("imap", f"X{n}", 0.001)
    commands = {
        dict(labels)["command"]
        for (name, labels) in samples(active)
        if name == "gateway_command_duration_seconds_count"
    }
    assert commands == {"OTHER"}


class Echo(Protocol):
    def dataReceived(self, data):
        self.transport.write(data.upper())
        self.transport.writeSequence([b"a", b"bc"])


def connect(factory):
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def test_connections_and_bytes_are_counted_per_listener():
    m = Metrics(CollectorRegistry(), listeners=["pop3", "pop3s"])
    factory = MetricsFactory(Factory.forProtocol(Echo), m, "pop3s")
    first, transport = connect(factory)
    second, _ = connect(factory)
    first.dataReceived(b"hello")
    assert transport.value() == b"HELLOabc"
    values = samples(m)
    assert values[("gateway_connections_open", (("protocol", "pop3s"),))] == 2
    assert values[("gateway_connections_total", (("protocol", "pop3s"),))] == 2
    assert values[("gateway_received_bytes_total", (("protocol", "pop3s"),))] == 5
    assert values[("gateway_sent_bytes_total", (("protocol", "pop3s"),))] == 8
    assert values[("gateway_connections_total", (("protocol", "pop3"),))] == 0
    first.connectionLost(Failure(ConnectionDone()))
    second.connectionLost(Failure(ConnectionDone()))
    values = samples(m)
    assert values[("gateway_connections_open", (("protocol", "pop3s"),))] == 0
    assert values[("gateway_connections_total", (("protocol", "pop3s"),))] == 2


class TLSCapableTransport(StringTransport):
    def startTLS(self, context_factory, normal=True):
        self.tls_started = context_factory
        # Like the TCP transport, it provides ISSLTransport from then on.
        alsoProvides(self, ISSLTransport)


def test_starttls_through_the_wrapper_makes_the_protocol_see_tls():
    m = Metrics(CollectorRegistry())
    seen = []

    class Starter(Protocol):
        def dataReceived(self, data):
            self.transport.startTLS("context")
            seen.append(ISSLTransport.providedBy(self.transport))

    protocol = MetricsFactory(Factory.forProtocol(Starter), m, "imap").buildProtocol(None)
    transport = TLSCapableTransport()
    protocol.makeConnection(transport)
    assert not ISSLTransport.providedBy(protocol)
    protocol.dataReceived(b"STARTTLS")
    assert transport.tls_started == "context"
    assert seen == [True]


@implementer(ISSLTransport)
class SecureTransport(StringTransport):
    pass


def test_implicit_tls_transport_stays_visible_to_the_protocol():
    m = Metrics(CollectorRegistry())
    protocol = MetricsFactory(Factory.forProtocol(Protocol), m, "imaps").buildProtocol(None)
    protocol.makeConnection(SecureTransport())
    assert ISSLTransport.providedBy(protocol.wrappedProtocol.transport)


def test_metrics_page_serves_the_text_format():
    m = Metrics(CollectorRegistry(), listeners=["imap"])
    m.count_login("imap", True)
    request = DummyRequest([b"metrics"])
    body = MetricsPage(m).render_GET(request)
    assert request.responseHeaders.getRawHeaders(b"content-type")[0].startswith(b"text/plain; version=0.0.4")
    assert b'gateway_logins_total{protocol="imap",result="ok"} 1.0' in body


def test_metrics_page_answers_404_elsewhere():
    m = Metrics(CollectorRegistry())
    request = DummyRequest([b"secret"])
    body = MetricsPage(m).render_GET(request)
    assert request.responseCode == 404
    assert b"gateway_" not in body


def test_metrics_page_speaks_openmetrics_when_asked():
    m = Metrics(CollectorRegistry())
    request = DummyRequest([b"metrics"])
    request.requestHeaders.setRawHeaders(b"accept", [b"application/openmetrics-text; version=1.0.0"])
    body = MetricsPage(m).render_GET(request)
    assert request.responseHeaders.getRawHeaders(b"content-type")[0].startswith(b"application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_authlog_lines_count_logins(active):
    from gateway.policy import authlog

    authlog.login_failed("pop3", b"alice", "192.0.2.7", "bad-credentials")
    authlog.login_succeeded("imap", "alice", "::1")
    values = samples(active)
    assert values[("gateway_logins_total", (("protocol", "pop3"), ("result", "failed")))] == 1
    assert values[("gateway_logins_total", (("protocol", "imap"), ("result", "ok")))] == 1
    assert values[("gateway_logins_total", (("protocol", "pop3"), ("result", "ok")))] == 0


def test_reactor_turns_are_a_histogram_and_the_longest():
    m = Metrics(CollectorRegistry())
    before = samples(m)
    assert before[("gateway_reactor_turn_cpu_seconds_count", ())] == 0
    assert before[("gateway_reactor_longest_turn_cpu_seconds", ())] == 0
    for seconds in (0.0004, 0.2, 0.3, 0.0004, 4.0):
        m.turns.count(seconds)
    values = samples(m)

    def bucket(le: str) -> float:
        return values[("gateway_reactor_turn_cpu_seconds_bucket", (("le", le),))]

    # Cumulative, as Prometheus' le: a turn of exactly 0.2 s is within 0.2.
    assert bucket("0.001") == 2 and bucket("0.1") == 2 and bucket("0.2") == 3
    assert bucket("0.5") == 4 and bucket("1.0") == 4 and bucket("+Inf") == 5
    assert values[("gateway_reactor_turn_cpu_seconds_count", ())] == 5
    assert values[("gateway_reactor_turn_cpu_seconds_sum", ())] == pytest.approx(4.5008)
    assert values[("gateway_reactor_longest_turn_cpu_seconds", ())] == 4.0


def test_command_durations_fall_in_the_buckets_histogram_observe_picks():
    # Bounds themselves included (Prometheus' le), zero and past the last bound.
    durations = [0.0, 0.001, 0.0011, 0.005, 0.3, 2.5, 30.0, 31.0, 1e9]
    counted = Metrics(CollectorRegistry())
    for seconds in durations:
        counted.observe_command("pop3", b"RETR", seconds)
    reference = Metrics(CollectorRegistry())
    child = reference.commands.labels("pop3", "RETR")
    for seconds in durations:
        child.observe(seconds)

    def pick(values):
        return {key: value for key, value in values.items()
                if key[0].startswith("gateway_command") and not key[0].endswith("_created")}

    assert pick(samples(counted)) == pick(samples(reference))
    assert pick(samples(counted))[("gateway_command_duration_seconds_count",
                                   (("command", "RETR"), ("protocol", "pop3")))] == len(durations)


def test_bytes_and_commands_reach_the_values_once_per_read_not_per_write(active, monkeypatch):
    # A multiprocess value takes a lock and writes a file on every inc: a
    # session's writes and commands are added up and reach it when read.
    incs = []
    factory = MetricsFactory(Factory.forProtocol(Echo), active, "pop3")
    for counter in (active.sent_bytes, active.received_bytes):
        child = counter.labels("pop3")
        monkeypatch.setattr(child, "inc", lambda amount=1, inc=child.inc: (incs.append(amount), inc(amount)))
    histogram = active.commands.labels("pop3", "RETR")
    monkeypatch.setattr(histogram, "observe", lambda amount: pytest.fail("observed one by one"))
    protocol, transport = connect(factory)
    for _ in range(100):
        protocol.dataReceived(b"RETR 1\r\n")
        metrics.observe_command("pop3", b"RETR", 0.0001)
    assert incs == []
    values = samples(active)
    assert values[("gateway_received_bytes_total", (("protocol", "pop3"),))] == 800
    assert values[("gateway_sent_bytes_total", (("protocol", "pop3"),))] == 1100
    assert values[("gateway_command_duration_seconds_count", (("command", "RETR"), ("protocol", "pop3")))] == 100
    assert sorted(incs) == [800, 1100]
    # Read again with nothing new: nothing is added twice.
    assert samples(active)[("gateway_sent_bytes_total", (("protocol", "pop3"),))] == 1100
    assert sorted(incs) == [800, 1100]
