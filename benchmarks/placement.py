"""
Where the servers under comparison keep their files on disk: apart, so that
neither pays for what the other does to the file system.

ext4 without a journal (as on the VMs these benchmarks run on) gives a new
file an inode freed in the last minute (six, while its inode table block is
dirty) only when no other is free: ``find_inode_bit`` steps over each such
inode, one buffer lookup apiece, from the start of the group every time.  Files go to their parent
directory's group, and subdirectories to their parent's, so two servers
under one temp dir share a group, and every file one server deletes (Dovecot
replaces ``dovecot-uidlist`` on each delivery) makes each file the other
creates slower: 0.8 ms a create after a few thousand deletions, where
20 us is usual.  A directory with ext4's "top of a hierarchy" flag
(``chattr +T``) has its subdirectories spread over the file system as the
root's are, each server in groups of its own.
"""

from __future__ import annotations

import fcntl
import os
import struct
from pathlib import Path

# linux/fs.h: FS_IOC_GETFLAGS and FS_IOC_SETFLAGS (_IOR/_IOW('f', 1/2, long)),
# which ext4 reads and writes as an int, and FS_TOPDIR_FL.
_GET_FLAGS = 0x80086601
_SET_FLAGS = 0x40086602
_TOPDIR = 0x00020000
_FLAGS = struct.Struct("i")


def spread_subdirectories(directory: Path) -> str | None:
    """
    Mark ``directory`` so that its subdirectories are placed apart; None when
    done, else why not (a file system without the flag: nothing to keep apart
    there, or nothing this can do).
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = bytearray(8)
        fcntl.ioctl(fd, _GET_FLAGS, flags, True)
        (value,) = _FLAGS.unpack_from(flags)
        if not value & _TOPDIR:
            fcntl.ioctl(fd, _SET_FLAGS, _FLAGS.pack(value | _TOPDIR) + bytes(4))
    except OSError as e:
        return f"cannot place the servers' files apart under {directory}: {e.strerror}"
    finally:
        os.close(fd)
    return None
