"""
kill -9 of the real server during APPEND (DESIGN.md durability: a message is
acknowledged only once its body file is fsynced and renamed and its index
row committed).  After a restart every APPEND that got ``OK [APPENDUID v
u]`` is there whole, byte for byte, under UID u; nothing half-written shows
up; no UID is handed out twice; ``gateway check`` finds the store
consistent.
"""

from __future__ import annotations

import imaplib
import os
import re
import socket
import time
from pathlib import Path

import tests.burst
from tests.serverproc import GatewayProcess, run_gateway

APPENDUID = re.compile(rb"\[APPENDUID (\d+) (\d+)\]")


def largest_spool(pid: int) -> int:
    """
    Size of the biggest unlinked temporary file the server holds open: where
    it spools an APPEND literal (gateway/imap/framing.py).
    """
    largest = 0
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            if os.readlink(fd).endswith("(deleted)"):
                largest = max(largest, os.stat(fd).st_size)
        except OSError:
            continue  # closed meanwhile
    return largest


def all_messages(server) -> dict[int, bytes]:
    imap = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=30)
    try:
        imap.login("alice", "secret")
        imap.select("INBOX", readonly=True)
        typ, data = imap.uid("FETCH", "1:*", "(BODY.PEEK[])")
        assert typ == "OK"
        messages = {}
        for item in data:
            if isinstance(item, tuple):
                uid = int(re.search(rb"UID (\d+)", item[0]).group(1))
                messages[uid] = item[1]
        return messages
    finally:
        imap.logout()


def append(server, message: bytes) -> int:
    imap = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=30)
    try:
        imap.login("alice", "secret")
        typ, data = imap.append("INBOX", None, None, message)
        assert typ == "OK", data
        return int(APPENDUID.search(data[0]).group(2))
    finally:
        imap.logout()


def assert_consistent(data_dir):
    result = run_gateway(data_dir, "check", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(b"store is consistent")


def big_message(megabytes: int) -> bytes:
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\r\n"
    return b"Subject: big\r\n\r\n" + line * (megabytes * 1024 * 1024 // len(line))


def test_kill_9_in_the_middle_of_a_big_append(tmp_path):
    data_dir = tmp_path / "data"
    server = GatewayProcess(data_dir, pop3=None, lmtp=None).start()
    try:
        server.add_user("alice", "secret")
        before = append(server, b"Subject: before\r\n\r\nkept\r\n")
        message = big_message(20)
        sock = socket.create_connection(("127.0.0.1", server.port("imap")), timeout=30)
        reader = sock.makefile("rb")
        reader.readline()
        sock.sendall(b"a LOGIN alice secret\r\n")
        assert reader.readline().startswith(b"a OK")
        sock.sendall(b"b APPEND INBOX {%d}\r\n" % len(message))
        assert reader.readline() == b"+ Ready for literal data\r\n"
        half = len(message) // 2
        sock.sendall(message[:half])
        # Kill once the server has spooled most of the half (bounded wait).
        deadline = time.monotonic() + 60
        while largest_spool(server.process.pid) < half * 3 // 4:
            assert time.monotonic() < deadline, "the server did not read the literal"
            time.sleep(0.01)
        server.kill()
        sock.close()
    finally:
        server.kill()

    with GatewayProcess(data_dir, pop3=None, lmtp=None) as server:
        assert all_messages(server) == {before: b"Subject: before\r\n\r\nkept\r\n"}
        after = append(server, b"Subject: after\r\n\r\nnew\r\n")
        assert after > before
    assert_consistent(data_dir)


class Burst(tests.burst.Burst):
    """IMAP clients APPENDing numbered messages until the server goes away."""

    label = b"append"
    spread = 3000
    gone = (OSError, imaplib.IMAP4.abort, imaplib.IMAP4.error)

    def connect(self):
        imap = imaplib.IMAP4("127.0.0.1", self.port, timeout=30)
        imap.login("alice", "secret")
        return imap

    def send(self, client, number):
        typ, data = client.append("INBOX", None, None, self.message(number))
        return int(APPENDUID.search(data[0]).group(2)) if typ == "OK" else None


def test_kill_9_during_a_burst_of_appends(tmp_path):
    data_dir = tmp_path / "data"
    server = GatewayProcess(data_dir, pop3=None, lmtp=None).start()
    try:
        server.add_user("alice", "secret")
    except BaseException:
        server.kill()
        raise
    burst = Burst(server.port("imap"), threads=4, kill_after=30)
    acknowledged = burst.run_until_killed(server)

    with GatewayProcess(data_dir, pop3=None, lmtp=None) as server:
        messages = all_messages(server)
        after = append(server, b"Subject: after\r\n\r\nnew\r\n")
    # Every acknowledged APPEND is there, under its UID, byte for byte.
    for number, uid in acknowledged.items():
        assert messages.get(uid) == Burst.message(number), f"message {number} (UID {uid})"
    # Whatever else survived (stored, but killed before its OK) is whole.
    expected = {Burst.message(number) for number in range(1, burst.next_number + 1)}
    for uid, body in messages.items():
        assert body in expected, f"UID {uid} is not a whole message"
    assert len(set(messages.values())) == len(messages)
    # No UID handed out before the crash is handed out again.
    assert after > max(messages)
    assert after > max(acknowledged.values())
    assert_consistent(data_dir)
