"""
Local delivery: one message into one user's mailbox.

``deliver`` is shared by the LMTP listener and the ``gateway deliver`` MDA;
``deliver_main`` is the MDA itself, speaking the sysexits codes an MTA
understands (Postfix ``mailbox_command``, Exim ``pipe`` transport, procmail).
``GroupCommit`` is ``deliver`` for the LMTP listener: what its sessions
deliver in one reactor turn shares one index commit.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from twisted.internet import defer
from twisted.python.failure import Failure

from gateway.store.interfaces import (
    IGroupCommitStore,
    InvalidMailboxName,
    NoSuchMailbox,
    TemporaryFailure,
)

# sysexits.h
EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOUSER = 67
EX_TEMPFAIL = 75

# Messages up to this size stay in memory while spooling; bigger ones go to a
# temporary file, so memory stays flat whatever the message size.
_SPOOL_IN_MEMORY = 1024 * 1024
_CHUNK = 256 * 1024
# An mbox postmark ("From sender date") is one short line; anything longer
# than this is not one and is kept as message data.
_POSTMARK_MAX = 8192


async def deliver(store, user: str, source, mailbox: str = "INBOX"):
    """
    Store ``source`` (bytes or a binary file at the message start) in the
    user's ``mailbox``, creating the user's mailboxes on first delivery.

    A mailbox that does not exist (or whose name the store refuses) means
    INBOX, as Dovecot's LDA does without ``lda_mailbox_autocreate``: a typo in
    a sieve or a ``+detail`` must never bounce mail.

    @return: the L{MessageRecord} of the stored message; fails with
        L{TemporaryFailure} when the store cannot take it now.
    """
    info = await _mailbox_for(store, user, mailbox)
    return await store.append(info.id, source)


async def _mailbox_for(store, user: str, mailbox: str):
    await store.ensure_user(user)
    try:
        return await store.get_mailbox(user, mailbox)
    except (NoSuchMailbox, InvalidMailboxName):
        return await store.get_mailbox(user, "INBOX")


class GroupCommit:
    """
    ``deliver`` for the LMTP listener, with group commit: the deliveries
    asked for in one reactor turn, by one session (all recipients of a
    message) or several, go to the store in one ``append_many`` call.  Each
    body is still fsynced on its own, but they share one index commit (one
    WAL fsync) and one fsync per mailbox directory, and none is answered
    before that commit (DESIGN.md, durability).

    A store that does not provide ``IGroupCommitStore`` gets one ``append``
    per delivery, at once; ``batching`` says which, since only batched deliveries may be
    started together (their sources are read one after the other).
    """

    def __init__(self, store, reactor):
        self._store = store
        self._reactor = reactor
        self.batching = IGroupCommitStore.providedBy(store)
        self._pending: list[tuple[int, object, defer.Deferred]] = []
        self._flush_call = None

    async def deliver(self, user: str, source, mailbox: str = "INBOX"):
        """As ``deliver``: the stored message's L{MessageRecord}."""
        if not self.batching:
            return await deliver(self._store, user, source, mailbox)
        info = await _mailbox_for(self._store, user, mailbox)
        stored = defer.Deferred()
        self._pending.append((info.id, source, stored))
        if self._flush_call is None:
            # After every session's input of this reactor turn is handled.
            self._flush_call = self._reactor.callLater(0, self._flush)
        return await stored

    def _flush(self) -> None:
        self._flush_call = None
        batch, self._pending = self._pending, []

        def answer(outcomes):
            for (_, _, stored), outcome in zip(batch, outcomes):
                if isinstance(outcome, BaseException):
                    stored.errback(Failure(outcome))
                else:
                    stored.callback(outcome)

        def fail(failure):
            for _, _, stored in batch:
                stored.errback(failure)

        appended = defer.maybeDeferred(self._store.append_many, [(box, source) for box, source, _ in batch])
        appended.addCallbacks(answer, fail)


def spool_stdin(stdin_binary):
    """
    Copy the message from ``stdin_binary`` to a rewound temporary file.

    A leading mbox postmark line (``From sender date``), which procmail-style
    and Exim ``pipe`` transports put before the message, is dropped: it is an
    envelope line, not part of the RFC 5322 message.  Line endings are left as
    they are (LF or CRLF); the store normalises them to CRLF.
    """
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)
    first = stdin_binary.readline(_POSTMARK_MAX)
    if first.startswith(b"From ") and first.endswith(b"\n"):
        first = b""
    spool.write(first)
    shutil.copyfileobj(stdin_binary, spool, _CHUNK)
    spool.seek(0)
    return spool


def _result(deferred):
    """
    The outcome of an already-fired Deferred: its result, or its failure
    raised.  The SQLite store fires every Deferred before returning it, so the
    MDA needs no reactor.
    """
    outcome = []
    deferred.addBoth(outcome.append)
    if not outcome:
        raise RuntimeError("the store answered asynchronously; gateway deliver needs a synchronous store")
    if isinstance(outcome[0], defer.Failure):
        outcome[0].raiseException()
    return outcome[0]


def deliver_main(data_dir, user: str, mailbox: str, stdin_binary, stderr) -> int:
    """
    The ``gateway --data DIR deliver USER [--mailbox BOX]`` MDA.

    Reads one message from ``stdin_binary`` and stores it for ``user``.
    Returns a sysexits code and writes at most one line to ``stderr``:
    0 delivered, 64 bad arguments, 65 empty message, 67 not a user of the
    users file, 75 temporary failure (the MTA keeps the message and retries).
    Every unexpected error is a temporary failure too: an MDA must never make
    the MTA drop a message it could deliver later.
    """
    # Imported here, not at the top: the LMTP listener imports this module,
    # and protocol modules stay free of any one backend and of the users
    # file (DESIGN.md).
    from gateway.auth import UsersFile
    from gateway.store.sqlite import SQLiteStore

    def fail(code: int, text: str) -> int:
        stderr.write(f"gateway deliver: {text}\n")
        stderr.flush()
        return code

    if not user or not mailbox:
        return fail(EX_USAGE, "usage: gateway --data DIR deliver USER [--mailbox MAILBOX]")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        # A wrong path in the MTA's config must not bounce mail as "no such
        # user": keep it queued until the path is fixed.
        return fail(EX_TEMPFAIL, f"data dir {data_dir} does not exist")
    try:
        known = user in UsersFile(data_dir / "users")
    except Exception as e:
        # UsersFileError names the file and line itself.
        return fail(EX_TEMPFAIL, f"users file: {_describe(e)}")
    if not known:
        return fail(EX_NOUSER, f"unknown user {user!r}")

    try:
        spool = spool_stdin(stdin_binary)
    except OSError as e:
        return fail(EX_TEMPFAIL, f"cannot read the message: {_describe(e)}")
    with spool:
        spool.seek(0, os.SEEK_END)
        if spool.tell() == 0:
            return fail(EX_DATAERR, "empty message on standard input")
        spool.seek(0)
        try:
            store = SQLiteStore(data_dir / "store")
        except Exception as e:
            return fail(EX_TEMPFAIL, f"cannot open the store: {_describe(e)}")
        try:
            _result(defer.Deferred.fromCoroutine(deliver(store, user, spool, mailbox)))
        except TemporaryFailure as e:
            return fail(EX_TEMPFAIL, f"temporary failure: {e}")
        except Exception as e:
            return fail(EX_TEMPFAIL, f"temporary failure: {_describe(e)}")
        finally:
            store.close()
    return EX_OK


def _describe(error: Exception) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__
