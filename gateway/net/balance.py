"""
The connection count of each serving process of a node, in memory they all
share, so that a process holding more connections than another lets the
next one go to it.  Pure: no Twisted.

The table is one signed 64-bit slot per process (``[server] workers``) in
a memfd the main process makes and hands to each worker; each process
writes its own slot alone, and reads the others' as they are at that
moment (an aligned 8-byte store is never seen torn).  A slot is ``ABSENT``
while its process does not serve: before it starts, and after it ended
until it serves again.
"""

from __future__ import annotations

import mmap
import os
import struct

ABSENT = -1
_SLOT = struct.Struct("q")


class Loads:
    """The table, as process ``index`` sees it (0 is the main process)."""

    def __init__(self, fd: int, count: int, index: int):
        self._fd = fd
        self._map = mmap.mmap(fd, count * _SLOT.size)
        self._slots = memoryview(self._map).cast("q")
        self.index = index

    @classmethod
    def create(cls, count: int) -> Loads:
        """A new table for ``count`` processes, seen by the main process, which serves (with no connection yet)."""
        fd = os.memfd_create("gateway-loads", os.MFD_CLOEXEC)
        os.ftruncate(fd, count * _SLOT.size)
        loads = cls(fd, count, 0)
        for index in range(count):
            loads._slots[index] = ABSENT
        loads._slots[0] = 0
        return loads

    def fileno(self) -> int:
        return self._fd

    def serving(self) -> None:
        """This process serves, with no connection yet."""
        self._slots[self.index] = 0

    def gone(self, index: int) -> None:
        """Process ``index`` (a worker that ended) serves no more."""
        self._slots[index] = ABSENT

    def add(self, change: int) -> None:
        """This process holds ``change`` connections more (or fewer)."""
        self._slots[self.index] += change

    def others(self) -> tuple[int, ...]:
        """The other processes' slots, ``ABSENT`` ones included, in order."""
        return tuple(count for index, count in enumerate(self._slots) if index != self.index)

    def lighter_elsewhere(self) -> bool:
        """Whether another serving process holds fewer connections than this one."""
        own = self._slots[self.index]
        return any(ABSENT < count < own for count in self.others())
