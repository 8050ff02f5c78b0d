"""
Throughput scenarios: POP3 downloads (one command at a time as clients send
them, and pipelined as the best case), IMAP FETCH and the mixed workload,
login rates and LMTP delivery.
"""

from __future__ import annotations

import asyncio
import random
import re
import statistics
import time

from benchmarks import corpus
from benchmarks.harness import CpuMeter, Metrics, Settings, Target, concurrently, for_duration
from benchmarks.wire import Imap, Lmtp, Pop3, ProtocolError, dot_stuffed

HEADER_FETCH = b"UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE)"
BODY_FETCH = b"UID FETCH 1:* BODY.PEEK[]"
APPENDUID = re.compile(rb"\[APPENDUID \d+ (\d+)\]")
EXISTS = re.compile(rb"\* (\d+) EXISTS")
UID_ITEM = re.compile(rb"\bUID (\d+)")
# The server's CPU (user + system, all its processes) per unit, in the timed window.
CPU_PER_MESSAGE = "CPU us/msg"
CPU_PER_OPERATION = "CPU us/op"
# The median wait for the replies to MAIL/RCPT/DATA, and for the one to the message.
LMTP_COMMANDS = "commands ms"
LMTP_STORED = "stored ms"
SMALL_MESSAGE = (b"From: Bench <bench@example.org>\r\nTo: <user@example.org>\r\nSubject: new mail\r\n"
                 b"Message-ID: <bench@example.org>\r\n\r\nA short message.\r\n")


# -- POP3 ---------------------------------------------------------------------


async def mark_unread(target: Target, user: str) -> None:
    """Over IMAP, make every message of ``user``'s INBOX unread again, so
    that a POP3 download is a first download (RETR sets \\Seen)."""
    imap = await Imap.login(target.host, target.imap, user, target.users.password)
    try:
        await imap.command(b"SELECT INBOX")
        await imap.command(b"STORE 1:* -FLAGS.SILENT (\\Seen)")
    finally:
        await imap.logout()


async def _first_download(pop3: Pop3) -> tuple[int, int]:
    """
    What a desktop client does on its first download with "leave messages
    on the server": STAT, LIST, UIDL, then RETR of each message, waiting for
    each answer before the next command, then QUIT; (messages, bytes).
    """
    await pop3.stat()
    await pop3.listing()
    listing = await pop3.uidl()
    if not listing:
        raise ProtocolError("POP3 maildrop is empty")
    size = await pop3.retr_all([number for number, _ in listing], window=1)
    await pop3.quit()
    return len(listing), size


# The line count fetchmail asks TOP for to have a whole message.
WHOLE_MESSAGE_LINES = 99_999_999


async def _fetchmail_download(pop3: Pop3) -> tuple[int, int]:
    """
    What fetchmail (6.4, Debian's) does on its first run keeping mail on
    the server (``keep`` and ``uidl``, as ``fetchmail -v`` shows): STAT,
    UIDL, then for each message LIST n and TOP n 99999999, not RETR,
    waiting for each answer before the next command, then QUIT; (messages,
    bytes).
    """
    await pop3.stat()
    listing = await pop3.uidl()
    if not listing:
        raise ProtocolError("POP3 maildrop is empty")
    size = 0
    for number, _ in listing:
        await pop3.command(b"LIST %d" % number)
        size += await pop3.top(number, WHOLE_MESSAGE_LINES)
    await pop3.quit()
    return len(listing), size


async def _in_passes(target: Target, settings: Settings, begin, finish, settle: float = 0.0) -> Metrics:
    """
    ``finish(await begin())`` (a list of (messages, bytes), one per
    client) again until the finishes have taken ``settings.duration``
    seconds, or ``settings.first_run_passes`` have run: one pass of
    1,000 messages is a quarter of a second for one client, too short a
    sample to compare.  ``begin`` (logins, argon2; marking mail unread) is
    off the clock; ``settle`` seconds after each pass let the server reap
    what ended in it (Dovecot's mail processes end at QUIT and LOGOUT).
    """
    meter = CpuMeter(target, CPU_PER_MESSAGE)
    seconds = messages = size = passes = 0
    while seconds < settings.duration and passes < settings.first_run_passes:
        passes += 1
        sessions = await begin()
        meter.start()
        start = time.perf_counter()
        results = await finish(sessions)
        seconds += time.perf_counter() - start
        await meter.stop(sum(r[0] for r in results), settle=settle)
        messages += sum(r[0] for r in results)
        size += sum(r[1] for r in results)
    return {"msg/s": messages / seconds, "MB/s": size / seconds / 1e6, **meter.metrics()}


async def _first_downloads(target: Target, settings: Settings, users: tuple[str, ...],
                           download=_first_download) -> Metrics:
    """Every user's first download at once, in passes (``_in_passes``)."""
    async def begin():
        await asyncio.gather(*(mark_unread(target, user) for user in users))
        return await asyncio.gather(*(Pop3.login(target.host, target.pop3, user, target.users.password,
                                                 pipelined=False) for user in users))

    async def finish(sessions):
        return await asyncio.gather(*(download(pop3) for pop3 in sessions))

    return await _in_passes(target, settings, begin, finish, settle=0.3)


async def pop3_first_download_1(target: Target, settings: Settings) -> Metrics:
    return await _first_downloads(target, settings, target.users.bulk[:1])


async def pop3_first_download_8(target: Target, settings: Settings) -> Metrics:
    return await _first_downloads(target, settings, target.users.bulk[:8])


async def pop3_fetchmail_1(target: Target, settings: Settings) -> Metrics:
    return await _first_downloads(target, settings, target.users.bulk[:1], _fetchmail_download)


async def pop3_fetchmail_8(target: Target, settings: Settings) -> Metrics:
    return await _first_downloads(target, settings, target.users.bulk[:8], _fetchmail_download)


async def _pop3_download(pop3: Pop3, deadline: float) -> tuple[int, int]:
    """UIDL then RETR of every message, 16 in flight, again until ``deadline``; (messages, bytes)."""
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
    meter = CpuMeter(target, CPU_PER_MESSAGE)
    meter.start()
    start = time.perf_counter()
    results = await asyncio.gather(*(_pop3_download(pop3, start + settings.duration) for pop3 in sessions))
    seconds = time.perf_counter() - start
    await meter.stop(sum(r[0] for r in results))
    await asyncio.gather(*(pop3.quit() for pop3 in sessions))
    return {"msg/s": sum(r[0] for r in results) / seconds, "MB/s": sum(r[1] for r in results) / seconds / 1e6,
            **meter.metrics()}


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

    return {"logins/s": await concurrently(settings.login_clients, settings.duration, worker, warm)}


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
    return {"logins/s": await concurrently(settings.storm_clients, settings.storm_seconds, worker, poll)}


# -- IMAP ---------------------------------------------------------------------


async def _imap_fetch(target: Target, settings: Settings, command: bytes, compress: bool = False) -> Metrics:
    imap = await Imap.login(target.host, target.imap, target.users.bulk[0], target.users.password)
    if compress:
        await imap.compress()
    await imap.command(b"EXAMINE INBOX")
    before = imap.connection.received
    # Warm: both servers keep what a first FETCH computed.
    warmed = await imap.skim(command)
    wire = (imap.connection.received - before) / max(warmed, 1)

    async def step() -> int:
        fetched = await imap.skim(command)
        if not fetched:
            raise ProtocolError("FETCH returned no messages")
        return fetched

    meter = CpuMeter(target, CPU_PER_MESSAGE)
    rate = await for_duration(settings.duration, step, meter)
    await imap.logout()
    return {"msg/s": rate, "wire bytes/msg": wire, **meter.metrics()}


async def imap_fetch_headers(target: Target, settings: Settings) -> Metrics:
    return await _imap_fetch(target, settings, HEADER_FETCH)


async def imap_fetch_bodies(target: Target, settings: Settings) -> Metrics:
    return await _imap_fetch(target, settings, BODY_FETCH)


async def imap_fetch_bodies_compressed(target: Target, settings: Settings) -> Metrics:
    """The same FETCH after COMPRESS DEFLATE (RFC 4978), as Thunderbird and mbsync ask."""
    return await _imap_fetch(target, settings, BODY_FETCH, compress=True)


async def _imap_first_sync(imap: Imap) -> tuple[int, int]:
    """
    What mbsync (isync 1.4, as ``mbsync -Dn`` shows) does on its first sync
    of an INBOX, and a desktop or phone client opening one message after
    another: SELECT, UID FETCH 1:* (UID FLAGS), then UID FETCH n
    (BODY.PEEK[]) for each message, waiting for each answer before the
    next, then LOGOUT; (messages, bytes read).
    """
    await imap.command(b"SELECT INBOX")
    listing, _ = await imap.command(b"UID FETCH 1:* (UID FLAGS)")
    uids = [int(match) for line in listing for match in UID_ITEM.findall(line)]
    if not uids:
        raise ProtocolError("IMAP INBOX is empty")
    before = imap.connection.received
    for uid in uids:
        if await imap.skim(b"UID FETCH %d (BODY.PEEK[])" % uid) != 1:
            raise ProtocolError(f"UID FETCH {uid} answered no message")
    size = imap.connection.received - before
    await imap.logout()
    return len(uids), size


async def _imap_first_syncs(target: Target, settings: Settings, users: tuple[str, ...]) -> Metrics:
    """Every user's first sync at once, in passes (``_in_passes``)."""
    async def begin():
        return await asyncio.gather(*(Imap.login(target.host, target.imap, user, target.users.password)
                                      for user in users))

    async def finish(sessions):
        return await asyncio.gather(*(_imap_first_sync(imap) for imap in sessions))

    return await _in_passes(target, settings, begin, finish)


async def imap_first_sync_1(target: Target, settings: Settings) -> Metrics:
    return await _imap_first_syncs(target, settings, target.users.bulk[:1])


async def imap_first_sync_8(target: Target, settings: Settings) -> Metrics:
    return await _imap_first_syncs(target, settings, target.users.bulk[:8])


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

    return {"logins/s": await concurrently(settings.login_clients, settings.duration, worker, login_once)}


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
            exists = max(int(m.group(1)) for m in map(EXISTS.match, untagged) if m)
            first = rng.randint(1, max(1, exists - 9))
            await imap.command(b"FETCH %d:%d (UID FLAGS RFC822.SIZE ENVELOPE)" % (first, min(exists, first + 9)))
            flag_change = rng.choice((b"+FLAGS.SILENT", b"-FLAGS.SILENT"))
            await imap.command(b"STORE %d %s (\\Flagged)" % (rng.randint(1, exists), flag_change))
            await imap.command(b"SEARCH UNSEEN FLAGGED")
            appended = APPENDUID.search(await imap.append("INBOX", SMALL_MESSAGE))
            if appended is None:
                raise ProtocolError("APPEND answered without APPENDUID (RFC 4315)")
            await imap.command(b"UID STORE %s +FLAGS.SILENT (\\Deleted)" % appended.group(1))
            await imap.command(b"EXPUNGE")
            operations += 7
        return operations

    meter = CpuMeter(target, CPU_PER_OPERATION)
    rate = await concurrently(settings.mixed_clients, settings.duration, worker, login, Imap.logout, meter)
    return {"ops/s": rate, **meter.metrics()}


# -- LMTP ---------------------------------------------------------------------


async def _lmtp_rate(target: Target, settings: Settings, connections: int) -> Metrics:
    payloads = [dot_stuffed(message) for message in corpus.corpus(50, seed=11)]
    commands, stored = [], []

    async def worker(index: int, lmtp: Lmtp, deadline: float) -> int:
        delivered = 0
        while time.perf_counter() < deadline:
            waited = await lmtp.deliver([target.users.sink],
                                        payloads[(index + delivered * connections) % len(payloads)])
            commands.append(waited[0])
            stored.append(waited[1])
            delivered += 1
        return delivered

    async def connect(index: int) -> Lmtp:
        return await Lmtp.open(target.host, target.lmtp)

    meter = CpuMeter(target, CPU_PER_MESSAGE)
    rate = await concurrently(connections, settings.duration, worker, connect, Lmtp.quit, meter)
    # Where a delivery's time goes, as the client waits: the pipelined
    # MAIL/RCPT/DATA, and the message to its reply (the store's part).
    return {"msg/s": rate, **meter.metrics(), LMTP_COMMANDS: 1000 * statistics.median(commands),
            LMTP_STORED: 1000 * statistics.median(stored)}


async def lmtp_rate_1(target: Target, settings: Settings) -> Metrics:
    return await _lmtp_rate(target, settings, 1)


async def lmtp_rate_4(target: Target, settings: Settings) -> Metrics:
    return await _lmtp_rate(target, settings, 4)
