"""
``gateway status``: what the running server is doing, read from its own
metrics listener, whose address the server publishes in DATA/run/ports.json.
No Twisted here: it runs in the CLI, against another process.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

PROTOCOL_ORDER = ("pop3", "pop3s", "imap", "imaps", "lmtp")


class StatusError(Exception):
    """Why there is no status to show; str() is one line."""


def metrics_address(data_dir: Path) -> str:
    """``host:port`` or ``unix:/path`` of the server's metrics listener, from its ports file."""
    ports_file = data_dir / "run" / "ports.json"
    try:
        ports = json.loads(ports_file.read_text())
    except FileNotFoundError:
        raise StatusError(f"server not running ({ports_file} is absent)") from None
    except (OSError, ValueError) as e:
        raise StatusError(f"{ports_file}: unreadable: {e}") from None
    addresses = ports.get("metrics") or []
    if not addresses:
        raise StatusError(
            "the server runs without a metrics listener: set [listeners] metrics = "
            '["tcp:9154:interface=127.0.0.1"] (or twistd gateway --metrics) and restart it'
        )
    return addresses[0]


def _get_tcp(address: str, timeout: float) -> str:
    url = _url(address)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        raise StatusError(f"{url}: HTTP {e.code}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        text_reason = getattr(reason, "strerror", None) or str(reason)
        raise StatusError(f"server not running? {url}: {text_reason} (stale ports file?)") from None


def _url(address: str) -> str:
    host, port = address.rsplit(":", 1)
    # A listener on every address is reached on loopback.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/metrics"


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a UNIX socket: http.client's connection, connected to a path."""

    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def _get_unix(path: str, timeout: float) -> str:
    connection = _UnixHTTPConnection(path, timeout)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        if response.status != 200:
            raise StatusError(f"unix:{path}: HTTP {response.status}")
        return response.read().decode("utf-8")
    except (OSError, http.client.HTTPException) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise StatusError(f"server not running? unix:{path}: {reason} (stale ports file?)") from None
    finally:
        connection.close()


def scrape(address: str, timeout: float = 5.0) -> dict[tuple[str, tuple], float]:
    """Every sample at ``address`` (``host:port`` or ``unix:/path``) as {(name, sorted label pairs): value}."""
    if address.startswith("unix:"):
        text = _get_unix(address[len("unix:"):], timeout)
    else:
        text = _get_tcp(address, timeout)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _by_label(samples, name: str, label: str, **fixed) -> dict[str, float]:
    values = {}
    for (sample_name, labels), value in samples.items():
        labels = dict(labels)
        if sample_name == name and all(labels.get(k) == v for k, v in fixed.items()):
            values[labels[label]] = value
    return values


def render(samples) -> list[str]:
    """The status as lines of text."""
    open_now = _by_label(samples, "gateway_connections_open", "protocol")
    total = _by_label(samples, "gateway_connections_total", "protocol")
    logins_ok = _by_label(samples, "gateway_logins_total", "protocol", result="ok")
    logins_failed = _by_label(samples, "gateway_logins_total", "protocol", result="failed")
    protocols = sorted(open_now, key=lambda p: (PROTOCOL_ORDER.index(p) if p in PROTOCOL_ORDER else 99, p))
    lines = [f"{'protocol':<10}{'sessions':>10}{'connections':>13}"]
    for protocol in protocols:
        lines.append(f"{protocol:<10}{open_now[protocol]:>10.0f}{total.get(protocol, 0):>13.0f}")
    # Logins are per application protocol: a pop3s login counts under pop3.
    lines.append(
        "logins: "
        + ", ".join(
            f"{protocol} ok {logins_ok.get(protocol, 0):.0f} failed {logins_failed.get(protocol, 0):.0f}"
            for protocol in sorted(set(logins_ok) | set(logins_failed))
        )
    )
    deliveries = _by_label(samples, "gateway_deliveries_total", "result")
    lines.append("deliveries: " + ", ".join(f"{result} {count:.0f}" for result, count in deliveries.items()))
    store_errors = sum(_by_label(samples, "gateway_store_errors_total", "operation").values())
    lines.append(f"store errors: {store_errors:.0f}")
    reload_ok = samples.get(("gateway_config_last_reload_successful", ()))
    if reload_ok == 0:
        lines.append("config: the last reload was refused (see the log); the server runs the previous config")
    return lines
