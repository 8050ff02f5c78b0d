"""
A listening port shared by several processes takes one connection per
wake-up, and none while another process holds fewer connections.
"""

from __future__ import annotations

import os
import socket

import pytest

from twisted.internet import tcp
from twisted.internet.protocol import Factory, Protocol

from gateway.net.balance import Loads
from gateway.net.ports import PATIENCE_SECONDS, YIELD_SECONDS, share_accepts


class _Reactor:
    """Just what a tcp.Port asks of its reactor to listen and accept; it notes whom it watches and what it must call."""

    def __init__(self):
        self.readers = set()
        self.later = []
        self.now = 1000.0

    def seconds(self):
        return self.now

    def addReader(self, reader):
        self.readers.add(reader)

    def removeReader(self, reader):
        self.readers.discard(reader)

    def addWriter(self, writer):
        pass

    def removeWriter(self, writer):
        pass

    def callLater(self, delay, f, *args, **kwargs):
        self.later.append((delay, f))

    def run_later(self):
        later, self.later = self.later, []
        for _, f in later:
            f()


class _Accepted(Factory):
    """Counts the connections it is given, and tells ``loads`` as the server's connection limits do."""

    def __init__(self, loads=None):
        self.count = 0
        self.loads = loads

    def buildProtocol(self, addr):
        self.count += 1
        if self.loads is not None:
            self.loads.add(1)
        return Protocol()


def _port_with_waiting_clients(clients: int, loads=None):
    factory = _Accepted(loads)
    port = tcp.Port(0, factory, interface="127.0.0.1", reactor=_Reactor())
    port.startListening()
    address = port.getHost()
    waiting = [socket.create_connection((address.host, address.port)) for _ in range(clients)]
    return port, factory, waiting


def _close(port, waiting):
    for client in waiting:
        client.close()
    if port.connected:
        port.socket.close()


def test_a_plain_port_takes_every_waiting_client_at_once():
    port, factory, waiting = _port_with_waiting_clients(3)
    try:
        port.doRead()
        assert factory.count == 3
    finally:
        _close(port, waiting)


def test_a_shared_port_takes_one_client_per_wake_up_however_many_wait():
    port, factory, waiting = _port_with_waiting_clients(3)
    share_accepts(port)
    try:
        for expected in (1, 2, 3):
            port.doRead()
            assert factory.count == expected
    finally:
        _close(port, waiting)


@pytest.fixture
def standing_aside():
    """
    A port of a two-process node with three clients waiting: it took the
    first, then stood aside for the other process, which holds none.
    Yields the port, its factory and the other process's view of the counts.
    """
    ours = Loads.create(2)
    theirs = Loads(os.dup(ours.fileno()), 2, 1)
    theirs.serving()
    port, factory, waiting = _port_with_waiting_clients(3, ours)
    share_accepts(port, ours)
    try:
        port.doRead()
        port.doRead()
        yield port, factory, theirs
    finally:
        _close(port, waiting)
        os.close(ours.fileno())
        os.close(theirs.fileno())


def test_a_port_stands_aside_while_another_process_holds_fewer_connections(standing_aside):
    port, factory, theirs = standing_aside
    # One here, none there: the next is left to the other process.
    assert factory.count == 1
    assert port not in port.reactor.readers
    assert [delay for delay, _ in port.reactor.later] == [YIELD_SECONDS]
    # It took one meanwhile; this process watches again and, the counts
    # even, takes the next.
    theirs.add(1)
    port.reactor.run_later()
    assert port in port.reactor.readers
    port.doRead()
    assert factory.count == 2


def test_a_port_accepts_once_a_process_it_stood_aside_for_took_nothing_for_long(standing_aside):
    port, factory, theirs = standing_aside
    port.reactor.run_later()
    port.reactor.now += PATIENCE_SECONDS / 2
    port.doRead()
    assert factory.count == 1
    # The other process is stuck: past the patience, the connection is
    # taken here, and so is the next, without waiting again.
    port.reactor.run_later()
    port.reactor.now += PATIENCE_SECONDS
    port.doRead()
    port.doRead()
    assert factory.count == 3
    assert port.reactor.later == []


def _wait_out_the_patience(port, factory):
    """Look again each YIELD_SECONDS, as while a client waits, until the port takes one; the seconds it took."""
    taken, started = factory.count, port.reactor.now
    for _ in range(round(PATIENCE_SECONDS / YIELD_SECONDS) + 2):
        port.reactor.run_later()
        port.reactor.now += YIELD_SECONDS
        port.doRead()
        if factory.count > taken:
            return port.reactor.now - started
    raise AssertionError("never took the waiting client")


def test_a_port_stands_aside_again_once_the_others_moved(standing_aside):
    port, factory, theirs = standing_aside
    _wait_out_the_patience(port, factory)
    assert factory.count == 2
    theirs.add(1)
    port.doRead()
    assert factory.count == 2
    assert len(port.reactor.later) == 1


def test_a_new_burst_waits_for_the_others_again_though_their_counts_did_not_move(standing_aside):
    # The other process idles at none, as when this port last gave up on it:
    # that wait is over, and the next burst is shared again.
    port, factory, theirs = standing_aside
    assert _wait_out_the_patience(port, factory) >= PATIENCE_SECONDS
    port.reactor.run_later()
    port.reactor.now += 1.0
    port.doRead()
    assert factory.count == 2
    assert [delay for delay, _ in port.reactor.later] == [YIELD_SECONDS]


def test_a_port_that_stopped_listening_does_not_start_watching_again(standing_aside):
    port, factory, theirs = standing_aside
    port.connectionLost(None)
    port.reactor.run_later()
    assert port not in port.reactor.readers
