"""
Change notices between the processes of one SQLite store, as UNIX
datagrams: each serving process binds ``run/peers/<pid>.<n>``, and whoever
commits a change (a serving process, ``gateway deliver``) sends the
(mailbox id, highest modseq) pairs and the users whose lists of mailboxes
changed to every other socket there.  The receiver tells its sessions
exactly as of its own commits, so an IDLE in one process hears of a
delivery taken by another within milliseconds.

Why datagrams carrying the notices: a receiver learns which mailboxes
changed without asking the index about every mailbox its sessions watch;
the sender never waits (non-blocking; a peer whose buffer is full misses
that one, and a socket whose process is gone is removed).  Nothing here is
needed for correctness: the change feed's poll of ``PRAGMA data_version``
stays, and catches whatever a datagram missed (a CLI tool of an older
version, a full buffer).

Who the peers are is the directory: listed again when its mtime moves, so
a process alone pays one ``stat`` per commit and sends nothing.  A path too
long for a socket address (108 bytes) is reached through the directory's
descriptor in /proc.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from twisted.internet.interfaces import IReactorUNIXDatagram
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

log = Logger()

# One datagram at most; a bigger set of notices is split.
DATAGRAM_LIMIT = 32768

# sun_path holds 108 bytes with its NUL.
_ADDRESS_LIMIT = 107

# A directory mtime this close to when it was listed may hide a later change
# in the same clock tick (file systems stamp coarsely): list it again.
_SETTLE_SECONDS = 0.05

# Several stores of one process (tests) have sockets of their own.
_serial = itertools.count()

Notices = Callable[[dict[int, int], list[str]], None]


def encode(notices: dict[int, int], users: Iterable[str]) -> Iterator[bytes]:
    """Datagrams under L{DATAGRAM_LIMIT} that together carry every notice (a user too long to carry is left out)."""
    pending = [(sorted(notices.items()), sorted(users))]
    while pending:
        pairs, names = pending.pop()
        payload = json.dumps({"m": pairs, "u": names}, separators=(",", ":")).encode()
        if len(payload) <= DATAGRAM_LIMIT:
            if pairs or names:
                yield payload
        elif len(pairs) > 1 or len(names) > 1:
            pending.append((pairs[len(pairs) // 2:], names[len(names) // 2:]))
            pending.append((pairs[: len(pairs) // 2], names[: len(names) // 2]))


def decode(payload: bytes) -> tuple[dict[int, int], list[str]]:
    """The notices of a datagram; anything unreadable in it is skipped (it is a wake-up, not the truth)."""
    try:
        told = json.loads(payload)
    except ValueError:
        return {}, []
    if not isinstance(told, dict):
        return {}, []
    notices: dict[int, int] = {}
    for pair in told.get("m", ()) if isinstance(told.get("m"), list) else ():
        if (isinstance(pair, list) and len(pair) == 2 and all(type(n) is int and n > 0 for n in pair)):
            notices[pair[0]] = max(pair[1], notices.get(pair[0], 0))
    users = [user for user in told.get("u", ()) if isinstance(user, str)] if isinstance(told.get("u"), list) else []
    return notices, users


class _Receiver(DatagramProtocol):
    noisy = False

    def __init__(self, on_notices: Notices):
        self._on_notices = on_notices

    def datagramReceived(self, datagram, address):
        notices, users = decode(datagram)
        if notices or users:
            self._on_notices(notices, users)


class Peers:
    """The peers of one store, whose sockets are in ``directory``."""

    def __init__(self, directory: Path):
        self._directory = Path(directory)
        self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.name = f"{os.getpid()}.{next(_serial)}"
        self._base = str(self._directory)
        self._directory_fd: int | None = None
        if len(self._base) + 1 + 32 > _ADDRESS_LIMIT:
            self._directory_fd = os.open(self._directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            self._base = f"/proc/self/fd/{self._directory_fd}"
        self._sender: socket.socket | None = None
        self._port = None
        # The peers' names, and the directory mtime they were listed at.
        self._names: list[str] = []
        self._listed: int | None = None

    def _address(self, name: str) -> str:
        return f"{self._base}/{name}"

    # -- receiving -------------------------------------------------------------

    def listen(self, reactor, on_notices: Notices) -> None:
        """
        Bind this process's socket; ``on_notices(notices, users)`` runs on
        the reactor for each datagram.  A reactor without UNIX datagrams (a
        test clock) hears through the poll alone.
        """
        if self._port is not None or not IReactorUNIXDatagram.providedBy(reactor):
            return
        address = self._address(self.name)
        # Only a process that is gone (its pid reused) left a socket of this name.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address)
        self._port = reactor.listenUNIXDatagram(address, _Receiver(on_notices), maxPacketSize=DATAGRAM_LIMIT,
                                                mode=0o600)

    def stop(self):
        """Unbind (and remove) the socket: peers stop sending here. A Deferred, or None."""
        if self._port is None:
            return None
        port, self._port = self._port, None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._address(self.name))
        return port.stopListening()

    def close(self) -> None:
        if self._sender is not None:
            self._sender.close()
            self._sender = None
        if self._directory_fd is not None:
            os.close(self._directory_fd)
            self._directory_fd = None

    # -- sending ---------------------------------------------------------------

    def send(self, notices: dict[int, int], users: Iterable[str]) -> None:
        """Tell every other live peer; never blocks, never raises (a notice not sent is found by the poll)."""
        try:
            names = self._peers()
            if not names:
                return
            datagrams = list(encode(notices, users))
            if self._sender is None:
                self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sender.setblocking(False)
            for name in names:
                self._send_to(name, datagrams)
        except OSError:
            log.failure("Telling the store's other processes of a change")

    def _send_to(self, name: str, datagrams: list[bytes]) -> None:
        address = self._address(name)
        for datagram in datagrams:
            try:
                self._sender.sendto(datagram, address)
            except (BlockingIOError, InterruptedError):
                return  # its buffer is full: its poll catches up
            except (ConnectionRefusedError, FileNotFoundError) as e:
                # Its process is gone (refused: the socket file outlived it).
                if e.errno == errno.ECONNREFUSED:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(address)
                self._names = [n for n in self._names if n != name]
                return

    def _peers(self) -> list[str]:
        """The other peers' names, listed again only when the directory changed (one stat otherwise)."""
        mtime = os.stat(self._directory).st_mtime_ns
        if mtime != self._listed:
            now = time.time_ns()
            self._names = sorted(n for n in os.listdir(self._directory) if n != self.name)
            settled = now - mtime > _SETTLE_SECONDS * 1e9
            self._listed = mtime if settled else None
        return self._names

