"""
The scenarios of issue 5, each an ``async def`` over a Target that returns
its metrics.  They know nothing of which server they drive; the ones that
measure memory need the server's process id.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Awaitable, Callable

import attrs

from benchmarks import corpus
from benchmarks.servers import peak_rss_kb, pss_kb, reset_peak_rss, rss_kb
from benchmarks.wire import Imap, Lmtp, Pop3, ProtocolError, dot_stuffed

HEADER_FETCH = b"UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE)"
BODY_FETCH = b"UID FETCH 1:* BODY.PEEK[]"
_APPENDUID = re.compile(rb"\[APPENDUID \d+ (\d+)\]")
_EXISTS = re.compile(rb"\* (\d+) EXISTS")
SMALL_MESSAGE = (b"From: Bench <bench@example.org>\r\nTo: <user@example.org>\r\nSubject: new mail\r\n"
                 b"Message-ID: <bench@example.org>\r\n\r\nA short message.\r\n")


@attrs.frozen
class Users:
    """Who is who on a server under test (the same names on both)."""

    bulk: tuple[str, ...]  # each holds the corpus: POP3/IMAP throughput, mixed
    poll: tuple[str, ...]  # a few small messages each: login rate, poll storm
    idle: str  # idle sessions and IDLE push
    sink: str  # LMTP delivery rate
    big: str  # the 50 MB message
    password: str


@attrs.frozen
class Target:
    host: str
    pop3: int
    imap: int
    lmtp: int
    users: Users
    pid: int | None = None  # for the memory scenarios


@attrs.frozen
class Settings:
    duration: float = 3.0  # seconds of each throughput measurement
    login_clients: int = 8
    storm_clients: int = 100
    storm_seconds: float = 10.0
    mixed_clients: int = 8
    idle_sessions: int = 2_000
    push_sessions: int = 1_000
    push_rounds: int = 3
    # 50 MB, below the gateway's default APPEND limit of 50 MiB (RFC 7889 APPENDLIMIT).
    big_size: int = 50_000_000
    connect_concurrency: int = 100  # sessions being set up at once
    cap: float = 300.0  # seconds any one scenario may take


Metrics = dict[str, float]


@attrs.frozen
class Metric:
    name: str
    unit: str
    higher_is_better: bool


@attrs.frozen
class Scenario:
    name: str
    run: Callable[[Target, Settings], Awaitable[Metrics]]
    metrics: tuple[Metric, ...]
    needs_pid: bool = False
    # Memory a long-lived process freed stays in its heap and hides the next
    # allocation, so these want a server started just before them when the
    # runner can restart it.
    fresh_server: bool = False


async def _for_duration(duration: float, step: Callable[[], Awaitable[int]]) -> float:
    """Repeat ``step`` (returns units done) for ``duration`` seconds; units/s."""
    done, start = 0, time.perf_counter()
    while True:
        done += await step()
        elapsed = time.perf_counter() - start
        if elapsed >= duration:
            return done / elapsed


async def _concurrently(count: int, duration: float, work, setup=None, teardown=None) -> float:
    """
    ``count`` workers for ``duration`` seconds; units/s.  ``setup(index)``
    (a login, say) runs for all before the clock starts, ``teardown(session)``
    after it stops; ``work(index, session, deadline)`` returns units done.
    """
    sessions = await asyncio.gather(*(setup(index) if setup else _none() for index in range(count)))
    start = time.perf_counter()
    deadline = start + duration
    totals = await asyncio.gather(*(work(index, session, deadline) for index, session in enumerate(sessions)))
    elapsed = time.perf_counter() - start
    if teardown is not None:
        await asyncio.gather(*(teardown(session) for session in sessions))
    return sum(totals) / elapsed


async def _none() -> None:
    return None


# -- POP3 ---------------------------------------------------------------------


async def _pop3_download(pop3: Pop3, deadline: float) -> tuple[int, int]:
    """UIDL then RETR of every message, again until ``deadline``; (messages, bytes)."""
    messages = size = 0
    while True:
        listing = await pop3.uidl()
        size += await pop3.retr_all([number for number, _ in listing])
        messages += len(listing)
        if not listing:
            raise ProtocolError("POP3 maildrop is empty")
        if time.perf_counter() >= deadline:
            return messages, size


async def _pop3_downloads(target: Target, settings: Settings, users: tuple[str, ...]) -> Metrics:
    """Every user downloads at once; the logins (argon2) happen before the clock starts."""
    sessions = await asyncio.gather(*(Pop3.login(target.host, target.pop3, user, target.users.password)
                                      for user in users))
    start = time.perf_counter()
    results = await asyncio.gather(*(_pop3_download(pop3, start + settings.duration) for pop3 in sessions))
    seconds = time.perf_counter() - start
    await asyncio.gather(*(pop3.quit() for pop3 in sessions))
    return {"msg/s": sum(r[0] for r in results) / seconds, "MB/s": sum(r[1] for r in results) / seconds / 1e6}


async def pop3_download_1(target: Target, settings: Settings) -> Metrics:
    return await _pop3_downloads(target, settings, target.users.bulk[:1])


async def pop3_download_8(target: Target, settings: Settings) -> Metrics:
    return await _pop3_downloads(target, settings, target.users.bulk[:8])


async def _pop3_login_once(target: Target, user: str) -> None:
    pop3 = await Pop3.login(target.host, target.pop3, user, target.users.password)
    await pop3.quit()


async def pop3_login_rate(target: Target, settings: Settings) -> Metrics:
    """
    The same few users logging in again and again, as polling clients do;
    one untimed login each first, so that a server's credential cache is in
    the state a poller finds it in, whatever ran before.
    """
    async def warm(index: int) -> None:
        await _pop3_login_once(target, target.users.poll[index % len(target.users.poll)])

    async def worker(index: int, session: None, deadline: float) -> int:
        user, logins = target.users.poll[index % len(target.users.poll)], 0
        while time.perf_counter() < deadline:
            await _pop3_login_once(target, user)
            logins += 1
        return logins

    return {"logins/s": await _concurrently(settings.login_clients, settings.duration, worker, warm)}


async def pop3_poll_storm(target: Target, settings: Settings) -> Metrics:
    """Legacy clients polling: login, UIDL, QUIT, again, each on its own maildrop."""
    if settings.storm_clients > len(target.users.poll):
        raise ValueError(f"poll storm of {settings.storm_clients} needs as many poll users")

    async def poll(index: int) -> None:
        pop3 = await Pop3.login(target.host, target.pop3, target.users.poll[index], target.users.password)
        await pop3.uidl()
        await pop3.quit()

    async def worker(index: int, session: None, deadline: float) -> int:
        polls = 0
        while time.perf_counter() < deadline:
            await poll(index)
            polls += 1
        return polls

    # One untimed poll each first, as in pop3_login_rate.
    return {"logins/s": await _concurrently(settings.storm_clients, settings.storm_seconds, worker, poll)}


# -- IMAP ---------------------------------------------------------------------


async def _imap_fetch(target: Target, settings: Settings, command: bytes) -> float:
    imap = await Imap.login(target.host, target.imap, target.users.bulk[0], target.users.password)
    await imap.command(b"EXAMINE INBOX")
    await imap.command(command, keep=False)  # warm: both servers keep what a first FETCH computed

    async def step() -> int:
        _, fetched = await imap.command(command, keep=False)
        if not fetched:
            raise ProtocolError("FETCH returned no messages")
        return fetched

    rate = await _for_duration(settings.duration, step)
    await imap.logout()
    return rate


async def imap_fetch_headers(target: Target, settings: Settings) -> Metrics:
    return {"msg/s": await _imap_fetch(target, settings, HEADER_FETCH)}


async def imap_fetch_bodies(target: Target, settings: Settings) -> Metrics:
    return {"msg/s": await _imap_fetch(target, settings, BODY_FETCH)}


async def imap_login_rate(target: Target, settings: Settings) -> Metrics:
    """LOGIN/LOGOUT, again and again, after one untimed login each (see pop3_login_rate)."""
    async def login_once(index: int) -> None:
        imap = await Imap.login(target.host, target.imap, target.users.poll[index % len(target.users.poll)],
                                target.users.password)
        await imap.logout()

    async def worker(index: int, session: None, deadline: float) -> int:
        logins = 0
        while time.perf_counter() < deadline:
            await login_once(index)
            logins += 1
        return logins

    return {"logins/s": await _concurrently(settings.login_clients, settings.duration, worker, login_once)}


async def imap_mixed(target: Target, settings: Settings) -> Metrics:
    """
    Per client, in a loop: SELECT, FETCH of 10 messages, STORE, SEARCH,
    APPEND, STORE \\Deleted on what was appended, EXPUNGE (7 operations).
    Appending what it expunges leaves the mailbox as it found it.
    """

    async def login(index: int) -> Imap:
        user = target.users.bulk[index % len(target.users.bulk)]
        return await Imap.login(target.host, target.imap, user, target.users.password)

    async def worker(index: int, imap: Imap, deadline: float) -> int:
        rng = random.Random(index)
        operations = 0
        while time.perf_counter() < deadline:
            untagged, _ = await imap.command(b"SELECT INBOX")
            exists = max(int(m.group(1)) for m in map(_EXISTS.match, untagged) if m)
            first = rng.randint(1, max(1, exists - 9))
            await imap.command(b"FETCH %d:%d (UID FLAGS RFC822.SIZE ENVELOPE)" % (first, min(exists, first + 9)))
            flag_change = rng.choice((b"+FLAGS.SILENT", b"-FLAGS.SILENT"))
            await imap.command(b"STORE %d %s (\\Flagged)" % (rng.randint(1, exists), flag_change))
            await imap.command(b"SEARCH UNSEEN FLAGGED")
            appended = _APPENDUID.search(await imap.append("INBOX", SMALL_MESSAGE))
            if appended is None:
                raise ProtocolError("APPEND answered without APPENDUID (RFC 4315)")
            await imap.command(b"UID STORE %s +FLAGS.SILENT (\\Deleted)" % appended.group(1))
            await imap.command(b"EXPUNGE")
            operations += 7
        return operations

    return {"ops/s": await _concurrently(settings.mixed_clients, settings.duration, worker, login, Imap.logout)}


# -- LMTP ---------------------------------------------------------------------


async def _lmtp_rate(target: Target, settings: Settings, connections: int) -> float:
    payloads = [dot_stuffed(message) for message in corpus.corpus(50, seed=11)]

    async def worker(index: int, lmtp: Lmtp, deadline: float) -> int:
        delivered = 0
        while time.perf_counter() < deadline:
            await lmtp.deliver([target.users.sink], payloads[(index + delivered * connections) % len(payloads)])
            delivered += 1
        return delivered

    async def connect(index: int) -> Lmtp:
        return await Lmtp.open(target.host, target.lmtp)

    return await _concurrently(connections, settings.duration, worker, connect, Lmtp.quit)


async def lmtp_rate_1(target: Target, settings: Settings) -> Metrics:
    return {"msg/s": await _lmtp_rate(target, settings, 1)}


async def lmtp_rate_4(target: Target, settings: Settings) -> Metrics:
    return {"msg/s": await _lmtp_rate(target, settings, 4)}


# -- sessions that idle ------------------------------------------------------------


class IdleSession(asyncio.Protocol):
    """
    LOGIN, SELECT INBOX, IDLE, then note when each ``* n EXISTS`` arrives.
    A protocol, not a stream task, so that the arrival time is taken in
    data_received, before our own event loop adds any queueing.
    """

    def __init__(self, user: str, password: str):
        self.login = b"a LOGIN " + _quoted(user) + b" " + _quoted(password) + b"\r\n"
        self.buffer = bytearray()
        self.state = "greeting"
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self.exists: dict[int, float] = {}
        self.changed = asyncio.Event()
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        if not self.ready.done():
            self.ready.set_exception(ProtocolError(f"connection lost in state {self.state}"))
        self.changed.set()

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n")
            if end < 0:
                return
            line = bytes(self.buffer[:end])
            del self.buffer[:end + 2]
            self.line_received(line, now)

    def line_received(self, line: bytes, now: float) -> None:
        if self.state == "idling":
            match = _EXISTS.match(line)
            if match:
                self.exists.setdefault(int(match.group(1)), now)
                self.changed.set()
            return
        steps = {"greeting": (b"* OK", self.login, "login"),
                 "login": (b"a OK", b"b SELECT INBOX\r\n", "select"),
                 "select": (b"b OK", b"c IDLE\r\n", "idle"),
                 "idle": (b"+", None, "idling")}
        expected, reply, following = steps[self.state]
        if line.startswith(expected):
            self.state = following
            if reply is not None:
                self.transport.write(reply)
            else:
                self.ready.set_result(None)
        elif line[:2] in (b"a ", b"b ", b"c ") or self.state == "greeting":
            self.ready.set_exception(ProtocolError(f"IMAP {self.state}: {line.decode(errors='replace')}"))
            self.transport.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _quoted(text: str) -> bytes:
    return b'"' + text.encode().replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


async def open_idle_sessions(target: Target, count: int, concurrency: int) -> list[IdleSession]:
    loop = asyncio.get_running_loop()
    sessions: list[IdleSession] = []
    limit = asyncio.Semaphore(concurrency)

    async def open_one() -> None:
        async with limit:
            session = IdleSession(target.users.idle, target.users.password)
            sessions.append(session)
            await loop.create_connection(lambda: session, target.host, target.imap)
            await session.ready

    try:
        await asyncio.gather(*(open_one() for _ in range(count)))
    except BaseException:
        close_sessions(sessions)
        raise
    return sessions


def close_sessions(sessions: list[IdleSession]) -> None:
    for session in sessions:
        session.close()


async def idle_memory(target: Target, settings: Settings) -> Metrics:
    """
    PSS of the server's process tree as N idling sessions are opened, in two
    halves: the growth over the second half, per session.  The first half
    fills whatever free heap earlier scenarios left in a long-lived process,
    which would otherwise hide part of the cost.
    """
    half = settings.idle_sessions // 2
    sessions = await open_idle_sessions(target, settings.idle_sessions - half, settings.connect_concurrency)
    try:
        await asyncio.sleep(1.0)  # let the server finish settling each session
        middle = pss_kb(target.pid)
        sessions += await open_idle_sessions(target, half, settings.connect_concurrency)
        await asyncio.sleep(1.0)
        after = pss_kb(target.pid)
    finally:
        close_sessions(sessions)
    return {"KB/session": (after - middle) / half}


async def idle_push(target: Target, settings: Settings) -> Metrics:
    """Deliver over LMTP; time until every idling session saw ``* n EXISTS``."""
    sessions = await open_idle_sessions(target, settings.push_sessions, settings.connect_concurrency)
    latencies: list[float] = []
    missed = 0
    try:
        lmtp = await Lmtp.open(target.host, target.lmtp)
        payload = dot_stuffed(SMALL_MESSAGE)
        for _ in range(settings.push_rounds):
            for session in sessions:
                session.changed.clear()
            known = {session: set(session.exists) for session in sessions}
            sent = time.perf_counter()
            await lmtp.deliver([target.users.idle], payload)
            deadline = sent + min(60.0, settings.cap / (2 * settings.push_rounds))
            for session in sessions:
                while set(session.exists) == known[session] and time.perf_counter() < deadline:
                    session.changed.clear()
                    try:
                        await asyncio.wait_for(session.changed.wait(), deadline - time.perf_counter())
                    except asyncio.TimeoutError:
                        break
                new = [session.exists[n] for n in set(session.exists) - known[session]]
                if new:
                    latencies.append(min(new) - sent)
                else:
                    missed += 1
        await lmtp.quit()
    finally:
        close_sessions(sessions)
    if not latencies:
        raise ProtocolError("no session saw EXISTS")
    latencies.sort()
    return {"p50 ms": 1000 * _percentile(latencies, 50), "p99 ms": 1000 * _percentile(latencies, 99),
            "missed": missed}


def _percentile(ordered: list[float], percent: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * percent / 100))]


# -- a 50 MB message -----------------------------------------------------------


async def big_message(target: Target, settings: Settings) -> Metrics:
    """Peak RSS growth of the server while it takes, then serves, one big message."""
    message = corpus.big_message(settings.big_size)
    imap = await Imap.login(target.host, target.imap, target.users.big, target.users.password)
    await imap.command(b"SELECT INBOX")
    baseline = rss_kb(target.pid)
    reset_peak_rss(target.pid)
    appended = _APPENDUID.search(await imap.append("INBOX", message))
    append_peak = peak_rss_kb(target.pid) - baseline
    if appended is None:
        raise ProtocolError("APPEND answered without APPENDUID (RFC 4315)")
    baseline = rss_kb(target.pid)
    reset_peak_rss(target.pid)
    _, fetched = await imap.command(b"UID FETCH %s BODY.PEEK[]" % appended.group(1), keep=False)
    fetch_peak = peak_rss_kb(target.pid) - baseline
    await imap.logout()
    if fetched != 1:
        raise ProtocolError(f"FETCH of the appended message returned {fetched} messages")
    return {"APPEND peak MB": append_peak / 1024, "FETCH peak MB": fetch_peak / 1024}


SCENARIOS = (
    Scenario("pop3 UIDL+RETR, 1 conn", pop3_download_1, (Metric("msg/s", "msg/s", True),)),
    Scenario("pop3 UIDL+RETR, 8 conns", pop3_download_8, (Metric("msg/s", "msg/s", True),)),
    Scenario("imap FETCH header set", imap_fetch_headers, (Metric("msg/s", "msg/s", True),)),
    Scenario("imap FETCH BODY.PEEK[]", imap_fetch_bodies, (Metric("msg/s", "msg/s", True),)),
    Scenario("imap mixed, 8 clients", imap_mixed, (Metric("ops/s", "ops/s", True),)),
    Scenario("pop3 login rate", pop3_login_rate, (Metric("logins/s", "logins/s", True),)),
    Scenario("imap login rate", imap_login_rate, (Metric("logins/s", "logins/s", True),)),
    Scenario("lmtp delivery, 1 conn", lmtp_rate_1, (Metric("msg/s", "msg/s", True),)),
    Scenario("lmtp delivery, 4 conns", lmtp_rate_4, (Metric("msg/s", "msg/s", True),)),
    Scenario("pop3 poll storm", pop3_poll_storm, (Metric("logins/s", "logins/s", True),)),
    Scenario("idle imap sessions", idle_memory, (Metric("KB/session", "KB PSS", False),), needs_pid=True,
             fresh_server=True),
    Scenario("IDLE push latency", idle_push, (Metric("p50 ms", "ms", False), Metric("p99 ms", "ms", False),
                                              Metric("missed", "sessions", False))),
    Scenario("50 MB message", big_message, (Metric("APPEND peak MB", "MB RSS", False),
                                            Metric("FETCH peak MB", "MB RSS", False)), needs_pid=True,
             fresh_server=True),
)


async def run_scenario(scenario: Scenario, target: Target, settings: Settings) -> Metrics:
    """One run of ``scenario``, bounded by ``settings.cap``."""
    if scenario.needs_pid and target.pid is None:
        raise ValueError("needs the server's process id")
    return await asyncio.wait_for(scenario.run(target, settings), settings.cap)
