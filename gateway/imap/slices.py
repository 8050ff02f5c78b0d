"""
Run long pure work on the reactor in slices: the steps of a generator run
back to back until a slice of time is used, then every other connection
gets a reactor turn before the next slice (DESIGN.md: no single message,
search or client holds the reactor for more than 200 ms).

Like ``twisted.internet.task.Cooperator``, but the first slice runs at once,
so that work that fits in one slice (almost every SEARCH) answers without
waiting for a reactor turn.  Time is the reactor's clock, so that on a busy
machine a slice still ends on time, and under a test's ``Clock`` the work
runs whole unless the test moves the clock.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TypeVar

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

T = TypeVar("T")

# Seconds of one slice.
SLICE = 0.02


class Slices:
    """
    Slices of one piece of work (one command); the first slice starts now.
    """

    def __init__(self, clock: IReactorTime, length: float = SLICE,
                 timer: Callable[[], float] | None = None) -> None:
        self._clock = clock
        self._length = length
        self._timer = timer or clock.seconds
        self._end = self._timer() + length

    async def pause(self) -> None:
        """Give the reactor a turn if this slice is used up."""
        if self._timer() >= self._end:
            await deferLater(self._clock, 0, lambda: None)
            self._end = self._timer() + self._length

    async def run(self, steps: Generator[None, None, T]) -> T:
        """Take every step of ``steps``, pausing between them; its result."""
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value
            await self.pause()
