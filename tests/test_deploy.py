"""
deploy/: the systemd unit passes ``systemd-analyze verify``, every example
config loads with ``gateway check-config``, and the HAProxy and nftables
examples pass their own tools' checks.  A missing tool skips, unless CI=true.
"""

from __future__ import annotations

import grp
import json
import os
import re
import shutil
import subprocess

import pytest

from gateway.config import DEFAULT_TOML, loads
from tests.serverproc import BIN, ROOT, gateway_command

DEPLOY = ROOT / "deploy"


def tool(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is not installed")
        pytest.skip(f"{name} is not installed")
    return path


def option_names(toml_text: str) -> set[str]:
    """Option names shown in a TOML text, set or commented out ("# key = ...")."""
    return set(re.findall(r"^(?:# )?([a-z_0-9]+) = ", toml_text, re.M))


def test_systemd_unit_verifies(tmp_path):
    systemd_analyze = tool("systemd-analyze")
    unit = (DEPLOY / "gateway.service").read_text()
    # verify insists that ExecStart's program exists: point it at this venv.
    assert "ExecStart=/opt/gateway/bin/twistd -n --pidfile= gateway " in unit
    copy = tmp_path / "gateway.service"
    copy.write_text(unit.replace("/opt/gateway/bin/twistd", str(BIN / "twistd")))
    result = subprocess.run([systemd_analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    # Unknown or misspelt directives are only warnings: there must be none.
    assert result.stderr == ""


def test_systemd_unit_is_hardened():
    unit = (DEPLOY / "gateway.service").read_text()
    directives = dict(re.findall(r"^(\w+)=(.*)$", unit, re.M))
    assert directives["User"] == "gateway"
    assert directives["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    assert directives["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    assert directives["ProtectSystem"] == "strict"
    assert directives["ReadWritePaths"] == "/var/lib/gateway -/run/gateway"
    for flag in ("NoNewPrivileges", "PrivateTmp", "ProtectHome"):
        assert directives[flag] == "yes"
    assert directives["RestrictAddressFamilies"] == "AF_INET AF_INET6 AF_UNIX"
    assert directives["SystemCallFilter"] == "@system-service"
    assert directives["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert "--data /var/lib/gateway --config /etc/gateway/gateway.toml" in directives["ExecStart"]


def require_group(name: str) -> None:
    try:
        grp.getgrnam(name)
    except KeyError:
        if os.environ.get("CI") == "true":
            pytest.fail(f"group {name} is missing (apt package {name} makes it)")
        pytest.skip(f"group {name} is missing (apt package {name} makes it)")


def test_example_config_loads(tmp_path):
    # check-config also checks the socket directory, which gateway.tmpfiles
    # makes on a real host: here it is a temporary one.
    require_group("postfix")
    (tmp_path / "run").mkdir()
    copy = tmp_path / "gateway.toml"
    copy.write_text((DEPLOY / "gateway.toml.example").read_text().replace("/run/gateway/", f"{tmp_path}/run/"))
    result = subprocess.run(
        gateway_command("--data", str(tmp_path), "check-config", "--config", str(copy)),
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{copy}: ok\n"


def test_example_config_shows_every_option():
    example = (DEPLOY / "gateway.toml.example").read_text()
    assert option_names(DEFAULT_TOML) - option_names(example) == set()
    # Production, not the embedded default: TLS ports, metrics on loopback only.
    assert 'imaps = ["tcp:993"]' in example and 'pop3s = ["tcp:995"]' in example
    assert 'metrics = ["tcp:9154:interface=127.0.0.1"]' in example
    assert 'lmtp = ["unix:/run/gateway/lmtp.sock:mode=0660:group=postfix", "tcp:2424:interface=127.0.0.1"]' in example


def test_haproxy_example_in_the_config_loads(tmp_path):
    """The gateway.toml lines quoted in haproxy.cfg are a valid config."""
    haproxy = (DEPLOY / "haproxy.cfg").read_text()
    quoted = re.search(r"^# On every gateway node \(gateway.toml\):\n((?:#   .*\n)+)", haproxy, re.M).group(1)
    config = tmp_path / "node.toml"
    config.write_text(re.sub(r"^#   ", "", quoted, flags=re.M))
    result = subprocess.run(
        gateway_command("--data", str(tmp_path), "check-config", "--config", str(config)),
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "send-proxy-v2" in haproxy


def test_haproxy_config_checks(tmp_path):
    haproxy = tool("haproxy")
    # The example logs to /dev/log, which a test box may lack; the check
    # does not open it.
    result = subprocess.run([haproxy, "-c", "-f", str(DEPLOY / "haproxy.cfg")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_nftables_ruleset_parses():
    nft = tool("nft")
    # -c checks against the kernel without applying; where the sandbox has
    # no netfilter, fall back to parsing only (--check needs CAP_NET_ADMIN).
    result = subprocess.run([nft, "-c", "-f", str(DEPLOY / "nftables.conf")], capture_output=True, text=True,
                            timeout=60)
    if result.returncode != 0 and "Operation not permitted" in result.stderr:
        pytest.skip("nft -c needs CAP_NET_ADMIN here")
    assert result.returncode == 0, result.stderr


def test_nftables_opens_only_what_it_should():
    rules = (DEPLOY / "nftables.conf").read_text()
    assert "policy drop;" in rules
    assert re.search(r"tcp dport 2424 ip saddr \$mta_host accept", rules)
    assert re.search(r"tcp dport 9154 ip saddr \$monitoring_host accept", rules)
    assert re.search(r"tcp dport \{ 110, 143, 993, 995 \} ip saddr \$internal_net accept", rules)


def test_mta_snippets_name_the_real_lmtp_listener_and_cli():
    postfix = (DEPLOY / "postfix" / "main.cf").read_text()
    master = (DEPLOY / "postfix" / "master.cf").read_text()
    exim = (DEPLOY / "exim" / "gateway.conf").read_text()
    example = (DEPLOY / "gateway.toml.example").read_text()
    tmpfiles = (DEPLOY / "gateway.tmpfiles").read_text()
    unit = (DEPLOY / "gateway.service").read_text()
    # Postfix over the UNIX socket the example config listens on, in the
    # directory gateway.tmpfiles makes and the unit may write to, with an
    # LMTP client that is not chrooted away from it.
    assert "virtual_transport = lmtp:unix:/run/gateway/lmtp.sock" in postfix
    assert '"unix:/run/gateway/lmtp.sock:mode=0660:group=postfix"' in example
    assert re.search(r"^d /run/gateway 0755 gateway gateway -$", tmpfiles, re.M)
    assert "cp deploy/gateway.tmpfiles /etc/tmpfiles.d/gateway.conf" in unit
    assert re.search(r"^lmtp\s+unix\s+-\s+-\s+n\s+-\s+-\s+lmtp$", master, re.M)
    # Exim over TCP on loopback.
    assert '"tcp:2424:interface=127.0.0.1"' in example
    for text in (master, exim):
        assert "/opt/gateway/bin/gateway --data /var/lib/gateway deliver " in text
    assert re.search(r"protocol = lmtp\n\s+hosts = 127.0.0.1\n\s+hosts_override\n\s+port = 2424", exim)
    # The CLI really has the deliver command those snippets call.
    result = subprocess.run(gateway_command("deliver", "--help"), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--mailbox" in result.stdout


def test_postfix_snippets_pass_postconf(tmp_path):
    """main.cf names only parameters Postfix knows; master.cf's lines parse."""
    postconf = tool("postconf")
    (tmp_path / "main.cf").write_text((DEPLOY / "postfix" / "main.cf").read_text())
    (tmp_path / "master.cf").write_text((DEPLOY / "postfix" / "master.cf").read_text())
    result = subprocess.run([postconf, "-c", str(tmp_path), "-n"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "virtual_transport = lmtp:unix:/run/gateway/lmtp.sock" in result.stdout.splitlines()
    services = subprocess.run([postconf, "-c", str(tmp_path), "-M"], capture_output=True, text=True, timeout=60)
    assert services.returncode == 0 and services.stderr == "", services.stderr
    assert [line.split()[:8] for line in services.stdout.splitlines()] == [
        ["lmtp", "unix", "-", "-", "n", "-", "-", "lmtp"],
        ["gateway", "unix", "-", "n", "n", "-", "-", "pipe"],
    ]


def test_grafana_dashboard_parses():
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    assert dashboard["panels"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


def test_legacy_clients_example_loads_and_is_the_readmes(tmp_path):
    require_group("postfix")
    (tmp_path / "run").mkdir()
    example = (DEPLOY / "legacy-clients.toml.example").read_text()
    copy = tmp_path / "gateway.toml"
    copy.write_text(example.replace("/run/gateway/", f"{tmp_path}/run/"))
    result = subprocess.run(
        gateway_command("--data", str(tmp_path), "check-config", "--config", str(copy)),
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    config = loads(example)
    legacy = dict(config.listeners.named)["office-legacy"]
    assert legacy.tls_min_version == "1.0" and "192.168.1.7" in config.resolve(legacy.networks)
    assert "192.168.50.7" in config.plaintext_networks and "203.0.113.7" not in config.plaintext_networks
    # README's worked example is this file's config.
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Legacy clients"):]
    block = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    assert block == example[example.index('hostname = "mail.example.org"'):]
