"""
``python -m benchmarks.load``: drive one running POP3/IMAP/LMTP server, any
server, with the scenarios and print the medians.

    python -m benchmarks.load --pop3 1110 --imap 1143 --lmtp 2424 \\
        --password secret --populate 1000 --scenario "imap FETCH header set"

The users must exist with one password: bulk1..bulk8 (the corpus),
poll001.. (small mailboxes, one per poll-storm client), idler, sink and big
(see ``--help`` to rename them).  ``--populate N`` delivers the corpus over
LMTP first.  The memory scenarios need ``--pid`` (the server's process; its
children are counted too).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable

import attrs

from benchmarks import corpus
from benchmarks.report import Outcomes, table
from benchmarks.scenarios import SCENARIOS, Settings, Target, Users, run_scenario
from benchmarks.wire import Lmtp, dot_stuffed


async def populate(host: str, lmtp_port: int, users: Users, messages: int, poll_messages: int = 10) -> None:
    """Deliver ``messages`` of the corpus to every bulk user, and a few small
    messages to each poll user and the idle user, over LMTP (4 connections,
    one transaction per message for all its recipients)."""
    jobs = [([*users.bulk], message) for message in corpus.corpus(messages)]
    small_users = [*users.poll, users.idle]
    # RFC 5321 4.5.3.1.8: a server need take no more than 100 recipients at once.
    jobs += [(small_users[start:start + 100], message)
             for message in corpus.corpus(poll_messages, seed=3) if len(message) < 20_000
             for start in range(0, len(small_users), 100)]
    pending = iter(jobs)

    async def worker() -> None:
        lmtp = await Lmtp.open(host, lmtp_port)
        for recipients, message in pending:
            await lmtp.deliver(recipients, dot_stuffed(message))
        await lmtp.quit()

    await asyncio.gather(*(worker() for _ in range(4)))


async def run_scenarios(targets: dict[str, Target], settings: Settings, runs: int, names: list[str],
                        log=lambda text: print(text, file=sys.stderr, flush=True),
                        restart: Callable[[str], Target] | None = None) -> Outcomes:
    """
    Every chosen scenario against each target in turn, ``runs`` times;
    failures are recorded, never raised.  ``restart(name)``, if given,
    restarts that server before a scenario that wants a fresh one and
    returns its new Target.
    """
    outcomes = Outcomes()
    scenarios = [scenario for scenario in SCENARIOS if not names or scenario.name in names]
    for run in range(1, runs + 1):
        for scenario in scenarios:
            for name in targets:
                started, cpu = time.monotonic(), time.process_time()
                try:
                    if scenario.fresh_server and restart is not None:
                        targets[name] = await asyncio.to_thread(restart, name)
                    metrics = await run_scenario(scenario, targets[name], settings)
                except Exception as error:
                    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
                    outcomes.fail(scenario.name, name, text)
                    log(f"run {run} {scenario.name} {name}: FAILED {text}")
                else:
                    outcomes.add(scenario.name, name, metrics)
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
    parser.add_argument("--push-sessions", type=int, help="sessions idling for the push latency (default 1000)")
    parser.add_argument("--scenario", action="append", default=[], choices=[s.name for s in SCENARIOS],
                        help="run only this scenario (repeatable)")


def apply_settings(settings: Settings, args: argparse.Namespace) -> Settings:
    chosen = {field: getattr(args, field) for field in
              ("duration", "storm_clients", "storm_seconds", "idle_sessions", "push_sessions")
              if getattr(args, field) is not None}
    return attrs.evolve(settings, **chosen)


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
    parser.add_argument("--pid", type=int, help="server process id, for the memory scenarios")
    parser.add_argument("--populate", type=int, metavar="N", help="first deliver N corpus messages over LMTP")
    settings_arguments(parser)
    args = parser.parse_args(argv)

    users = Users(bulk=tuple(args.bulk_users.split(",")), poll=tuple(args.poll_users.split(",")),
                  idle=args.idle_user, sink=args.sink_user, big=args.big_user, password=args.password)
    target = Target(args.host, args.pop3, args.imap, args.lmtp, users, pid=args.pid)
    settings = apply_settings(Settings(), args)
    if args.populate:
        asyncio.run(populate(args.host, args.lmtp, users, args.populate))
    outcomes = asyncio.run(run_scenarios({"server": target}, settings, args.runs, args.scenario))
    scenarios = tuple(s for s in SCENARIOS if not args.scenario or s.name in args.scenario)
    print(f"\nMedians of {args.runs} runs; {settings}\n")
    print(table(outcomes, scenarios, ["server"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
