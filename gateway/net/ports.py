"""
The bound listening ports of a server: their addresses in the log and in
run/ports.json, closing them, and sharing them between processes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from twisted.application.service import Service
from twisted.internet.address import UNIXAddress
from twisted.internet.defer import gatherResults, maybeDeferred
from twisted.logger import Logger

from gateway.net import unix
from gateway.net.balance import Loads

log = Logger()

# A process holding more connections than another leaves new connections
# to the others (share_accepts), looking again each YIELD_SECONDS, for at
# most PATIENCE_SECONDS while none of them takes any: a process waiting
# for work wakes far sooner, even on a loaded machine, and a client never
# notices so short a wait.
YIELD_SECONDS = 0.001
PATIENCE_SECONDS = 0.01


class ListeningPorts(Service):
    """
    Owns the bound ports: publishes their addresses in run/ports.json once
    running, and closes them on stop.  The file is written in startService,
    after the services before this one (the SIGHUP handler among them) have
    started, so whoever waits for the file may signal the process at once.
    """

    def __init__(self, ports, protocols, ports_file: Path | None):
        self.ports = ports
        self.protocols = protocols
        self.ports_file = ports_file

    def startService(self):
        super().startService()
        bound: dict[str, list[str]] = {name: [] for name in self.protocols}
        for protocol, port in self.ports:
            host = port.getHost()
            address = address_text(host)
            bound[protocol].append(address)
            # JSON logs get the address's parts as fields of their own.
            parts = {"path": address[len(unix.PREFIX):]} if isinstance(host, UNIXAddress) else {
                "host": host.host, "port": host.port}
            log.info("{protocol} listening on {address}", protocol=protocol, address=address, **parts)
        if self.ports_file is None:
            return
        self.ports_file.parent.mkdir(mode=0o700, exist_ok=True)
        tmp = self.ports_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(bound))
        tmp.replace(self.ports_file)

    def stopService(self):
        if self.ports_file is not None:
            self.ports_file.unlink(missing_ok=True)
        super().stopService()
        return gatherResults([maybeDeferred(port.stopListening) for _, port in self.ports])


def close_now(ports) -> None:
    """
    Close bound ports when the start fails: the reactor that would finish
    ``stopListening`` never runs, so a socket file goes now.
    """
    for _, port in ports:
        if isinstance(port, unix.UnixPort):
            port.close_now()
        else:
            port.stopListening()


def address_text(address) -> str:
    """How ports.json and the log name a bound address: ``host:port`` or ``unix:/path``."""
    if isinstance(address, UNIXAddress):
        return unix.PREFIX + os.fsdecode(address.name)
    return f"{address.host}:{address.port}"


def share_accepts(port, loads: Loads | None = None) -> None:
    """
    Make ``port``, whose listening socket other processes serve too, accept
    one connection each time it is readable, and none while another
    process of ``loads`` holds fewer connections.

    Every process watching a shared socket is woken by a new connection,
    and Twisted's port accepts up to a hundred at once (``numberAccepts``,
    which grows while there are more).  So a burst of clients, as when
    eight desktop clients poll at once, goes wholly to whichever process
    woke first, and the other processes idle.  Taking one at a time is not
    enough: the process that woke first is back for the next before the
    others are awake.  So a process holding more connections than another
    stops watching the socket for ``YIELD_SECONDS``, and the lighter one,
    woken by the same connection, takes it.  Only while the others make
    progress: once no other process's count has moved for
    ``PATIENCE_SECONDS`` of standing aside (a worker stuck in a long turn),
    this one accepts, until their counts move again or the burst is over.

    A wait is one burst's: while clients wait, this port looks every
    ``YIELD_SECONDS``, so a look after more than ``PATIENCE_SECONDS``
    without one is a new burst, and the wait starts again, even if the
    others' counts are what they were when it last gave up on them (an idle
    worker that holds none, as it did then).  Else a port that once gave up
    on a worker took every later burst whole.
    """
    accept = port.doRead
    # The others' counts when this port began standing aside for them, when,
    # and when it last found a lighter process.
    waiting_for: tuple[int, ...] | None = None
    since = 0.0
    looked = float("-inf")

    def doRead():
        nonlocal waiting_for, since, looked
        if loads is not None and loads.lighter_elsewhere():
            now = port.reactor.seconds()
            others = loads.others()
            if others != waiting_for or now - looked > PATIENCE_SECONDS:
                waiting_for, since = others, now
            looked = now
            if now - since < PATIENCE_SECONDS:
                port.stopReading()
                port.reactor.callLater(YIELD_SECONDS, resume)
                return None
        port.numberAccepts = 1
        return accept()

    def resume():
        if port.connected:
            port.startReading()

    port.doRead = doRead
