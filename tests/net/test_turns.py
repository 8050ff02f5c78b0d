"""
The reactor thread's turns (gateway.net.turns): counted from clock readings
at each wait, and timed on a real reactor, where CPU spent in a call is a
turn's length and time asleep is not.
"""

from __future__ import annotations

import time
from bisect import bisect_left

from hypothesis import given, strategies as st
from twisted.internet.selectreactor import SelectReactor

from gateway.net.turns import TURN_BUCKETS, TurnTimer, time_turns


class Clock:
    def __init__(self, readings):
        self.readings = iter(readings)

    def __call__(self) -> float:
        return next(self.readings)


def test_the_first_wait_begins_the_first_turn():
    timer = TurnTimer(Clock([5.0, 5.5]))
    timer.waiting()
    assert timer.counts == [0] * (len(TURN_BUCKETS) + 1) and timer.longest == 0
    timer.waiting()
    assert timer.longest == 0.5 and timer.total == 0.5
    assert timer.counts[TURN_BUCKETS.index(0.5)] == 1 and sum(timer.counts) == 1


def test_a_turn_of_exactly_a_bound_is_in_that_bucket_as_prometheus_le():
    timer = TurnTimer(buckets=(0.1, 0.2))
    for seconds in (0.2, 0.2000001, 0.0, 7.0):
        timer.count(seconds)
    assert timer.counts == [1, 1, 2]
    assert timer.longest == 7.0


def test_restart_forgets_the_turn_in_progress():
    timer = TurnTimer(Clock([0.0, 100.0, 100.25]))
    timer.waiting()
    timer.restart()
    timer.waiting()
    timer.waiting()
    assert timer.longest == 0.25 and sum(timer.counts) == 1


@given(st.lists(st.floats(min_value=0, max_value=5, allow_nan=False), min_size=1, max_size=50))
def test_turns_are_the_spans_between_waits(spans):
    readings = [0.0]
    for span in spans:
        readings.append(readings[-1] + span)
    timer = TurnTimer(Clock(readings))
    for _ in readings:
        timer.waiting()
    turns = [after - before for before, after in zip(readings, readings[1:])]
    expected = [0] * (len(TURN_BUCKETS) + 1)
    for turn in turns:
        expected[bisect_left(TURN_BUCKETS, turn)] += 1
    assert timer.counts == expected
    assert timer.longest == max(turns)
    assert abs(timer.total - sum(turns)) < 1e-9


def burn(seconds: float) -> None:
    """Spend ``seconds`` of this thread's CPU."""
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


def one_call_per_turn(reactor, *calls) -> None:
    """Run ``reactor`` making each of ``calls`` in a turn of its own, then stop it."""

    def next_call(remaining):
        if remaining:
            remaining[0]()
            reactor.callLater(0, next_call, remaining[1:])
        else:
            reactor.stop()

    # The loop's first runUntilCurrent comes before its first wait: the
    # first call goes there, uncounted, as start-up.
    reactor.callWhenRunning(reactor.callLater, 0, next_call, [lambda: None, *calls])
    reactor.run(installSignalHandlers=False)


def test_cpu_in_a_call_is_a_turn_and_sleep_is_not():
    reactor = SelectReactor()
    timer = TurnTimer()
    stop_timing = time_turns(reactor, timer)
    # Half a second of wall time off the CPU: as long as a wait for a core
    # or for the GIL would look in wall time on a loaded machine.
    one_call_per_turn(reactor, lambda: burn(0.06), lambda: time.sleep(0.5), lambda: None)
    stop_timing()
    assert sum(timer.counts) >= 3
    assert 0.06 <= timer.longest < 0.2
    turns_over_50_ms = sum(timer.counts[bisect_left(TURN_BUCKETS, 0.05) + 1:])
    assert turns_over_50_ms == 1, timer.counts
    assert "doIteration" not in vars(reactor)


def test_start_up_before_the_first_wait_is_not_a_turn():
    reactor = SelectReactor()
    timer = TurnTimer()
    stop_timing = time_turns(reactor, timer)
    # What a service's startService does before the loop turns.
    reactor.callWhenRunning(burn, 0.25)
    one_call_per_turn(reactor, lambda: None)
    stop_timing()
    assert 0 < sum(timer.counts) and timer.longest < 0.2


def test_stopped_under_a_later_wrapper_it_counts_no_more():
    reactor = SelectReactor()
    first, second = TurnTimer(), TurnTimer()
    stop_first = time_turns(reactor, first)
    stop_second = time_turns(reactor, second)
    stop_first()
    outer = reactor.doIteration
    for _ in range(3):
        reactor.doIteration(0)
    assert sum(first.counts) == 0 and sum(second.counts) == 2
    stop_second()
    assert reactor.doIteration is not outer
    reactor.doIteration(0)
    assert sum(first.counts) == 0 and sum(second.counts) == 2
