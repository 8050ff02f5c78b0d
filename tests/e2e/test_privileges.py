"""
Privileges end to end (issue 4): started as root, ``twistd --uid nobody
--gid nogroup gateway`` binds a port below 1024, then runs as nobody, with
the data dir handed over so that the store still takes deliveries, and the
data dir 0700 and the users file 0600.  Needs root (CI runs as root); skips
otherwise.
"""

from __future__ import annotations

import errno
import grp
import os
import poplib
import pwd
import shutil
import smtplib
import socket
import stat
import tempfile
from pathlib import Path

import pytest

from tests.serverproc import LOOPBACK, GatewayProcess, run_gateway
from tests.e2e.test_delivery import lmtp_deliver

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="binding a port below 1024 and switching users needs root"
)


def free_privileged_port() -> int:
    """A port in 600-1000 nothing listens on now (bound and released)."""
    for port in range(600, 1001):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    continue
                raise
            return port
    pytest.skip("no free port in 600-1000")


class PrivilegedGateway(GatewayProcess):
    """``twistd -n --uid nobody --gid nogroup gateway ...``"""

    def command(self) -> list[str]:
        command = super().command()
        at = command.index("gateway")
        return command[:at] + ["--uid", "nobody", "--gid", "nogroup"] + command[at:]


@pytest.fixture
def data_dir():
    # Not under pytest's tmp_path: its parents are 0700 root, which nobody
    # cannot traverse.  The data dir itself is created by the server.
    parent = Path(tempfile.mkdtemp(prefix="gateway-privileges-"))
    parent.chmod(0o755)
    try:
        yield parent / "data"
    finally:
        shutil.rmtree(parent)


def process_ids(pid: int) -> dict[str, list[int]]:
    ids = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(("Uid:", "Gid:")):
                name, *values = line.split()
                ids[name] = [int(v) for v in values]
    return ids


def nobody_and_nogroup():
    """nobody's passwd entry and nogroup's gid; the test is skipped without such a group."""
    try:
        return pwd.getpwnam("nobody"), grp.getgrnam("nogroup").gr_gid
    except KeyError:
        pytest.skip("no group named nogroup here")


def test_runs_as_nobody_on_a_privileged_port_with_a_usable_data_dir(data_dir):
    nobody, nogroup = nobody_and_nogroup()
    # Created as root, as an admin's first command would do it.
    run_gateway(data_dir, "user", "add", "alice", input=b"alice-password\n")
    port = free_privileged_port()
    server = PrivilegedGateway(data_dir, pop3=f"tcp:{port}:interface=127.0.0.1", imap=None, lmtp=LOOPBACK)
    with server:
        pid = server.process.pid
        assert process_ids(pid) == {"Uid:": [nobody.pw_uid] * 4, "Gid:": [nogroup] * 4}
        # The store takes a delivery as nobody...
        uid = lmtp_deliver(server.port("lmtp"), "bob@example.org", "alice@example.test", b"Subject: hi\r\n\r\nHi.\r\n")
        assert uid == 1
        # ...and POP3 serves it on the privileged port.
        client = poplib.POP3("127.0.0.1", port, timeout=30)
        try:
            assert client.getwelcome().startswith(b"+OK")
            client.user("alice")
            client.pass_("alice-password")
            assert client.stat()[0] == 1
            assert b"Subject: hi" in client.retr(1)[1]
        finally:
            client.quit()
    data_status = data_dir.stat()
    users_status = (data_dir / "users").stat()
    assert stat.S_IMODE(data_status.st_mode) == 0o700
    assert stat.S_IMODE(users_status.st_mode) == 0o600
    assert (data_status.st_uid, users_status.st_uid) == (nobody.pw_uid, nobody.pw_uid)
    assert all(path.lstat().st_uid == nobody.pw_uid for path in (data_dir / "store").rglob("*"))


def test_unix_socket_bound_as_root_and_given_to_its_owner(data_dir):
    nobody, nogroup = nobody_and_nogroup()
    run_gateway(data_dir, "user", "add", "alice", input=b"alice-password\n")
    # A root-owned directory, as /run is: root binds there before twistd
    # drops to nobody, who then may not remove the socket at stop.
    sockets = data_dir.parent / "run"
    sockets.mkdir(mode=0o755)
    path = sockets / "lmtp.sock"
    listener = f"unix:{path}:mode=0660:user=nobody:group=nogroup"
    server = PrivilegedGateway(data_dir, pop3=None, imap=None, lmtp=listener)
    with server:
        info = os.stat(path)
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (nobody.pw_uid, nogroup,
                                                                         0o660)
        with smtplib.LMTP(str(path), timeout=30) as client:
            client.ehlo("client.example.org")
            client.mail("bob@example.org")
            client.rcpt("alice")
            assert client.data(b"Subject: hi\r\n\r\n")[0] == 250
    # Left behind, and said so in one line: the next start replaces it.
    assert f"Cannot remove the socket {path}: Permission denied" in server.log()
    assert "Traceback" not in server.log()
    with PrivilegedGateway(data_dir, pop3=None, imap=None, lmtp=listener) as again:
        assert again.ports["lmtp"] == [f"unix:{path}"]


def test_a_refused_hand_over_leaves_no_socket(data_dir):
    # The data dir is a third user's: twistd --uid nobody must not take it,
    # and the socket bound before that was found out goes again.
    run_gateway(data_dir, "user", "add", "alice", input=b"alice-password\n")
    os.chown(data_dir, 12345, 12345)
    sockets = data_dir.parent / "run"
    sockets.mkdir(mode=0o755)
    server = PrivilegedGateway(data_dir, pop3=None, imap=None, lmtp=f"unix:{sockets}/lmtp.sock")
    with pytest.raises(RuntimeError) as excinfo:
        server.start()
    assert f"gateway: data dir {data_dir} belongs to uid 12345" in str(excinfo.value)
    assert "Traceback" not in str(excinfo.value)
    assert list(sockets.iterdir()) == []


def test_workers_run_as_nobody_on_the_privileged_port_root_bound(data_dir):
    from tests.e2e.test_workers import node, pop3, spread

    nobody, nogroup = nobody_and_nogroup()
    import subprocess
    import sys

    # The workers start as nobody: this checkout's Python and code must be nobody's to run.
    try:
        subprocess.run([sys.executable, "-c", "import gateway.worker"], user="nobody", check=True,
                       capture_output=True, timeout=60, cwd="/")
    except (subprocess.CalledProcessError, PermissionError) as e:
        pytest.skip(f"nobody cannot run this checkout: {e}")
    run_gateway(data_dir, "user", "add", "alice", input=b"alice-password\n")
    config = data_dir.parent / "gateway.toml"
    config.write_text("[server]\nworkers = 2\n")
    port = free_privileged_port()
    server = PrivilegedGateway(data_dir, pop3=f"tcp:{port}:interface=127.0.0.1", imap=None, lmtp=LOOPBACK,
                               config=config)
    with server:
        server.ports["pop3"] = [f"127.0.0.1:{port}"]
        pids = node(server)
        for pid in pids:
            assert process_ids(pid) == {"Uid:": [nobody.pw_uid] * 4, "Gid:": [nogroup] * 4}
        sessions, per_process = spread(pids, lambda: pop3(server))
        assert all(per_process.values()), per_process
        for session in sessions:
            session.user("alice")
            assert session.pass_("alice-password").startswith(b"+OK")
            session.quit()
