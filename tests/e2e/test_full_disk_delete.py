"""
Deleting works on a full disk (DESIGN.md): on a really full tmpfs, IMAP
EXPUNGE and POP3 DELE+QUIT through the real server answer OK, the space of
the deleted bodies is free again, nothing half-written is left, ``gateway
check`` finds the store consistent, and an index rebuilt afterwards keeps
every UID and UIDVALIDITY and never hands out an expunged UID again, the
highest one included.
"""

from __future__ import annotations

import imaplib
import os
import poplib
import shutil

from tests.e2e.test_faults import TmpfsDisk, check_store
from tests.serverproc import GatewayProcess, run_gateway

PASSWORD = "alice-password"
# What the index's commit of an expunge may take of the room its bodies free.
INDEX_SLACK = 64 * 1024


class Disk(TmpfsDisk):
    # Room for the store's disk reserve (1 MB), which a 2 MB tmpfs has not.
    size = "8m"


def message(number: int, kilobytes: int) -> bytes:
    line = b"%03d filler to take room on the disk, 64 bytes a line......\r\n" % number
    return b"Subject: message %d\r\n\r\n" % number + line * (kilobytes * 1024 // len(line))


def free_bytes(path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def leftovers(store) -> list[str]:
    return sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.name.endswith(".tmp"))


def inbox_state(server) -> tuple[int, int, list[int]]:
    """UIDVALIDITY, UIDNEXT and the UIDs of alice's INBOX, as IMAP shows them."""
    imap = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=30)
    try:
        imap.login("alice", PASSWORD)
        typ, data = imap.status("INBOX", "(UIDVALIDITY UIDNEXT)")
        assert typ == "OK", data
        fields = data[0].decode().split("(", 1)[1].rstrip(")").split()
        status = dict(zip(fields[::2], map(int, fields[1::2])))
        imap.select("INBOX", readonly=True)
        typ, data = imap.uid("SEARCH", "ALL")
        assert typ == "OK", data
        return status["UIDVALIDITY"], status["UIDNEXT"], [int(uid) for uid in data[0].split()]
    finally:
        imap.logout()


def test_expunge_and_pop3_quit_free_space_on_a_full_disk(tmp_path):
    data = tmp_path / "data"
    run_gateway(data, "user", "add", "alice", input=PASSWORD.encode() + b"\n")
    store = data / "store"
    disk = Disk(store)
    disk.mount()
    try:
        with GatewayProcess(data, lmtp=None) as server:
            for number in range(1, 9):
                assert server.deliver("alice", message(number, 100)).returncode == 0
            uidvalidity, _, uids = inbox_state(server)
            assert uids == list(range(1, 9))

            disk.fill()
            imap = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=30)
            imap.login("alice", PASSWORD)
            # Both write the index (\Recent claimed, \Deleted set) on the full disk.
            assert imap.select("INBOX")[0] == "OK"
            assert imap.store("1:3", "+FLAGS.SILENT", r"(\Deleted)")[0] == "OK"
            disk.fill()
            full = free_bytes(store)
            # RFC 3501 7.4.1: one untagged EXPUNGE per message.
            typ, expunged = imap.expunge()
            assert (typ, len(expunged)) == ("OK", 3), expunged
            imap.logout()
            assert free_bytes(store) >= full + 3 * 100 * 1024 - INDEX_SLACK

            disk.fill()
            pop = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=30)
            pop.user("alice")
            pop.pass_(PASSWORD)
            assert pop.stat()[0] == 5
            # The oldest, and the newest: UID 8 is the highest ever given out.
            pop.dele(1)
            pop.dele(5)
            full = free_bytes(store)
            assert full < 64 * 1024
            assert pop.quit().startswith(b"+OK")
            assert free_bytes(store) >= full + 2 * 100 * 1024 - INDEX_SLACK

            assert leftovers(store) == []
            assert check_store(data) == "store is consistent\n"
            assert inbox_state(server) == (uidvalidity, 9, [5, 6, 7])
            # What deleting freed is kept for deleting until the disk has
            # room again: deliveries wait (the MTA retries).
            refused = run_gateway(data, "deliver", "alice", input=message(9, 1), check=False)
            assert (refused.returncode, refused.stderr) == (
                75, b"gateway deliver: temporary failure: the disk is full; the space left is kept for deleting mail\n")

        # The index is lost: its rebuild keeps UIDVALIDITY and the UIDs, and
        # UID 8, expunged, is not handed out again.
        for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
            (store / name).unlink(missing_ok=True)
        with GatewayProcess(data, lmtp=None) as server:
            assert inbox_state(server) == (uidvalidity, 9, [5, 6, 7])
            disk.free()
            # Deliveries go on once the disk has room again.
            assert server.deliver("alice", message(9, 1)).returncode == 0
            assert inbox_state(server) == (uidvalidity, 10, [5, 6, 7, 9])
        assert check_store(data) == "store is consistent\n"
    finally:
        shutil.rmtree(store / "mail", ignore_errors=True)
        disk.unmount()
