"""
Writing files so that a crash leaves the old content or the new, never a mix.
Pure: no Twisted.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` survive a power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """
    Replace ``path`` by ``data``: a temporary file beside it (created with
    ``mode``), fsynced, renamed over it, and the directory fsynced.  A write
    that fails (a full disk) leaves ``path`` as it was and no temporary file.
    """
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


# A slot file: a small value rewritten in place, as a file system rewrites
# its superblock.  Two slots, each in a sector of its own so that a torn
# write can only hurt the slot being written; each carries a generation and
# a checksum, and the valid slot with the higher generation is the value.
# An update overwrites the older slot, so it needs no new disk block: it
# works on a full disk (CoW file systems aside).
SLOT_SIZE = 512
_SLOT_HEADER = struct.Struct("<4sQH")  # magic, generation, payload length
_SLOT_MAGIC = b"GWsl"
_SLOT_PAYLOAD_MAX = SLOT_SIZE - _SLOT_HEADER.size - 4


def _slot(generation: int, payload: bytes) -> bytes:
    if len(payload) > _SLOT_PAYLOAD_MAX:
        raise ValueError(f"slot payload of {len(payload)} bytes; at most {_SLOT_PAYLOAD_MAX}")
    body = _SLOT_HEADER.pack(_SLOT_MAGIC, generation, len(payload)) + payload
    return (body + struct.pack("<I", zlib.crc32(body))).ljust(SLOT_SIZE, b"\0")


def _valid_slots(data: bytes) -> list[tuple[int, bytes]]:
    """(generation, payload) of each slot of ``data`` whose checksum holds."""
    found = []
    for start in (0, SLOT_SIZE):
        raw = data[start : start + SLOT_SIZE]
        if len(raw) < _SLOT_HEADER.size:
            continue
        magic, generation, length = _SLOT_HEADER.unpack_from(raw)
        end = _SLOT_HEADER.size + length
        if magic != _SLOT_MAGIC or end + 4 > len(raw):
            continue
        (checksum,) = struct.unpack_from("<I", raw, end)
        if zlib.crc32(raw[:end]) == checksum:
            found.append((generation, raw[_SLOT_HEADER.size : end]))
    return found


def create_slot_file(path: Path, payload: bytes, mode: int = 0o600) -> None:
    """
    Make the slot file ``path`` holding ``payload`` (atomically, as
    L{write_atomic}): this allocates the blocks every later update reuses.
    """
    # Generation g always lives in slot g % 2, so the next write goes to the
    # slot not holding the current value.
    write_atomic(path, _slot(0, payload) + _slot(1, payload), mode)


def read_slot_file(path: Path) -> bytes | None:
    """The current payload of a slot file; None when neither slot is valid."""
    with open(path, "rb") as f:
        slots = _valid_slots(f.read(2 * SLOT_SIZE))
    return max(slots)[1] if slots else None


def write_slot_file(path: Path, payload: bytes) -> None:
    """
    Replace the payload of the slot file ``path`` in place and make it
    durable (fdatasync).  Raises FileNotFoundError when the file does not
    exist: only L{create_slot_file} allocates.
    """
    fd = os.open(path, os.O_RDWR)
    try:
        slots = _valid_slots(os.pread(fd, 2 * SLOT_SIZE, 0))
        generation = max(slots)[0] + 1 if slots else 1
        target = generation % 2 * SLOT_SIZE
        os.pwrite(fd, _slot(generation, payload), target)
        os.fdatasync(fd)
    finally:
        os.close(fd)
