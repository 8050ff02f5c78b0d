"""
``python -m benchmarks.load``: drive one running POP3/IMAP/LMTP server, any
server, with the scenarios and print the medians.

    python -m benchmarks.load --pop3 1110 --imap 1143 --lmtp 2424 \\
        --password secret --populate 1000 --only imap-fetch-headers,large

The users must exist with one password: bulk1..bulk8 (the corpus),
poll001.. (small mailboxes, one per poll-storm client), idler, sink, big,
medium and large (see ``--help`` to rename them).  ``--populate N``
delivers the corpus over LMTP first, and the 1,000 and 20,000-message
INBOXes of medium and large, flagged as a reader leaves them.  The memory
scenarios need ``--pid`` (the server's process; its children are counted
too).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable

import attrs

from benchmarks import corpus
from benchmarks.report import Outcomes, table, worst_realistic
from benchmarks.scenarios import Scenario, Settings, Target, UnknownScenario, Users, choose, run_scenario
from benchmarks.wire import Imap, Lmtp, dot_stuffed

# Sequence numbers per STORE command: a line well under any server's limit.
_STORE_BATCH = 800


async def populate(host: str, lmtp_port: int, users: Users, messages: int, poll_messages: int = 10,
                   medium_messages: int = 0, large_messages: int = 0) -> None:
    """Deliver ``messages`` of the corpus to every bulk user, a few small
    messages to each poll user and the idle user, and small text messages
    to the medium and large users, over LMTP (4 connections, one
    transaction per message for all its recipients)."""
    jobs = [([*users.bulk], message) for message in corpus.corpus(messages)]
    small_users = [*users.poll, users.idle]
    # RFC 5321 4.5.3.1.8: a server need take no more than 100 recipients at once.
    jobs += [(small_users[start:start + 100], message)
             for message in corpus.corpus(poll_messages, seed=3) if len(message) < 20_000
             for start in range(0, len(small_users), 100)]
    jobs += [([users.large] * (index < large_messages) + [users.medium] * (index < medium_messages),
              corpus.small_message(index, seed=7)) for index in range(max(medium_messages, large_messages))]
    pending = iter(jobs)

    async def worker() -> None:
        lmtp = await Lmtp.open(host, lmtp_port)
        for recipients, message in pending:
            await lmtp.deliver(recipients, dot_stuffed(message))
        await lmtp.quit()

    await asyncio.gather(*(worker() for _ in range(4)))


async def read_like_a_person(host: str, imap_port: int, user: str, password: str, count: int) -> None:
    """Set the flags of ``corpus.reading_flags`` on the INBOX of ``user``."""
    imap = await Imap.login(host, imap_port, user, password)
    try:
        await imap.command(b"SELECT INBOX")
        for flag, numbers in corpus.reading_flags(count):
            for start in range(0, len(numbers), _STORE_BATCH):
                batch = b",".join(b"%d" % n for n in numbers[start:start + _STORE_BATCH])
                await imap.command(b"STORE " + batch + b" +FLAGS.SILENT (" + flag.encode() + b")")
    finally:
        await imap.logout()


async def prepare(host: str, lmtp_port: int, imap_port: int, users: Users, messages: int,
                  poll_messages: int = 10, medium_messages: int = 0, large_messages: int = 0) -> None:
    """``populate``, then the medium and large INBOXes read like a person's."""
    await populate(host, lmtp_port, users, messages, poll_messages, medium_messages, large_messages)
    for user, count in ((users.medium, medium_messages), (users.large, large_messages)):
        if count:
            await read_like_a_person(host, imap_port, user, users.password, count)


async def run_scenarios(targets: dict[str, Target], settings: Settings, runs: int,
                        scenarios: tuple[Scenario, ...],
                        log=lambda text: print(text, file=sys.stderr, flush=True),
                        restart: Callable[[str], Target] | None = None,
                        prepare_server: Callable[[str], None] | None = None) -> Outcomes:
    """
    Every scenario of ``scenarios`` against each target in turn, ``runs``
    times, the targets in the other order each run; failures are
    recorded, never raised.  ``restart(name)``, if
    given, restarts that server before a scenario that wants a fresh one
    and returns its new Target; ``prepare_server(name)``, if given, runs
    before every scenario of that server, outside the timed window.
    """
    outcomes = Outcomes()
    for run in range(1, runs + 1):
        # Each run the other server goes first, so that neither is always
        # measured on the machine the other has just warmed, or heated.
        names = list(targets) if run % 2 else list(reversed(targets))
        for scenario in scenarios:
            for name in names:
                try:
                    if scenario.fresh_server and restart is not None:
                        targets[name] = await asyncio.to_thread(restart, name)
                    if prepare_server is not None:
                        await asyncio.to_thread(prepare_server, name)
                    started, cpu = time.monotonic(), time.process_time()
                    metrics = await run_scenario(scenario, targets[name], settings)
                except Exception as error:
                    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
                    outcomes.fail(scenario.key, name, text)
                    log(f"run {run} {scenario.name} {name}: FAILED {text}")
                else:
                    outcomes.add(scenario.key, name, metrics, run)
                    shown = ", ".join(f"{metric} {value:,.2f}" for metric, value in metrics.items())
                    # Our own CPU share: near 100% would mean the client, not the server, set the pace.
                    elapsed = time.monotonic() - started
                    log(f"run {run} {scenario.name} {name}: {shown} ({elapsed:.1f}s, "
                        f"client CPU {100 * (time.process_time() - cpu) / elapsed:.0f}%)")
                # Let the server finish with closed sessions (Dovecot reaps a process for each).
                await asyncio.sleep(0.5)
    return outcomes


def settings_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int, default=3, help="runs of every scenario (default 3)")
    parser.add_argument("--duration", type=float, help="seconds per throughput measurement (default 3)")
    parser.add_argument("--storm-clients", type=int, help="POP3 poll storm clients (default 100)")
    parser.add_argument("--storm-seconds", type=float, help="POP3 poll storm length (default 10)")
    parser.add_argument("--idle-sessions", type=int, help="idle IMAP sessions (default 2000; target 10000)")
    parser.add_argument("--mailbox-idle-sessions", type=int,
                        help="sessions SELECTed on the 1,000 and 20,000-message INBOXes (default 1000)")
    parser.add_argument("--push-sessions", type=int, help="sessions idling for the push latency (default 1000)")
    parser.add_argument("--only", action="append", default=[], metavar="KEYS",
                        help="run only these scenarios: keys, comma-separated (repeatable); a key's prefix "
                             "before a dash names them all (pop3-first-download, large)")


def apply_settings(settings: Settings, args: argparse.Namespace) -> Settings:
    chosen = {field: getattr(args, field) for field in
              ("duration", "storm_clients", "storm_seconds", "idle_sessions", "mailbox_idle_sessions",
               "push_sessions")
              if getattr(args, field) is not None}
    return attrs.evolve(settings, **chosen)


def chosen_scenarios(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[Scenario, ...]:
    """The scenarios ``--only`` names (all without it); a usage error for an unknown key."""
    try:
        return choose([key.strip() for keys in args.only for key in keys.split(",") if key.strip()])
    except UnknownScenario as error:
        parser.error(str(error))


def report(outcomes: Outcomes, scenarios: tuple[Scenario, ...], servers: list[str]) -> str:
    """The worst realistic case (with two servers), then the table."""
    worst = worst_realistic(outcomes, scenarios, servers)
    return (worst + "\n\n" if worst else "") + table(outcomes, scenarios, servers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--pop3", type=int, required=True, help="POP3 port")
    parser.add_argument("--imap", type=int, required=True, help="IMAP port")
    parser.add_argument("--lmtp", type=int, required=True, help="LMTP port")
    parser.add_argument("--password", required=True, help="every user's password")
    parser.add_argument("--bulk-users", default=",".join(f"bulk{i}" for i in range(1, 9)))
    parser.add_argument("--poll-users", default=",".join(f"poll{i:03d}" for i in range(1, 101)))
    parser.add_argument("--idle-user", default="idler")
    parser.add_argument("--sink-user", default="sink")
    parser.add_argument("--big-user", default="big")
    parser.add_argument("--medium-user", default="medium")
    parser.add_argument("--large-user", default="large")
    parser.add_argument("--pid", type=int, help="server process id, for the memory scenarios")
    parser.add_argument("--populate", type=int, metavar="N",
                        help="first deliver N corpus messages over LMTP, and the medium and large INBOXes")
    parser.add_argument("--medium-messages", type=int, default=1_000, help="medium INBOX size (default 1000)")
    parser.add_argument("--large-messages", type=int, default=20_000, help="large INBOX size (default 20000)")
    settings_arguments(parser)
    args = parser.parse_args(argv)
    scenarios = chosen_scenarios(parser, args)

    users = Users(bulk=tuple(args.bulk_users.split(",")), poll=tuple(args.poll_users.split(",")),
                  idle=args.idle_user, sink=args.sink_user, big=args.big_user, password=args.password,
                  medium=args.medium_user, large=args.large_user)
    target = Target(args.host, args.pop3, args.imap, args.lmtp, users, pid=args.pid)
    settings = apply_settings(Settings(), args)
    if args.populate:
        asyncio.run(prepare(args.host, args.lmtp, args.imap, users, args.populate,
                            medium_messages=args.medium_messages, large_messages=args.large_messages))
    outcomes = asyncio.run(run_scenarios({"server": target}, settings, args.runs, scenarios))
    print(f"\nMedians of {args.runs} runs; {settings}\n")
    print(report(outcomes, scenarios, ["server"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
