"""
Scenarios about sessions that stay: memory per idling session (on a small
INBOX, and SELECTed on real-size ones), how fast a delivery reaches
sessions in IDLE, and memory while one 50 MB message goes in and out.
"""

from __future__ import annotations

import asyncio
import time

from benchmarks import corpus
from benchmarks.harness import Metrics, Settings, Target, percentile
from benchmarks.servers import peak_rss_kb, pss_kb, reset_peak_rss, rss_kb
from benchmarks.throughput import APPENDUID, EXISTS, SMALL_MESSAGE
from benchmarks.wire import Imap, Lmtp, ProtocolError, dot_stuffed, quoted


class IdleSession(asyncio.Protocol):
    """
    LOGIN, SELECT INBOX, IDLE, then note when each ``* n EXISTS`` arrives.
    A protocol, not a stream task, so that the arrival time is taken in
    data_received, before our own event loop adds any queueing.
    """

    def __init__(self, user: str, password: str):
        self.login = b"a LOGIN " + quoted(user) + b" " + quoted(password) + b"\r\n"
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
            match = EXISTS.match(line)
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


async def open_idle_sessions(target: Target, count: int, concurrency: int, user: str | None = None
                             ) -> list[IdleSession]:
    """``count`` sessions idling on the INBOX of ``user`` (default: the idle user)."""
    loop = asyncio.get_running_loop()
    sessions: list[IdleSession] = []
    limit = asyncio.Semaphore(concurrency)
    user = user or target.users.idle

    async def open_one() -> None:
        async with limit:
            session = IdleSession(user, target.users.password)
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


async def _idle_memory(target: Target, settings: Settings, count: int, user: str) -> Metrics:
    """
    PSS of the server's process tree with a quarter of ``count`` sessions
    idling, then with ``count`` more: the growth, per session.  The first
    quarter warms what a server keeps per user and per mailbox, and takes
    up the heap that the first login and SELECT freed, which would
    otherwise hide part of the cost; a server started just before
    (``fresh_server``) has no other free heap to hide it in.
    """
    sessions = await open_idle_sessions(target, max(1, count // 4), settings.connect_concurrency, user)
    try:
        await asyncio.sleep(1.0)  # let the server finish settling each session
        before = pss_kb(target.pid)
        sessions += await open_idle_sessions(target, count, settings.connect_concurrency, user)
        await asyncio.sleep(1.0)
        after = pss_kb(target.pid)
    finally:
        close_sessions(sessions)
    return {"KB/session": (after - before) / count}


async def idle_memory(target: Target, settings: Settings) -> Metrics:
    return await _idle_memory(target, settings, settings.idle_sessions, target.users.idle)


async def idle_memory_medium(target: Target, settings: Settings) -> Metrics:
    return await _idle_memory(target, settings, settings.mailbox_idle_sessions, target.users.medium)


async def idle_memory_large(target: Target, settings: Settings) -> Metrics:
    return await _idle_memory(target, settings, settings.mailbox_idle_sessions, target.users.large)


async def idle_push(target: Target, settings: Settings) -> Metrics:
    """Deliver over LMTP; time until every idling session saw ``* n EXISTS``."""
    return await _push(target, settings, target.lmtp)


async def idle_push_nodes(target: Target, settings: Settings) -> Metrics:
    """As idle_push, the deliveries through another node of the same store."""
    if target.peer_lmtp is None:
        raise ValueError("one node: no other node over the same store to deliver through")
    return await _push(target, settings, target.peer_lmtp)


async def _push(target: Target, settings: Settings, lmtp_port: int) -> Metrics:
    sessions = await open_idle_sessions(target, settings.push_sessions, settings.connect_concurrency)
    latencies: list[float] = []
    missed = 0
    try:
        lmtp = await Lmtp.open(target.host, lmtp_port)
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
    return {"p50 ms": 1000 * percentile(latencies, 50), "p99 ms": 1000 * percentile(latencies, 99),
            "missed": missed}


async def big_message(target: Target, settings: Settings) -> Metrics:
    """Peak RSS growth of the server while it takes, then serves, one big message."""
    message = corpus.big_message(settings.big_size)
    imap = await Imap.login(target.host, target.imap, target.users.big, target.users.password)
    await imap.command(b"SELECT INBOX")
    baseline = rss_kb(target.pid)
    reset_peak_rss(target.pid)
    appended = APPENDUID.search(await imap.append("INBOX", message))
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
