"""
Worker processes: a node that serves from ``[server] workers`` processes,
so that it uses more than one core.

The process twistd runs binds every listener (before twistd drops
privileges) and serves them as worker 0.  ``Workers``, started after the
drop, runs workers 1 to N-1 (``python -m gateway.worker``), each handed the
same listening sockets: the kernel gives each new connection to one of the
processes waiting on them.  Each worker builds the same factories around
them (``service.make_service``) over the same store.

What passes between the main process and a worker:

- stdin, a pipe: the worker's spec (one JSON line), then nothing.  When the
  main process goes, even by SIGKILL, the worker reads end of file and
  stops: no worker outlives its node.
- ``EVENTS_FD``: the worker's log events, one JSON line each, which the
  main process logs as its own, marked with ``worker`` (and the worker in
  their system, ``[worker 2,...]``), so that every line goes where the
  main process logs, in its format.
- stdout and stderr: what the worker writes outside its log (a crash
  before logging begins), logged line by line.
- ``AUTHORITY_FD``, one end of a socket pair: the failed logins and the
  sessions per user the workers count in the main process
  (``gateway/policy/shared.py``).
- ``LOADS_FD``, a memfd: every process's count of connections
  (``gateway/net/balance.py``), so that a new connection goes to a process
  that holds fewer.
- signals: SIGTERM stops a worker; the main process's SIGHUP is passed on,
  once the worker said it serves, so that each reloads its config.

A worker that ends while the node runs is started again, at once after a
long run, else after a delay that doubles while it keeps failing.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.logger import Logger, eventFromJSON, globalLogPublisher

import gateway
from gateway.net import nodemetrics
from gateway.net.balance import Loads
from gateway.policy.shared import LoginAuthority

log = Logger()

# The worker's descriptors beside stdin, stdout and stderr.
EVENTS_FD = 3
AUTHORITY_FD = 4
LOADS_FD = 5
FIRST_PORT_FD = 6
# The field of the log event that says a worker serves (``gateway.worker``).
SERVING = "worker_serving"
# A worker that ran this long is started again at once; one that ended
# sooner waits FIRST_DELAY, doubled for each quick end in a row, to MAX_DELAY.
STEADY = 10.0
FIRST_DELAY = 0.5
MAX_DELAY = 30.0
# How long a stop waits for a worker to finish its sessions' writes and
# close its store before it is killed.
STOP_TIMEOUT = 10.0


@attrs.frozen
class WorkerPlan:
    """What every worker is started with; ``ports`` are the main process's (name, description, port)."""

    data_dir: Path
    config_path: Path
    config_text: str
    overrides: dict
    ports: list
    loads: Loads
    node_metrics: Path | None = None

    def spec(self, index: int) -> dict:
        """The JSON a worker reads on its stdin; its ports are at FIRST_PORT_FD on."""
        return {
            "index": index,
            "data": str(self.data_dir),
            "config": str(self.config_path),
            "text": self.config_text,
            "overrides": {name: list(endpoints) for name, endpoints in self.overrides.items()},
            "ports": [
                [name, description, FIRST_PORT_FD + position, port.addressFamily]
                for position, (name, description, port) in enumerate(self.ports)
            ],
        }

    def child_fds(self, authority: int) -> dict:
        fds = {0: "w", 1: "r", 2: "r", EVENTS_FD: "r", AUTHORITY_FD: authority, LOADS_FD: self.loads.fileno()}
        for position, (_, _, port) in enumerate(self.ports):
            fds[FIRST_PORT_FD + position] = port.fileno()
        return fds


class WorkerProcess(ProcessProtocol):
    """The main process's end of one worker."""

    def __init__(self, index: int, publish=globalLogPublisher) -> None:
        self.index = index
        self.publish = publish
        self.pid: int | None = None
        self.started = time.monotonic()
        self.serving = False
        self.hangup_pending = False
        self.ended = Deferred()
        self._partial: dict[int, bytes] = {}

    def connectionMade(self) -> None:
        self.pid = self.transport.pid

    def childDataReceived(self, fd: int, data: bytes) -> None:
        lines = (self._partial.pop(fd, b"") + data).split(b"\n")
        if lines[-1]:
            self._partial[fd] = lines[-1]
        for line in lines[:-1]:
            if fd == EVENTS_FD:
                self._event(line)
            elif line.strip():
                text = line.decode("utf-8", "replace")
                if fd == 2:
                    log.error("Worker {worker}: {line}", worker=self.index, line=text)
                else:
                    log.info("Worker {worker}: {line}", worker=self.index, line=text)

    def _event(self, line: bytes) -> None:
        try:
            event = eventFromJSON(line.decode("utf-8"))
        except ValueError:
            log.error("Worker {worker} sent a log line that is not an event: {line!r}", worker=self.index, line=line)
            return
        event["worker"] = self.index
        system = event.get("log_system")
        if system in (None, "-"):
            # What twistd's text lines show for an event without a system.
            level = event.get("log_level")
            system = f"{event.get('log_namespace', '-')}#{getattr(level, 'name', '-')}"
        event["log_system"] = f"worker {self.index},{system}"
        if event.get(SERVING):
            self.serving = True
            if self.hangup_pending:
                self.hangup()
        self.publish(event)

    def hangup(self) -> None:
        """Reload: now if the worker has its handler in place, else once it says it serves."""
        self.hangup_pending = not self.serving
        if self.serving:
            self.signal("HUP")

    def signal(self, name: str) -> None:
        try:
            self.transport.signalProcess(name)
        except ProcessExitedAlready:
            pass

    def processEnded(self, reason) -> None:
        self.ended.callback(reason.value)


def _describe(ended) -> str:
    if getattr(ended, "signal", None):
        return f"killed by signal {ended.signal}"
    return f"exit code {getattr(ended, 'exitCode', None)}"


def worker_command(executable: str) -> list[str]:
    """
    How a worker is run.  ``-P``: ``python -m`` would put the working
    directory first on ``sys.path``, and a ``gateway/`` there (another
    checkout) would run in the workers beside this one in the main process.
    """
    return [executable, "-P", "-m", "gateway.worker"]


def worker_environment() -> dict[str, str]:
    """This environment, with the gateway this process runs first on ``PYTHONPATH``, wherever it is."""
    source = str(Path(gateway.__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=source + (os.pathsep + path if path else ""))


class Workers(Service):
    """Runs workers 1 to ``count - 1`` while the node runs (module docstring)."""

    def __init__(self, count: int, plan: WorkerPlan, reactor, logins, executable: str = sys.executable) -> None:
        self.count = count
        self.plan = plan
        self.logins = logins
        self.reactor = reactor
        self.executable = executable
        self.workers: dict[int, WorkerProcess] = {}
        self._quick_ends: dict[int, int] = {}
        self._restarts: dict[int, object] = {}
        self._stopping = False
        self._previous_handler = None

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        self._previous_handler = signal.signal(signal.SIGHUP, self._on_hangup)
        for index in range(1, self.count):
            self._start(index)

    def _start(self, index: int) -> None:
        self._restarts.pop(index, None)
        worker = WorkerProcess(index)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with ours, theirs:
            try:
                self.reactor.spawnProcess(
                    worker, self.executable, worker_command(self.executable), env=worker_environment(),
                    childFDs=self.plan.child_fds(theirs.fileno()),
                )
            except OSError as e:
                # As a worker that ends at once: said, and tried again later.
                self._again(index, quick=True, why=f"cannot start: {e.strerror or e}")
                return
            self.reactor.adoptStreamConnection(
                ours.fileno(), socket.AF_UNIX, Factory.forProtocol(lambda: LoginAuthority(self.logins)))
        worker.transport.writeToChild(0, json.dumps(self.plan.spec(index)).encode() + b"\n")
        self.workers[index] = worker
        worker.ended.addCallback(self._ended, worker)
        log.info("Worker {worker} started (pid {pid})", worker=index, pid=worker.pid)

    def _ended(self, ended, worker: WorkerProcess) -> None:
        self.workers.pop(worker.index, None)
        self.plan.loads.gone(worker.index)
        if self.plan.node_metrics is not None:
            nodemetrics.process_ended(self.plan.node_metrics, worker.pid)
        if self._stopping:
            log.info("Worker {worker} (pid {pid}) stopped: {how}", worker=worker.index, pid=worker.pid,
                     how=_describe(ended))
            return
        quick = time.monotonic() - worker.started < STEADY
        self._again(worker.index, quick, f"(pid {worker.pid}) ended ({_describe(ended)})")

    def _again(self, index: int, quick: bool, why: str) -> None:
        """Start worker ``index`` again: at once after a long run, else later each time."""
        if quick:
            ends = self._quick_ends[index] = self._quick_ends.get(index, 0) + 1
            delay = min(FIRST_DELAY * 2 ** (ends - 1), MAX_DELAY)
        else:
            self._quick_ends[index] = 0
            delay = 0.0
        log.error("Worker {worker} {why}; starting it again in {delay:g} s", worker=index, why=why, delay=delay)
        self._restarts[index] = self.reactor.callLater(delay, self._start, index)

    def _on_hangup(self, signum, frame) -> None:
        # As ConfigReloader's: the work in the reactor thread, and the
        # handler before this one (the main process's own reload) called.
        self.reactor.callFromThread(self.hangup)
        if callable(self._previous_handler):
            self._previous_handler(signum, frame)

    def hangup(self) -> None:
        for worker in self.workers.values():
            worker.hangup()

    def stopService(self):
        super().stopService()
        self._stopping = True
        if signal.getsignal(signal.SIGHUP) == self._on_hangup:
            signal.signal(signal.SIGHUP, self._previous_handler)
        for call in self._restarts.values():
            call.cancel()
        self._restarts.clear()
        stopped = []
        for worker in list(self.workers.values()):
            worker.signal("TERM")
            kill = self.reactor.callLater(STOP_TIMEOUT, self._kill, worker)
            stopped.append(worker.ended.addBoth(lambda result, kill=kill: kill.active() and kill.cancel()))
        return gatherResults(stopped)

    def _kill(self, worker: WorkerProcess) -> None:
        log.error("Worker {worker} (pid {pid}) did not stop within {timeout:g} s: killing it",
                  worker=worker.index, pid=worker.pid, timeout=STOP_TIMEOUT)
        worker.signal("KILL")
