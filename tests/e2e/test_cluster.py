"""
Two gateway nodes, two ``twistd -n gateway`` processes, sharing one store in
a private PostgreSQL with bodies in a private SeaweedFS over S3
(tests/store/engines.py), driven over real sockets by imapclient, smtplib
and poplib: what a client of one node sees of what was done through the
other, as behind a load balancer.
"""

from __future__ import annotations

import poplib
import smtplib
import time

import imapclient
import pytest

from tests.serverproc import GatewayProcess, run_gateway

PASSWORD = "cluster-secret"


def node_config(path, dsn: str, seaweed, bucket: str, store_options: str = ""):
    path.write_text(
        "[store]\n"
        'backend = "postgresql"\n'
        f"dsn = {dsn!r}\n"
        "pool_size = 4\n"
        f"{store_options}"
        "\n[store.blobs]\n"
        'kind = "s3"\n'
        f'bucket = "{bucket}"\n'
        f'endpoint = "{seaweed.endpoint}"\n'
        f'region = "{seaweed.REGION}"\n'
        f'access_key = "{seaweed.ACCESS_KEY}"\n'
        f'secret_key = "{seaweed.SECRET_KEY}"\n'
    )
    return path


@pytest.fixture
def nodes(tmp_path, postgres_database, seaweed):
    yield from start_nodes(tmp_path, postgres_database, seaweed)


def start_nodes(tmp_path, postgres_database, seaweed, store_options: str = ""):
    """Two nodes on one database and bucket, alice a user of each; stopped when the generator ends."""
    bucket = seaweed.create_bucket()
    started = []
    try:
        # Both at once, as a cluster's nodes boot: the schema migration
        # holds an advisory lock for that.
        for name in ("a", "b"):
            config = node_config(tmp_path / f"{name}.toml", postgres_database, seaweed, bucket, store_options)
            started.append(GatewayProcess(tmp_path / name, config=config).launch())
        for node in started:
            node.wait_started()
            # The passwd-file is each node's own; a cluster ships the same
            # file to every node.
            node.add_user("alice", PASSWORD)
        yield started
    finally:
        for node in started:
            node.stop()


def lmtp_deliver(node, subject: str) -> None:
    with smtplib.LMTP("127.0.0.1", node.port("lmtp")) as lmtp:
        lmtp.sendmail("bob@example.org", ["alice@example.org"], f"Subject: {subject}\r\n\r\nbody\r\n".encode())


def imap(node):
    client = imapclient.IMAPClient("127.0.0.1", port=node.port("imap"), ssl=False, timeout=10)
    client.login("alice", PASSWORD)
    return client


def test_idle_on_one_node_sees_a_delivery_through_the_other_within_a_second(nodes):
    a, b = nodes
    lmtp_deliver(b, "first")  # makes the user's mailboxes
    client = imap(a)
    try:
        assert client.select_folder("INBOX")[b"EXISTS"] == 1
        client.idle()
        started = time.monotonic()
        lmtp_deliver(b, "second")
        events = []
        while time.monotonic() - started < 1.0 and (2, b"EXISTS") not in events:
            events += client.idle_check(timeout=max(0.05, 1.0 - (time.monotonic() - started)))
        client.idle_done()
        assert (2, b"EXISTS") in events, f"node A said {events} in the second after node B's delivery"
        fetched = client.fetch([2], ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
        assert fetched[2][b"BODY[HEADER.FIELDS (SUBJECT)]"].strip() == b"Subject: second"
    finally:
        client.logout()


def test_flags_and_expunges_on_one_node_reach_sessions_on_the_other(nodes):
    a, b = nodes
    for n in range(3):
        lmtp_deliver(b, f"m{n}")
    watcher, actor = imap(a), imap(b)
    try:
        watcher.select_folder("INBOX")
        actor.select_folder("INBOX")
        watcher.idle()
        actor.add_flags([1], [imapclient.SEEN])
        actor.delete_messages([2])
        actor.expunge()
        deadline = time.monotonic() + 1.0
        events = []
        while time.monotonic() < deadline and not any(e[1] == b"EXPUNGE" for e in events):
            events += watcher.idle_check(timeout=0.2)
        watcher.idle_done()
        assert (2, b"EXPUNGE") in events
        assert any(e[0] == 1 and e[1] == b"FETCH" and imapclient.SEEN in e[2][e[2].index(b"FLAGS") + 1]
                   for e in events), events
    finally:
        watcher.logout()
        actor.logout()


def test_notify_mailboxname_on_one_node_tells_of_changes_made_through_the_other(nodes, monkeypatch):
    # RFC 5465 5.4: a mailbox created, renamed or deleted by another client
    # is told to a NOTIFY MailboxName session, whichever node either is on.
    import imaplib

    a, b = nodes
    lmtp_deliver(b, "first")  # makes the user's mailboxes
    monkeypatch.setitem(imaplib.Commands, "NOTIFY", ("AUTH", "SELECTED"))
    watcher = imaplib.IMAP4("127.0.0.1", a.port("imap"), timeout=10)
    other = imap(b)
    try:
        watcher.login("alice", PASSWORD)
        typ, _ = watcher._simple_command("NOTIFY", "SET", "(PERSONAL (MailboxName))")
        assert typ == "OK"
        other.create_folder("Projects")
        # Told without a command: imaplib reads the untagged lines as they come.
        assert watcher.readline() == b'* LIST (\\HasNoChildren) "/" "Projects"\r\n'
        other.rename_folder("Projects", "Done")
        assert watcher.readline() == b'* LIST (\\HasNoChildren) "/" "Done" ("OLDNAME" ("Projects"))\r\n'
        other.delete_folder("Done")
        assert watcher.readline() == b'* LIST (\\NonExistent) "/" "Done"\r\n'
    finally:
        other.logout()
        watcher.logout()


def test_pop3_on_one_node_holds_the_maildrop_against_the_other(nodes):
    a, b = nodes
    lmtp_deliver(a, "hello")
    watcher = imap(b)
    watcher.select_folder("INBOX")
    watcher.idle()
    first = poplib.POP3("127.0.0.1", a.port("pop3"), timeout=10)
    first.user("alice")
    first.pass_(PASSWORD)
    try:
        second = poplib.POP3("127.0.0.1", b.port("pop3"), timeout=10)
        second.user("alice")
        with pytest.raises(poplib.error_proto) as caught:
            second.pass_(PASSWORD)
        assert caught.value.args[0].startswith(b"-ERR [IN-USE]")
        second.quit()
    finally:
        first.dele(1)
        first.quit()
    # The POP3 QUIT on node A expunged: node B's IMAP session is told.
    deadline = time.monotonic() + 1.0
    events = []
    while time.monotonic() < deadline and (1, b"EXPUNGE") not in events:
        events += watcher.idle_check(timeout=0.2)
    watcher.idle_done()
    watcher.logout()
    assert (1, b"EXPUNGE") in events, events
    # QUIT released it: node B's session now gets the maildrop, without
    # the message node A's session deleted.
    third = poplib.POP3("127.0.0.1", b.port("pop3"), timeout=10)
    third.user("alice")
    third.pass_(PASSWORD)
    assert third.stat()[0] == 0
    third.quit()


def pop3_login(node, user: str) -> poplib.POP3:
    client = poplib.POP3("127.0.0.1", node.port("pop3"), timeout=10)
    client.user(user)
    client.pass_(PASSWORD)
    return client


def test_device_views_across_nodes(nodes):
    # Each device's view is a maildrop of its own on every node: the phone
    # on A and the desktop on B at once; the phone again on B is refused.
    a, b = nodes
    lmtp_deliver(a, "one")
    lmtp_deliver(a, "two")
    for device in ("phone", "desktop"):
        pop3_login(a, f"alice#{device}").quit()
    phone = pop3_login(a, "alice#phone")
    desktop = pop3_login(b, "alice#desktop")
    try:
        second = poplib.POP3("127.0.0.1", b.port("pop3"), timeout=10)
        second.user("alice#phone")
        with pytest.raises(poplib.error_proto) as caught:
            second.pass_(PASSWORD)
        assert caught.value.args[0].startswith(b"-ERR [IN-USE]")
        second.quit()
        uidls = phone.uidl()[1]
        assert desktop.uidl()[1] == uidls and len(uidls) == 2
        phone.dele(1)
        desktop.dele(1)
        desktop.dele(2)
    finally:
        phone.quit()
        desktop.quit()
    # Both devices deleted message 1: it left INBOX; 2 only the desktop did.
    phone = pop3_login(b, "alice#phone")
    assert [line.split()[1] for line in phone.uidl()[1]] == [uidls[1].split()[1]]
    phone.quit()
    plain = pop3_login(a, "alice")
    assert plain.stat()[0] == 1
    plain.quit()


def test_gateway_check_reads_the_shared_store(nodes, tmp_path):
    a, _ = nodes
    lmtp_deliver(a, "checked")
    result = run_gateway(a.data_dir, "--config", str(tmp_path / "a.toml"), "check", check=False)
    assert (result.returncode, result.stdout) == (0, b"store is consistent\n"), result.stderr


def test_gateway_check_reports_and_repairs_quota_counters(tmp_path, postgres_database):
    import psycopg
    from twisted.internet import reactor

    from gateway.store.postgresql.chunks import ChunkedBlobs
    from gateway.store.postgresql.store import PostgreSQLStore
    from tests.deferreds import result_of

    store = PostgreSQLStore(reactor, postgres_database, ChunkedBlobs(), pool_size=1)
    try:
        result_of(store.ensure_user("alice"))
        box = result_of(store.get_mailbox("alice", "INBOX"))
        octets = sum(result_of(store.append(box.id, b"Subject: %d\r\n\r\nbody\r\n" % n)).size for n in range(2))
    finally:
        result_of(store.close())
    with psycopg.connect(postgres_database, autocommit=True) as connection:
        connection.execute("UPDATE mailboxes SET message_count = 5, message_octets = 0 WHERE id = %s", (box.id,))
    config = tmp_path / "node.toml"
    config.write_text(f'[store]\nbackend = "postgresql"\ndsn = {postgres_database!r}\n'
                      '[store.blobs]\nkind = "postgresql"\n')

    def check(*args):
        result = run_gateway(tmp_path / "data", "--config", str(config), "check", *args, check=False)
        return result.returncode, result.stdout.decode()

    found = f"alice/INBOX: quota counters say 5 messages / 0 bytes, the mailbox holds 2 / {octets}\n"
    assert check() == (1, found)
    assert check() == (1, found)
    assert check("--repair") == (
        0, f"repaired: alice/INBOX: quota counters counted again: 2 messages / {octets} bytes\nstore is consistent\n")
    assert check() == (0, "store is consistent\n")


def test_a_node_without_a_database_says_so_in_one_line(tmp_path):
    config = tmp_path / "broken.toml"
    config.write_text('[store]\nbackend = "postgresql"\n')
    server = GatewayProcess(tmp_path / "data", config=config)
    with pytest.raises(RuntimeError) as caught:
        server.start(timeout=30)
    assert 'store: [store] backend = "postgresql" needs store.dsn, the database to use' in str(caught.value)


def test_gateway_check_never_migrates_the_schema(tmp_path, postgres_database, seaweed):
    import psycopg

    config = node_config(tmp_path / "node.toml", postgres_database, seaweed, seaweed.create_bucket())
    result = run_gateway(tmp_path / "data", "--config", str(config), "check", check=False)
    assert result.returncode == 1
    assert result.stderr == (b"gateway: store: the database has no gateway schema:"
                             b" a node creates it when it first starts\n")
    with psycopg.connect(postgres_database) as connection:
        assert connection.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,)


def test_the_benchmarks_push_across_nodes_and_count_the_stores_cpu(nodes, postgres_cluster, seaweed):
    """benchmarks.compare --backend postgresql: idlers on A hear of deliveries through B; CPU per message."""
    import asyncio

    import attrs

    from benchmarks.load import run_scenarios
    from benchmarks.scenarios import Settings, Target, Users, choose

    a, b = nodes
    for n in range(3):
        lmtp_deliver(b, f"m{n}")
    users = Users(bulk=("alice",), poll=("alice",), idle="alice", sink="alice", big="alice", password=PASSWORD)
    postmaster = int((postgres_cluster.data / "postmaster.pid").read_text().split()[0])
    target = Target("127.0.0.1", a.port("pop3"), a.port("imap"), a.port("lmtp"), users, pid=a.process.pid,
                    peer_lmtp=b.port("lmtp"), store_pids=(postmaster, seaweed.process.pid))
    alone = attrs.evolve(target, peer_lmtp=None)
    settings = attrs.evolve(Settings(), push_sessions=5, push_rounds=2, cap=30.0)
    scenarios = choose(["cross-node-push", "pop3-first-download-1"])
    outcomes = asyncio.run(run_scenarios({"two": target, "one": alone}, settings, 1, scenarios,
                                         log=lambda text: None))
    assert outcomes.median("cross-node-push", "two", "missed") == 0
    assert 0 < outcomes.median("cross-node-push", "two", "p99 ms") < 1_000
    assert outcomes.errors["cross-node-push", "one"] == [
        "ValueError: one node: no other node over the same store to deliver through"]
    assert outcomes.median("pop3-first-download-1", "two", "msg/s") > 0
    assert outcomes.median("pop3-first-download-1", "two", "CPU us/msg") > 0
    assert outcomes.median("pop3-first-download-1", "two", "store CPU us/msg") >= 0
