"""
The two servers under test, each a plain process tree under a temp dir and
listening on loopback ports picked free: Dovecot (Debian's dovecot-imapd,
-pop3d, -lmtpd) with its own config, and the gateway under ``twistd -n``.

Both get the same users with the same ``{ARGON2ID}`` hashes (made by
``gateway.auth.hash_password``), in a file both read as a passwd-file.
Memory is read from /proc over every process of the server's tree.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"


# The checkout these benchmarks are part of.
CHECKOUT = Path(__file__).resolve().parent.parent


def checkout_environment(checkout: Path = CHECKOUT) -> dict[str, str]:
    """
    This environment with ``checkout`` first on ``PYTHONPATH``: the gateway
    under test is that checkout's (by default this one's) even when the
    interpreter's own is another (one virtualenv, installed editable from
    one checkout, driving a second one to compare the two).
    """
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=str(checkout) + (os.pathsep + path if path else ""))


def is_checkout(path: Path) -> bool:
    """Whether ``path`` holds a gateway checkout (its ``gateway`` package and twistd plugin)."""
    return (path / "gateway" / "__init__.py").is_file() and (path / "twisted" / "plugins").is_dir()


class ServerError(Exception):
    """A server would not start; str() says why, with its log tail."""


def free_ports(count: int) -> list[int]:
    """Ports the OS hands out now; held open together so they differ."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def users_file_text(hashes: dict[str, str]) -> str:
    return "".join(f"{name}:{stored}\n" for name, stored in hashes.items())


# -- /proc ------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants alive now."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children.get(current, ()))
    return tree


def _read_kb(path: str, field: str) -> int:
    try:
        with open(path) as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass  # the process ended between listing and reading
    return 0


def _process_cpu_clock(pid: int) -> int:
    """Linux's CPU-time clock of a whole process (``clock_getcpuclockid``, which Python lacks): every thread, ended ones too."""
    return ((~pid) << 3) | 2  # CPUCLOCK_SCHED of the process


def cpu_seconds(pid: int) -> float:
    """
    User plus system CPU of the tree under ``pid``, its reaped children's
    included (a Dovecot POP3 process that ended at QUIT counts in its
    master's), in seconds.  A live process counts to the nanosecond, its
    ended threads included, so that a short run of a fast server does not
    round to no CPU at all; reaped children in clock ticks.
    """
    tick = 1 / os.sysconf("SC_CLK_TCK")
    seconds = 0.0
    for member in process_tree(pid):
        try:
            with open(f"/proc/{member}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
            own = time.clock_gettime(_process_cpu_clock(member))
        except OSError:
            continue  # ended between listing and reading
        # cutime, cstime: fields 16-17 of proc(5), 14-15 after the name.
        seconds += own + sum(int(field) for field in fields[13:15]) * tick
    return seconds


def pss_kb(pid: int) -> int:
    """Proportional set size of the tree under ``pid`` (KB)."""
    return sum(_read_kb(f"/proc/{member}/smaps_rollup", "Pss:") for member in process_tree(pid))


def rss_kb(pid: int) -> int:
    return sum(_read_kb(f"/proc/{member}/status", "VmRSS:") for member in process_tree(pid))


def reset_peak_rss(pid: int) -> None:
    """Make VmHWM start again from VmRSS for every process of the tree."""
    for member in process_tree(pid):
        try:
            with open(f"/proc/{member}/clear_refs", "w") as clear_refs:
                clear_refs.write("5")
        except OSError:
            pass


def peak_rss_kb(pid: int) -> int:
    """Sum of each process's peak RSS since reset_peak_rss (an upper bound)."""
    return sum(_read_kb(f"/proc/{member}/status", "VmHWM:") for member in process_tree(pid))


# -- the servers --------------------------------------------------------------


class Server:
    """What a scenario needs to know about a running server."""

    name: str
    pid: int
    ports: dict[str, int]
    process: subprocess.Popen | None = None

    def stop(self) -> None:
        """SIGTERM and wait; then SIGKILL whatever of its tree outlived it."""
        if self.process is None or self.process.poll() is not None:
            return
        tree = process_tree(self.process.pid)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=60)
        for member in tree[1:]:
            try:
                os.kill(member, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


DOVECOT_CONF = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
protocols = imap pop3 lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 0
mail_location = maildir:{root}/mail/%n/Maildir
pop3_uidl_format = %08Xu%08Xv
default_process_limit = {processes}
default_client_limit = {clients}
default_vsz_limit = 0
passdb {{
  driver = passwd-file
  args = username_format=%n {root}/users
}}
userdb {{
  driver = static
  args = uid=mail gid=mail home={root}/mail/%n
}}
service anvil {{
  client_limit = {anvil}
}}
service auth {{
  client_limit = {anvil}
}}
protocol imap {{
  mail_max_userip_connections = {clients}
  # COMPRESS=DEFLATE (RFC 4978), as Debian's dovecot-imapd ships it.
  mail_plugins = $mail_plugins zlib imap_zlib
}}
protocol pop3 {{
  mail_max_userip_connections = {clients}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    port = 0
  }}
  service_count = 0
  process_min_avail = 2
  client_limit = {clients}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = 0
  }}
  service_count = 0
  process_min_avail = 2
  client_limit = {clients}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp}
  }}
  unix_listener lmtp {{
    mode = 0600
  }}
}}
service imap {{
  process_limit = {processes}
}}
service pop3 {{
  process_limit = {processes}
}}
"""


class Dovecot(Server):
    """``dovecot -F -c ROOT/dovecot.conf``: the reference, as a plain process."""

    name = "dovecot"

    def __init__(self, root: Path, users: dict[str, str], sessions: int):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "users").write_text(users_file_text(users))
        # Dovecot refuses uid 0 for mail access: the mail belongs to Debian's "mail" user.
        mail = self.root / "mail"
        mail.mkdir(exist_ok=True)
        shutil.chown(mail, "mail", "mail")
        pop3, imap, lmtp = free_ports(3)
        self.ports = {"pop3": pop3, "imap": imap, "lmtp": lmtp}
        # Login processes serve many clients each (service_count = 0); the
        # imap/pop3 processes are one per session, as Dovecot is deployed.
        self.conf = self.root / "dovecot.conf"
        self.conf.write_text(DOVECOT_CONF.format(
            root=self.root, processes=sessions + 100, clients=sessions + 100, anvil=4 * sessions + 500, **self.ports))

    def start(self, timeout: float = 30.0) -> Dovecot:
        binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
        if not os.path.exists(binary):
            raise ServerError("dovecot is not installed (apt-get install dovecot-imapd dovecot-pop3d dovecot-lmtpd)")
        self.process = subprocess.Popen(
            [binary, "-F", "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.pid = self.process.pid
        _wait_for_ports(self, timeout, self.root / "dovecot.log")
        return self

    def log_tail(self) -> str:
        return _tail(self.root / "dovecot.log")


class Gateway(Server):
    """``twistd -n gateway --data ROOT/data`` with listeners on picked ports."""

    name = "gateway"

    def __init__(self, root: Path, users: dict[str, str], sessions: int, store_toml: str = "",
                 name: str = "gateway", workers: int = 1, checkout: Path = CHECKOUT):
        self.name = name
        # Whose gateway runs: this checkout's, or another's to compare with.
        self.checkout = checkout
        self.root = Path(root)
        self.data = self.root / "data"
        self.data.mkdir(parents=True, exist_ok=True, mode=0o700)
        users_path = self.data / "users"
        users_path.write_text(users_file_text(users))
        users_path.chmod(0o600)
        # The same room as Dovecot gets: every session of the run from one
        # address, many of them for one user, a hundred logging in at once
        # (which the lockout would count as that many guesses in flight, and
        # Dovecot checks side by side).
        connections = sessions + 100
        (self.data / "gateway.toml").write_text(
            f"[limits]\nmax_connections = {connections}\nmax_connections_per_ip = {connections}\n"
            f"max_connections_per_user = {connections}\npassword_checks_per_ip = {connections}\n"
            f"lockout_exempt_networks = [\"{LOOPBACK}/32\"]\n\n[server]\nworkers = {workers}\n\n{store_toml}")
        self.log_path = self.root / "twistd.log"
        self.ports = {}

    def start(self, timeout: float = 30.0) -> Gateway:
        twistd = Path(sys.executable).parent / "twistd"
        endpoint = f"tcp:0:interface={LOOPBACK}:backlog=1024"
        ports_file = self.data / "run" / "ports.json"
        ports_file.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [str(twistd), "-n", "--pidfile=", "--logfile", str(self.log_path), "gateway",
             "--data", str(self.data), "--pop3", endpoint, "--imap", endpoint, "--lmtp", endpoint],
            cwd=self.checkout, env=checkout_environment(self.checkout), stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
        self.pid = self.process.pid
        deadline = time.monotonic() + timeout
        while not ports_file.exists():
            if self.process.poll() is not None:
                raise ServerError(f"gateway exited with {self.process.returncode}: "
                                  f"{self.process.stderr.read().decode(errors='replace')}{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"gateway did not start within {timeout}s: {self.log_tail()}")
            time.sleep(0.05)
        bound = json.loads(ports_file.read_text())
        self.ports = {protocol: int(addresses[0].rsplit(":", 1)[1])
                      for protocol, addresses in bound.items() if addresses}
        return self

    def log_tail(self) -> str:
        return _tail(self.log_path)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _wait_for_ports(server: Server, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    pending = set(server.ports.values())
    while pending:
        if server.process.poll() is not None:
            raise ServerError(f"{server.name} exited with {server.process.returncode}: "
                              f"{server.process.stderr.read().decode(errors='replace')}{_tail(log_path)}")
        if time.monotonic() > deadline:
            server.stop()
            raise ServerError(f"{server.name} did not listen within {timeout}s: {_tail(log_path)}")
        for port in list(pending):
            with socket.socket() as probe:
                if probe.connect_ex((LOOPBACK, port)) == 0:
                    pending.discard(port)
        time.sleep(0.05)
