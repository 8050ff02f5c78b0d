"""
What one write request is, as the SQLite store's writer runs it: the
``Step`` a request's code is given (what to undo if the group rolls back,
what to do once it commits, which directories to fsync and what to announce)
and the contract's errors for what went wrong.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import attrs
from twisted.internet import defer
from twisted.logger import Logger

from gateway.store.interfaces import StoreError, StoreFull, TemporaryFailure

log = Logger()


def store_error(error: BaseException) -> TemporaryFailure:
    """The contract's error for a backend failure: StoreFull or TemporaryFailure."""
    if isinstance(error, TemporaryFailure):
        return error
    if isinstance(error, OSError):
        text = os.strerror(error.errno) if error.errno else str(error)
        full = error.errno in (errno.ENOSPC, errno.EDQUOT)
    else:
        text = str(error)
        # The index's "database or disk is full".
        full = getattr(error, "sqlite_errorname", None) == "SQLITE_FULL"
    failure = (StoreFull if full else TemporaryFailure)(f"cannot write to the store: {text}")
    failure.__cause__ = error
    return failure


def refusal(error: BaseException) -> bool:
    """A request said no (the contract's own errors): only it is undone."""
    return (isinstance(error, StoreError) and not isinstance(error, TemporaryFailure)) or isinstance(
        error, ValueError
    )


class Step:
    """
    What a request asks of the group it runs in, from the writer thread:
    how to undo its file changes if rolled back, what to do once committed,
    which directories to fsync before the commit, what to announce.
    """

    def __init__(self, db: sqlite3.Connection):
        self.db = db
        self.undo: list[Callable[[], object]] = []
        self.committed: list[Callable[[], object]] = []
        self.directories: set[Path] = set()
        # Small durable writes that need not wait for the commit nor it for
        # them, by what they write: run beside the COMMIT, as the
        # directory fsyncs are, before any after_commit action.
        self.beside: dict[object, Callable[[], object]] = {}
        self.notices: dict[int, int] = {}
        # Users whose list of mailboxes changed.
        self.users: set[str] = set()

    def on_rollback(self, action: Callable[[], object]) -> None:
        self.undo.append(action)

    def after_commit(self, action: Callable[[], object]) -> None:
        self.committed.append(action)

    def sync_directory(self, path: Path) -> None:
        """An entry was added to ``path``: fsync it once, before the commit."""
        self.directories.add(path)

    def beside_commit(self, key, action: Callable[[], object]) -> None:
        """
        Run ``action`` (which makes something durable) beside the COMMIT:
        once per ``key`` a group, the last one given; a failure fails the
        group as a directory fsync's does.  It runs whether or not the
        COMMIT succeeds, so it must be harmless without it.
        """
        self.beside[key] = action

    def notify(self, mailbox_id: int, highestmodseq: int) -> None:
        self.notices[mailbox_id] = max(highestmodseq, self.notices.get(mailbox_id, 0))

    def notify_mailboxes(self, user: str) -> None:
        self.users.add(user)

    def roll_back(self) -> None:
        for action in reversed(self.undo):
            try:
                action()
            except OSError:
                log.failure("Undoing a rolled-back store write")
        self.undo.clear()
        self.committed.clear()
        self.directories.clear()
        self.beside.clear()
        self.notices.clear()
        self.users.clear()


@attrs.define(eq=False)
class Request:
    run: Callable[[Step], object]
    durable: bool
    frees_space: bool
    deferred: defer.Deferred = attrs.field(factory=defer.Deferred)
    step: Step | None = None
    # The result, or a Failure.
    outcome: object = None
