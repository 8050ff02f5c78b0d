"""
Several processes writing one SQLite store at once, as a node's workers do:
each process times its own writes (flag changes, each its own FULL commit,
or appends).  ``--without-lock`` leaves out the cross-process write lock
(store/sqlite/writelock.py), so SQLite's sleeping busy handler alone
arbitrates: the figures before and after.

    .venv/bin/python -m benchmarks.sqlite_contention [--processes 2] [--writes 300] [--append] [--without-lock]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

MESSAGE = b"From: a@example.org\r\nSubject: contention\r\n\r\nhello\r\n"


def _writer(root: str, mailbox_id: int, writes: int, append: bool, without_lock: bool, start, results) -> None:
    from gateway.store.sqlite.store import SQLiteStore
    from gateway.store.sqlite.writelock import WriteLock
    from tests.deferreds import result_of

    if without_lock:
        WriteLock.acquire = WriteLock.release = lambda self: None
    store = SQLiteStore(root)
    uid = result_of(store.append(mailbox_id, MESSAGE)).uid
    start.wait()
    latencies = []
    for n in range(writes):
        began = time.perf_counter()
        if append:
            result_of(store.append(mailbox_id, MESSAGE))
        else:
            result_of(store.store_flags(mailbox_id, [uid], {"\\Flagged"}, "add" if n % 2 == 0 else "remove"))
        latencies.append(time.perf_counter() - began)
    result_of(store.close())
    results.put(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--append", action="store_true", help="appends rather than flag changes")
    parser.add_argument("--without-lock", action="store_true")
    args = parser.parse_args()
    from gateway.store.sqlite.store import SQLiteStore
    from tests.deferreds import result_of

    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as directory:
        root = str(Path(directory) / "store")
        store = SQLiteStore(root)
        result_of(store.ensure_user("alice"))
        mailbox_id = result_of(store.get_mailbox("alice", "INBOX")).id
        result_of(store.close())
        start, results = context.Event(), context.Queue()
        workers = [
            context.Process(target=_writer, args=(root, mailbox_id, args.writes, args.append, args.without_lock,
                                                  start, results))
            for _ in range(args.processes)
        ]
        for worker in workers:
            worker.start()
        time.sleep(2)  # every process has opened the store
        began = time.perf_counter()
        start.set()
        latencies = [value for _ in workers for value in results.get(timeout=600)]
        elapsed = time.perf_counter() - began
        for worker in workers:
            worker.join(60)
    latencies.sort()
    print(f"{'without' if args.without_lock else 'with'} the write lock, {args.processes} processes,"
          f" {len(latencies)} {'appends' if args.append else 'flag changes'}: {len(latencies) / elapsed:.0f}/s,"
          f" p50 {statistics.median(latencies) * 1000:.2f} ms, p99 {latencies[int(len(latencies) * 0.99)] * 1000:.2f} ms,"
          f" max {latencies[-1] * 1000:.1f} ms")


if __name__ == "__main__":
    main()
