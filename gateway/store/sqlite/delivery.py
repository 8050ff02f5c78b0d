"""
New messages into the SQLite store: APPEND, delivery and group delivery.
A mixin of L{SQLiteStore}.

A message takes two steps.  First, off the reactor (a worker thread; at once
without threads), its body is written CRLF-normalised to tmp/, fsynced and
parsed: that is where the time of a big or hostile message goes, and no
write waits for it.  Then one write request moves the body to
mail/<id>/<uid> (links it, where several mailboxes share it), inserts the
index row and raises UIDNEXT, in the writer's group transaction; the
directory is fsynced once per group, beside the commit.  The caller is
answered after both.  A store that leaves parsing to the first reader
(``[store] parse = "first-fetch"``, structures.py) skips the parse.

The copies of one LMTP message (``TracedMessage``s sharing their message)
are read and parsed once: each copy's body is its own trace fields on top of
that one spool (copied in the kernel's page cache, not through a parser),
and its structure the shared one with the fields on top.  The one copy of a
message for one recipient (a ``WholeCopy`` whose lines all end in CRLF) is
not written again at all: its spool file is linked into tmp/ and is the body.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterable
from functools import partial
from pathlib import Path

import attrs
from twisted.internet import defer
from twisted.logger import Logger

from gateway.mail import message
from gateway.store.interfaces import StoreFull, TemporaryFailure, UidNotAvailable
from gateway.store.model import Inbox, MessageRecord, MessageStructure
from gateway.store.sqlite.reserve import DiskFull
from gateway.store.encoding import flags_text, structure_columns
from gateway.store.sqlite.synchronous import deferred
from gateway.store.sqlite.requests import store_error
from gateway.store.traced import TracedMessage, WholeCopy

log = Logger()

_CHUNK = 256 * 1024

# A body up to this size is parsed from memory as it is written (or read
# back in one call), not read again in chunks.
PARSED_IN_MEMORY = 1024 * 1024

# Names of the files made in tmp/: the pid (other processes deliver into the
# same tmp/) and a count, where ``mkstemp`` asks the kernel for random bytes
# and tries names in Python for every body.
_names = itertools.count()
_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def _tmp_name() -> str:
    return f"msg.{_pid}.{next(_names)}"


def _new_file(directory: Path) -> tuple[int, Path]:
    """A new empty file in ``directory``, open for writing, and its path."""
    while True:
        path = directory / _tmp_name()
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), path
        except FileExistsError:
            # Left by a process that had the same pid and died.
            continue


def _source_chunks(source) -> Iterable[bytes]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        yield bytes(source)
        return
    while chunk := source.read(_CHUNK):
        yield chunk


# The last second ``_now`` was asked for, and its local time: deliveries ask
# many times a second, and ``astimezone`` looks the zone up each time.
_last_now: tuple[int, datetime.datetime | None] = (-1, None)


def _now() -> datetime.datetime:
    """The local time now, to the second."""
    global _last_now
    second = int(time.time())
    last = _last_now
    if last[0] != second:
        last = _last_now = (second, datetime.datetime.fromtimestamp(second).astimezone())
    return last[1]


@attrs.frozen
class Spooled:
    """
    A body written to tmp/ and fsynced, waiting to be indexed, with its
    structure where it was parsed; ``columns`` is that structure as the
    index stores it, encoded here rather than on the writer thread.
    """

    path: Path
    size: int
    structure: MessageStructure | None = None
    columns: tuple | None = attrs.field(default=attrs.Factory(
        lambda self: None if self.structure is None else structure_columns(self.structure), takes_self=True))


class DeliveryMixin:
    # -- off the reactor ----------------------------------------------------

    def _spool(self, source) -> Spooled:
        """Write the message, CRLF-normalised, to tmp/, fsync it, and parse it where the store parses at delivery."""
        try:
            self._reserve.before_delivery()
        except DiskFull as e:
            raise StoreFull(str(e)) from None
        if isinstance(source, WholeCopy) and source.normalised:
            adopted = self._adopt(source)
            if adopted is not None:
                return adopted
        fd, path = _new_file(self._tmp)
        # What was written, while it is small enough to parse from memory.
        kept: list[bytes] | None = [] if self._parse_at_delivery else None
        size = 0
        with _removed_on_failure(path):
            try:
                for chunk in message.crlf_chunks(_source_chunks(source)):
                    _write_all(fd, chunk)
                    size += len(chunk)
                    if kept is not None and size <= PARSED_IN_MEMORY:
                        kept.append(chunk)
                    else:
                        kept = None
                os.fsync(fd)
            finally:
                os.close(fd)
        if not self._parse_at_delivery:
            return Spooled(path, size)
        if kept is not None:
            return _parsed_from(path, size, b"".join(kept))
        return _parsed(path, size)

    def _adopt(self, source: WholeCopy) -> Spooled | None:
        """
        The file of ``source`` itself as the body: named in tmp/ (a link to
        its open file, as ``linkat`` allows for an O_TMPFILE file), fsynced
        and parsed (where the store parses at delivery), never written
        again.  None where it cannot be named (another file system, a file
        already unlinked, no /proc): then it is copied as any source is.
        """
        fd = source.fileno()
        name = _tmp_name()
        path = self._tmp / name
        try:
            directory = os.open(self._tmp, os.O_RDONLY | os.O_DIRECTORY)
            try:
                # A directory fd makes os.link call linkat(AT_SYMLINK_FOLLOW)
                # rather than link(), which would not follow /proc's link.
                os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=directory)
            finally:
                os.close(directory)
        except OSError:
            return None
        with _removed_on_failure(path):
            os.fsync(fd)
            size = os.fstat(fd).st_size
            if not self._parse_at_delivery:
                return Spooled(path, size)
            if size <= PARSED_IN_MEMORY:
                return _parsed_from(path, size, os.pread(fd, size, 0))
        return _parsed(path, size)

    def _spool_shared(self, message) -> Spooled:
        """The message several copies share, from its start."""
        return self._spool(TracedMessage.from_start(message))

    def _with_fields(self, shared: Spooled, fields: bytes) -> Spooled:
        """One copy's body: its own fields on top of the shared spool, fsynced."""
        fd, path = _new_file(self._tmp)
        with _removed_on_failure(path):
            with os.fdopen(fd, "wb") as f, open(shared.path, "rb") as body:
                f.write(b"".join(message.crlf_chunks([fields])))
                shutil.copyfileobj(body, f, _CHUNK)
                f.flush()
                os.fsync(f.fileno())
                size = f.tell()
        if shared.structure is None:
            return Spooled(path, size)
        return Spooled(path, size, shared.structure.with_fields_on_top(fields))

    def _off_reactor(self, work, *args) -> defer.Deferred:
        """``work(*args)`` on a worker thread (at once without threads), as a Deferred."""
        if self._workers is None:
            return defer.maybeDeferred(work, *args)
        return self._workers.run(work, *args)

    def _remove(self, paths: list[Path]) -> None:
        """
        Remove spooled bodies no mailbox took, off the reactor: removing a
        name is a write to the file system, as slow as the disk is busy.
        """
        removed = self._off_reactor(_remove_all, paths)
        removed.addErrback(lambda failure: log.failure("Cannot remove spooled bodies", failure))

    def _prepare(self, source) -> defer.Deferred:
        """A Deferred firing with the L{Spooled} body of ``source``."""
        return self._off_reactor(self._spool, source)

    # -- in a write request -------------------------------------------------

    def _place(self, step, body: Path, mailbox_id: int, uid: int) -> Path:
        """
        Link ``body`` into the mailbox as ``uid`` (a copy where links do not
        work), undone if the request is rolled back; its directory is
        fsynced before the commit.  Bodies never change, so several names
        may share one.
        """
        directory = self._mailbox_dir(mailbox_id)
        final = directory / str(uid)
        staged = self._tmp / f"place.{_pid}.{mailbox_id}.{uid}"
        staged.unlink(missing_ok=True)
        try:
            os.link(body, staged)
        except FileNotFoundError:
            raise
        except OSError:
            shutil.copyfile(body, staged)
            with open(staged, "rb") as f:
                os.fsync(f.fileno())
        # A file already named ``uid`` was never committed (uid >= UIDNEXT).
        os.replace(staged, final)
        step.on_rollback(lambda: final.unlink(missing_ok=True))
        step.sync_directory(directory)
        return final

    def _take(self, step, body: Path, mailbox_id: int, uid: int) -> None:
        """
        Move ``body``, which no other delivery shares, into the mailbox as
        ``uid``: one rename, where ``_place`` links, replaces and leaves a
        name to remove.  Moved back if the request is rolled back, so that
        it can run again; its directory is fsynced before the commit.
        """
        directory = self._mailbox_dir(mailbox_id)
        final = f"{directory}/{uid}"
        # A file already named ``uid`` was never committed (uid >= UIDNEXT).
        os.rename(body, final)
        step.on_rollback(lambda: os.rename(final, body))
        step.sync_directory(directory)

    def _insert_message(self, mailbox_id, uid, flags, internaldate, size, modseq, columns: tuple | None = None) -> None:
        """
        A message's record, and its structure's ``columns`` where it was
        parsed (``structure_columns``; else it is parsed when asked for).
        """
        offset = internaldate.utcoffset() or datetime.timedelta(0)
        self._db.execute(
            "INSERT INTO messages (mailbox_id, uid, flags, internaldate, tzoffset, size, modseq)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                mailbox_id,
                uid,
                flags_text(flags),
                int(internaldate.timestamp()),
                int(offset.total_seconds() // 60),
                size,
                modseq,
            ),
        )
        if columns is not None:
            self._keep_structure(mailbox_id, uid, columns)
        else:
            # A row left by a message whose record a repair dropped is not its structure.
            self._db.execute("DELETE FROM message_structures WHERE mailbox_id = ? AND uid = ?", (mailbox_id, uid))

    def _index(self, step, spooled: Spooled, mailbox: int | Inbox, flags, internaldate, wanted_uid: int | None,
               take: bool = False):
        """
        Index ``spooled`` as the next message of ``mailbox`` (an id or an
        L{Inbox}); with ``take``, its file is moved there (``_take``).
        """
        mailbox_id, uidnext, modseq = self._counters_of(mailbox)
        if wanted_uid is not None:
            if wanted_uid < uidnext:
                raise UidNotAvailable(f"UID {wanted_uid} is below UIDNEXT {uidnext}")
            uidnext = wanted_uid
        modseq += 1
        if take:
            self._take(step, spooled.path, mailbox_id, uidnext)
        else:
            self._place(step, spooled.path, mailbox_id, uidnext)
        self._insert_message(mailbox_id, uidnext, flags, internaldate, spooled.size, modseq, spooled.columns)
        self._db.execute(
            "UPDATE mailboxes SET uidnext = ?, highestmodseq = ? WHERE id = ?", (uidnext + 1, modseq, mailbox_id)
        )
        step.notify(mailbox_id, modseq)
        return MessageRecord(
            uid=uidnext, flags=frozenset(flags), internaldate=internaldate, size=spooled.size, modseq=modseq
        )

    # -- the contract -------------------------------------------------------

    @deferred
    def append(self, mailbox_id, source, flags=frozenset(), internaldate=None, recent=False):
        return defer.Deferred.fromCoroutine(self._append(mailbox_id, source, flags, internaldate, None, recent))

    async def _append(self, mailbox_id, source, flags, internaldate, wanted_uid: int | None,
                      recent: bool = False) -> MessageRecord:
        if internaldate is None:
            internaldate = _now()
        flags = frozenset(flags)
        spooled = await self._prepare(source)
        index = partial(self._index, spooled=spooled, mailbox=mailbox_id, flags=flags,
                        internaldate=internaldate, wanted_uid=wanted_uid, take=True)
        try:
            if not recent:
                return await self._writer.submit(index)
            # The claim of the session that will report the message, in the
            # same write rather than one more after it.
            record, claimed = await self._writer.submit(lambda step: (index(step), self._claim(mailbox_id)))
        except BaseException:
            # Stored, the file was moved into the mailbox; else it is left here.
            self._remove([spooled.path])
            raise
        if claimed:
            self._keep_claimed(mailbox_id, claimed)
        return record

    def _keep_claimed(self, mailbox_id: int, uids: frozenset[int]) -> None:
        """``uids``, claimed \\Recent here, for this process's next ``claim_recent`` of the mailbox."""
        if len(self._claimed_here) >= 4096:
            # Left by sessions gone before they asked: those messages
            # are \\Recent to nobody, which RFC 3501 2.3.2 allows.
            self._claimed_here.clear()
        self._claimed_here[mailbox_id] = self._claimed_here.get(mailbox_id, frozenset()) | uids

    @deferred
    def append_many(self, deliveries):
        """
        Several appends in one group commit: ``deliveries`` is a list of
        (mailbox, source): ``mailbox`` an id, as ``append`` takes it, or an
        L{Inbox}, looked up by the writer in its transaction rather than on
        the reactor thread before it.  Each distinct source is spooled,
        fsynced and parsed once, however many mailboxes it goes to; the
        writer links it into each and indexes them all in one
        transaction, fsyncing each directory once and the index once;
        nothing is acknowledged before that commit, as DESIGN.md asks.

        @return: Deferred firing with one item per delivery, in order: its
            L{MessageRecord}, or the exception that refused it
            (L{TemporaryFailure}, L{NoSuchMailbox}); one refused delivery
            does not stop the others.
        """
        return defer.Deferred.fromCoroutine(self._append_many(list(deliveries)))

    async def _append_many(self, deliveries) -> list:
        internaldate = _now()
        bodies, spooled = await self._spool_all([source for _, source in deliveries])
        # Bodies moved into a mailbox, not to remove from tmp/.
        taken: set[int] = set()
        try:
            outcomes: list = [None] * len(deliveries)
            uses = Counter(id(body) for body in bodies)
            runs, indexes = [], []
            for index, ((mailbox, _), body) in enumerate(zip(deliveries, bodies)):
                if isinstance(body, Exception):
                    outcomes[index] = body if isinstance(body, TemporaryFailure) else store_error(body)
                    continue
                run = partial(self._index, spooled=body, mailbox=mailbox, flags=frozenset(),
                              internaldate=internaldate, wanted_uid=None, take=uses[id(body)] == 1)
                runs.append((run, True, False))
                indexes.append(index)
            stored = await defer.DeferredList(self._writer.submit_together(runs), consumeErrors=True)
            for index, (ok, value) in zip(indexes, stored):
                outcomes[index] = value if ok else value.value
                if ok and uses[id(bodies[index])] == 1:
                    taken.add(id(bodies[index]))
            return outcomes
        finally:
            left = [body.path for body in spooled if id(body) not in taken]
            if left:
                self._remove(left)

    async def _spool_all(self, sources) -> tuple[list, list[Spooled]]:
        """
        The body of each source (a L{Spooled}, or the exception that stopped
        it), each shared message spooled and parsed once; and every file
        spooled, to remove once they are indexed.
        """
        def shared_by(source):
            return id(source.message) if isinstance(source, TracedMessage) else id(source)

        copies: dict[int, list[int]] = {}
        for index, source in enumerate(sources):
            copies.setdefault(shared_by(source), []).append(index)
        first = {key: sources[indexes[0]] for key, indexes in copies.items()}
        # A source alone is spooled as it reads; a message several copies
        # share is spooled once, then each copy gets its fields on top.
        shared = await defer.DeferredList(
            [
                self._off_reactor(self._spool_shared, source.message)
                if isinstance(source, TracedMessage) and len(copies[key]) > 1
                else self._prepare(source)
                for key, source in first.items()
            ],
            consumeErrors=True,
        )
        spooled: list[Spooled] = []
        bodies: list = [None] * len(sources)
        per_copy, waiting = [], []
        for (key, indexes), (ok, value) in zip(copies.items(), shared):
            body = value if ok else value.value
            if isinstance(body, Spooled):
                spooled.append(body)
            source = first[key]
            if isinstance(body, Spooled) and isinstance(source, TracedMessage) and len(indexes) > 1:
                for index in indexes:
                    per_copy.append(self._off_reactor(self._with_fields, body, sources[index].fields))
                    waiting.append(index)
            else:
                # The same source object more than once: one body, linked
                # into each mailbox.
                for index in indexes:
                    bodies[index] = body
        for index, (ok, value) in zip(waiting, await defer.DeferredList(per_copy, consumeErrors=True)):
            bodies[index] = value if ok else value.value
            if ok:
                spooled.append(value)
        return bodies, spooled


@contextlib.contextmanager
def _removed_on_failure(path: Path):
    """A body file half made is removed; a file system's error is the store's error."""
    try:
        yield
    except OSError as e:
        path.unlink(missing_ok=True)
        raise store_error(e) from e
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _remove_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _parsed(path: Path, size: int) -> Spooled:
    """The durable body at ``path`` with its structure; the file is removed if it cannot be read."""
    with _removed_on_failure(path):
        with open(path, "rb") as f:
            structure = message.parse(f)
    return Spooled(path, size, structure)


def _parsed_from(path: Path, size: int, data: bytes) -> Spooled:
    """The durable body at ``path``, whose bytes are ``data``, with its structure."""
    with _removed_on_failure(path):
        structure = message.parse_bytes(data)
    return Spooled(path, size, structure)


def _write_all(fd: int, data: bytes) -> None:
    """All of ``data`` to ``fd``, however little each write takes."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
