"""
durable.py: a file replaced atomically leaves nothing behind when the disk
is full; a slot file is rewritten in place (no new block) and a torn write
leaves the value before it.
"""

from __future__ import annotations

import errno
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.durable import SLOT_SIZE, create_slot_file, read_slot_file, write_atomic, write_slot_file


def test_write_atomic_on_a_full_disk_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "mailbox.json"
    write_atomic(path, b"old")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        write_atomic(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["mailbox.json"]


def test_slot_file_is_rewritten_in_place(tmp_path):
    path = tmp_path / "uidnext"
    create_slot_file(path, b"1")
    before = os.stat(path)
    for value in range(2, 12):
        write_slot_file(path, b"%d" % value)
        assert read_slot_file(path) == b"%d" % value
    after = os.stat(path)
    # The same inode and blocks: an update needs no room on the disk.
    assert (after.st_ino, after.st_size, after.st_blocks) == (before.st_ino, 2 * SLOT_SIZE, before.st_blocks)


def test_slot_file_is_only_made_by_create(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_slot_file(tmp_path / "uidnext", b"5")
    assert not (tmp_path / "uidnext").exists()


def test_slot_file_with_no_valid_slot_reads_none(tmp_path):
    path = tmp_path / "uidnext"
    path.write_bytes(b"\xff" * 2 * SLOT_SIZE)
    assert read_slot_file(path) is None
    # A write makes a valid slot of it again.
    write_slot_file(path, b"7")
    assert read_slot_file(path) == b"7"


@settings(max_examples=50, deadline=None)
@given(
    values=st.lists(st.integers(1, 2**32), min_size=1, max_size=12),
    torn_at=st.integers(0, 11),
    torn_bytes=st.binary(min_size=1, max_size=SLOT_SIZE),
    offset=st.integers(0, SLOT_SIZE - 1),
)
def test_a_torn_write_leaves_the_previous_value(tmp_path_factory, values, torn_at, torn_bytes, offset):
    path = tmp_path_factory.mktemp("slots") / "uidnext"
    create_slot_file(path, b"0")
    previous = b"0"
    for index, value in enumerate(values):
        payload = b"%d" % value
        if index == torn_at:
            # The power fails while this write is on its way: whatever part
            # of the slot being written reached the disk, the slot holding
            # the value before it is untouched.
            write_slot_file(path, payload)
            with open(path, "r+b") as f:
                data = bytearray(f.read())
                # Generation g lives in slot g % 2: the creation wrote 0 and
                # 1, so write number ``index`` (generation index + 2) went to
                # slot index % 2.
                slot = index % 2 * SLOT_SIZE
                end = min(slot + offset + len(torn_bytes), slot + SLOT_SIZE)
                data[slot + offset : end] = torn_bytes[: end - slot - offset]
                f.seek(0)
                f.write(data)
            assert read_slot_file(path) in (payload, previous)
            return
        write_slot_file(path, payload)
        previous = payload
        assert read_slot_file(path) == payload
