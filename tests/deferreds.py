"""
Read the outcome of a Deferred in a plain pytest test.

A store that works in threads (PostgreSQL) fires its Deferreds on the
reactor thread after the work is done: a Deferred not fired yet is waited
for by turning the global reactor, for a bounded time.
"""

import time

from twisted.python.failure import Failure

WAIT = 30.0


def _outcome(d):
    box = []
    d.addBoth(box.append)
    if not box:
        from twisted.internet import reactor

        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            # reactor.iterate() would wait once more after the Deferred fired.
            reactor.runUntilCurrent()
            if box:
                break
            reactor.doIteration(0.01)
    assert box, "Deferred has not fired"
    return box[0]


def result_of(d):
    outcome = _outcome(d)
    if isinstance(outcome, Failure):
        outcome.raiseException()
    return outcome


def failure_of(d, *types):
    outcome = _outcome(d)
    assert isinstance(outcome, Failure), f"expected a failure, got {outcome!r}"
    if types:
        assert outcome.check(*types), f"expected {types}, got {outcome.value!r}"
    return outcome.value
