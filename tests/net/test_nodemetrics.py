"""
A node's metrics across processes (gateway/net/nodemetrics.py): two
processes' counts in one directory, told apart as prometheus_client tells
processes apart (by the identifier their values are filed under).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, values
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from gateway.net import metrics as metrics_module, nodemetrics
from gateway.net.metrics import Metrics, MetricsFactory, MetricsService


def samples(registry) -> dict:
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def process(monkeypatch, number: int):
    """What is made next is filed as process ``number``'s."""
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(lambda: number))


def test_counts_are_summed_the_longest_turn_is_the_longest_of_any(tmp_path, monkeypatch):
    node = tmp_path / "metrics"
    monkeypatch.setenv(nodemetrics.ENVIRONMENT, str(node))
    node.mkdir()
    for number, turns in ((1, (0.0005, 0.3)), (2, (0.0005, 0.0005, 0.02))):
        process(monkeypatch, number)
        metrics = Metrics(CollectorRegistry(), listeners=["pop3"], node=node)
        for seconds in turns:
            metrics.turns.count(seconds)
        metrics.connections.labels("pop3").inc(number)
        metrics.connections_open.labels("pop3").inc(number)
        metrics.publish()
    seen = samples(nodemetrics.node_registry(node))
    assert seen[("gateway_connections_total", (("protocol", "pop3"),))] == 3
    assert seen[("gateway_connections_open", (("protocol", "pop3"),))] == 3
    assert seen[("gateway_reactor_turn_cpu_seconds_count", ())] == 5
    assert seen[("gateway_reactor_turn_cpu_seconds_bucket", (("le", "0.001"),))] == 3
    assert seen[("gateway_reactor_turn_cpu_seconds_bucket", (("le", "0.025"),))] == 4
    assert seen[("gateway_reactor_turn_cpu_seconds_bucket", (("le", "+Inf"),))] == 5
    assert abs(seen[("gateway_reactor_turn_cpu_seconds_sum", ())] - 0.3215) < 1e-9
    assert seen[("gateway_reactor_longest_turn_cpu_seconds", ())] == 0.3
    # The internal gauges that carry the turns are not shown.
    assert not any(name.startswith("gateway_node_turns") for name, _ in seen)

    # Process 2 ends: its connections are open no more; what it counted stays.
    nodemetrics.process_ended(node, 2)
    seen = samples(nodemetrics.node_registry(node))
    assert seen[("gateway_connections_open", (("protocol", "pop3"),))] == 1
    assert seen[("gateway_connections_total", (("protocol", "pop3"),))] == 3
    assert seen[("gateway_reactor_turn_cpu_seconds_count", ())] == 5


def test_a_fresh_start_forgets_the_last_runs_counts(tmp_path, monkeypatch):
    node = tmp_path / "run" / "metrics"
    node.mkdir(parents=True)
    (node / "counter_99.db").write_bytes(b"left by the last run")
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)
    monkeypatch.setenv(nodemetrics.ENVIRONMENT, "unset")
    nodemetrics.share(node, fresh=True)
    assert list(node.iterdir()) == []
    assert (node.stat().st_mode & 0o777) == 0o700


def test_a_workers_bytes_and_commands_reach_the_node_within_a_second(tmp_path, monkeypatch):
    node = tmp_path / "metrics"
    monkeypatch.setenv(nodemetrics.ENVIRONMENT, str(node))
    node.mkdir()
    process(monkeypatch, 7)
    metrics = Metrics(CollectorRegistry(), listeners=["pop3"], node=node)
    clock = Clock()
    clock.doIteration = lambda timeout: None
    service = MetricsService(metrics, clock)
    service.startService()
    try:
        protocol = MetricsFactory(Factory.forProtocol(Protocol), metrics, "pop3").buildProtocol(None)
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(b"RETR 1\r\n")
        protocol.write(b"+OK 2 octets\r\nhi\r\n.\r\n")
        metrics_module.observe_command("pop3", b"RETR", 0.002)
        clock.advance(1.0)
        seen = samples(nodemetrics.node_registry(node))
        assert seen[("gateway_received_bytes_total", (("protocol", "pop3"),))] == 8
        assert seen[("gateway_sent_bytes_total", (("protocol", "pop3"),))] == 21
        retr = (("command", "RETR"), ("protocol", "pop3"))
        assert seen[("gateway_command_duration_seconds_count", retr)] == 1
        assert seen[("gateway_command_duration_seconds_bucket", (retr[0], ("le", "0.0025"), retr[1]))] == 1
        protocol.write(b"+OK\r\n")
    finally:
        service.stopService()
    # Stopping publishes what is left.
    assert samples(nodemetrics.node_registry(node))[("gateway_sent_bytes_total", (("protocol", "pop3"),))] == 26
