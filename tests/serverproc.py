"""
Run the real server, ``twistd -n gateway``, as a subprocess for end-to-end
tests, on ports the OS picks (tcp:0 on loopback), read back from
DATA/run/ports.json.

    with GatewayProcess(tmp_path / "data") as server:
        server.add_user("alice", "secret")
        poplib.POP3("127.0.0.1", server.port("pop3"))
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LOOPBACK = "tcp:0:interface=127.0.0.1"


def wait_for(predicate, what: str, seconds: float = 30.0):
    """``predicate()`` once it is true (returned), polled for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


def gateway_command(*args: str) -> list[str]:
    return [str(BIN / "gateway"), *args]


def run_gateway(data_dir: Path, *args: str, input: bytes | None = None, check: bool = True):
    """Run the ``gateway`` CLI on ``data_dir``; returns the CompletedProcess."""
    return subprocess.run(
        gateway_command("--data", str(data_dir), *args),
        input=input,
        capture_output=True,
        check=check,
        timeout=60,
    )


@contextmanager
def imap_gateway(data_dir: Path, users=("alice",), password: bytes = b"pw"):
    """A gateway serving IMAP only to ``users``, each with ``password``."""
    for user in users:
        run_gateway(data_dir, "user", "add", user, input=password + b"\n")
    with GatewayProcess(data_dir, pop3=None, lmtp=None) as process:
        yield process


class GatewayProcess:
    """
    One ``twistd -n gateway`` process.  ``start`` waits (bounded) until its
    ports file appears; ``kill`` sends SIGKILL; ``stop`` SIGTERM and waits.
    """

    def __init__(self, data_dir: Path, pop3=LOOPBACK, imap=LOOPBACK, lmtp=LOOPBACK, config: Path | None = None,
                 extra_args=()):
        self.data_dir = Path(data_dir)
        self.listeners = {"pop3": pop3, "imap": imap, "lmtp": lmtp}
        self.config = config
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen | None = None
        self.ports: dict[str, list[str]] = {}
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-twistd.log"

    def command(self) -> list[str]:
        command = [str(BIN / "twistd"), "-n", "--pidfile=", "--logfile", str(self.log_path), "gateway",
                   "--data", str(self.data_dir)]
        if self.config is not None:
            command += ["--config", str(self.config)]
        for protocol, endpoint in self.listeners.items():
            command += [f"--{protocol}", endpoint or "none"]
        return command + self.extra_args

    def start(self, timeout: float = 30.0) -> GatewayProcess:
        return self.launch().wait_started(timeout)

    def launch(self) -> GatewayProcess:
        """Start the process and return at once (``wait_started`` waits for its ports)."""
        try:
            self._ports_file.unlink(missing_ok=True)
        except NotADirectoryError:
            pass  # a test of a broken data dir
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            self.command(), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        return self

    @property
    def _ports_file(self) -> Path:
        return self.data_dir / "run" / "ports.json"

    def wait_started(self, timeout: float = 30.0) -> GatewayProcess:
        """Wait (bounded) until the launched process has published its ports."""
        ports_file = self._ports_file
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ports_file.exists():
                self.ports = json.loads(ports_file.read_text())
                return self
            if self.process.poll() is not None:
                out, err = self.process.communicate()
                raise RuntimeError(f"server exited with {self.process.returncode}: {err.decode()}{out.decode()}")
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"server did not start within {timeout}s; log: {self.log()}")

    def port(self, protocol: str) -> int:
        return int(self.ports[protocol][0].rsplit(":", 1)[1])

    def log(self) -> str:
        try:
            return self.log_path.read_text()
        except FileNotFoundError:
            return ""

    def add_user(self, name: str, password: str) -> None:
        run_gateway(self.data_dir, "user", "add", name, input=password.encode() + b"\n")

    def deliver(self, name: str, message: bytes, *args: str) -> subprocess.CompletedProcess:
        return run_gateway(self.data_dir, "deliver", name, *args, input=message)

    def kill(self) -> None:
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def _end(self, sig) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        self.process.stdout.close()
        self.process.stderr.close()

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
