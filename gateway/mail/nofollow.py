"""
Reading a tree that another user controls (a Maildir or an mbox file to
import) without following a link and without reading anything but regular
files.  Pure: no Twisted.

Each component from the tree's root down is opened with ``O_NOFOLLOW``,
relative to the directory opened before it, so a component swapped for a
link while an import runs is refused, never followed.  A file is opened
non-blocking (a fifo would otherwise wait for a writer forever) and checked
with ``fstat``: what was opened is what was checked.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class Refused(ValueError):
    """Not followed or not read: a link, or not the kind of file wanted."""


def kind(mode: int) -> str:
    """What a file of ``mode`` is, in the words of a refusal."""
    if stat.S_ISLNK(mode):
        return "a symbolic link, not followed"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe, not a regular file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device, not a regular file"
    return "not a regular file"


def _refusal(name, dir_fd: int | None, wanted: str) -> Refused:
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except OSError:
        return Refused(f"not {wanted}")
    return Refused(kind(mode) if not stat.S_ISREG(mode) else f"not {wanted}")


def open_directory(name, dir_fd: int | None = None) -> int:
    """
    The directory ``name`` (relative to ``dir_fd`` when given) as a
    descriptor; raises L{Refused} if it is a link or not a directory, and
    OSError (FileNotFoundError...) as ``os.open`` does.
    """
    try:
        return os.open(name, _DIRECTORY, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.ENOTDIR, errno.ELOOP):
            raise _refusal(name, dir_fd, "a directory") from None
        raise


def open_file(name, dir_fd: int | None = None) -> BinaryIO:
    """
    The regular file ``name`` opened for reading; raises L{Refused} for a
    link, a fifo, a device, a socket or a directory.
    """
    try:
        fd = os.open(name, _FILE, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENXIO, errno.ENOTDIR):
            raise _refusal(name, dir_fd, "a regular file") from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise Refused(kind(mode))
    # O_NONBLOCK means nothing for a regular file; clear it all the same so
    # the file behaves as any other once handed on.
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def directory_beneath(root: Path, parts: Sequence[str]) -> int:
    """
    The directory ``root/parts[0]/...`` as a descriptor, with ``root`` and
    every directory on the way refused (L{Refused}) if it is a link.
    """
    fd = open_directory(root)
    try:
        for part in parts:
            inner = open_directory(part, fd)
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_beneath(root: Path, parts: Sequence[str]) -> BinaryIO:
    """The regular file ``root/parts[0]/.../parts[-1]``, reached link-free."""
    fd = directory_beneath(root, parts[:-1])
    try:
        return open_file(parts[-1], fd)
    finally:
        os.close(fd)


def list_beneath(root: Path, parts: Sequence[str]) -> list[tuple[str, os.stat_result | OSError]]:
    """
    The entries of the directory ``root/parts...``, reached link-free, each
    with what it is (``lstat``: a link is described, not followed) or the
    error that stopped us from telling.
    """
    fd = directory_beneath(root, parts)
    listed = []
    try:
        with os.scandir(fd) as entries:
            for entry in entries:
                try:
                    listed.append((entry.name, entry.stat(follow_symlinks=False)))
                except FileNotFoundError:
                    continue  # gone since the listing
                except OSError as e:
                    listed.append((entry.name, e))
    finally:
        os.close(fd)
    return listed
