"""
UNIX-socket listeners (gateway/net/unix.py): the description, the checks
made before binding, and binding itself, with real sockets in a temporary
directory and Twisted's MemoryReactor standing in for the reactor loop.
"""

from __future__ import annotations

import grp
import os
import socket
import stat

import pytest
from twisted.internet import unix as twisted_unix
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor

from gateway.net.unix import DEFAULT_MODE, UnixListener, UnixListenerError, UnixPort, is_unix, listen

FACTORY = Factory.forProtocol(Protocol)


@pytest.fixture
def sockets(tmp_path):
    """A short directory for sockets (sun_path holds 107 bytes)."""
    return tmp_path


def stale_socket(path) -> None:
    """What a killed server leaves: a socket file nothing listens on."""
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()


def connects(path) -> bool:
    with socket.socket(socket.AF_UNIX) as client:
        try:
            client.connect(str(path))
        except OSError:
            return False
    return True


# -- the description ---------------------------------------------------------------


def test_parse_defaults_and_options():
    assert is_unix("unix:/run/gateway/lmtp.sock") and is_unix("UNIX:/x") and not is_unix("tcp:24")
    assert UnixListener.parse("unix:/run/gateway/lmtp.sock") == UnixListener("/run/gateway/lmtp.sock")
    assert DEFAULT_MODE == 0o600
    assert UnixListener.parse("unix:address=/run/g/l.sock:mode=0660:user=postfix:group=mail:backlog=10") == (
        UnixListener("/run/g/l.sock", 0o660, "postfix", "mail", 10)
    )
    # Twisted's endpoint syntax: a backslash escapes a colon.
    assert UnixListener.parse(r"unix:/run/a\:b.sock:mode=640").path == "/run/a:b.sock"
    assert UnixListener.parse("unix:/s:user=106:group=108").owner() == (106, 108)


@pytest.mark.parametrize(
    ("description", "problem"),
    [
        ("unix:lmtp.sock", "socket path 'lmtp.sock' must be absolute"),
        ("unix:", "give one socket path"),
        ("unix:/a:/b", "give one socket path"),
        ("unix:/run/", "'/run/' is not a socket path"),
        ("unix:/" + "x" * 107, "is longer than 107 bytes, the system's limit"),
        ("unix:/s:mode=999", "mode=999: give octal permissions such as 0660"),
        ("unix:/s:mode=04777", "mode=04777: give octal permissions"),
        ("unix:/s:mode=rw", "mode=rw: give octal permissions"),
        ("unix:/s:user=a b", "user=a b: not a user name or number"),
        ("unix:/s:group=", "group=: not a group name or number"),
        ("unix:/s:backlog=0", "backlog=0: give a positive number"),
        ("unix:/s:lockfile=1", "lockfile= is not used: a stale socket is replaced when nothing answers on it"),
        ("unix:/s:owner=x", "unknown option owner= (known: mode, user, group, backlog)"),
    ],
)
def test_parse_refuses_with_one_line(description, problem):
    with pytest.raises(UnixListenerError) as excinfo:
        UnixListener.parse(description)
    assert problem in str(excinfo.value) and "\n" not in str(excinfo.value)


# -- before binding ----------------------------------------------------------------


def test_check_names_what_is_wrong(sockets):
    with pytest.raises(UnixListenerError, match=f"^directory {sockets}/missing does not exist$"):
        UnixListener(str(sockets / "missing" / "l.sock")).check()
    (sockets / "file").write_text("")
    with pytest.raises(UnixListenerError, match=f"^directory {sockets}/file is not a directory$"):
        UnixListener(str(sockets / "file" / "l.sock")).check()
    with pytest.raises(UnixListenerError, match=f"^{sockets}/file exists and is not a socket$"):
        UnixListener(str(sockets / "file")).check()
    with pytest.raises(UnixListenerError, match="^user=no-such-user: no such user$"):
        UnixListener(str(sockets / "l.sock"), user="no-such-user").check()
    with pytest.raises(UnixListenerError, match="^group=no-such-group: no such group$"):
        UnixListener(str(sockets / "l.sock"), group="no-such-group").check()
    UnixListener(str(sockets / "l.sock")).check()


# -- binding -----------------------------------------------------------------------


def test_listen_binds_with_the_mode_and_group(sockets):
    path = sockets / "lmtp.sock"
    group = grp.getgrgid(os.getgid()).gr_name
    port = listen(MemoryReactor(), UnixListener(str(path), 0o660, group=group), FACTORY)
    info = os.stat(path)
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o660
    assert info.st_gid == os.getgid()
    assert connects(path)
    port.close_now()
    assert not path.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a socket to another user needs root")
def test_listen_gives_the_socket_to_its_user_and_group(sockets):
    path = sockets / "lmtp.sock"
    port = listen(MemoryReactor(), UnixListener(str(path), user="nobody", group="nogroup"), FACTORY)
    info = os.stat(path)
    assert (info.st_uid, info.st_gid) == (65534, grp.getgrnam("nogroup").gr_gid)
    assert stat.S_IMODE(info.st_mode) == 0o600
    port.close_now()


def test_twisted_unix_port_is_stuck_on_a_stale_socket(sockets):
    # The gap: Twisted tells a stale socket from a live one by PATH.lock, a
    # symlink to the pid that bound it.
    path = sockets / "lmtp.sock"
    stale_socket(path)
    port = twisted_unix.Port(str(path), FACTORY, reactor=MemoryReactor(), wantPID=True)
    with pytest.raises(CannotListenError, match="Address already in use"):
        port.startListening()
    # The failed start left its lock behind, naming a live pid (ours); so
    # does a crashed server whose pid is in use again, as pid 1 always is
    # in a restarted container.
    assert os.readlink(f"{path}.lock") == str(os.getpid())
    port = twisted_unix.Port(str(path), FACTORY, reactor=MemoryReactor(), wantPID=True)
    with pytest.raises(CannotListenError, match="Cannot acquire lock"):
        port.startListening()
    listen(MemoryReactor(), UnixListener(str(path)), FACTORY).close_now()


def test_a_stale_socket_is_replaced(sockets):
    path = sockets / "lmtp.sock"
    stale_socket(path)
    assert not connects(path)
    port = listen(MemoryReactor(), UnixListener(str(path)), FACTORY)
    assert connects(path)
    port.close_now()


def test_a_live_socket_is_left_alone(sockets):
    path = sockets / "lmtp.sock"
    with socket.socket(socket.AF_UNIX) as other:
        other.bind(str(path))
        other.listen()
        with pytest.raises(UnixListenerError, match=f"^{path} is in use by another process$"):
            listen(MemoryReactor(), UnixListener(str(path)), FACTORY)
        assert connects(path)


def test_stop_removes_only_its_own_socket(sockets):
    path = sockets / "lmtp.sock"
    port = listen(MemoryReactor(), UnixListener(str(path)), FACTORY)
    # Another server took the path over (after deciding ours was stale).
    os.unlink(path)
    with socket.socket(socket.AF_UNIX) as other:
        other.bind(str(path))
        other.listen()
        port.close_now()
        assert connects(path)


def test_stop_after_the_socket_went_is_quiet(sockets):
    path = sockets / "lmtp.sock"
    port = listen(MemoryReactor(), UnixListener(str(path)), FACTORY)
    os.unlink(path)
    port.connectionLost(None)
    assert not path.exists()


def test_a_failed_chown_leaves_nothing(sockets, monkeypatch):
    path = sockets / "lmtp.sock"

    def refuse(*args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chown", refuse)
    with pytest.raises(UnixListenerError, match="^cannot give the socket to group 0: Operation not permitted$"):
        listen(MemoryReactor(), UnixListener(str(path), group="0"), FACTORY)
    assert not path.exists()


def test_listen_is_a_unix_port(sockets):
    port = listen(MemoryReactor(), UnixListener(str(sockets / "s")), FACTORY)
    assert isinstance(port, UnixPort) and port.getHost().name == os.fsencode(sockets / "s")
    port.close_now()
