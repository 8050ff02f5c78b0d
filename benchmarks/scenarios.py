"""
Every scenario, by key: clients that behave like the ones people run
(``realistic``), and the best cases kept for comparison (pipelined POP3).
They know nothing of which server they drive; the ones that measure memory
need the server's process id.
"""

from __future__ import annotations

import asyncio

from benchmarks import large, sessions, throughput
from benchmarks.harness import (  # noqa: F401  (re-exported)
    Metric,
    Metrics,
    Scenario,
    Settings,
    Target,
    Users,
)

# What the server's processes spend per unit: shown beside the rate, never the headline.
_CPU_PER_MESSAGE = Metric("CPU us/msg", "us server CPU", False, ranked=False)
# And what the engines of its store spend (PostgreSQL, SeaweedFS), where it has them.
_STORE_CPU_PER_MESSAGE = Metric("store CPU us/msg", "us store CPU", False, ranked=False)
_RATE = (Metric("msg/s", "msg/s", True), _CPU_PER_MESSAGE, _STORE_CPU_PER_MESSAGE)
# What crossed the wire per message: a compressed session against a plain one.
_WIRE = Metric("wire bytes/msg", "bytes", False, ranked=False)
_FETCH = (*_RATE, _WIRE)
# A delivery's two waits (throughput.py): told apart, never ranked.
_LMTP = (*_RATE, Metric(throughput.LMTP_COMMANDS, "ms", False, ranked=False),
         Metric(throughput.LMTP_STORED, "ms", False, ranked=False))
_PUSH = (Metric("p50 ms", "ms", False), Metric("p99 ms", "ms", False), Metric("missed", "sessions", False))
_MS = (Metric("ms", "ms", False),)
_MEMORY = (Metric("KB/session", "KB PSS", False),)
_MEDIUM = frozenset({"medium"})
_LARGE = frozenset({"large"})

SCENARIOS = (
    Scenario("pop3-first-download-1", "pop3 first download, 1 client", throughput.pop3_first_download_1, _RATE),
    Scenario("pop3-first-download-8", "pop3 first download, 8 clients", throughput.pop3_first_download_8, _RATE),
    Scenario("pop3-fetchmail-1", "pop3 first download as fetchmail keeping mail (LIST+TOP), 1 client",
             throughput.pop3_fetchmail_1, _RATE),
    Scenario("pop3-fetchmail-8", "pop3 first download as fetchmail keeping mail (LIST+TOP), 8 clients",
             throughput.pop3_fetchmail_8, _RATE),
    Scenario("imap-first-sync-1", "imap first sync, one UID FETCH n (BODY.PEEK[]) at a time, 1 client",
             throughput.imap_first_sync_1, _RATE),
    Scenario("imap-first-sync-8", "imap first sync, one UID FETCH n (BODY.PEEK[]) at a time, 8 clients",
             throughput.imap_first_sync_8, _RATE),
    Scenario("imap-mixed", "imap mixed, 8 clients", throughput.imap_mixed,
             (Metric("ops/s", "ops/s", True), Metric("CPU us/op", "us server CPU", False, ranked=False),
              Metric("store CPU us/op", "us store CPU", False, ranked=False))),
    Scenario("idle-1k", "idle session SELECTed on 1,000 msgs", sessions.idle_memory_medium, _MEMORY,
             needs_pid=True, fresh_server=True, mailboxes=_MEDIUM),
    Scenario("idle-large", "idle session SELECTed on the large INBOX", sessions.idle_memory_large, _MEMORY,
             needs_pid=True, fresh_server=True, mailboxes=_LARGE),
    Scenario("large-select", "large INBOX: SELECT", large.large_select, _MS, mailboxes=_LARGE),
    Scenario("large-fetch-flags", "large INBOX: UID FETCH 1:* (FLAGS)", large.large_fetch_flags, _MS,
             mailboxes=_LARGE),
    Scenario("large-search-unseen", "large INBOX: UID SEARCH UNSEEN", large.large_search_unseen, _MS,
             mailboxes=_LARGE),
    Scenario("large-pop3", "large INBOX: POP3 login+STAT+UIDL", large.large_pop3,
             (Metric("ms", "ms", False), Metric("STAT+UIDL ms", "ms", False)), mailboxes=_LARGE),
    Scenario("large-mixed", "large INBOX: 8 clients with STOREs", large.large_mixed,
             (Metric("ops/s", "ops/s", True),), mailboxes=_LARGE),
    Scenario("imap-fetch-headers", "imap FETCH header set", throughput.imap_fetch_headers, _FETCH),
    Scenario("imap-fetch-bodies", "imap FETCH BODY.PEEK[]", throughput.imap_fetch_bodies, _FETCH),
    Scenario("imap-fetch-compressed", "imap FETCH BODY.PEEK[] under COMPRESS=DEFLATE",
             throughput.imap_fetch_bodies_compressed, _FETCH),
    Scenario("pop3-login-rate", "pop3 login rate", throughput.pop3_login_rate,
             (Metric("logins/s", "logins/s", True),)),
    Scenario("imap-login-rate", "imap login rate", throughput.imap_login_rate,
             (Metric("logins/s", "logins/s", True),)),
    Scenario("lmtp-1", "lmtp delivery, 1 conn", throughput.lmtp_rate_1, _LMTP),
    Scenario("lmtp-4", "lmtp delivery, 4 conns", throughput.lmtp_rate_4, _LMTP),
    Scenario("pop3-poll-storm", "pop3 poll storm", throughput.pop3_poll_storm,
             (Metric("logins/s", "logins/s", True),)),
    Scenario("idle-sessions", "idle imap sessions", sessions.idle_memory, _MEMORY, needs_pid=True,
             fresh_server=True),
    Scenario("idle-push", "IDLE push latency", sessions.idle_push, _PUSH),
    Scenario("cross-node-push", "IDLE push latency, delivered through another node", sessions.idle_push_nodes,
             _PUSH),
    Scenario("big-message", "50 MB message", sessions.big_message,
             (Metric("APPEND peak MB", "MB RSS", False), Metric("FETCH peak MB", "MB RSS", False)),
             needs_pid=True, fresh_server=True),
    Scenario("pop3-pipelined-1", "pop3 UIDL+RETR pipelined, 1 conn", throughput.pop3_download_1, _RATE,
             realistic=False),
    Scenario("pop3-pipelined-8", "pop3 UIDL+RETR pipelined, 8 conns", throughput.pop3_download_8, _RATE,
             realistic=False),
)

KEYS = tuple(scenario.key for scenario in SCENARIOS)


class UnknownScenario(ValueError):
    """A key given to ``choose`` names no scenario; str() lists the keys."""


def choose(keys: list[str]) -> tuple[Scenario, ...]:
    """
    The scenarios ``keys`` name, in the order of SCENARIOS (all if none):
    a key names its scenario, or every scenario whose key starts with it
    and a dash (``pop3-first-download`` is both client counts).
    """
    if not keys:
        return SCENARIOS
    chosen = set()
    for key in keys:
        found = {s.key for s in SCENARIOS if s.key == key or s.key.startswith(key + "-")}
        if not found:
            raise UnknownScenario(f"no scenario {key!r}; the scenarios are: {', '.join(KEYS)}")
        chosen |= found
    return tuple(s for s in SCENARIOS if s.key in chosen)


async def run_scenario(scenario: Scenario, target: Target, settings: Settings) -> Metrics:
    """One run of ``scenario``, bounded by ``settings.cap``."""
    if scenario.needs_pid and target.pid is None:
        raise ValueError("needs the server's process id")
    return await asyncio.wait_for(scenario.run(target, settings), settings.cap)
