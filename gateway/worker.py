"""
One worker process of a node (``[server] workers``, ``gateway.workers``):
``python -m gateway.worker``, started by the main process with its spec on
stdin, serving the listening sockets it was handed.

It runs the config the main process runs: the text that process started
with, where a reload has since changed what a reload may change, so that a
worker started again later never opens another store or serves otherwise
than its node because the file changed meanwhile.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from pathlib import Path

from twisted.internet.error import ConnectionDone, ReactorNotRunning
from twisted.logger import FileLogObserver, Logger, eventAsJSON, globalLogBeginner

from gateway.net.balance import Loads
from gateway.workers import AUTHORITY_FD, EVENTS_FD, LOADS_FD, SERVING

log = Logger()


def main() -> None:
    spec = json.loads(sys.stdin.buffer.readline())
    index = spec["index"]
    events = open(EVENTS_FD, "w", encoding="utf-8", buffering=1)
    globalLogBeginner.beginLoggingTo([FileLogObserver(events, lambda event: eventAsJSON(event) + "\n")])

    # Only now: what the server's modules log as they load goes to the main process too.
    from twisted.internet import reactor

    from gateway.config import ConfigError
    from gateway.heap import settle
    from gateway.service import StartupError, make_service

    try:
        read_config, config = _configs(spec)
        shares = Loads(LOADS_FD, config.server.workers, index)
        service = make_service(Path(spec["data"]), config, reactor, read_config, worker=index,
                               listen=_adopter(reactor, spec["ports"]), loads=shares)
    except (StartupError, ConfigError) as e:
        log.critical("Worker {worker} cannot start: {error}", worker=index, error=str(e))
        raise SystemExit(1) from None
    reactor.addReader(_MainProcess(reactor))
    _share_logins(reactor, service.logins)

    def start() -> None:
        # In place of Twisted's: a worker hears SIGTERM from its main
        # process and, under systemd or a shell, from the process group too.
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, lambda signum, frame: reactor.callFromThread(_stop, reactor))
        service.startService()
        shares.serving()
        log.info("Worker {worker} serving (pid {pid})", worker=index, pid=os.getpid(), **{SERVING: True})
        reactor.callLater(0, settle)

    reactor.callWhenRunning(start)
    # The reactor stops on SIGTERM, SIGINT or the main process's end; the service with it.
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


def _configs(spec: dict):
    """How SIGHUP reads the config, and the config to start with (module docstring)."""
    from gateway.config import ConfigError, load, loads
    from gateway.reload import plan_reload

    path = Path(spec["config"])
    overrides = {name: tuple(endpoints) for name, endpoints in spec["overrides"].items()}
    started = loads(spec["text"], str(path)).with_listeners(**overrides)

    def read_config():
        return load(path).with_listeners(**overrides)

    try:
        return read_config, plan_reload(started, read_config()).config
    except ConfigError as e:
        log.warn("Worker {worker} starts with the config its node started with: {error}",
                 worker=spec["index"], error=str(e))
        return read_config, started


def _adopter(reactor, ports: list):
    """``make_service``'s ``listen``: the main process's socket for each listener, the metrics page left to it."""
    from gateway.net import unix
    from gateway.net.writethrough import write_through

    handed = {(name, description): (fd, family) for name, description, fd, family in ports}

    def listen(name: str, description: str, factory):
        if name == "metrics":
            return None
        fd, family = handed[(name, description)]
        if family == socket.AF_UNIX:
            port = unix.adopt(reactor, fd, factory)
        else:
            port = reactor.adoptStreamPort(fd, family, factory)
            write_through(port)
        # The port holds a copy of its own.
        os.close(fd)
        return port

    return listen


def _share_logins(reactor, logins) -> None:
    """Failed logins and sessions per user counted in the main process, for the whole node."""
    from twisted.internet.protocol import Factory
    from twisted.protocols import amp

    from gateway.policy.shared import SharedSessions, SharedThrottle

    connection = amp.AMP()
    reactor.adoptStreamConnection(AUTHORITY_FD, socket.AF_UNIX, Factory.forProtocol(lambda: connection))
    os.close(AUTHORITY_FD)
    logins.share(SharedThrottle(connection), SharedSessions(connection))


class _MainProcess:
    """Stdin, a pipe from the main process: its end means the node is gone, so this worker goes too."""

    def __init__(self, reactor) -> None:
        self.reactor = reactor
        # The reactor disconnects every reader as it shuts down.
        self.shutting_down = False
        reactor.addSystemEventTrigger("before", "shutdown", setattr, self, "shutting_down", True)

    def fileno(self) -> int:
        return 0

    def doRead(self):
        # The main process writes nothing after the spec: what is read is the end.
        return None if os.read(0, 4096) else ConnectionDone()

    def connectionLost(self, reason) -> None:
        # A pipe's end comes as a hang-up without data, reported here, not to doRead.
        if not self.shutting_down:
            log.warn("The main process is gone: stopping")
            _stop(self.reactor)

    def logPrefix(self) -> str:
        return "main process"


def _stop(reactor) -> None:
    try:
        reactor.stop()
    except ReactorNotRunning:
        pass  # stopping already


if __name__ == "__main__":
    main()
