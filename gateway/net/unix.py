"""
Listeners on UNIX-domain sockets: ``unix:PATH[:mode=0660][:user=U][:group=G][:backlog=N]``.

Written in Twisted's endpoint syntax (``\\:`` escapes a colon in the path),
with Dovecot's ``unix_listener`` options: the socket's ``mode`` (octal,
0600 by default, as Dovecot's) and its owner ``user`` and ``group``, so that
the MTA's delivery agent, and nobody else, may connect.  Twisted's own
``unix:`` endpoint falls short here, so binding is done here, with its
``unix.Port``:

- it has no owner or group option, and makes sockets 0666 by default;
- it tells a stale socket from a live one by a ``PATH.lock`` symlink holding
  a pid, so a crashed server whose pid comes round again (pid 1 in a
  container, every time) never starts ("Cannot acquire lock"), and a socket
  left without its lock fails with "Address already in use".  Here a socket
  file is stale when a connection to it is refused: then it is replaced;
  one that answers is another server's, and starting stops there;
- at stop it unlinks whatever is at the path, even a socket another server
  has bound there since; and a port closed before the reactor runs (a
  failed start) leaves its file behind.  ``close_now`` removes it at once.

Every problem is one line (``UnixListenerError``), the same whether
``gateway check-config`` or the server start finds it.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import socket
import stat

import attrs
from twisted.internet import error, tcp, unix
from twisted.internet.endpoints import _parse
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

PREFIX = "unix:"
# Dovecot's unix_listener default: only the owner may connect.
DEFAULT_MODE = 0o600
# sockaddr_un.sun_path holds 108 bytes on Linux, the final NUL included.
MAX_PATH = 107
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\$?|[0-9]+")


class UnixListenerError(Exception):
    """Why a UNIX-socket listener is unusable; str() is one line."""


def is_unix(description: str) -> bool:
    return description[: len(PREFIX)].lower() == PREFIX


@attrs.frozen
class UnixListener:
    """A UNIX-socket listener as its description gives it."""

    path: str
    mode: int = DEFAULT_MODE
    user: str | None = None
    group: str | None = None
    backlog: int = 50

    @classmethod
    def parse(cls, description: str) -> UnixListener:
        try:
            args, options = _parse(description)
        except (ValueError, IndexError) as e:
            raise UnixListenerError(f"not an endpoint string ({e})") from None
        args = args[1:]
        if "address" in options:
            args.append(options.pop("address"))
        if len(args) != 1 or not args[0]:
            raise UnixListenerError("give one socket path, as in unix:/run/gateway/lmtp.sock")
        path = args[0]
        if not path.startswith("/"):
            raise UnixListenerError(f"socket path {path!r} must be absolute")
        if "\0" in path or path.endswith("/"):
            raise UnixListenerError(f"{path!r} is not a socket path")
        if len(os.fsencode(path)) > MAX_PATH:
            raise UnixListenerError(f"socket path {path!r} is longer than {MAX_PATH} bytes, the system's limit")
        values = {"path": path}
        for key, value in options.items():
            if key == "mode":
                if not re.fullmatch(r"0?[0-7]{3}", value):
                    raise UnixListenerError(f"mode={value}: give octal permissions such as 0660")
                values["mode"] = int(value, 8)
            elif key in ("user", "group"):
                if not _NAME.fullmatch(value):
                    raise UnixListenerError(f"{key}={value}: not a {key} name or number")
                values[key] = value
            elif key == "backlog":
                if not value.isdigit() or int(value) == 0:
                    raise UnixListenerError(f"backlog={value}: give a positive number")
                values["backlog"] = int(value)
            elif key == "lockfile":
                raise UnixListenerError(
                    "lockfile= is not used: a stale socket is replaced when nothing answers on it"
                )
            else:
                raise UnixListenerError(f"unknown option {key}= (known: mode, user, group, backlog)")
        return cls(**values)

    def owner(self) -> tuple[int, int]:
        """The (uid, gid) to give the socket, -1 where unchanged."""
        uid = gid = -1
        try:
            if self.user is not None:
                uid = int(self.user) if self.user.isdigit() else pwd.getpwnam(self.user).pw_uid
        except KeyError:
            raise UnixListenerError(f"user={self.user}: no such user") from None
        try:
            if self.group is not None:
                gid = int(self.group) if self.group.isdigit() else grp.getgrnam(self.group).gr_gid
        except KeyError:
            raise UnixListenerError(f"group={self.group}: no such group") from None
        return uid, gid

    def check(self) -> None:
        """
        What can be known before binding: the directory is there and this
        user may create the socket in it, nothing but a socket is in the
        way, and the owner exists.
        """
        self.owner()
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            what = "is not a directory" if os.path.exists(directory) else "does not exist"
            raise UnixListenerError(f"directory {directory} {what}")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise UnixListenerError(f"directory {directory} is not writable by user {_effective_user()}")
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise UnixListenerError(f"{self.path} exists and is not a socket")


def _effective_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _remove_stale(path: str) -> None:
    """
    Remove a socket nothing listens on any more (a crashed run's); refuse
    to touch one that answers.
    """
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(path)
    except FileNotFoundError:
        return
    except ConnectionRefusedError:
        log.info("Replacing the stale socket {path}", path=path)
        os.unlink(path)
        return
    except BlockingIOError:
        pass  # a full backlog: someone is listening
    except OSError as e:
        raise UnixListenerError(f"cannot tell whether {path} is in use: {e.strerror}") from None
    finally:
        probe.close()
    raise UnixListenerError(f"{path} is in use by another process")


class UnixPort(unix.Port):
    """
    Twisted's UNIX port, removing at stop only the socket it bound (not one
    another server has put there since), logging rather than raising when
    it may not, and able to go at once when a start fails.
    """

    _bound: tuple[int, int] | None = None

    def startListening(self):
        super().startListening()
        info = os.stat(self._bindPath)
        self._bound = (info.st_dev, info.st_ino)

    def connectionLost(self, reason):
        self._remove_socket()
        # unix.Port's own would unlink whatever is at the path.
        tcp.Port.connectionLost(self, reason)

    def close_now(self) -> None:
        """Stop listening and remove the socket now, reactor running or not."""
        self._remove_socket()
        if self.connected:
            self.stopReading()
            tcp.Port.connectionLost(self, Failure(error.ConnectionDone()))

    def _remove_socket(self) -> None:
        if self._bound is None:
            return
        path, self._bound, bound = self._bindPath, None, self._bound
        try:
            info = os.stat(path)
            if (info.st_dev, info.st_ino) == bound:
                os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warn("Cannot remove the socket {path}: {error}", path=os.fsdecode(path), error=e.strerror)


def listen(reactor, listener: UnixListener, factory) -> UnixPort:
    """Bind ``listener`` now, ready for the reactor; one line on any failure."""
    listener.check()
    uid, gid = listener.owner()
    _remove_stale(listener.path)
    port = UnixPort(listener.path, factory, listener.backlog, listener.mode, reactor)
    try:
        port.startListening()
    except error.CannotListenError as e:
        reason = e.socketError
        raise UnixListenerError(getattr(reason, "strerror", None) or str(reason)) from None
    if uid != -1 or gid != -1:
        try:
            os.chown(listener.path, uid, gid)
        except OSError as e:
            port.close_now()
            whom = " and ".join(f"{key} {value}" for key, value in (("user", listener.user), ("group", listener.group))
                                if value is not None)
            raise UnixListenerError(f"cannot give the socket to {whom}: {e.strerror}") from None
    return port



class _AdoptedPort(unix.Port):
    """A socket another process bound and will remove: this one only stops listening on it."""

    # Twisted's TCP ports skip it for an adopted socket, its UNIX ports do
    # not: a shutdown would end the listening for every process sharing it.
    _shouldShutdown = False

    def connectionLost(self, reason):
        tcp.Port.connectionLost(self, reason)

    def close_now(self) -> None:
        if self.connected:
            self.stopReading()
            tcp.Port.connectionLost(self, Failure(error.ConnectionDone()))


def adopt(reactor, fd: int, factory) -> unix.Port:
    """Serve the listening UNIX socket ``fd`` (a copy is taken) that another process of the node bound."""
    port = _AdoptedPort._fromListeningDescriptor(reactor, fd, factory)
    port.startListening()
    return port
