"""
``kill -9`` of the real server as it processes a POP3 QUIT after many DELEs
(issue 4), under the expunge and the trash delete policies.

Whenever the kill lands (before, during or after the QUIT's store call), the
store after a restart must hold each message whole or not at all, exactly
once between INBOX and Trash; the QUIT's deletions are applied all or none;
no UID is handed out twice; ``gateway check`` finds nothing ``--repair``
cannot fix safely; and the next POP3 session lists exactly what the store
holds, with its UIDLs.
"""

from __future__ import annotations

import os
import poplib
import socket
import time

import pytest

from gateway.store.sqlite.store import SQLiteStore
from tests.deferreds import result_of
from tests.serverproc import GatewayProcess, run_gateway

COUNT = 200
MESSAGES = {uid: b"From: a@example.org\r\nSubject: fault %d\r\n\r\n%s\r\n" % (uid, b"x" * (uid % 50)) for uid in
            range(1, COUNT + 1)}
DELETED = set(range(1, COUNT + 1, 2))


def prepare(tmp_path, policy):
    data = tmp_path / "data"
    run_gateway(data, "user", "add", "alice", input=b"secret\n")
    store = SQLiteStore(data / "store")
    try:
        result_of(store.ensure_user("alice"))
        inbox = result_of(store.get_mailbox("alice", "INBOX"))
        for uid in sorted(MESSAGES):
            assert result_of(store.append(inbox.id, MESSAGES[uid])).uid == uid
    finally:
        store.close()
    config = tmp_path / "gateway.toml"
    config.write_text(f'[pop3]\ndelete_policy = "{policy}"\n[auth]\nfailure_delay = 0.1\n')
    return data, config


def contents(data, name):
    """{UID: body} of one of alice's mailboxes, read from the store after the crash."""
    store = SQLiteStore(data / "store")
    try:
        mailbox = result_of(store.get_mailbox("alice", name))
        bodies = {}
        for record in result_of(store.list_messages(mailbox.id)):
            with result_of(store.open_message(mailbox.id, record.uid)) as body:
                bodies[record.uid] = body.read()
            assert len(bodies[record.uid]) == record.size
        return mailbox, bodies
    finally:
        store.close()


def signature(path):
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_size, stat.st_mtime_ns


def wait_for_the_apply_to_start(data, trash_id, before):
    """
    Bounded busy wait for the first trace of the QUIT's store call: the WAL
    written (expunge, and the move's commit) or a body linked into Trash
    (the move, before its commit).  Returns at once if it never shows.
    """
    wal = data / "store" / "index.sqlite-wal"
    trash_dir = data / "store" / "mail" / str(trash_id)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if signature(wal) != before or any(name.isdigit() for name in os.listdir(trash_dir)):
            return
        time.sleep(0)


def dele_then_quit_and_kill(server, moment, trash_id):
    with socket.create_connection(("127.0.0.1", server.port("pop3")), timeout=30) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"+OK")
        sock.sendall(b"USER alice\r\nPASS secret\r\n")
        assert reader.readline() == b"+OK Send PASS\r\n"
        assert reader.readline().startswith(b"+OK Maildrop has %d messages" % COUNT)
        sock.sendall(b"".join(b"DELE %d\r\n" % number for number in sorted(DELETED)))
        for number in sorted(DELETED):
            assert reader.readline() == b"+OK Message %d deleted\r\n" % number
        before = signature(server.data_dir / "store" / "index.sqlite-wal")
        sock.sendall(b"QUIT\r\n")
        if moment == "mid-apply":
            wait_for_the_apply_to_start(server.data_dir, trash_id, before)
        server.kill()


def check_mailboxes(data, policy):
    """
    Each message whole, exactly once between INBOX and Trash; the QUIT's
    deletions all applied or none.  Returns (INBOX info, its bodies, applied).
    """
    inbox, in_inbox = contents(data, "INBOX")
    _, in_trash = contents(data, "Trash")
    assert set(in_inbox) in ({*MESSAGES}, {*MESSAGES} - DELETED)
    for uid, body in in_inbox.items():
        assert body == MESSAGES[uid]
    applied = set(in_inbox) != set(MESSAGES)
    moved = DELETED if applied and policy == "trash" else set()
    assert sorted(in_trash.values()) == sorted(MESSAGES[uid] for uid in moved)
    return inbox, in_inbox, applied


@pytest.mark.parametrize(
    ("policy", "moment"),
    [
        ("expunge", "at-once"),
        ("expunge", "mid-apply"),
        ("trash", "at-once"),
        ("trash", "mid-apply"),
    ],
)
def test_kill_during_quit_leaves_a_consistent_mailbox(tmp_path, policy, moment):
    data, config = prepare(tmp_path, policy)
    trash_id = contents(data, "Trash")[0].id
    with GatewayProcess(data, imap=None, lmtp=None, config=config) as server:
        dele_then_quit_and_kill(server, moment, trash_id)

    _, _, applied = check_mailboxes(data, policy)
    print(f"{policy}, kill {moment}: the QUIT was {'applied' if applied else 'not applied'}")
    if run_gateway(data, "check", check=False).returncode != 0:
        # A kill between the commit and the unlink of the bodies leaves files
        # of expunged UIDs, which --repair removes; nothing else may be wrong.
        run_gateway(data, "check", "--repair")
        assert run_gateway(data, "check", check=False).returncode == 0
    # What a repair did must not have broken (or duplicated) anything either.
    inbox, in_inbox, applied_after_repair = check_mailboxes(data, policy)
    assert applied_after_repair == applied

    with GatewayProcess(data, imap=None, lmtp=None, config=config) as server:
        assert server.deliver("alice", b"Subject: after the crash\r\n\r\nnew\r\n").returncode == 0
        _, after = contents(data, "INBOX")
        # UIDs never go back, whether or not the expunge was applied.
        assert max(after) == COUNT + 1 and set(after) - {COUNT + 1} == set(in_inbox)
        client = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=30)
        try:
            client.user("alice")
            client.pass_("secret")
            listed = [line.split() for line in client.uidl()[1]]
            assert [uidl for _, uidl in listed] == [b"%08x%08x" % (uid, inbox.uidvalidity) for uid in sorted(after)]
            assert b"\r\n".join(client.retr(1)[1]) + b"\r\n" == after[min(after)]
            assert client.stat() == (len(after), sum(map(len, after.values())))
        finally:
            client.quit()
