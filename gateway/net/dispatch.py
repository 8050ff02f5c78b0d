"""
The epoll reactor's dispatch of ready connections, without the legacy log
context around each.

Twisted's ``EPollReactor.doPoll`` hands every ready descriptor to
``_doReadOrWrite`` through ``twisted.python.log.callWithLogger``: the
selectable's ``logPrefix()``, a context dictionary copied for
``twisted.python.context``, and four Python frames more, 1.6 us an event
here.  A POP3 client downloading its mail is one event a message, and eight
of them are served by two processes in turns, so that cost comes out of
every message: without it, eight clients download 6-8% more messages a
second (paired runs, both orders).  The context only gives the legacy
``twisted.python.log.msg`` a ``system`` to print; this server logs through
``twisted.logger``, which never reads it.

``lean_dispatch`` gives an epoll reactor a ``doIteration`` that polls as
``doPoll`` does and calls ``_doReadOrWrite`` directly, logging what escapes
it as ``callWithLogger`` did, so that one bad connection cannot stop the
loop.  Any other reactor (a test's, select, asyncio) is left as it is.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.epollreactor import EPollReactor
from twisted.logger import Logger

log = Logger()


def lean_dispatch(reactor) -> Callable[[], None]:
    """
    Dispatch ``reactor``'s events without the per-event log context, if it
    is Twisted's epoll reactor with the stock ``doPoll``; returns what puts
    the stock dispatch back.  Called on the reactor's thread, or before it
    runs, and before ``gateway.net.turns.time_turns`` wraps the result.
    """
    wrapped = vars(reactor).get("doIteration") is not None
    if wrapped or getattr(type(reactor), "doPoll", None) is not EPollReactor.doPoll:
        return _nothing_to_undo
    poll = reactor._poller.poll
    selectables = reactor._selectables
    handle = reactor._doReadOrWrite

    def dispatch(timeout):
        for fd, event in poll(-1 if timeout is None else timeout, len(selectables)):
            selectable = selectables.get(fd)
            if selectable is None:
                # Removed by a connection handled earlier in this batch.
                continue
            try:
                handle(selectable, fd, event)
            except KeyboardInterrupt:
                raise
            except BaseException:
                log.failure("While handling events of {selectable!r}", selectable=selectable)

    reactor.doIteration = dispatch

    def undo() -> None:
        # Only while ours is the one in place: whatever wrapped it since
        # keeps calling through it.
        if vars(reactor).get("doIteration") is dispatch:
            del reactor.doIteration

    return undo


def _nothing_to_undo() -> None:
    pass


class LeanDispatch(Service):
    """
    ``lean_dispatch`` while the service runs; started before
    ``MetricsService``, which times the turns of what it finds.
    """

    def __init__(self, reactor):
        self.reactor = reactor
        self._undo = _nothing_to_undo

    def startService(self):
        super().startService()
        self._undo = lean_dispatch(self.reactor)

    def stopService(self):
        self._undo()
        self._undo = _nothing_to_undo
        return super().stopService()
