"""
Reading a server's files into the page cache before it is measured.

Some machines drop file pages nobody touched for a while on their own: this
one's kernel runs DAMON with a ``pageout`` scheme for unmapped file pages
idle for 60 s (/sys/kernel/mm/damon/admin).  A benchmark run leaves each
server's mail idle for minutes while the other server and the other
scenarios run, so without this a round measures how fast the disk gives
the mail back, and more so in every later round: both servers' CPU per
message rose round after round, and one round of POP3 downloads waited
10 s on the disk.  Both servers get the same warming, before every
scenario; the mail a client downloads has just been delivered, so it is
in the cache on a real server too.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

_CHUNK = 1 << 20


def warm(root: Path) -> int:
    """Read every regular file under ``root`` once; the bytes read."""
    total = 0
    buffer = bytearray(_CHUNK)
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue  # gone meanwhile, a socket, a link
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    continue
                while read := os.readv(fd, [buffer]):
                    total += read
            finally:
                os.close(fd)
    return total
