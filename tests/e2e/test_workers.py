"""
A node of several serving processes (``[server] workers = 2``) end to end:
the real ``twistd -n gateway``, real clients on one port each, and which
process holds each connection read from /proc (never from the wire).
"""

from __future__ import annotations

import imaplib
import json
import os
import poplib
import re
import signal
import smtplib
import socket
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.serverproc import LOOPBACK, GatewayProcess, run_gateway, wait_for

WORKERS = 2
# Connections a test opens at the most before every process has served one.
MOST_CONNECTIONS = 200


def children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            # The command name in parentheses may hold spaces: fields after it.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def serving(server: GatewayProcess) -> dict[int, int]:
    """Worker index -> pid, for each worker that said it serves (the latest start of each)."""
    found = {}
    for index, pid in re.findall(r"Worker (\d+) serving \(pid (\d+)\)", server.log()):
        found[int(index)] = int(pid)
    return found


def node(server: GatewayProcess) -> list[int]:
    """The pids of every serving process, once all serve: the main one first."""
    workers = wait_for(lambda: (found := serving(server)) and len(found) == WORKERS - 1 and found,
                       what="workers serving")
    return [server.process.pid, *(workers[index] for index in sorted(workers))]


def holder(pids: list[int], client: socket.socket) -> int | None:
    """Which of ``pids`` holds the server end of the TCP connection ``client``."""
    server_port = client.getpeername()[1]
    client_port = client.getsockname()[1]
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
            inode = fields[9]
    if inode is None:
        return None
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
        except OSError:
            continue
    return None


def spread(pids: list[int], connect) -> tuple[list, dict[int, int]]:
    """
    Connections from ``connect()`` until every process of ``pids`` holds
    one (bounded); returns them and how many each process holds.
    """
    held, per_process = [], dict.fromkeys(pids, 0)
    while len(held) < MOST_CONNECTIONS and not all(per_process.values()):
        connection, client = connect()
        held.append(connection)
        pid = wait_for(lambda: holder(pids, client), seconds=5, what="server end of the connection")
        per_process[pid] += 1
    return held, per_process


def write_config(path: Path, extra: str = "") -> Path:
    path.write_text(f"""\
[server]
workers = {WORKERS}
[listeners]
metrics = "{LOOPBACK}"
[auth]
failure_delay = 0
{extra}""")
    return path


@pytest.fixture
def server(tmp_path):
    data = tmp_path / "data"
    run_gateway(data, "user", "add", "alice", input=b"secret\n")
    server = GatewayProcess(data, config=write_config(tmp_path / "gateway.toml"))
    with server:
        yield server


def pop3(server):
    client = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=10)
    return client, client.sock


def imap(server):
    client = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=10)
    return client, client.sock


def test_every_process_serves_pop3_and_imap_logins_on_one_port(server):
    server.deliver("alice", b"Subject: one\r\n\r\nbody\r\n")
    pids = node(server)
    assert set(children(pids[0])) == set(pids[1:])

    sessions, per_process = spread(pids, lambda: pop3(server))
    assert all(per_process.values()), per_process
    for session in sessions:
        session.user("alice")
        assert session.pass_("secret").startswith(b"+OK")
        assert session.stat() == (1, len(b"Subject: one\r\n\r\nbody\r\n"))
        session.quit()

    sessions, per_process = spread(pids, lambda: imap(server))
    assert all(per_process.values()), per_process
    for session in sessions:
        assert session.login("alice", "secret")[0] == "OK"
        assert session.select("INBOX") == ("OK", [b"1"])
        session.logout()


def connection_counts(pid: int) -> tuple[int, ...]:
    """The node's table of connections per process (gateway/net/balance.py), read through the main process's fd."""
    fds = Path(f"/proc/{pid}/fd")
    fd = next(entry for entry in fds.iterdir() if os.readlink(entry).startswith("/memfd:gateway-loads"))
    table = os.open(fd, os.O_RDONLY)
    try:
        data = os.pread(table, 8 * WORKERS, 0)
    finally:
        os.close(table)
    return tuple(int.from_bytes(data[index:index + 8], "little", signed=True) for index in range(0, len(data), 8))


def test_every_process_tells_the_others_how_many_connections_it_holds(server):
    pids = node(server)
    sessions, per_process = spread(pids, lambda: pop3(server))
    more, more_per_process = spread(pids, lambda: imap(server))
    expected = tuple(per_process[pid] + more_per_process[pid] for pid in pids)
    wait_for(lambda: connection_counts(pids[0]) == expected, what=f"connection counts {expected}")
    for session in sessions:
        session.quit()
    for session in more:
        session.logout()
    wait_for(lambda: connection_counts(pids[0]) == (0,) * WORKERS, what="connection counts back to none")


def scrape(server) -> dict:
    (address,) = server.ports["metrics"]
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_the_sessions_of_every_process(server):
    pids = node(server)
    sessions, per_process = spread(pids, lambda: pop3(server))
    assert all(per_process.values()), per_process
    samples = scrape(server)
    assert samples[("gateway_connections_open", (("protocol", "pop3"),))] == len(sessions)
    assert samples[("gateway_connections_total", (("protocol", "pop3"),))] == len(sessions)
    # Every process's turns, once the workers have published theirs (each second).
    assert samples[("gateway_reactor_longest_turn_cpu_seconds", ())] > 0
    turns = wait_for(lambda: scrape(server)[("gateway_reactor_turn_cpu_seconds_count", ())], what="turns")
    assert turns > 0
    for session in sessions:
        session.quit()
    wait_for(lambda: scrape(server)[("gateway_connections_open", (("protocol", "pop3"),))] == 0,
             what="sessions closed in the metrics")


def test_sighup_reloads_every_worker(server, tmp_path):
    pids = node(server)
    write_config(tmp_path / "gateway.toml", "[limits]\nmax_bad_commands = 1\n")
    server.process.send_signal(signal.SIGHUP)
    wait_for(lambda: all(re.search(rf"\[worker {index},[^]]*\] Config reloaded \(SIGHUP\): limits.max_bad_commands",
                                   server.log()) for index in range(1, WORKERS)), what="workers reloading")
    sessions, per_process = spread(pids, lambda: pop3(server))
    assert all(per_process.values()), per_process
    # One bad command is the most a session takes now: it ends the session,
    # where before the reload a NOOP after it was answered +OK.
    for session in sessions:
        with pytest.raises(poplib.error_proto):
            session._shortcmd("BOGUS")
        with pytest.raises((poplib.error_proto, OSError)):
            session._shortcmd("NOOP")


def test_sigterm_stops_every_worker(server):
    pids = node(server)
    server.stop()
    assert [pid for pid in pids[1:] if alive(pid)] == []
    # Stopped as asked, each after closing its store, before the main process ended.
    log = server.log()
    assert f"Worker 1 (pid {pids[1]}) stopped: exit code 0" in log
    assert log.index("stopped: exit code 0") < log.index("Server Shut Down.")


def test_workers_end_when_the_main_process_is_killed(server):
    pids = node(server)
    server.kill()
    wait_for(lambda: not any(alive(pid) for pid in pids[1:]), seconds=15, what="workers ending")


def test_a_killed_worker_is_started_again_and_the_port_keeps_serving(server):
    main, killed = node(server)
    os.kill(killed, signal.SIGKILL)
    # Meanwhile the main process serves the port alone.
    session, _ = pop3(server)
    session.user("alice")
    assert session.pass_("secret").startswith(b"+OK")
    session.quit()
    restarted = wait_for(lambda: serving(server).get(1) not in (None, killed) and serving(server)[1],
                         what="worker 1 started again")
    assert "Worker 1 (pid %d) ended (killed by signal 9)" % killed in server.log()
    assert children(main) == {restarted}
    sessions, per_process = spread([main, restarted], lambda: pop3(server))
    assert per_process[restarted] > 0
    for session in sessions:
        session.user("alice")
        assert session.pass_("secret").startswith(b"+OK")
        session.quit()


def test_failed_logins_and_sessions_count_for_the_whole_node(tmp_path):
    data = tmp_path / "data"
    run_gateway(data, "user", "add", "alice", input=b"secret\n")
    config = write_config(tmp_path / "gateway.toml",
                          "[limits]\nfailed_logins_per_ip = 3\nmax_connections_per_user = 2\n")
    with GatewayProcess(data, config=config) as server:
        pids = node(server)
        main, worker = pids

        def held_by(sessions, pid):
            return [session for session in sessions if holder(pids, session.sock) == pid]

        # Two IMAP sessions of alice, one in each process: a third is one too
        # many, wherever it lands.
        sessions, _ = spread(pids, lambda: imap(server))
        first, second = held_by(sessions, main)[0], held_by(sessions, worker)[0]
        assert first.login("alice", "secret")[0] == "OK"
        assert second.login("alice", "secret")[0] == "OK"
        for third in (held_by(sessions, main)[1:] or [imap(server)[0]])[:1] + held_by(sessions, worker)[1:2]:
            with pytest.raises(imaplib.IMAP4.error, match="LIMIT"):
                third.login("alice", "secret")
        first.logout()
        second.logout()

        # Three failures, in both processes: alice is locked out at this
        # address whichever process serves her next.
        sessions, _ = spread(pids, lambda: pop3(server))
        on_main, on_worker = held_by(sessions, main)[0], held_by(sessions, worker)[0]

        def log_in(session, password):
            session.user("alice")
            return session.pass_(password)

        for session in (on_main, on_worker, on_main):
            with pytest.raises(poplib.error_proto, match="AUTH"):
                log_in(session, "wrong")
        for session in (on_worker, on_main):
            with pytest.raises(poplib.error_proto, match="Too many failed logins"):
                log_in(session, "secret")


def test_a_unix_socket_listener_is_served_by_every_process_and_removed_once(tmp_path):
    data = tmp_path / "data"
    run_gateway(data, "user", "add", "alice", input=b"secret\n")
    path = tmp_path / "lmtp.sock"
    server = GatewayProcess(data, config=write_config(tmp_path / "gateway.toml"), lmtp=f"unix:{path}")
    with server:
        main, worker = node(server)
        # A worker that stops (and is started again) leaves the socket and
        # the ports file to its node.
        os.kill(worker, signal.SIGTERM)
        restarted = wait_for(lambda: serving(server).get(1) not in (None, worker) and serving(server)[1],
                             what="worker 1 started again")
        assert path.exists()
        assert json.loads((data / "run" / "ports.json").read_text()) == server.ports
        assert server.ports["lmtp"] == [f"unix:{path}"]
        held = []
        counts = {}
        while len(held) < MOST_CONNECTIONS and not all(counts.get(pid) for pid in (main, restarted)):
            held.append(smtplib.LMTP(str(path), timeout=10))
            counts = wait_for(lambda: (found := unix_connections([main, restarted], path))
                              and sum(found.values()) == len(held) and found, seconds=5, what="LMTP connection")
        assert all(counts.get(pid) for pid in (main, restarted)), counts
        for number, client in enumerate(held):
            client.ehlo("mta.example.org")
            client.mail("bob@example.org")
            client.rcpt("alice")
            assert client.data(b"Subject: %d\r\n\r\nbody\r\n" % number)[0] == 250
            client.quit()
        session, _ = pop3(server)
        session.user("alice")
        session.pass_("secret")
        assert session.stat()[0] == len(held)
        session.quit()
    assert not path.exists()


def unix_connections(pids: list[int], path: Path) -> dict[int, int]:
    """How many connections to the UNIX socket ``path`` each process of ``pids`` holds."""
    # An accepted socket shows its listener's path; state 03 is connected.
    accepted = set()
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) == 8 and fields[7] == str(path) and fields[5] == "03":
            accepted.add(f"socket:[{fields[6]}]")
    counts = {}
    for pid in pids:
        counts[pid] = 0
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                counts[pid] += os.readlink(f"/proc/{pid}/fd/{fd}") in accepted
            except OSError:
                continue
    return counts
