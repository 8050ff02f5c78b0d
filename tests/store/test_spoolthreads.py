"""
The SQLite store's spool threads (gateway/store/sqlite/spoolthreads.py):
jobs run off the reactor thread, answers come on it, and what the reactor
thread pays per job is a fraction of Twisted's ThreadPool.
"""

from __future__ import annotations

import sys
import threading

import pytest
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from gateway.store.sqlite.spoolthreads import SpoolThreads


def test_jobs_run_on_threads_of_their_own_and_answer_on_the_reactor_thread(reactor_thread):
    threads = SpoolThreads(reactor_thread.reactor, 2, "spool")
    try:
        answers = []

        def ask():
            return threads.run(threading.get_ident).addCallback(
                lambda ran_on: answers.append((ran_on, threading.get_ident())) or ran_on)

        ran_on = reactor_thread.call(ask)
        assert ran_on != reactor_thread.ident
        assert answers == [(ran_on, reactor_thread.ident)]
    finally:
        threads.stop()


def test_a_job_that_raises_fails_its_deferred_alone(reactor_thread):
    threads = SpoolThreads(reactor_thread.reactor, 1, "spool")
    try:
        with pytest.raises(ZeroDivisionError):
            reactor_thread.call(threads.run, lambda: 1 / 0)
        assert reactor_thread.call(threads.run, lambda: "still serving") == "still serving"
    finally:
        threads.stop()


def test_no_more_threads_than_its_size_however_many_jobs(reactor_thread):
    threads = SpoolThreads(reactor_thread.reactor, 3, "spool")
    release = threading.Event()
    ran_on = set()

    def job():
        ran_on.add(threading.get_ident())
        release.wait(10)

    try:
        deferreds = reactor_thread.call(lambda: [threads.run(job) for _ in range(20)])
        release.set()
    finally:
        threads.stop()
    assert len(ran_on) <= 3
    assert sum(1 for thread in threading.enumerate() if thread.name.startswith("spool-")) == 0
    # Their answers were queued for the reactor before they stopped.
    reactor_thread.call(lambda: None)
    assert all(d.called for d in deferreds)


def test_every_answer_arrives_when_many_jobs_end_at_once(reactor_thread):
    # Answers that end together share one call to the reactor thread:
    # none may be left behind by it.
    threads = SpoolThreads(reactor_thread.reactor, 4, "spool")
    try:
        for _ in range(20):
            deferreds = reactor_thread.call(lambda: [threads.run(int, n) for n in range(100)])
            reactor_thread.call(lambda: None)
            for _ in range(100):
                if all(d.called for d in deferreds):
                    break
                threading.Event().wait(0.01)
                reactor_thread.call(lambda: None)
            assert [d.result for d in deferreds] == list(range(100))
            assert reactor_thread.call(threads.pending) == 0
    finally:
        threads.stop()


def calls_on_this_thread(start) -> int:
    """Python function calls made on the calling thread by ``start()``."""
    count = 0

    def profile(frame, event, arg):
        nonlocal count
        if event == "call":
            count += 1

    sys.setprofile(profile)
    try:
        start()
    finally:
        sys.setprofile(None)
    return count


def test_a_job_costs_the_reactor_thread_far_less_than_a_twisted_thread_pool(reactor_thread):
    # The gap that made this module: what queueing one job costs the
    # thread that queues it (the reactor's, once per delivery).
    pool = ThreadPool(1, 1, "pool")
    threads = SpoolThreads(reactor_thread.reactor, 1, "spool")
    pool.start()
    try:
        # Each with its thread started and idle.
        reactor_thread.call(deferToThreadPool, reactor_thread.reactor, pool, int)
        reactor_thread.call(threads.run, int)
        twisted = reactor_thread.call(calls_on_this_thread, lambda: deferToThreadPool(reactor_thread.reactor, pool, int))
        ours = reactor_thread.call(calls_on_this_thread, lambda: threads.run(int))
    finally:
        pool.stop()
        threads.stop()
    assert ours * 3 <= twisted, (ours, twisted)
