"""
POP3 end to end: the real server (``twistd -n gateway``) on loopback ports the
OS picks, driven by Python's poplib, a raw pipelining socket and Debian's
``fetchmail``.  What the store holds is read back from disk.
"""

from __future__ import annotations

import os
import poplib
import shutil
import socket
import subprocess
import time

import pytest

from gateway.store.sqlite.store import SQLiteStore
from tests.deferreds import result_of
from tests.serverproc import GatewayProcess, run_gateway

MESSAGES = [
    b"From: a@example.org\r\nSubject: e2e-1\r\n\r\nfirst body\r\n",
    b"From: b@example.org\r\nSubject: e2e-2\r\n\r\n.starts with a dot\r\n..two dots\r\n.\r\nend\r\n",
    b"From: c@example.org\r\nSubject: e2e-3\r\n\r\nline 1\r\nline 2\r\nline 3\r\n",
]


def inbox_state(data_dir, user="alice"):
    """(UIDVALIDITY, [UID...]) of the user's INBOX, read from the store."""
    store = SQLiteStore(data_dir / "store")
    try:
        inbox = result_of(store.get_mailbox(user, "INBOX"))
        return inbox.uidvalidity, [record.uid for record in result_of(store.list_messages(inbox.id))]
    finally:
        store.close()


def expected_uidls(data_dir):
    """The default format is Dovecot's %08Xu%08Xv: lower-case hex UID, UIDVALIDITY."""
    uidvalidity, uids = inbox_state(data_dir)
    return [b"%08x%08x" % (uid, uidvalidity) for uid in uids]


@pytest.fixture
def data_dir(tmp_path):
    data = tmp_path / "data"
    run_gateway(data, "user", "add", "alice", input=b"secret\n")
    # Straight into the store: one process start per message would be slow.
    store = SQLiteStore(data / "store")
    try:
        result_of(store.ensure_user("alice"))
        inbox = result_of(store.get_mailbox("alice", "INBOX"))
        for message in MESSAGES:
            result_of(store.append(inbox.id, message))
    finally:
        store.close()
    return data


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_text("[auth]\nfailure_delay = 0.2\n")
    return path


def start(data_dir, config):
    return GatewayProcess(data_dir, imap=None, lmtp=None, config=config)


@pytest.fixture
def server(data_dir, config):
    with start(data_dir, config) as process:
        yield process


def connect(server) -> poplib.POP3:
    client = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=30)
    client.user("alice")
    client.pass_("secret")
    return client


def connect_when_unlocked(server) -> poplib.POP3:
    """
    Log in once the server has seen an earlier connection go: closing a socket
    and the server noticing are not one event, so retry [IN-USE], boundedly.
    """
    for _ in range(200):
        try:
            return connect(server)
        except poplib.error_proto as e:
            if b"[IN-USE]" not in e.args[0]:
                raise
        time.sleep(0.05)
    raise AssertionError("maildrop still locked after 10 s")


def test_stat_list_uidl_match_store_and_survive_restart(data_dir, config):
    uidls = expected_uidls(data_dir)
    sizes = [len(m) for m in MESSAGES]
    with start(data_dir, config) as server:
        client = connect(server)
        assert client.stat() == (3, sum(sizes))
        assert client.list()[1] == [b"%d %d" % (n, size) for n, size in enumerate(sizes, 1)]
        assert client.uidl()[1] == [b"%d %s" % (n, uidl) for n, uidl in enumerate(uidls, 1)]
        assert client.uidl(2) == b"+OK 2 " + uidls[1]
        client.quit()
    with start(data_dir, config) as server:
        client = connect(server)
        assert client.uidl()[1] == [b"%d %s" % (n, uidl) for n, uidl in enumerate(uidls, 1)]
        client.quit()


def test_retr_is_byte_exact_and_top_is_header_plus_lines(server):
    client = connect(server)
    for number, message in enumerate(MESSAGES, 1):
        response, lines, octets = client.retr(number)
        assert response == b"+OK %d octets" % len(message)
        # poplib undoes the dot-stuffing; the lines are the stored message.
        assert b"\r\n".join(lines) + b"\r\n" == message
    _, lines, _ = client.top(3, 2)
    assert lines == [b"From: c@example.org", b"Subject: e2e-3", b"", b"line 1", b"line 2"]
    client.quit()


def test_dele_rset_keeps_and_dele_quit_removes(server, data_dir):
    client = connect(server)
    client.dele(1)
    client.dele(2)
    assert client.stat()[0] == 1
    client.rset()
    assert client.stat()[0] == 3
    client.dele(2)
    client.quit()
    _, uids = inbox_state(data_dir)
    assert len(uids) == 2
    client = connect_when_unlocked(server)
    assert client.stat() == (2, len(MESSAGES[0]) + len(MESSAGES[2]))
    assert [line.split()[1] for line in client.uidl()[1]] == expected_uidls(data_dir)
    client.quit()


def test_dropped_connection_removes_nothing(server, data_dir):
    client = connect(server)
    client.dele(1)
    client.dele(2)
    # poplib's file keeps the descriptor open: shut the socket down for real.
    client.sock.shutdown(socket.SHUT_RDWR)
    client.close()
    client = connect_when_unlocked(server)
    assert client.stat()[0] == 3
    client.quit()
    assert len(inbox_state(data_dir)[1]) == 3


def test_second_session_gets_in_use(server):
    first = connect(server)
    with pytest.raises(poplib.error_proto) as caught:
        connect(server)
    assert caught.value.args[0] == b"-ERR [IN-USE] Maildrop is locked by another session"
    first.quit()
    connect_when_unlocked(server).quit()


def test_wrong_password_is_refused_with_auth_code(server):
    client = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=30)
    client.user("alice")
    with pytest.raises(poplib.error_proto) as caught:
        client.pass_("wrong")
    assert caught.value.args[0] == b"-ERR [AUTH] Authentication failed"


def test_pipelined_session_on_a_raw_socket(server, data_dir):
    uidls = expected_uidls(data_dir)
    with socket.create_connection(("127.0.0.1", server.port("pop3")), timeout=30) as sock:
        sock.sendall(b"CAPA\r\nUSER alice\r\nPASS secret\r\nSTAT\r\nUIDL\r\nRETR 2\r\nNOOP\r\nQUIT\r\n")
        received = b""
        # Read ten bytes at a time until the server closes (bounded by size).
        while len(received) < 100_000:
            data = sock.recv(10)
            if not data:
                break
            received += data
    lines = received.split(b"\r\n")
    assert lines[0].startswith(b"+OK ")
    assert b"PIPELINING" in lines
    assert b"+OK Maildrop has 3 messages (%d octets)" % sum(map(len, MESSAGES)) in lines
    assert b"2 " + uidls[1] in lines
    assert b"..starts with a dot\r\n...two dots\r\n..\r\nend\r\n.\r\n+OK\r\n" in received
    assert received.endswith(b"+OK Bye, 0 messages deleted\r\n")


# fetchmail (Debian package "fetchmail")


def fetchmail_binary():
    binary = shutil.which("fetchmail")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("fetchmail is not installed (apt package fetchmail)")
        pytest.skip("fetchmail is not installed (apt package fetchmail)")
    return binary


def run_fetchmail(tmp_path, port, mailbox_file, *options):
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f'poll 127.0.0.1 service {port} protocol POP3 auth password timeout 30\n'
        f'  user "alice" there with password "secret" is "{os.environ.get("USER", "root")}" here\n'
        f'  sslproto "" mda "cat >> {mailbox_file}"\n'
    )
    rc.chmod(0o600)
    env = dict(os.environ, HOME=str(tmp_path), FETCHMAILHOME=str(tmp_path))
    return subprocess.run(
        [fetchmail_binary(), "--nosyslog", "--nodetach", "-f", str(rc), "-i", str(tmp_path / "fetchids"),
         "--pidfile", str(tmp_path / "fetchmail.pid"), "-v", *options],
        capture_output=True,
        env=env,
        timeout=120,
    )


def test_fetchmail_keep_then_fetch_and_delete(tmp_path, server, data_dir):
    fetchmail_binary()
    mailbox_file = tmp_path / "mbox"
    uidls = expected_uidls(data_dir)

    kept = run_fetchmail(tmp_path, server.port("pop3"), mailbox_file, "--keep", "--uidl")
    assert kept.returncode == 0, kept.stderr.decode() + kept.stdout.decode()
    fetched = mailbox_file.read_bytes()
    for number in (1, 2, 3):
        assert fetched.count(b"Subject: e2e-%d" % number) == 1
    assert b"\n.starts with a dot" in fetched
    assert len(inbox_state(data_dir)[1]) == 3
    # fetchmail remembers the messages by our UIDLs.
    ids = (tmp_path / "fetchids").read_bytes()
    assert all(uidl in ids for uidl in uidls)

    again = run_fetchmail(tmp_path, server.port("pop3"), mailbox_file, "--keep", "--uidl")
    # Exit 1: no new mail; nothing fetched twice.
    assert again.returncode == 1, again.stderr.decode() + again.stdout.decode()
    assert mailbox_file.read_bytes() == fetched

    run_gateway(data_dir, "deliver", "alice", input=b"Subject: e2e-4\r\n\r\nnew\r\n")
    flushed = run_fetchmail(tmp_path, server.port("pop3"), mailbox_file, "--nokeep", "--flush", "--uidl")
    assert flushed.returncode == 0, flushed.stderr.decode() + flushed.stdout.decode()
    after = mailbox_file.read_bytes()
    assert after.count(b"Subject: e2e-4") == 1
    assert after.count(b"Subject: e2e-1") == 1
    assert inbox_state(data_dir)[1] == []
