"""
The epoll reactor's dispatch without the legacy log context
(gateway.net.dispatch), on real reactors and socket pairs.
"""

from __future__ import annotations

import socket

import pytest
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.selectreactor import SelectReactor
from twisted.logger import globalLogPublisher
from twisted.python import log as legacy_log

from gateway.net.dispatch import LeanDispatch, lean_dispatch
from gateway.net.turns import TurnTimer, time_turns


class Reader:
    """A descriptor the reactor reads; ``fail`` makes its reading end the connection with an error."""

    def __init__(self, sock: socket.socket, fail: Exception | None = None):
        self.sock = sock
        self.fail = fail
        self.read: list[bytes] = []
        self.lost = []

    def fileno(self):
        return self.sock.fileno()

    def logPrefix(self):
        return "reader"

    def doRead(self):
        if self.fail is not None:
            return self.fail
        self.read.append(self.sock.recv(100))

    def connectionLost(self, reason):
        self.lost.append(reason)
        raise RuntimeError("a broken connectionLost")


@pytest.fixture
def pairs():
    made = []

    def pair():
        ends = socket.socketpair()
        made.extend(ends)
        return ends

    yield pair
    for end in made:
        end.close()


def test_events_reach_the_connection_without_the_legacy_log_context(pairs, monkeypatch):
    reactor = EPollReactor()
    undo = lean_dispatch(reactor)
    ours, theirs = pairs()
    reader = Reader(ours)
    reactor.addReader(reader)
    # What the stock doPoll wraps every event in: 1.6 us of the work of
    # sending one POP3 message.
    monkeypatch.setattr(legacy_log, "callWithLogger", lambda *args, **kw: pytest.fail("callWithLogger called"))
    theirs.sendall(b"RETR 1\r\n")
    reactor.doIteration(1)
    assert reader.read == [b"RETR 1\r\n"]
    reactor.removeReader(reader)
    undo()
    assert "doIteration" not in vars(reactor)


def test_what_escapes_one_connection_is_logged_and_the_others_are_served(pairs):
    reactor = EPollReactor()
    lean_dispatch(reactor)
    broken_end, broken_peer = pairs()
    good_end, good_peer = pairs()
    broken = Reader(broken_end, fail=ConnectionAbortedError())
    good = Reader(good_end)
    reactor.addReader(broken)
    reactor.addReader(good)
    broken_peer.sendall(b"x")
    good_peer.sendall(b"y")
    seen = []
    globalLogPublisher.addObserver(seen.append)
    try:
        reactor.doIteration(1)
    finally:
        globalLogPublisher.removeObserver(seen.append)
    assert good.read == [b"y"] and len(broken.lost) == 1
    failures = [event for event in seen if "log_failure" in event]
    assert [event["log_failure"].value.args for event in failures] == [("a broken connectionLost",)]
    reactor.removeReader(good)


def test_other_reactors_are_left_as_they_are():
    reactor = SelectReactor()
    undo = lean_dispatch(reactor)
    assert "doIteration" not in vars(reactor)
    undo()
    assert "doIteration" not in vars(reactor)


def test_an_epoll_reactor_already_wrapped_is_left_to_its_wrapper():
    reactor = EPollReactor()
    stop_timing = time_turns(reactor, TurnTimer())
    timed = reactor.doIteration
    lean_dispatch(reactor)()
    assert reactor.doIteration is timed
    stop_timing()


def test_turns_are_timed_around_it_and_each_is_undone_in_turn(pairs):
    reactor = EPollReactor()
    undo = lean_dispatch(reactor)
    lean = reactor.doIteration
    timer = TurnTimer()
    stop_timing = time_turns(reactor, timer)
    ours, theirs = pairs()
    reader = Reader(ours)
    reactor.addReader(reader)
    for data in (b"a", b"b", b"c"):
        theirs.sendall(data)
        reactor.doIteration(1)
    assert b"".join(reader.read) == b"abc" and sum(timer.counts) == 2
    stop_timing()
    assert reactor.doIteration is lean
    undo()
    assert "doIteration" not in vars(reactor)
    reactor.removeReader(reader)


def test_the_service_puts_it_in_place_while_it_runs():
    reactor = EPollReactor()
    service = LeanDispatch(reactor)
    service.startService()
    assert "doIteration" in vars(reactor)
    service.stopService()
    assert "doIteration" not in vars(reactor)
