"""
Metrics end to end: the real server (``twistd -n gateway --metrics ...``)
after real POP3, IMAP and LMTP sessions, scraped over HTTP like Prometheus
does, read by ``gateway status``, and the Grafana dashboard in deploy/
checked against the names in that scrape.
"""

from __future__ import annotations

import imaplib
import json
import poplib
import re
import smtplib
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.serverproc import LOOPBACK, ROOT, GatewayProcess, run_gateway

MESSAGE = b"From: bob@example.org\r\nTo: alice@example.org\r\nSubject: metrics\r\n\r\nhello metrics\r\n"


def scrape(server: GatewayProcess) -> str:
    (address,) = server.ports["metrics"]
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        return response.read().decode()


def values(text: str) -> dict:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def server(tmp_path):
    config = tmp_path / "gateway.toml"
    config.write_text("[auth]\nfailure_delay = 0\n")
    data = tmp_path / "data"
    run_gateway(data, "user", "add", "alice", input=b"secret\n")
    with GatewayProcess(data, config=config, extra_args=["--metrics", LOOPBACK]) as server:
        yield server


def test_counts_move_with_real_sessions(server):
    before = values(scrape(server))
    assert value(before, "gateway_connections_total", protocol="pop3") == 0
    assert value(before, "gateway_deliveries_total", result="ok") == 0

    with smtplib.LMTP("127.0.0.1", server.port("lmtp"), timeout=30) as lmtp:
        lmtp.sendmail("bob@example.org", ["alice@example.org"], MESSAGE)

    pop = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=30)
    pop.user("alice")
    pop.pass_("secret")
    _, lines, _ = pop.retr(1)
    assert b"hello metrics" in lines

    imap = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=30)
    with pytest.raises(imaplib.IMAP4.error):
        imap.login("alice", "wrong")
    imap.login("alice", "secret")
    imap.select("INBOX", readonly=True)
    imap.fetch("1", "(BODY.PEEK[])")

    # Both sessions are still open while Prometheus looks.
    during = values(scrape(server))
    assert value(during, "gateway_connections_open", protocol="pop3") == 1
    assert value(during, "gateway_connections_open", protocol="imap") == 1
    assert value(during, "gateway_connections_open", protocol="lmtp") == 0
    assert value(during, "gateway_connections_total", protocol="lmtp") == 1
    assert value(during, "gateway_deliveries_total", result="ok") == 1
    assert value(during, "gateway_deliveries_total", result="tempfail") == 0
    assert value(during, "gateway_logins_total", protocol="imap", result="ok") == 1
    assert value(during, "gateway_logins_total", protocol="imap", result="failed") == 1
    # RETR sent the whole message; the LMTP client sent it once more.
    assert value(during, "gateway_sent_bytes_total", protocol="pop3") > len(MESSAGE)
    assert value(during, "gateway_received_bytes_total", protocol="lmtp") > len(MESSAGE)
    assert value(during, "gateway_received_bytes_total", protocol="imap") > len(b"a LOGIN alice secret\r\n")
    # The reactor thread turned for these sessions, every turn timed in its CPU.
    turns = "gateway_reactor_turn_cpu_seconds"
    assert value(during, f"{turns}_count") > value(before, f"{turns}_count")
    assert value(during, f"{turns}_bucket", le="+Inf") == value(during, f"{turns}_count")
    assert 0 < value(during, "gateway_reactor_longest_turn_cpu_seconds") <= value(during, f"{turns}_sum")

    status = run_gateway(server.data_dir, "status")
    lines = status.stdout.decode().splitlines()
    assert re.fullmatch(r"pop3 +1 +1", lines[1]), lines
    assert re.fullmatch(r"imap +1 +1", lines[2]), lines
    assert re.fullmatch(r"lmtp +0 +1", lines[3]), lines
    assert "imap ok 1 failed 1" in lines[4]
    assert lines[5].startswith("deliveries: ok 1, ")

    pop.quit()
    imap.logout()
    # Closing is seen by the server a moment later: poll, bounded.
    for _ in range(200):
        after = values(scrape(server))
        if value(after, "gateway_connections_open", protocol="imap") == 0 and \
                value(after, "gateway_connections_open", protocol="pop3") == 0:
            break
    else:
        pytest.fail("sessions still counted as open after QUIT and LOGOUT")
    assert value(after, "gateway_connections_total", protocol="pop3") == 1


def test_only_metrics_path_is_served(server):
    (address,) = server.ports["metrics"]
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(f"http://{address}/", timeout=10)
    assert raised.value.code == 404


def exported_names(text: str) -> set[str]:
    """Every sample name the scrape can carry, from its # TYPE lines."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
    }
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        base = name.removesuffix("_total") if kind == "counter" else name
        names.update(base + suffix for suffix in suffixes[kind])
    return names


def test_grafana_dashboard_uses_only_exported_metrics(server):
    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    expressions = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]
    assert expressions, "no queries in the dashboard"
    used = {name for expr in expressions for name in re.findall(r"\bgateway_[a-z_]+\b", expr)}
    exported = exported_names(scrape(server))
    assert used - exported == set()
    # Every family the server exports is on the dashboard somewhere
    # (prometheus_client's *_created timestamps aside).
    families = {
        name
        for name in re.findall(r"^# TYPE (gateway_\S+?)(?:_total)? ", scrape(server), re.M)
        if not name.endswith("_created")
    }
    assert {f for f in families if not any(name.startswith(f) for name in used)} == set()
