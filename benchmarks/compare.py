"""
``python -m benchmarks.compare [--quick] [--only KEYS]``: Dovecot and the
gateway side by side in one run.

Starts both under a temp dir (each in inode groups of its own:
``benchmarks.placement``) on loopback ports picked free, gives them the
same users (same password hashes) and delivers the same seeded corpus to
both over LMTP (and flags the 1,000 and 20,000-message INBOXes alike over
IMAP), then runs every chosen scenario against one and the other in turn,
``--runs`` times (which goes first alternating), and prints the worst
realistic case and a table of the medians with the ratio gateway/Dovecot
(the median of each run's own ratio), realistic scenarios first and the
worst at the top.  A scenario that fails on a server is recorded in the
table with its error.

With ``--against CHECKOUT`` the gateway of another checkout (a ``git
worktree`` of the commit to compare with) takes Dovecot's place, named
``baseline``: both gateways run at the same time on the same machine, every
scenario alternating between them, so that a change is measured against
its parent under the same noise rather than in runs minutes apart.

With ``--backend postgresql`` the gateway keeps its mail in a private
PostgreSQL with bodies in a private SeaweedFS (S3), and a second gateway
node on the same store takes the deliveries of the cross-node push.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import signal
import sys
import tempfile
import time
import warnings
from pathlib import Path

import attrs

from benchmarks import pagecache
from benchmarks.placement import spread_subdirectories
from benchmarks.load import apply_settings, chosen_scenarios, prepare, report, run_scenarios, settings_arguments
from benchmarks.scenarios import Settings, Target, Users
from benchmarks.servers import Dovecot, Gateway, Server, ServerError, is_checkout
from benchmarks.shared_store import SharedStore
from gateway.auth import hash_password

PASSWORD = "bench-password"
INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")


@attrs.frozen
class Plan:
    settings: Settings
    messages: int  # corpus size in each bulk mailbox
    bulk_users: int = 8
    poll_messages: int = 10
    medium_messages: int = 1_000
    large_messages: int = 20_000


FULL = Plan(Settings(), messages=1_000)
QUICK = Plan(Settings(duration=1.0, storm_clients=20, storm_seconds=2.0, idle_sessions=1_000,
                      mailbox_idle_sessions=400, push_sessions=200, push_rounds=2, cap=120.0), messages=200)


def make_users(plan: Plan) -> Users:
    return Users(
        bulk=tuple(f"bulk{i}" for i in range(1, plan.bulk_users + 1)),
        poll=tuple(f"poll{i:03d}" for i in range(1, max(plan.settings.storm_clients, plan.settings.login_clients) + 1)),
        idle="idler", sink="sink", big="big", password=PASSWORD, medium="medium", large="large")


def password_hashes(users: Users) -> dict[str, str]:
    """
    ``{ARGON2ID}`` for everyone, as ``gateway user add`` makes them, except
    the user that opens thousands of idle sessions: its logins are set-up,
    not what is measured, so it gets ``{SHA512-CRYPT}`` (also on both sides).
    One hash per scheme: salts shared between users change no measurement.
    """
    argon2id = hash_password(users.password)
    try:
        import crypt_r as crypt  # Python 3.13+, where the stdlib crypt is gone
    except ImportError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt
    sha512 = "{SHA512-CRYPT}" + crypt.crypt(users.password, crypt.mksalt(crypt.METHOD_SHA512))
    names = [*users.bulk, *users.poll, users.sink, users.big, users.medium, users.large]
    return {**{name: argon2id for name in names}, users.idle: sha512}


def raise_limits(sessions: int) -> list[str]:
    """Room for every session's socket, here and in the servers we start; and
    for Dovecot's one inotify instance per IDLE process (128 by default, after
    which it polls every 30 s and IDLE latency means nothing)."""
    notes = []
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = sessions * 2 + 1_000
    if soft < wanted:
        new_soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
        notes.append(f"open files limit raised from {soft} to {new_soft}")
        if new_soft < wanted:
            notes.append(f"open files hard limit {hard} is below the {wanted} wanted")
    try:
        instances = int(INOTIFY_INSTANCES.read_text())
        if instances < sessions + 200:
            try:
                INOTIFY_INSTANCES.write_text(str(sessions + 200))
                notes.append(f"fs.inotify.max_user_instances raised from {instances} to {sessions + 200}")
            except OSError:
                notes.append(f"fs.inotify.max_user_instances is {instances}: Dovecot IDLE will poll")
    except OSError:
        pass
    return notes


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller corpus, shorter runs, fewer sessions")
    parser.add_argument("--messages", type=int, help="messages in each bulk mailbox (default 1000, quick 200)")
    parser.add_argument("--large-messages", type=int, help="messages in the large INBOX (default 20000)")
    settings_arguments(parser)
    parser.add_argument("--server", choices=["dovecot", "gateway"], help="run against one server only")
    parser.add_argument("--against", type=Path, metavar="CHECKOUT",
                        help="compare with the gateway of another checkout (a git worktree), run side by side,"
                             " instead of with Dovecot")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite",
                        help="the gateway's store: sqlite (default), or postgresql with bodies in S3 (SeaweedFS)"
                             " started for the run, and a second node on it")
    parser.add_argument("--blob-cache", type=int, metavar="MB",
                        help="with --backend postgresql, store.blobs.cache_size of each node (default 2048; 0: every"
                             " body read from S3)")
    parser.add_argument("--parse", choices=["delivery", "first-fetch"],
                        help="the gateway's [store] parse (sqlite): when a message's structure is parsed"
                             " (default: the gateway's own default, delivery)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="the gateway's [server] workers: serving processes per node (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, mail) afterwards")
    args = parser.parse_args(argv)
    scenarios = chosen_scenarios(parser, args)
    if args.against is not None:
        if args.server is not None:
            parser.error("--against compares two gateways: leave out --server")
        if args.backend != "sqlite":
            parser.error("--against runs two gateways, each on a store of its own: --backend sqlite only")
        if not is_checkout(args.against.resolve()):
            parser.error(f"--against {args.against}: not a gateway checkout (no gateway/ and twisted/plugins/)")
    if args.parse is not None and args.backend != "sqlite":
        parser.error("--parse is the sqlite store's: --backend sqlite only")

    plan = QUICK if args.quick else FULL
    settings = apply_settings(plan.settings, args)
    # The real-size INBOXes take a while to deliver: only when asked for.
    wanted = frozenset().union(*(scenario.mailboxes for scenario in scenarios))
    plan = attrs.evolve(plan, settings=settings, messages=args.messages or plan.messages,
                        medium_messages=plan.medium_messages if "medium" in wanted else 0,
                        large_messages=(args.large_messages or plan.large_messages) if "large" in wanted else 0)
    users = make_users(plan)
    # The memory scenarios open a quarter more to warm the server.
    sessions = max(settings.idle_sessions, settings.push_sessions, settings.mailbox_idle_sessions) * 5 // 4 + 1
    for note in raise_limits(sessions):
        log(note)

    # Stop the servers on SIGTERM too (a background job ignores SIGINT).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))
    root = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    root.chmod(0o755)  # Dovecot's mail processes run as "mail" and must reach their mail dir
    if (note := spread_subdirectories(root)) is not None:
        log(note)
    servers: list[Server] = []
    store = SharedStore(args.blob_cache) if args.backend == "postgresql" and args.server != "dovecot" else None
    peer: Gateway | None = None
    try:
        hashes = password_hashes(users)
        store_toml = store.start().toml if store is not None else ""
        if args.parse is not None:
            store_toml = f'[store]\nparse = "{args.parse}"\n'

        if args.against is not None:
            servers.append(Gateway(root / "baseline", hashes, sessions, store_toml, name="baseline",
                                   workers=args.workers, checkout=args.against.resolve()))
        elif args.server != "gateway":
            servers.append(Dovecot(root / "dovecot", hashes, sessions))
        if args.server != "dovecot":
            servers.append(Gateway(root / "gateway", hashes, sessions, store_toml, workers=args.workers))
            if store is not None:
                peer = Gateway(root / "gateway-b", hashes, sessions, store_toml, name="gateway-b",
                               workers=args.workers).start()
        for server in servers:
            server.start()
            started = time.monotonic()
            asyncio.run(prepare("127.0.0.1", server.ports["lmtp"], server.ports["imap"], users, plan.messages,
                                plan.poll_messages, plan.medium_messages, plan.large_messages))
            log(f"{server.name}: pid {server.pid}, ports {server.ports}, "
                f"{plan.messages} messages x {len(users.bulk)} users, {plan.medium_messages} and "
                f"{plan.large_messages} in the medium and large INBOXes, "
                f"delivered in {time.monotonic() - started:.1f}s")
        by_name = {server.name: server for server in servers}

        def target(server: Server) -> Target:
            shared = isinstance(server, Gateway) and peer is not None
            return Target("127.0.0.1", server.ports["pop3"], server.ports["imap"], server.ports["lmtp"],
                          users, pid=server.pid, peer_lmtp=peer.ports["lmtp"] if shared else None,
                          store_pids=store.pids() if shared else ())

        def restart(name: str) -> Target:
            server = by_name[name]
            server.stop()
            return target(server.start())

        def warm_cache(name: str) -> None:
            started = time.monotonic()
            size = pagecache.warm(by_name[name].root)
            if time.monotonic() - started > 1.0:
                log(f"{name}: {size / 1e6:,.0f} MB of files read back into the page cache in "
                    f"{time.monotonic() - started:.1f}s")

        targets = {server.name: target(server) for server in servers}
        outcomes = asyncio.run(run_scenarios(targets, settings, args.runs, scenarios, log, restart, warm_cache))
        backend = f"gateway store: {args.backend}" + (" with bodies in S3 (SeaweedFS)" if store else "")
        if args.parse is not None:
            backend += f"; parsed at {args.parse}"
        if args.workers > 1:
            backend += f"; gateway workers: {args.workers} per node"
        print(f"\nMedians of {args.runs} runs; {backend}; corpus {plan.messages} messages "
              f"(~{plan.messages * 45 // 1000} MB) per bulk user; large INBOX {plan.large_messages:,} messages; "
              f"{settings}\n")
        print(report(outcomes, scenarios, [server.name for server in servers]))
    except ServerError as error:
        log(f"benchmarks: {error}")
        return 1
    finally:
        for server in [*servers, *([peer] if peer else [])]:
            server.stop()
        if store is not None:
            store.stop()
        if args.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
