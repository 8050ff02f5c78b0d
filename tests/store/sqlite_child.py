"""
Another process on an SQLite store, for tests of what several processes on
one store see: ``python -m tests.store.sqlite_child ROOT`` reads one
command a line on stdin and answers one line on stdout.

    lock USER [DEVICE]      "locked" or "in-use" (the lock is kept)
    append BOX N            appends N messages, answers their UIDs
    claim BOX               the UIDs claim_recent took
    seen BOX UID [LAST]     sets \\Seen (on UID to LAST), answers the new modseq
    create USER NAME        creates a mailbox, answers its id
    mark BOX                records a flag change not yet synced (unsynced.py), as a live writer does
    reopen N                opens the store N more times as a serving process (its sweep), closing each
    quit

Without a reactor each write commits at once on this thread.
"""

from __future__ import annotations

import sys

from gateway.store.sqlite.store import SQLiteStore
from gateway.store.sqlite.unsynced import UnsyncedRecord
from tests.deferreds import result_of

MESSAGE = b"From: a@example.org\nTo: b@example.org\nSubject: from another process\n\nhello\n"


def main(root: str) -> None:
    store = SQLiteStore(root)
    held = []
    for line in sys.stdin:
        command, *args = line.split()
        if command == "lock":
            release = result_of(store.lock_maildrop(args[0], args[1] if len(args) > 1 else None))
            held.append(release)
            answer = "locked" if release is not None else "in-use"
        elif command == "append":
            box, count = int(args[0]), int(args[1])
            answer = " ".join(str(result_of(store.append(box, MESSAGE)).uid) for _ in range(count))
        elif command == "claim":
            answer = " ".join(map(str, sorted(result_of(store.claim_recent(int(args[0]))))))
        elif command == "seen":
            uids = range(int(args[1]), int(args[-1]) + 1)
            records = result_of(store.store_flags(int(args[0]), uids, {"\\Seen"}, "add"))
            answer = str(records[-1].modseq)
        elif command == "create":
            answer = str(result_of(store.create_mailbox(args[0], args[1])).id)
        elif command == "mark":
            record = UnsyncedRecord(store.root)
            record.mark([int(args[0])])
            held.append(record)
            answer = "marked"
        elif command == "reopen":
            for _ in range(int(args[0])):
                result_of(SQLiteStore(root, serving=True).close())
            answer = "reopened"
        elif command == "quit":
            break
        else:
            answer = f"unknown command {command}"
        print(answer, flush=True)
    result_of(store.close())


if __name__ == "__main__":
    main(sys.argv[1])
