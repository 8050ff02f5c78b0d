"""
Run one asynchronous job to its end on a reactor of its own, for the
``gateway`` command's tools: the store answers writes on a reactor turn
after its writer has committed them, so even a one-shot tool needs a
running reactor.

Not ``twisted.internet.task.react``: it runs the global reactor, which can
run once per process, and ends the process with ``sys.exit``; the tools are
also called in-process (``gateway.cli.main``, ``deliver_main``) and answer
with their own exit codes and one-line errors.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from twisted.internet import defer
from twisted.internet.selectreactor import SelectReactor
from twisted.python.failure import Failure

T = TypeVar("T")


def run(job: Callable[..., Awaitable[T]], *args) -> T:
    """
    ``await job(reactor, *args)`` on a new reactor, stopped once it is done;
    its result, or its exception raised here.
    """
    reactor = SelectReactor()
    outcome: list = []

    def start() -> None:
        done = defer.ensureDeferred(job(reactor, *args))
        done.addBoth(outcome.append)
        done.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    try:
        reactor.run(installSignalHandlers=False)
    finally:
        # The reactor is thrown away: close its self-pipe now, not at exit.
        reactor.removeReader(reactor.waker)
        reactor.waker.connectionLost(None)
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0]
