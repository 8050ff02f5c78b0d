"""
Fault tests (issue 4) against the real server: a full disk during delivery,
and ``kill -9`` in the middle of an LMTP DATA.

The disk fills in one of two ways, and the test id says which one ran:

- ``tmpfs``: the store lives on a 2 MB tmpfs the test mounts (root only;
  skipped where mounting is not permitted, e.g. an unprivileged container)
  and fills with a ballast file, so every write fails with ENOSPC exactly
  where a real full disk would make it fail;
- ``injected``: no mount; a ``sitecustomize`` on the server's and the MDA's
  PYTHONPATH makes ``os.fsync`` and ``os.fdatasync`` of any file under the
  store fail with ENOSPC while a flag file exists.  Runs everywhere.

In both, deliveries by LMTP, by ``gateway deliver`` and by IMAP APPEND get
temporary failures (LMTP ``452 4.3.1``, exit 75, ``NO [UNAVAILABLE]``: RFC
5530's code for a temporary failure of a subsystem, not OVERQUOTA, which
would tell the user to delete mail over a quota that does not exist), every
acknowledged message stays whole, ``gateway check`` finds the store
consistent, and once space is back delivery works with no UID used twice.
"""

from __future__ import annotations

import errno
import imaplib
import os
import re
import smtplib
import socket
import subprocess
import time

import pytest

from tests.serverproc import GatewayProcess, run_gateway
from tests.e2e.test_delivery import lmtp_deliver, read_mailbox, untraced

SENDER = b"sender@example.org"
RECIPIENT = b"alice@example.test"
APPENDUID = re.compile(rb"\[APPENDUID \d+ (\d+)\]")

# Makes os.fsync and os.fdatasync fail with ENOSPC for files under the
# store while the flag file exists: the store syncs every body and the index
# before acknowledging a message.
INJECTOR = '''\
import errno
import os

_flag = os.environ.get("GATEWAY_TEST_ENOSPC_FLAG")
_root = os.environ.get("GATEWAY_TEST_ENOSPC_ROOT")
if _flag and _root:
    def _failing(real):
        def sync(fd):
            if os.path.exists(_flag):
                try:
                    target = os.readlink(f"/proc/self/fd/{fd}")
                except OSError:
                    target = ""
                if target.startswith(_root + os.sep):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(fd)
        return sync

    os.fsync = _failing(os.fsync)
    os.fdatasync = _failing(os.fdatasync)
'''


class TmpfsDisk:
    """A tmpfs (2 MB unless said) mounted on the store directory, filled by a ballast file."""

    kind = "tmpfs"
    size = "2m"

    def __init__(self, store_dir):
        self.store_dir = store_dir
        self.ballast = store_dir / "ballast"

    def mount(self):
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root (the injected-ENOSPC variant runs instead)")
        self.store_dir.mkdir(mode=0o700, parents=True)
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0700", "tmpfs", str(self.store_dir)],
            capture_output=True,
        )
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")

    def unmount(self):
        if subprocess.run(["umount", str(self.store_dir)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(self.store_dir)], check=True)

    def fill(self):
        fd = os.open(self.ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        chunk = b"\0" * 65536
        try:
            for _ in range(100_000):  # the tmpfs / 64 kB: ends far earlier
                os.write(fd, chunk)
            raise AssertionError("the tmpfs never filled")
        except OSError as e:
            assert e.errno == errno.ENOSPC
        finally:
            os.close(fd)

    def free(self):
        self.ballast.unlink()


class InjectedDisk:
    """ENOSPC from os.fsync and os.fdatasync on the store's files, in every gateway process."""

    kind = "injected"

    def __init__(self, store_dir, inject_dir, monkeypatch):
        self.store_dir = store_dir
        self.inject_dir = inject_dir
        self.flag = inject_dir / "disk-is-full"
        self.monkeypatch = monkeypatch

    def mount(self):
        self.inject_dir.mkdir()
        (self.inject_dir / "sitecustomize.py").write_text(INJECTOR)
        path = os.environ.get("PYTHONPATH")
        self.monkeypatch.setenv("PYTHONPATH", f"{self.inject_dir}{os.pathsep}{path}" if path else str(self.inject_dir))
        self.monkeypatch.setenv("GATEWAY_TEST_ENOSPC_FLAG", str(self.flag))
        self.monkeypatch.setenv("GATEWAY_TEST_ENOSPC_ROOT", str(self.store_dir))

    def unmount(self):
        pass

    def fill(self):
        self.flag.touch()

    def free(self):
        self.flag.unlink()


@pytest.fixture(params=["tmpfs", "injected"])
def disk(request, tmp_path, monkeypatch):
    data = tmp_path / "data"
    run_gateway(data, "user", "add", "alice", input=b"alice-password\n")
    store_dir = data / "store"
    if request.param == "tmpfs":
        disk = TmpfsDisk(store_dir)
    else:
        disk = InjectedDisk(store_dir, tmp_path / "inject", monkeypatch)
    disk.mount()
    disk.data = data
    try:
        yield disk
    finally:
        disk.unmount()


def lmtp_attempt(port: int, message: bytes) -> tuple[int, bytes]:
    """One delivery to alice; the final reply, whatever it is."""
    with smtplib.LMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client")
        assert client.mail(SENDER.decode())[0] == 250
        assert client.rcpt(RECIPIENT.decode())[0] == 250
        reply = client.data(message)
        # Whatever the outcome, the session goes on.
        assert client.noop()[0] == 250
        return reply


def imap_append(port: int, message: bytes) -> tuple[str, bytes]:
    with imaplib.IMAP4("127.0.0.1", port, timeout=30) as client:
        client.login("alice", "alice-password")
        status, data = client.append("INBOX", None, None, message)
        client.logout()
    return status, data[0]


def check_store(data) -> str:
    checked = run_gateway(data, "check", check=False)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
    return checked.stdout.decode()


def test_full_disk_gives_temporary_failures_and_loses_nothing(disk):
    data = disk.data
    messages = {n: b"Subject: message %d\r\n\r\nbody %d\r\n" % (n, n) for n in range(1, 10)}
    with GatewayProcess(data, pop3=None) as server:
        lmtp, imap = server.port("lmtp"), server.port("imap")
        # Acknowledged before the disk fills: UIDs 1-3, one per way in.
        assert lmtp_deliver(lmtp, SENDER.decode(), RECIPIENT.decode(), messages[1]) == 1
        assert run_gateway(data, "deliver", "alice", input=messages[2]).returncode == 0
        status, reply = imap_append(imap, messages[3])
        assert (status, APPENDUID.search(reply).group(1)) == ("OK", b"3")

        disk.fill()
        # Each way in says "try again later", in its own protocol's words.
        assert lmtp_attempt(lmtp, messages[4]) == (452, b"4.3.1 <alice@example.test> Mail system full, try again later")
        refused = run_gateway(data, "deliver", "alice", input=messages[5], check=False)
        assert refused.returncode == 75, refused.stderr
        assert refused.stderr.startswith(b"gateway deliver: temporary failure: ")
        assert refused.stderr.count(b"\n") == 1
        assert imap_append(imap, messages[6]) == ("NO", b"[UNAVAILABLE] Temporary failure, try again later")
        # The server itself is fine: the next client still gets served.
        assert lmtp_attempt(lmtp, messages[4])[0] == 452
        # Nothing half-written is left, and the index agrees with the files.
        assert list((data / "store" / "tmp").iterdir()) == []
        assert check_store(data) == "store is consistent\n"

        disk.free()
        uid_lmtp = lmtp_deliver(lmtp, SENDER.decode(), RECIPIENT.decode(), messages[7])
        assert run_gateway(data, "deliver", "alice", input=messages[8]).returncode == 0
        status, reply = imap_append(imap, messages[9])
        assert status == "OK"
        uid_imap = int(APPENDUID.search(reply).group(1))

    stored = read_mailbox(data)
    uids = [uid for uid, _ in stored]
    # No UID handed out twice, and the refused messages are not there.
    assert uids == sorted(set(uids)) and len(uids) == 6
    assert uids[:3] == [1, 2, 3] and min(uids[3:]) > 3
    assert uid_lmtp == uids[3] and uid_imap == uids[5]
    # The LMTP copies under their trace fields; the others as given.
    lmtp_copies = untraced([stored[0], stored[3]], SENDER, RECIPIENT)
    assert [body for _, body in lmtp_copies] == [messages[1], messages[7]]
    assert [body for _, body in stored[1:3] + stored[4:]] == [messages[2], messages[3], messages[8], messages[9]]
    assert check_store(data) == "store is consistent\n"


def server_spool(pid: int, spool_dir) -> str | None:
    """The server's open LMTP spool (an unlinked file in the store's tmp/)."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(spool_dir) + os.sep):
            return f"/proc/{pid}/fd/{fd}"
    return None


def store_files(data) -> set[str]:
    """Every file of the store but the index's own (which a restart may touch)."""
    root = data / "store"
    return {
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file() and not path.name.startswith("index.sqlite")
    }


def test_kill_9_during_lmtp_data(tmp_path):
    data = tmp_path / "data"
    run_gateway(data, "user", "add", "alice", input=b"alice-password\n")
    first = b"Subject: acknowledged 1\r\n\r\none\r\n"
    second = b"Subject: acknowledged 2\r\n\r\ntwo\r\n"
    server = GatewayProcess(data, pop3=None, imap=None).start()
    try:
        lmtp = server.port("lmtp")
        assert lmtp_deliver(lmtp, SENDER.decode(), RECIPIENT.decode(), first) == 1
        assert lmtp_deliver(lmtp, SENDER.decode(), RECIPIENT.decode(), second) == 2
        before = store_files(data)
        with socket.create_connection(("127.0.0.1", lmtp), timeout=30) as client:
            reader = client.makefile("rb")
            assert reader.readline().startswith(b"220 ")
            client.sendall(b"LHLO c\r\nMAIL FROM:<sender@example.org>\r\nRCPT TO:<alice>\r\nDATA\r\n")
            while not reader.readline().startswith(b"354 "):
                pass
            # Four of a ten-megabyte message's megabytes, then the kill.
            line = b"partial message data, never to be delivered, %05d\r\n"
            chunk = b"Subject: killed\r\n\r\n" + b"".join(line % n for n in range(20_000))
            sent = 0
            while sent < 4 * 1024 * 1024:
                client.sendall(chunk)
                sent += len(chunk)
            spool = None
            for _ in range(400):
                spool = server_spool(server.process.pid, data / "store" / "tmp")
                if spool is not None and os.stat(spool).st_size > 1024 * 1024:
                    break
                time.sleep(0.025)
            else:
                raise AssertionError(f"the server never spooled the message (spool {spool})")
            server.kill()
            reader.close()
    finally:
        server.kill()

    # Nothing of the killed DATA is left: its spool had no name to leave.
    assert store_files(data) == before
    assert list((data / "store" / "tmp").iterdir()) == []
    assert check_store(data) == "store is consistent\n"
    with GatewayProcess(data, pop3=None, imap=None) as server:
        after = lmtp_deliver(server.port("lmtp"), SENDER.decode(), RECIPIENT.decode(), b"Subject: after\r\n\r\n")
    assert after == 3
    assert untraced(read_mailbox(data), SENDER, RECIPIENT) == [(1, first), (2, second), (3, b"Subject: after\r\n\r\n")]
    assert check_store(data) == "store is consistent\n"
