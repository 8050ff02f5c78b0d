"""
An arriving body, CRLF-normalised into a temporary file on the way in, with
its size and content address (SHA-256) taken in the same pass.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from collections.abc import Iterable
from typing import BinaryIO

import attrs

from gateway.mail import message
from gateway.store.interfaces import TemporaryFailure

CHUNK = 256 * 1024


def source_chunks(source) -> Iterable[bytes]:
    """The bytes of ``source``: bytes, or a binary file read in chunks."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        yield bytes(source)
        return
    while chunk := source.read(CHUNK):
        yield chunk


@attrs.frozen
class Spooled:
    """A body ready to store: ``file`` is at its start; the caller closes it."""

    file: BinaryIO
    size: int
    key: str


def spool(source, directory: str | None = None) -> Spooled:
    """
    @raise TemporaryFailure: the temporary file cannot be written (disk full).
    """
    f, size, key = _hashed_file(message.crlf_chunks(source_chunks(source)), directory)
    return Spooled(f, size, key)


def _hashed_file(chunks: Iterable[bytes], directory: str | None) -> tuple[BinaryIO, int, str]:
    """``chunks`` in a temporary file at its start, with their size and SHA-256."""
    digest = hashlib.sha256()
    size = 0
    try:
        f = tempfile.TemporaryFile(dir=directory, prefix="gateway-body.")
    except OSError as e:
        raise TemporaryFailure(f"cannot spool message: {os.strerror(e.errno or errno.EIO)}") from e
    try:
        for chunk in chunks:
            f.write(chunk)
            digest.update(chunk)
            size += len(chunk)
        f.flush()
        f.seek(0)
    except OSError as e:
        f.close()
        raise TemporaryFailure(f"cannot spool message: {os.strerror(e.errno or errno.EIO)}") from e
    except BaseException:
        f.close()
        raise
    return f, size, digest.hexdigest()


class BlobCorrupt(TemporaryFailure):
    """The bytes read back do not hash to the key they were stored under."""


def fetched(chunks: Iterable[bytes], key: str, directory: str | None = None) -> BinaryIO:
    """
    Bytes read back from a body store, into a temporary file at its start,
    checked against their content address on the way.

    @raise BlobCorrupt: they do not match ``key``.
    """
    f, _, digest = _hashed_file(chunks, directory)
    if digest != key:
        f.close()
        raise BlobCorrupt(f"stored body {key} reads back as {digest}")
    return f
