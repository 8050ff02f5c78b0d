"""
Moving a single server to the shared store: ``gateway migrate`` copies the
SQLite store of a data dir into a private PostgreSQL with bodies in a
private SeaweedFS (tests/store/engines.py), and a node started on it serves
what the old server served: POP3 UIDL lists byte for byte the same (device
views too), IMAP folders, UIDs, flags, dates, bodies and modseqs.  Also from
a real Dovecot, through ``gateway import maildir`` first.
"""

from __future__ import annotations

import poplib
import shutil
import tempfile
from pathlib import Path

import imapclient
import pytest

from tests.e2e.test_cluster import PASSWORD, node_config
from tests.serverproc import GatewayProcess, run_gateway


def pop3(node, user: str) -> poplib.POP3:
    client = poplib.POP3("127.0.0.1", node.port("pop3"), timeout=30)
    client.user(user)
    client.pass_(PASSWORD)
    return client


def uidls(node, user: str = "alice") -> list[bytes]:
    client = pop3(node, user)
    try:
        return client.uidl()[1]
    finally:
        client.quit()


def imap_state(node) -> dict:
    """Every folder: UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ and each message's data."""
    state = {}
    with imapclient.IMAPClient("127.0.0.1", port=node.port("imap"), ssl=False, timeout=30) as client:
        client.login("alice", PASSWORD)
        client.enable("CONDSTORE")
        for _, _, name in client.list_folders():
            status = client.folder_status(name, ["UIDVALIDITY", "UIDNEXT", "HIGHESTMODSEQ"])
            client.select_folder(name, readonly=True)
            uids = client.search()
            fetched = client.fetch(uids, ["FLAGS", "INTERNALDATE", "MODSEQ", "BODY.PEEK[]"]) if uids else {}
            state[name] = (status, {uid: (data[b"FLAGS"], data[b"INTERNALDATE"], data[b"MODSEQ"], data[b"BODY[]"])
                                    for uid, data in fetched.items()})
    return state


def migrate(data: Path, postgres_database: str, seaweed, bucket: str, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweed.ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweed.SECRET_KEY)
    return run_gateway(data, "migrate", "--to", postgres_database,
                       "--blobs", f"s3://{bucket}?endpoint={seaweed.endpoint}&region={seaweed.REGION}", check=False)


def test_a_node_on_the_migrated_store_serves_what_the_old_server_did(tmp_path, postgres_database, seaweed,
                                                                      monkeypatch):
    data = tmp_path / "data"
    with GatewayProcess(data) as old:
        old.add_user("alice", PASSWORD)
        for n in range(1, 7):
            old.deliver("alice", b"Subject: message %d\r\n\r\nbody %d\r\n" % (n, n))
        for device in ("phone", "desktop"):
            pop3(old, f"alice#{device}").quit()
        phone = pop3(old, "alice#phone")
        phone.dele(2)
        phone.quit()
        with imapclient.IMAPClient("127.0.0.1", port=old.port("imap"), ssl=False, timeout=30) as client:
            client.login("alice", PASSWORD)
            client.select_folder("INBOX")
            client.add_flags([1, 3], [imapclient.SEEN, b"$Label1"])
            client.delete_messages([4])
            client.expunge()
            client.create_folder("Archive")
            client.copy([5], "Archive")
        before = {user: uidls(old, user) for user in ("alice", "alice#phone", "alice#desktop")}
        state = imap_state(old)
    assert len(before["alice"]) == 5 and len(before["alice#phone"]) == 4

    bucket = seaweed.create_bucket()
    copied = migrate(data, postgres_database, seaweed, bucket, monkeypatch)
    assert copied.returncode == 0, copied.stderr.decode()
    assert copied.stdout.decode().startswith("1 users, 6 mailboxes: 6 messages copied (")

    config = node_config(tmp_path / "node.toml", postgres_database, seaweed, bucket)
    with GatewayProcess(data, config=config) as node:
        assert {user: uidls(node, user) for user in before} == before
        assert imap_state(node) == state


@pytest.fixture
def dovecot():
    from tests.e2e import test_dovecot_migration as reference  # skips without Dovecot, outside CI

    # As there: Dovecot's unprivileged processes must reach the files.
    root = Path(tempfile.mkdtemp(prefix="gateway-dovecot-"))
    root.chmod(0o711)
    server = reference.Dovecot(root)
    try:
        yield server, reference
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_dovecot_to_sqlite_to_postgresql_keeps_dovecots_uidls(dovecot, tmp_path, postgres_database, seaweed,
                                                              monkeypatch):
    server, reference = dovecot
    server.start()
    reference.fill_dovecot(server.imap_port)
    dovecot_uidls = reference.pop3_uidls(server.pop3_port)
    dovecot_state = reference.imap_state(server.imap_port)
    server.stop()
    assert len(dovecot_uidls) == 4

    data = tmp_path / "data"
    run_gateway(data, "user", "add", "alice", input=b"secret\n")
    run_gateway(data, "import", "maildir", "alice", str(server.maildir))
    bucket = seaweed.create_bucket()
    copied = migrate(data, postgres_database, seaweed, bucket, monkeypatch)
    assert copied.returncode == 0, copied.stderr.decode()
    again = migrate(data, postgres_database, seaweed, bucket, monkeypatch)
    assert "0 messages copied (0 bytes)" in again.stdout.decode()

    config = node_config(tmp_path / "node.toml", postgres_database, seaweed, bucket)
    with GatewayProcess(data, config=config) as node:
        assert reference.pop3_uidls(node.port("pop3")) == dovecot_uidls
        state = reference.imap_state(node.port("imap"))
    for name, folder in dovecot_state.items():
        assert state[name] == folder, name
