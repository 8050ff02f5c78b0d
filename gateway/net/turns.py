"""
The reactor thread's turns: the CPU it spends in one go, between one wait
for events and the next.

DESIGN.md bounds how long any one message, search or client holds the
reactor.  While the thread works, every other session waits; while it waits
in ``epoll``, it spends no CPU.  So the thread's own CPU time
(``CLOCK_THREAD_CPUTIME_ID``) from one wait to the next is the length of a
hold, and unlike wall time it does not grow when a loaded machine makes the
thread wait for a core or for the GIL held by a worker thread.

Twisted's ``mainLoop`` turns as ``runUntilCurrent()`` (timed calls and what
worker threads handed back), ``timeout()``, ``doIteration(t)`` (wait, then
handle the ready connections).  ``doIteration`` is the only seam: the turn
ends where it is entered, so the span between two entries is the handling
of one batch of events and the calls that followed, which is what a client
whose data arrived meanwhile waits for.  Reactors that do not turn through
``mainLoop`` (asyncio's, GLib's) never call it, and count no turns.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable

# Seconds of the reactor thread's CPU per turn.  0.2 is DESIGN.md's bound;
# a turn answering one command takes well under a millisecond.
TURN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0)


class TurnTimer:
    """
    Turns counted per bucket: ``counts[i]`` the turns of at most
    ``buckets[i]`` seconds and more than the bucket before (Prometheus' ``le``),
    ``counts[-1]`` the longer ones; ``total`` their sum and ``longest`` the
    longest since the timer started.
    """

    def __init__(self, clock: Callable[[], float] = time.thread_time, buckets=TURN_BUCKETS) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.total = 0.0
        self.longest = 0.0
        self._clock = clock
        self._turn_began: float | None = None

    def waiting(self) -> None:
        """The thread is about to wait for events: the turn since the last wait ends."""
        now = self._clock()
        began, self._turn_began = self._turn_began, now
        if began is not None:
            self.count(now - began)

    def count(self, seconds: float) -> None:
        self.counts[bisect_left(self.buckets, seconds)] += 1
        self.total += seconds
        if seconds > self.longest:
            self.longest = seconds

    def restart(self) -> None:
        """Forget where the current turn began: the next wait begins the first turn."""
        self._turn_began = None


def time_turns(reactor, timer: TurnTimer) -> Callable[[], None]:
    """
    Count ``reactor``'s turns in ``timer`` from its next wait on (what ran
    before, start-up, is not a turn); returns what stops it.  Called on the
    reactor's thread, or before it runs.
    """
    iterate = reactor.doIteration
    waiting = timer.waiting

    def timed_iteration(timeout):
        waiting()
        iterate(timeout)

    own = vars(reactor).get("doIteration")
    timer.restart()
    reactor.doIteration = timed_iteration

    def stop() -> None:
        nonlocal waiting
        waiting = _not_timed
        # Taken out only while ours is the one in place: whatever wrapped it
        # since keeps calling through it.
        if vars(reactor).get("doIteration") is timed_iteration:
            if own is None:
                del reactor.doIteration
            else:
                reactor.doIteration = own

    return stop


def _not_timed() -> None:
    pass
