"""
What every scenario runs on: who is who on the server under test, the
settings, what a scenario is, and the clocks that time work (throughput over
a duration, latency of one command repeated).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import attrs

from benchmarks.servers import cpu_seconds


@attrs.frozen
class Users:
    """Who is who on a server under test (the same names on both)."""

    bulk: tuple[str, ...]  # each holds the corpus: POP3/IMAP throughput, mixed
    poll: tuple[str, ...]  # a few small messages each: login rate, poll storm
    idle: str  # idle sessions and IDLE push
    sink: str  # LMTP delivery rate
    big: str  # the 50 MB message
    password: str
    medium: str = "medium"  # an INBOX of 1,000 small messages, read like a person's
    large: str = "large"  # an INBOX of 20,000 small messages, read like a person's


@attrs.frozen
class Target:
    host: str
    pop3: int
    imap: int
    lmtp: int
    users: Users
    pid: int | None = None  # for the memory scenarios and CPU per message
    # LMTP of another node over the same store, for the push across nodes.
    peer_lmtp: int | None = None
    # The processes of a store the server uses (PostgreSQL, SeaweedFS), whose
    # CPU per message is shown beside the server's own.
    store_pids: tuple[int, ...] = ()


@attrs.frozen
class Settings:
    duration: float = 3.0  # seconds of each throughput measurement
    # At most this many first downloads (or first syncs) in one
    # measurement: the unread marking, logins and reaping between them are
    # off the clock, not free.
    first_run_passes: int = 10
    login_clients: int = 8
    storm_clients: int = 100
    storm_seconds: float = 10.0
    mixed_clients: int = 8
    idle_sessions: int = 2_000
    # Sessions SELECTed on the 1,000 and 20,000-message INBOXes: Dovecot
    # runs a process of a few MB for each.
    mailbox_idle_sessions: int = 1_000
    push_sessions: int = 1_000
    push_rounds: int = 3
    # 50 MB, below the gateway's default APPEND limit of 50 MiB (RFC 7889 APPENDLIMIT).
    big_size: int = 50_000_000
    connect_concurrency: int = 100  # sessions being set up at once
    cap: float = 300.0  # seconds any one scenario may take


Metrics = dict[str, float]


@attrs.frozen
class Metric:
    """``ranked``: whether it may be named the worst realistic case (not a diagnostic such as CPU per unit)."""

    name: str
    unit: str
    higher_is_better: bool
    ranked: bool = True


@attrs.frozen
class Scenario:
    """
    ``key`` names it on the command line (``--only``); ``realistic`` says
    whether its client behaves like the clients people run (one command at
    a time, real-size mailboxes), rather than a best case such as pipelining.
    """

    key: str
    name: str
    run: Callable[[Target, Settings], Awaitable[Metrics]]
    metrics: tuple[Metric, ...]
    realistic: bool = True
    needs_pid: bool = False
    # Memory a long-lived process freed stays in its heap and hides the next
    # allocation, so these want a server started just before them when the
    # runner can restart it.
    fresh_server: bool = False
    # Of the real-size INBOXes, "medium" and "large", those it works on: a
    # run delivers them only when a chosen scenario needs them.
    mailboxes: frozenset[str] = frozenset()


@attrs.define
class CpuMeter:
    """
    The server's CPU (user + system, every process of its tree) over a timed
    window, per unit of work: what a server spends per message, where wall
    figures on a busy machine say as much about the other load.  Nothing
    without the server's pid.  The engines of a store the server uses
    (``target.store_pids``) are measured apart, as "store " + ``name``.
    Several windows (``start`` ... ``stop`` again) add up.
    """

    target: Target
    name: str
    started: float | None = None
    spent: float | None = None
    units: int = 0
    store_started: float = 0.0
    store_spent: float = 0.0

    def start(self) -> None:
        if self.target.pid is not None:
            self.started = cpu_seconds(self.target.pid)
            self.store_started = self._store()

    async def stop(self, units: int, settle: float = 0.0) -> None:
        """``settle``: seconds to let a process that ended in the window be reaped (counted in its parent)."""
        if self.started is None:
            return
        if settle:
            await asyncio.sleep(settle)
        self.spent = (self.spent or 0.0) + cpu_seconds(self.target.pid) - self.started
        self.store_spent += self._store() - self.store_started
        self.units += units

    def _store(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.target.store_pids)

    def metrics(self) -> Metrics:
        if self.spent is None or not self.units:
            return {}
        metrics = {self.name: 1e6 * self.spent / self.units}
        if self.target.store_pids:
            metrics["store " + self.name] = 1e6 * self.store_spent / self.units
        return metrics


async def for_duration(duration: float, step: Callable[[], Awaitable[int]], meter: CpuMeter | None = None) -> float:
    """Repeat ``step`` (returns units done) for ``duration`` seconds; units/s."""
    if meter is not None:
        meter.start()
    done, start = 0, time.perf_counter()
    while True:
        done += await step()
        elapsed = time.perf_counter() - start
        if elapsed >= duration:
            if meter is not None:
                await meter.stop(done)
            return done / elapsed


async def median_latency(duration: float, step: Callable[[], Awaitable[object]], least: int = 5) -> float:
    """Time ``step`` again and again for ``duration`` seconds (at least
    ``least`` times); the median, in milliseconds."""
    times: list[float] = []
    deadline = time.perf_counter() + duration
    while len(times) < least or time.perf_counter() < deadline:
        started = time.perf_counter()
        await step()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


async def concurrently(count: int, duration: float, work, setup=None, teardown=None,
                       meter: CpuMeter | None = None) -> float:
    """
    ``count`` workers for ``duration`` seconds; units/s.  ``setup(index)``
    (a login, say) runs for all before the clock starts, ``teardown(session)``
    after it stops; ``work(index, session, deadline)`` returns units done.
    ``meter`` measures the server's CPU over the same window.
    """
    sessions = await asyncio.gather(*(setup(index) if setup else _none() for index in range(count)))
    if meter is not None:
        meter.start()
    start = time.perf_counter()
    deadline = start + duration
    totals = await asyncio.gather(*(work(index, session, deadline) for index, session in enumerate(sessions)))
    elapsed = time.perf_counter() - start
    if meter is not None:
        await meter.stop(sum(totals))
    if teardown is not None:
        await asyncio.gather(*(teardown(session) for session in sessions))
    return sum(totals) / elapsed


async def _none() -> None:
    return None


def percentile(ordered: list[float], percent: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * percent / 100))]
