"""
A node's local copy of the bodies it read or stored last, in front of a
body store on the network: a body fetched for a FETCH is there for the
FETCH of its next part, for a POP3 RETR after TOP, and a body just
delivered is there for the IDLE clients that fetch it at once.

Bodies are stored under their content address, so a copy can never be
stale: the key names the bytes.  The copies are files in one directory of
the node's own, written whole under a temporary name and renamed, used
least recently first out once over ``max_bytes``, and all removed when the
node starts (nothing outlives the process that accounts for it).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import shutil
import tempfile
import threading
from pathlib import Path

from twisted.logger import Logger
from zope.interface import implementer

from gateway.store.blobs.interface import IBlobStore
from gateway.store.blobs.spool import CHUNK, BlobCorrupt, fetched

log = Logger()


@implementer(IBlobStore)
class CachedBlobs:
    def __init__(self, inner: IBlobStore, directory: Path, max_bytes: int):
        self._inner = inner
        self._directory = Path(directory)
        self._max_bytes = max_bytes
        self._lock = threading.Lock()  # the store's threads share the accounts
        self._sizes: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._bytes = 0
        shutil.rmtree(self._directory, ignore_errors=True)
        self._directory.mkdir(mode=0o700, parents=True)

    def put(self, transaction, key, file):
        # Copied first: an S3 upload closes the file it reads.  A copy of a
        # body whose store then fails is still its key's bytes.
        self._keep(key, file)
        self._inner.put(transaction, key, file)

    def open(self, transaction, key):
        file = self.open_cached(key)
        if file is not None:
            return file
        if hasattr(self._inner, "stream"):
            return self._open_streamed(transaction, key)
        file = self._inner.open(transaction, key)
        self._keep(key, file)
        return file

    def _open_streamed(self, transaction, key):
        """
        From an object store that streams: written once, straight where it
        is kept, and opened there.
        """
        with self._inner.stream(key) as (size, chunks):
            if not self.keeps(size):
                return fetched(chunks, key)
            try:
                fd, name = tempfile.mkstemp(dir=self._directory, prefix=".part-")
            except OSError as e:
                log.warn("Body {key} not cached: {error}", key=key, error=e.strerror)
                return fetched(chunks, key)
            digest = hashlib.sha256()
            try:
                with os.fdopen(fd, "wb") as copy:
                    for chunk in chunks:
                        copy.write(chunk)
                        digest.update(chunk)
                if digest.hexdigest() != key:
                    raise BlobCorrupt(f"stored body {key} reads back as {digest.hexdigest()}")
                os.rename(name, self._directory / key)
                file = open(self._directory / key, "rb")
            except OSError as e:
                with contextlib.suppress(OSError):
                    os.unlink(name)
                # A full disk here costs a second fetch, never a read.
                log.warn("Body {key} not cached: {error}", key=key, error=e.strerror)
                return self._inner.open(transaction, key)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(name)
                raise
        self._account(key, size)
        return file

    def open_cached(self, key):
        """The copy of the body kept here, or None: a local file, quick enough to open on the reactor's thread."""
        with self._lock:
            if key not in self._sizes:
                return None
            self._sizes.move_to_end(key)
            try:
                return open(self._directory / key, "rb")
            except OSError as e:
                log.warn("Cached body {key} unreadable, fetched again: {error}", key=key, error=e.strerror)
                self._forget(key)
                return None

    @property
    def in_index(self) -> bool:
        """Whether the bodies are in the index's database (read through its transactions)."""
        return getattr(self._inner, "in_index", False)

    def keeps(self, size: int) -> bool:
        """Whether a body of ``size`` bytes is worth a copy here."""
        return size <= self._max_bytes // 8

    def holds(self, key) -> bool:
        with self._lock:
            return key in self._sizes

    def fetch(self, key) -> None:
        """
        Copy the body stored under ``key`` here, unless here already, for
        a read to come (blocks; an object store only, needing no index
        transaction).
        """
        if self.holds(key):
            return
        self.open(None, key).close()

    def delete(self, transaction, key):
        self._inner.delete(transaction, key)
        with self._lock:
            self._forget(key)

    def keys(self, transaction, written_before):
        return self._inner.keys(transaction, written_before)

    def _keep(self, key: str, file) -> None:
        """A copy of ``file`` (left at its start) under ``key``, unless too big to be worth it."""
        file.seek(0, os.SEEK_END)
        size = file.tell()
        file.seek(0)
        if size > self._max_bytes // 8:
            return
        with self._lock:
            if key in self._sizes:
                return
        try:
            fd, name = tempfile.mkstemp(dir=self._directory, prefix=".part-")
        except OSError as e:
            log.warn("Body {key} not cached: {error}", key=key, error=e.strerror)
            return
        try:
            with os.fdopen(fd, "wb") as copy:
                shutil.copyfileobj(file, copy, CHUNK)
            os.rename(name, self._directory / key)
        except OSError as e:
            # A full disk here costs speed, never a delivery or a read.
            log.warn("Body {key} not cached: {error}", key=key, error=e.strerror)
            with contextlib.suppress(OSError):
                os.unlink(name)
            return
        finally:
            file.seek(0)
        self._account(key, size)

    def _account(self, key: str, size: int) -> None:
        """``key``'s copy of ``size`` bytes is in place: the least recently used go while over the limit."""
        with self._lock:
            if key not in self._sizes:
                self._sizes[key] = size
                self._bytes += size
            while self._bytes > self._max_bytes and self._sizes:
                self._forget(next(iter(self._sizes)))

    def _forget(self, key: str) -> None:
        """With the lock held."""
        size = self._sizes.pop(key, None)
        if size is None:
            return
        self._bytes -= size
        try:
            os.unlink(self._directory / key)
        except FileNotFoundError:
            pass
