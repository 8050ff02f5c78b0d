"""A listening port shared by several processes takes one connection per wake-up."""

from __future__ import annotations

import socket

from twisted.internet import tcp
from twisted.internet.protocol import Factory, Protocol

from gateway.net.ports import share_accepts


class _Reactor:
    """Just what a tcp.Port asks of its reactor to listen and accept."""

    def addReader(self, reader):
        pass

    def removeReader(self, reader):
        pass

    def callLater(self, delay, f, *args, **kwargs):
        pass


class _Accepted(Factory):
    def __init__(self):
        self.count = 0

    def buildProtocol(self, addr):
        self.count += 1
        return Protocol()


def _port_with_waiting_clients(clients: int):
    factory = _Accepted()
    port = tcp.Port(0, factory, interface="127.0.0.1", reactor=_Reactor())
    port.startListening()
    address = port.getHost()
    waiting = [socket.create_connection((address.host, address.port)) for _ in range(clients)]
    return port, factory, waiting


def _close(port, waiting):
    for client in waiting:
        client.close()
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
