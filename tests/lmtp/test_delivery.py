"""
Local delivery against the real SQLite store: ``deliver`` (shared with LMTP)
and ``deliver_main`` (the ``gateway deliver`` MDA) with its sysexits codes.
"""

from __future__ import annotations

import io
import os

import pytest
from twisted.internet import defer, task

from gateway.auth import UsersFile
from gateway.lmtp.delivery import GroupCommit, deliver
from gateway.ops.mda import deliver_main, spool_stdin
from gateway.store.interfaces import NoSuchMailbox, TemporaryFailure
from gateway.store.sqlite.store import SQLiteStore
from gateway.store.traced import TracedMessage, WholeCopy
from tests.deferreds import result_of


def stored(store, user, mailbox="INBOX"):
    """The bodies in a mailbox, ascending by UID, as a client reads them."""
    info = result_of(store.get_mailbox(user, mailbox))
    bodies = []
    for record in result_of(store.list_messages(info.id)):
        with result_of(store.open_message(info.id, record.uid)) as body:
            bodies.append((record.uid, body.read()))
    return bodies


def run(coroutine):
    return result_of(defer.Deferred.fromCoroutine(coroutine))


def test_deliver_creates_the_user_and_stores_in_inbox(store):
    record = run(deliver(store, "alice", b"Subject: one\n\nbody\n"))
    assert record.uid == 1
    assert stored(store, "alice") == [(1, b"Subject: one\r\n\r\nbody\r\n")]


def test_deliver_to_a_user_with_an_inbox_asks_no_write_but_its_own(store, monkeypatch):
    # ensure_user is a write transaction on a server store (PostgreSQL);
    # once the user has an INBOX, finding it is all a delivery there needs.
    ensured = []
    ensure_user = store.ensure_user
    monkeypatch.setattr(store, "ensure_user", lambda user: ensured.append(user) or ensure_user(user))
    run(deliver(store, "alice", b"Subject: one\r\n\r\n"))
    run(deliver(store, "alice", b"Subject: two\r\n\r\n"))
    run(deliver(store, "alice", b"Subject: three\r\n\r\n", "Lists"))
    assert ensured == ["alice", "alice"]
    assert [uid for uid, _ in stored(store, "alice")] == [1, 2, 3]


def group_deliver(store, user, source, mailbox="INBOX"):
    """``GroupCommit.deliver``, its reactor turns run until it is answered."""
    clock = task.Clock()
    delivered = defer.Deferred.fromCoroutine(GroupCommit(store, clock).deliver(user, source, mailbox))
    for _ in range(5):
        clock.advance(0)
    return result_of(delivered)


def test_group_commit_finds_inbox_in_the_write_not_before_it(store, monkeypatch):
    run(deliver(store, "alice", b"Subject: one\r\n\r\n"))
    asked = []
    get_mailbox = store.get_mailbox
    monkeypatch.setattr(store, "get_mailbox", lambda user, name: asked.append(name) or get_mailbox(user, name))
    assert group_deliver(store, "alice", b"Subject: two\r\n\r\n").uid == 2
    assert group_deliver(store, "alice", b"Subject: three\r\n\r\n", "Lists").uid == 3
    assert asked == ["Lists", "INBOX"]


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_group_commit_first_delivery_makes_the_user_and_stores_every_byte(store, tmp_path, kind):
    # The store refuses the first try (no INBOX yet) after reading the
    # source; the second, once the mailboxes are made, reads it again whole.
    fields = b"Delivered-To: alice@example.org\r\n"
    body = b"Subject: first\r\n\r\nbody\r\n"
    if kind == "memory":
        source = TracedMessage(fields, body)
    else:
        spool = open(tmp_path / "spool", "w+b")
        spool.write(fields + body)
        spool.flush()
        source = WholeCopy(spool, fields, normalised=True)
    assert group_deliver(store, "alice", source).uid == 1
    assert stored(store, "alice") == [(1, fields + body)]
    assert result_of(store.get_mailbox("alice", "Trash")).special_use == "\\Trash"


def test_deliver_refuses_special_use_folders_when_asked(store):
    # LMTP's +detail (special_use=False): the sender named the folder, so
    # Sent and its kind mean INBOX; the MDA's --mailbox is the operator's.
    run(deliver(store, "alice", b"Subject: to Sent\r\n\r\n", "Sent", special_use=False))
    run(deliver(store, "alice", b"Subject: to sent\r\n\r\n", "sent", special_use=False))
    run(deliver(store, "alice", b"Subject: by the operator\r\n\r\n", "Sent"))
    assert [body for _, body in stored(store, "alice")] == [b"Subject: to Sent\r\n\r\n", b"Subject: to sent\r\n\r\n"]
    assert [body for _, body in stored(store, "alice", "Sent")] == [b"Subject: by the operator\r\n\r\n"]


def test_deliver_into_a_folder_or_inbox_when_it_does_not_exist(store):
    run(deliver(store, "alice", b"Subject: first\r\n\r\n"))
    result_of(store.create_mailbox("alice", "Lists/python"))
    run(deliver(store, "alice", io.BytesIO(b"Subject: list\r\n\r\n"), "Lists/python"))
    run(deliver(store, "alice", b"Subject: typo\r\n\r\n", "Lists/pyhton"))
    run(deliver(store, "alice", b"Subject: odd\r\n\r\n", ""))
    assert [body for _, body in stored(store, "alice", "Lists/python")] == [b"Subject: list\r\n\r\n"]
    assert [body for _, body in stored(store, "alice")] == [
        b"Subject: first\r\n\r\n",
        b"Subject: typo\r\n\r\n",
        b"Subject: odd\r\n\r\n",
    ]


@pytest.mark.parametrize(
    "given, expected",
    [
        (b"From bob@example.org Mon Jan  1 00:00:00 2024\nSubject: x\n\nFrom here on\n", b"Subject: x\n\nFrom here on\n"),
        (b"From: bob@example.org\n\nbody\n", b"From: bob@example.org\n\nbody\n"),
        (b"Subject: x\n\nFrom the start\n", b"Subject: x\n\nFrom the start\n"),
        (b"From no newline", b"From no newline"),
        (b"", b""),
    ],
)
def test_spool_drops_only_a_leading_mbox_postmark(given, expected):
    assert spool_stdin(io.BytesIO(given)).read() == expected


@pytest.fixture
def data_dir(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    UsersFile(data / "users").add("alice", "secret-password")
    return data


def mda(data_dir, user, message: bytes, mailbox="INBOX"):
    stderr = io.StringIO()
    code = deliver_main(data_dir, user, mailbox, io.BytesIO(message), stderr)
    return code, stderr.getvalue()


def inbox_of(data_dir, user="alice", mailbox="INBOX"):
    store = SQLiteStore(data_dir / "store")
    try:
        return [body for _, body in stored(store, user, mailbox)]
    finally:
        store.close()


def test_mda_delivers_and_exits_0(data_dir):
    assert mda(data_dir, "alice", b"From bob@x Mon Jan  1 00:00:00 2024\nSubject: a\n\nA.\n") == (0, "")
    assert mda(data_dir, "alice", b"Subject: b\r\n\r\nB.\r\n") == (0, "")
    assert inbox_of(data_dir) == [b"Subject: a\r\n\r\nA.\r\n", b"Subject: b\r\n\r\nB.\r\n"]


def test_mda_streams_a_big_message(data_dir):
    body = b"".join(b"line %07d of a big message\n" % n for n in range(100_000))
    assert mda(data_dir, "alice", b"Subject: big\n\n" + body) == (0, "")
    assert inbox_of(data_dir) == [b"Subject: big\r\n\r\n" + body.replace(b"\n", b"\r\n")]


def test_mda_unknown_user_is_67(data_dir):
    code, err = mda(data_dir, "mallory", b"Subject: x\n\n")
    assert code == 67
    assert err == "gateway deliver: unknown user 'mallory'\n"
    assert not (data_dir / "store").exists()


def test_mda_empty_message_is_65(data_dir):
    assert mda(data_dir, "alice", b"") == (65, "gateway deliver: empty message on standard input\n")
    assert mda(data_dir, "alice", b"From bob@x Mon Jan  1 00:00:00 2024\n")[0] == 65


def test_mda_usage_is_64(data_dir):
    assert mda(data_dir, "", b"x")[0] == 64
    assert mda(data_dir, "alice", b"x", mailbox="")[0] == 64


def test_mda_unusable_store_is_75(data_dir):
    (data_dir / "store").write_bytes(b"not a directory")
    code, err = mda(data_dir, "alice", b"Subject: x\n\n")
    assert code == 75
    assert err.startswith("gateway deliver: cannot open the store: ")
    assert err.count("\n") == 1


def test_mda_store_temporary_failure_is_75(data_dir, monkeypatch):
    def refuse(self, mailbox_id, source, flags=frozenset(), internaldate=None):
        return defer.fail(TemporaryFailure("cannot write message: No space left on device"))

    monkeypatch.setattr(SQLiteStore, "append", refuse)
    code, err = mda(data_dir, "alice", b"Subject: x\n\n")
    assert (code, err) == (75, "gateway deliver: temporary failure: cannot write message: No space left on device\n")


def test_mda_malformed_users_file_is_75(data_dir):
    (data_dir / "users").write_text("this is not a users line\n")
    code, err = mda(data_dir, "alice", b"Subject: x\n\n")
    assert code == 75
    assert err.startswith(f"gateway deliver: users file: {data_dir / 'users'}:1: ")
    assert err.count("\n") == 1


def test_mda_missing_data_dir_is_75_not_unknown_user(tmp_path):
    code, err = mda(tmp_path / "nowhere", "alice", b"Subject: x\n\n")
    assert (code, err) == (75, f"gateway deliver: data dir {tmp_path / 'nowhere'} does not exist\n")


# -- SQLiteStore.append_many: group commit for LMTP ------------------------------


def test_append_many_stores_each_in_order_with_one_directory_fsync(store, monkeypatch):
    # The writer fsyncs each directory that got a body once, before the commit.
    from gateway.store.sqlite import writer as sqlite

    run(deliver(store, "alice", b"Subject: warm\r\n\r\nx\r\n"))
    run(deliver(store, "bob", b"Subject: warm\r\n\r\nx\r\n"))
    alice = result_of(store.get_mailbox("alice", "INBOX"))
    bob = result_of(store.get_mailbox("bob", "INBOX"))
    synced_dirs = []
    fsync_dir = sqlite.fsync_dir
    monkeypatch.setattr(sqlite, "fsync_dir", lambda path: synced_dirs.append(path) or fsync_dir(path))
    messages = [b"Subject: %d\r\n\r\nbody %d\r\n" % (n, n) for n in range(3)]
    records = result_of(store.append_many([(alice.id, messages[0]), (bob.id, io.BytesIO(messages[1])),
                                           (alice.id, messages[2])]))
    assert [record.uid for record in records] == [2, 2, 3]
    assert sorted(synced_dirs) == sorted({store.root / "mail" / str(alice.id), store.root / "mail" / str(bob.id)})
    assert stored(store, "alice")[1:] == [(2, messages[0]), (3, messages[2])]
    assert stored(store, "bob")[1:] == [(2, messages[1])]
    assert list((store.root / "tmp").iterdir()) == []


def test_append_many_refuses_one_and_stores_the_others(store):
    run(deliver(store, "alice", b"Subject: warm\r\n\r\nx\r\n"))
    alice = result_of(store.get_mailbox("alice", "INBOX"))
    outcomes = result_of(store.append_many([(alice.id, b"Subject: a\r\n\r\n"), (9999, b"Subject: b\r\n\r\n")]))
    assert outcomes[0].uid == 2
    assert isinstance(outcomes[1], NoSuchMailbox)
    assert [uid for uid, _ in stored(store, "alice")] == [1, 2]


def test_append_many_failing_commit_leaves_nothing(store, monkeypatch):
    import errno

    from gateway.store.sqlite import writer as sqlite

    run(deliver(store, "alice", b"Subject: warm\r\n\r\nx\r\n"))
    alice = result_of(store.get_mailbox("alice", "INBOX"))

    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sqlite, "fsync_dir", full)
    outcomes = result_of(store.append_many([(alice.id, b"Subject: a\r\n\r\n"), (alice.id, b"Subject: b\r\n\r\n")]))
    assert all(isinstance(outcome, TemporaryFailure) for outcome in outcomes)
    assert outcomes[0].__cause__.errno == errno.ENOSPC
    monkeypatch.undo()
    # Rolled back: no row, no body, and the next UID is still free.
    assert [uid for uid, _ in stored(store, "alice")] == [1]
    assert sorted(p.name for p in (store.root / "mail" / str(alice.id)).iterdir()) == ["1", "mailbox.json", "uidnext"]
    assert result_of(store.append_many([(alice.id, b"Subject: c\r\n\r\n")]))[0].uid == 2


def test_append_many_spools_and_parses_one_source_once_for_every_mailbox(store, monkeypatch):
    # One LMTP message for several recipients: one body file written,
    # fsynced and parsed, linked into each mailbox.
    from gateway.store.sqlite import delivery

    run(deliver(store, "alice", b"Subject: warm\r\n\r\nx\r\n"))
    run(deliver(store, "bob", b"Subject: warm\r\n\r\nx\r\n"))
    alice = result_of(store.get_mailbox("alice", "INBOX"))
    bob = result_of(store.get_mailbox("bob", "INBOX"))
    parsed = []
    parse = delivery.message.parse
    monkeypatch.setattr(delivery.message, "parse", lambda f: parsed.append(f) or parse(f))
    source = io.BytesIO(b"Subject: to all\r\n\r\nbody\r\n")
    records = result_of(store.append_many([(alice.id, source), (bob.id, source), (alice.id, source)]))
    assert [record.uid for record in records] == [2, 2, 3]
    assert len(parsed) == 1
    assert stored(store, "alice")[1:] == [(2, b"Subject: to all\r\n\r\nbody\r\n"), (3, b"Subject: to all\r\n\r\nbody\r\n")]
    assert stored(store, "bob")[1:] == [(2, b"Subject: to all\r\n\r\nbody\r\n")]
    assert os.stat(store.root / "mail" / str(bob.id) / "2").st_nlink == 3
    assert list((store.root / "tmp").iterdir()) == []


@pytest.mark.parametrize("at_delivery", [True, False])
def test_append_many_parses_a_shared_message_once_and_tops_each_copy_with_its_fields(tmp_path, monkeypatch,
                                                                                     at_delivery):
    # The copies of one LMTP message: each its own trace fields, one spool,
    # one parse.  With [store] parse = "first-fetch", no parse until asked,
    # then each copy's from its own file, fields and all.
    from gateway.store.sqlite import delivery

    store = SQLiteStore(tmp_path / "store", parse_at_delivery=at_delivery)
    run(deliver(store, "alice", b"Subject: warm\r\n\r\nx\r\n"))
    run(deliver(store, "bob", b"Subject: warm\r\n\r\nx\r\n"))
    alice = result_of(store.get_mailbox("alice", "INBOX"))
    bob = result_of(store.get_mailbox("bob", "INBOX"))
    parsed = []
    parse = delivery.message.parse
    monkeypatch.setattr(delivery.message, "parse", lambda f: parsed.append(f) or parse(f))
    spool = io.BytesIO(b"Subject: to all\n\nbody\n")
    spool.seek(5)  # the listener left it anywhere
    copies = [TracedMessage(b"Delivered-To: %s\r\n" % name, spool) for name in (b"alice", b"bob", b"alice+x")]
    records = result_of(store.append_many([(alice.id, copies[0]), (bob.id, copies[1]), (alice.id, copies[2])]))
    assert [record.uid for record in records] == [2, 2, 3]
    assert len(parsed) == (1 if at_delivery else 0)
    body = b"Subject: to all\r\n\r\nbody\r\n"
    assert stored(store, "alice")[1:] == [(2, b"Delivered-To: alice\r\n" + body), (3, b"Delivered-To: alice+x\r\n" + body)]
    assert stored(store, "bob")[1:] == [(2, b"Delivered-To: bob\r\n" + body)]
    # Each copy's structure is its own: FETCH BODY[HEADER] and sizes agree with the file.
    structures = result_of(store.get_structures(alice.id, [3]))
    assert len(parsed) == 1
    assert structures[3].header == b"Delivered-To: alice+x\r\nSubject: to all\r\n\r\n"
    assert structures[3].root.end == records[2].size == len(b"Delivered-To: alice+x\r\n" + body)
    assert list((store.root / "tmp").iterdir()) == []
    store.close()
