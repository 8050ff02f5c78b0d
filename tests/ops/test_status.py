import http.server
import io
import json
import socket
import threading

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gateway.cli import main
from gateway.net.metrics import Metrics


def status(data_dir, capsys):
    out = io.StringIO()
    code = main(["--data", str(data_dir), "status"], stdout=out)
    return code, out.getvalue(), capsys.readouterr().err


def write_ports(data_dir, ports):
    (data_dir / "run").mkdir(parents=True)
    (data_dir / "run" / "ports.json").write_text(json.dumps(ports))


@pytest.fixture
def metrics_server():
    """A stand-in for the server's metrics listener, on a free loopback port."""
    metrics = Metrics(CollectorRegistry(), listeners=["pop3", "imaps", "lmtp"])

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = generate_latest(metrics.registry)
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield metrics, f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_not_running(tmp_path, capsys):
    code, out, err = status(tmp_path / "data", capsys)
    assert code == 69
    assert out == ""
    assert err == f"gateway: server not running ({tmp_path / 'data' / 'run' / 'ports.json'} is absent)\n"


def test_running_without_metrics_listener(tmp_path, capsys):
    write_ports(tmp_path, {"pop3": ["127.0.0.1:1110"], "metrics": []})
    code, _, err = status(tmp_path, capsys)
    assert code == 69
    assert err.startswith("gateway: the server runs without a metrics listener: set [listeners] metrics")
    assert err.count("\n") == 1


def test_stale_ports_file(tmp_path, capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    write_ports(tmp_path, {"metrics": [f"127.0.0.1:{port}"]})
    code, _, err = status(tmp_path, capsys)
    assert code == 69
    assert err.startswith(f"gateway: server not running? http://127.0.0.1:{port}/metrics: ")
    assert err.count("\n") == 1


def test_shows_sessions_logins_and_deliveries(tmp_path, capsys, metrics_server):
    metrics, address = metrics_server
    metrics.connections_open.labels("pop3").inc(2)
    metrics.connections.labels("pop3").inc(5)
    metrics.connections.labels("imaps").inc(1)
    metrics.count_login("pop3", True)
    metrics.count_login("imap", False)
    metrics.count_delivery("ok")
    metrics.count_delivery("ok")
    write_ports(tmp_path, {"pop3": ["127.0.0.1:1110"], "metrics": [address]})
    code, out, err = status(tmp_path, capsys)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "protocol    sessions  connections",
        "pop3               2            5",
        "imaps              0            1",
        "lmtp               0            0",
        "logins: imap ok 0 failed 1, pop3 ok 1 failed 0",
        "deliveries: ok 2, tempfail 0, error 0",
        "store errors: 0",
    ]


def test_says_when_the_last_reload_was_refused(tmp_path, capsys, metrics_server):
    metrics, address = metrics_server
    metrics.config_reload_ok.set(0)
    write_ports(tmp_path, {"metrics": [address]})
    _, out, _ = status(tmp_path, capsys)
    assert out.splitlines()[-1] == (
        "config: the last reload was refused (see the log); the server runs the previous config"
    )


@pytest.mark.parametrize(
    ("address", "url"),
    [
        ("127.0.0.1:9154", "http://127.0.0.1:9154/metrics"),
        ("0.0.0.0:9154", "http://127.0.0.1:9154/metrics"),
        ("::1:9154", "http://[::1]:9154/metrics"),
        (":::9154", "http://[::1]:9154/metrics"),
    ],
)
def test_url_of_a_bound_address(address, url):
    from gateway.ops.status import _url

    assert _url(address) == url
