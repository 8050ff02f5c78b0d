"""
gateway/net/firststep.py: a coroutine's first step runs at once; one that
ends there, or fails there, gives a fired Deferred, and one that waits
goes on under Deferred.fromCoroutine from the same await.
"""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred, succeed

from gateway.net.firststep import first_step_now


def result_of(d: Deferred):
    results = []
    d.addBoth(results.append)
    assert results, "not fired"
    return results[0]


def test_a_coroutine_that_waits_on_nothing_unfired_ends_in_the_call():
    steps = []

    async def command():
        steps.append("first")
        value = await succeed(41)
        return value + 1

    d = first_step_now(command())
    assert steps == ["first"]
    assert result_of(d) == 42


def test_a_failure_in_the_first_step_fails_the_deferred():
    async def command():
        raise ValueError("bad")

    with pytest.raises(ValueError):
        result_of(first_step_now(command())).raiseException()


def test_a_coroutine_that_waits_resumes_at_its_await_once_it_fires():
    waiting = Deferred()
    steps = []

    async def command():
        steps.append("before")
        value = await waiting
        steps.append(("after", value))
        second = Deferred()
        waits.append(second)
        return await second

    waits: list[Deferred] = []
    d = first_step_now(command())
    assert steps == ["before"] and not d.called
    waiting.callback("stored")
    assert steps == ["before", ("after", "stored")] and not d.called
    waits[0].callback("answered")
    assert result_of(d) == "answered"


def test_a_failure_after_a_wait_fails_the_deferred():
    waiting = Deferred()

    async def command():
        await waiting
        raise KeyError("gone")

    d = first_step_now(command())
    waiting.callback(None)
    with pytest.raises(KeyError):
        result_of(d).raiseException()
