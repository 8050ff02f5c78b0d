"""
Message structures (ENVELOPE, BODY and BODYSTRUCTURE, the header, the part
tree) parsed from a body the first time a reader asks for them, and kept in
the index from then on.  A mixin of L{SQLiteStore}.

A message has none until then where the store was told not to parse at
delivery (``[store] parse = "first-fetch"``: parsing takes nearly a third
of an LMTP delivery's CPU, for mail that a POP3 user downloads and deletes,
and Dovecot too fills its cache when a client first fetches a field), and
after the index was rebuilt from the files.  A reader that finds structures
missing has them parsed off the reactor, on threads of their own (a hostile
message costs its own reader, not everyone, and no delivery waits behind
it), and answers from what was parsed; a write request keeps them
meanwhile.  That write is of the batched tier (not fsynced): a structure is
derived from the body, and a crash loses at most a parse to do again.

Readers in one process asking for the same message at once (every session
IDLE on a mailbox fetches the new message's ENVELOPE) wait for one parse.
"""

from __future__ import annotations

import os
from functools import partial

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.mail import message
from gateway.store.encoding import structure_columns
from gateway.store.sqlite.delivery import PARSED_IN_MEMORY

log = Logger()

# Messages parsed by one job, and kept by one write request: a job takes a
# few milliseconds, so that deliveries queued behind it on the spool
# threads do not wait long, and a big FETCH is spread over the threads.
PARSE_BATCH = 16


class StructuresMixin:
    def _keep_structure(self, mailbox_id: int, uid: int, columns) -> None:
        """In a write request: the structure of the message just indexed as ``uid``."""
        self._db.execute(
            "INSERT OR REPLACE INTO message_structures (mailbox_id, uid, envelope, body, bodystructure, header, parts)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (mailbox_id, uid, *columns),
        )

    def _structures_parsed(self, mailbox_id: int, uids) -> defer.Deferred:
        """
        A Deferred firing with {UID: structure columns} of each of ``uids``
        whose body is there (one expunged meanwhile has none), once parsed;
        they are kept in the index soon after.
        """
        waits = []
        fresh = []
        for uid in dict.fromkeys(uids):
            pending = self._parsing.get((mailbox_id, uid))
            if pending is None:
                fresh.append(uid)
            elif pending not in waits:
                waits.append(pending)
        for start in range(0, len(fresh), PARSE_BATCH):
            batch = fresh[start:start + PARSE_BATCH]
            pending = _Waiters()
            for uid in batch:
                self._parsing[mailbox_id, uid] = pending
            parsed = self._parse_off_reactor(mailbox_id, batch)
            parsed.addBoth(partial(self._keep_parsed, mailbox_id, batch, pending))
            waits.append(pending)
        return defer.gatherResults([pending.wait() for pending in waits], consumeErrors=True).addCallbacks(
            _merged, lambda failure: failure.value.subFailure
        )

    def _parse_off_reactor(self, mailbox_id: int, uids) -> defer.Deferred:
        """``_parse_bodies`` on a parser thread (at once without threads), as a Deferred."""
        if self._parsers is None:
            return defer.maybeDeferred(self._parse_bodies, mailbox_id, uids)
        return self._parsers.run(self._parse_bodies, mailbox_id, uids)

    def _keep_parsed(self, mailbox_id: int, uids, pending: _Waiters, parsed) -> None:
        """
        Answer the readers waiting for ``parsed`` at once, and keep it with
        a write request; readers in this process find it here until that
        is committed.  A write that fails (a full index) costs a parse
        again later, not an answer.
        """
        pending.fire(parsed)

        def forget(outcome):
            for uid in uids:
                del self._parsing[mailbox_id, uid]
            return outcome

        if isinstance(parsed, Failure) or not parsed:
            forget(None)
            return
        kept = self._writer.submit(partial(self._insert_parsed, mailbox_id, parsed), durable=False)
        kept.addBoth(forget).addErrback(lambda failure: log.failure("Cannot keep parsed structures", failure))

    def _parse_bodies(self, mailbox_id: int, uids) -> dict[int, tuple]:
        """Off the reactor: {UID: structure columns} of each of ``uids`` whose body is there."""
        parsed = {}
        directory = f"{self._mail_path}/{mailbox_id}"
        for uid in uids:
            try:
                with open(f"{directory}/{uid}", "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    structure = message.parse_bytes(f.read()) if size <= PARSED_IN_MEMORY else message.parse(f)
            except FileNotFoundError:
                continue
            parsed[uid] = structure_columns(structure)
        return parsed

    def _insert_parsed(self, mailbox_id: int, parsed: dict[int, tuple], step) -> None:
        # Not for a message expunged since it was parsed; kept already by
        # another process that parsed it too, it is the same structure.
        self._db.executemany(
            "INSERT OR IGNORE INTO message_structures (mailbox_id, uid, envelope, body, bodystructure, header, parts)"
            " SELECT ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM messages WHERE mailbox_id = ? AND uid = ?)",
            [(mailbox_id, uid, *columns, mailbox_id, uid) for uid, columns in parsed.items()],
        )


def _merged(batches: list[dict]) -> dict:
    merged = {}
    for parsed in batches:
        merged.update(parsed)
    return merged


class _Waiters:
    """The readers of one batch's parse: each gets a Deferred of its own, before or after it is done."""

    def __init__(self):
        self._waiting: list[defer.Deferred] = []
        self._outcome = None
        self._done = False

    def wait(self) -> defer.Deferred:
        if self._done:
            return defer.fail(self._outcome) if isinstance(self._outcome, Failure) else defer.succeed(self._outcome)
        waiter = defer.Deferred()
        self._waiting.append(waiter)
        return waiter

    def fire(self, outcome) -> None:
        self._outcome, self._done = outcome, True
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            if isinstance(outcome, Failure):
                waiter.errback(outcome)
            else:
                waiter.callback(outcome)
