"""
The threads that write, fsync and parse arriving messages off the reactor.

Twisted's ``ThreadPool`` (``deferToThreadPool``) pays for generality on the
reactor thread: a context copy, a team coordinator and condition-variable
queues per job, some twenty Python calls and several lock hand-offs for
every delivery (tests/store/test_spoolthreads.py counts them).  Here a job
is one put on a C ``SimpleQueue`` and its answer one append to a deque;
one ``callFromThread`` (a write to the reactor's waker pipe, and a wake-up)
carries every answer that comes before the reactor thread takes them.
Threads are started as jobs need them (after twistd forks), up to ``size``.
"""

from __future__ import annotations

import queue
import threading
from collections import deque

from twisted.internet import defer
from twisted.python.failure import Failure


class SpoolThreads:
    """Up to ``size`` threads named ``name-N``, running jobs for ``reactor``."""

    def __init__(self, reactor, size: int, name: str):
        self._reactor = reactor
        self._size = size
        self._name = name
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        # Jobs queued and not yet answered; counted on the reactor thread alone.
        self._pending = 0
        # Outcomes done and not yet taken by the reactor thread, and whether
        # a call to take them is on its way.
        self._answers: deque = deque()
        self._answering = False
        self.started = False

    def run(self, work, *args) -> defer.Deferred:
        """``work(*args)`` on one of the threads; a Deferred firing on the reactor thread with its outcome."""
        self.started = True
        answer = defer.Deferred()
        self._pending += 1
        if self._pending > len(self._threads) and len(self._threads) < self._size:
            thread = threading.Thread(target=self._serve, name=f"{self._name}-{len(self._threads)}", daemon=True)
            self._threads.append(thread)
            thread.start()
        self._jobs.put((work, args, answer))
        return answer

    def pending(self) -> int:
        """Jobs queued and not yet answered (from any thread: a hint, read without a lock)."""
        return self._pending

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            work, args, answer = job
            try:
                outcome = work(*args)
            except BaseException:
                outcome = Failure()
            self._answers.append((answer, outcome))
            # Appended before the flag is read, and the flag cleared before
            # the deque is emptied: an answer is never left without a call.
            if not self._answering:
                self._answering = True
                self._reactor.callFromThread(self._answer_all)
            # Not held while waiting for the next job.
            del job, work, args, answer, outcome

    def _answer_all(self) -> None:
        self._answering = False
        answers = self._answers
        while answers:
            answer, outcome = answers.popleft()
            self._pending -= 1
            if isinstance(outcome, Failure):
                answer.errback(outcome)
            else:
                answer.callback(outcome)

    def stop(self) -> None:
        """Let the threads finish the jobs queued, and wait for them."""
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()
        self._threads = []
