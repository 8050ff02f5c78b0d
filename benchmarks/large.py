"""
Scenarios on a real-size INBOX (20,000 messages, flagged as its owner left
them, see ``corpus.reading_flags``): SELECT, UID FETCH 1:* (FLAGS), UID
SEARCH UNSEEN, a POP3 login with STAT and UIDL, and clients working on it
together while one another's STOREs reach them.  Latencies are the median
of the command repeated within one run.
"""

from __future__ import annotations

import random
import re
import statistics
import time

from benchmarks.harness import Metrics, Settings, Target, concurrently, median_latency
from benchmarks.wire import Imap, Pop3, ProtocolError

_EXISTS = re.compile(rb"\* (\d+) EXISTS")


async def _selected(target: Target) -> tuple[Imap, int]:
    """A session on the large INBOX, SELECTed; (session, messages)."""
    imap = await Imap.login(target.host, target.imap, target.users.large, target.users.password)
    try:
        untagged, _ = await imap.command(b"SELECT INBOX")
    except BaseException:
        await imap.logout()
        raise
    return imap, _exists(untagged)


def _exists(untagged: list[bytes]) -> int:
    counts = [int(match.group(1)) for match in map(_EXISTS.match, untagged) if match]
    if not counts or not counts[-1]:
        raise ProtocolError("the large INBOX is empty")
    return counts[-1]


async def large_select(target: Target, settings: Settings) -> Metrics:
    """SELECT INBOX, again and again in one session: each is a full SELECT."""
    imap, _ = await _selected(target)
    try:
        async def select() -> None:
            _exists((await imap.command(b"SELECT INBOX"))[0])

        return {"ms": await median_latency(settings.duration, select)}
    finally:
        await imap.logout()


async def large_fetch_flags(target: Target, settings: Settings) -> Metrics:
    """UID FETCH 1:* (FLAGS): what a client resynchronising its cache asks."""
    imap, exists = await _selected(target)
    try:
        async def fetch() -> None:
            _, fetched = await imap.command_counted(b"UID FETCH 1:* (FLAGS)")
            if fetched != exists:
                raise ProtocolError(f"FETCH FLAGS answered {fetched} of {exists} messages")

        return {"ms": await median_latency(settings.duration, fetch)}
    finally:
        await imap.logout()


async def large_search_unseen(target: Target, settings: Settings) -> Metrics:
    """UID SEARCH UNSEEN: the unread count and list of every client."""
    imap, _ = await _selected(target)
    try:
        async def search() -> None:
            answer, _ = await imap.command_counted(b"UID SEARCH UNSEEN")
            if not answer.startswith(b"* SEARCH "):
                raise ProtocolError("SEARCH UNSEEN found nothing in the large INBOX")

        return {"ms": await median_latency(settings.duration, search)}
    finally:
        await imap.logout()


async def large_pop3(target: Target, settings: Settings) -> Metrics:
    """A POP3 client checking the large maildrop: USER, PASS, STAT, UIDL,
    QUIT, one command at a time; the whole, and STAT+UIDL alone."""
    whole: list[float] = []
    listing: list[float] = []

    async def check() -> None:
        started = time.perf_counter()
        pop3 = await Pop3.login(target.host, target.pop3, target.users.large, target.users.password,
                                pipelined=False)
        logged_in = time.perf_counter()
        count, _ = await pop3.stat()
        if len(await pop3.uidl()) != count:
            raise ProtocolError("UIDL does not list what STAT counts")
        listing.append(1000 * (time.perf_counter() - logged_in))
        await pop3.quit()
        whole.append(1000 * (time.perf_counter() - started))

    await median_latency(settings.duration, check)
    return {"ms": statistics.median(whole), "STAT+UIDL ms": statistics.median(listing)}


async def large_mixed(target: Target, settings: Settings) -> Metrics:
    """
    ``mixed_clients`` sessions on the one large INBOX, each in a loop:
    STORE +/-FLAGS.SILENT (\\Flagged) on a message, UID SEARCH UNSEEN, FETCH
    (FLAGS) of 50 messages, NOOP (4 operations); each hears the others'
    flag changes as untagged FETCH.
    """
    async def login(index: int) -> tuple[Imap, int]:
        return await _selected(target)

    async def worker(index: int, session: tuple[Imap, int], deadline: float) -> int:
        imap, exists = session
        rng = random.Random(index)
        operations = 0
        while time.perf_counter() < deadline:
            flag_change = rng.choice((b"+FLAGS.SILENT", b"-FLAGS.SILENT"))
            await imap.command(b"STORE %d %s (\\Flagged)" % (rng.randint(1, exists), flag_change))
            await imap.command(b"UID SEARCH UNSEEN")
            first = rng.randint(1, max(1, exists - 49))
            await imap.command(b"FETCH %d:%d (FLAGS)" % (first, min(exists, first + 49)))
            await imap.command(b"NOOP")
            operations += 4
        return operations

    async def logout(session: tuple[Imap, int]) -> None:
        await session[0].logout()

    return {"ops/s": await concurrently(settings.mixed_clients, settings.duration, worker, login, logout)}
