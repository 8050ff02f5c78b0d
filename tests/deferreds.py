"""Read the outcome of an already-fired Deferred in a plain pytest test."""

from twisted.python.failure import Failure


def result_of(d):
    box = []
    d.addBoth(box.append)
    assert box, "Deferred has not fired"
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


def failure_of(d, *types):
    box = []
    d.addBoth(box.append)
    assert box, "Deferred has not fired"
    assert isinstance(box[0], Failure), f"expected a failure, got {box[0]!r}"
    if types:
        assert box[0].check(*types), f"expected {types}, got {box[0].value!r}"
    return box[0].value
