"""
gateway.imap.slices: long pure work runs a slice of CPU time at a time, the
reactor getting a turn between slices, and work that fits in one slice
answers at once.
"""

from twisted.internet.defer import Deferred

from gateway.imap.slices import Slices


class FakeTimer:
    """CPU time that advances only when a step says it did work."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Turns:
    """
    A reactor's timed calls, run one reactor turn at a time: a call made
    during a turn waits for the next one, as on a real reactor.
    """

    def __init__(self):
        self.queue = []

    def callLater(self, delay, function, *args, **kwargs):
        call = _Call(function, args, kwargs)
        self.queue.append(call)
        return call

    def seconds(self):
        return 0.0

    def turn(self):
        calls, self.queue = self.queue, []
        for call in calls:
            call.function(*call.args, **call.kwargs)


class _Call:
    def __init__(self, function, args, kwargs):
        self.function, self.args, self.kwargs = function, args, kwargs

    def cancel(self):
        raise AssertionError("nothing cancels a slice")


def work(timer, steps, cost, log):
    for number in range(steps):
        timer.now += cost
        log.append(number)
        yield
    return "done"


def run(slices, steps):
    result = []
    Deferred.fromCoroutine(slices.run(steps)).addCallback(result.append)
    return result


def test_work_within_one_slice_answers_at_once():
    timer, reactor, log = FakeTimer(), Turns(), []
    result = run(Slices(reactor, length=0.02, timer=timer), work(timer, 5, 0.001, log))
    assert result == ["done"] and log == [0, 1, 2, 3, 4]
    assert reactor.queue == []


def test_long_work_gives_the_reactor_a_turn_between_slices():
    timer, reactor, log = FakeTimer(), Turns(), []
    # Ten steps of 8 ms in slices of 20 ms: three steps a slice.
    result = run(Slices(reactor, length=0.02, timer=timer), work(timer, 10, 0.008, log))
    assert log == [0, 1, 2] and result == []
    reactor.turn()
    assert log == [0, 1, 2, 3, 4, 5] and result == []
    reactor.turn()
    reactor.turn()
    assert log == list(range(10)) and result == ["done"]


def test_slices_carry_over_between_runs_of_one_command():
    # One command evaluates many messages: the slice is the command's, so
    # many small evaluations also give the reactor its turn.
    timer, reactor = FakeTimer(), Turns()
    slices = Slices(reactor, length=0.02, timer=timer)
    answers = [run(slices, work(timer, 1, 0.007, [])) for _ in range(3)]
    assert answers == [["done"], ["done"], []]
    reactor.turn()
    assert answers[2] == ["done"]
