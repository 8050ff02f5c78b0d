"""
gateway migrate: the SQLite store of a data dir copied into PostgreSQL
(tests/store/engines.py) with every identity a client holds, again and
again, bringing the copy up to date; conflicts reported, nothing
overwritten; the command's one-line errors.
"""

from __future__ import annotations

import datetime
import io
import os

import pytest
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from gateway.cli import main
from gateway.ops.storecopy import ProgressBar, copy_store, render_bar
from gateway.store.interfaces import NoSuchUser
from gateway.store.opening import parse_blobs
from gateway.store.postgresql.chunks import ChunkedBlobs
from gateway.store.postgresql.store import PostgreSQLStore
from gateway.store.sqlite.store import SQLiteStore
from tests.deferreds import result_of

ZONE = datetime.timezone(datetime.timedelta(hours=-5, minutes=-30))


def message(n: int) -> bytes:
    return (f"From: a@example.org\nTo: b@example.org\nSubject: message {n}\n"
            f"Content-Type: multipart/mixed; boundary=b\n\n--b\n\npart {n}\n--b--\n").encode()


@pytest.fixture
def source(tmp_path):
    store = SQLiteStore(tmp_path / "data" / "store")
    yield store
    result_of(store.close())


@pytest.fixture
def target(postgres_dsn):
    store = PostgreSQLStore(reactor, postgres_dsn, ChunkedBlobs(), pool_size=5)
    yield store
    result_of(store.close())


def fill(store) -> None:
    """Two users with what a store keeps: folders, flags, dates, expunges, \\Recent, subscriptions, devices."""
    for user in ("alice", "bob"):
        result_of(store.ensure_user(user))
    inbox = result_of(store.get_mailbox("alice", "INBOX"))
    work = result_of(store.create_mailbox("alice", "Work/2026"))
    for n in range(1, 8):
        when = datetime.datetime(2024, 3, n, 9, 30, tzinfo=ZONE)
        result_of(store.append(inbox.id, message(n), {"\\Seen"} if n % 2 else (), when))
    result_of(store.append(work.id, message(20), {"$Label1", "\\Flagged"}))
    result_of(store.claim_recent(inbox.id))
    result_of(store.append(inbox.id, message(8)))  # \Recent still
    result_of(store.store_flags(inbox.id, [2], {"\\Answered", "Junk"}, "add"))
    result_of(store.expunge(inbox.id, [3, 4]))
    result_of(store.set_subscribed("alice", "Lists/Gone", True))
    result_of(store.set_subscribed("alice", "Trash", False))
    for device in ("phone", "desktop"):
        result_of(store.open_device(inbox.id, device, 1_700_000_000.25, 10, 0.0))
    result_of(store.delete_for_device(inbox.id, "phone", [1, 5]))
    bob = result_of(store.get_mailbox("bob", "INBOX"))
    result_of(store.append(bob.id, message(30)))


def dump(store) -> dict:
    """Everything a client could tell of a store, by user and mailbox name."""
    everything = {}
    for user in result_of(store.list_users()):
        try:
            mailboxes = result_of(store.list_mailboxes(user))
        except NoSuchUser:
            mailboxes = []
        boxes = {}
        for info in mailboxes:
            uids = [r.uid for r in result_of(store.list_messages(info.id))]
            messages = result_of(store.get_messages(info.id, uids))
            bodies = []
            for uid in uids:
                with result_of(store.open_message(info.id, uid)) as f:
                    bodies.append(f.read())
            boxes[info.name] = (
                (info.uidvalidity, info.uidnext, info.highestmodseq, info.special_use),
                [(r.uid, r.flags, r.internaldate, r.internaldate.utcoffset(), r.size, r.modseq, s)
                 for r, s in messages],
                bodies,
                result_of(store.mailbox_state(info.id)),
                result_of(store.list_devices(info.id)),
                result_of(store.count_recent(info.id)),
            )
        everything[user] = (boxes, result_of(store.list_subscriptions(user)))
    return everything


def copy(source, target):
    return result_of(Deferred.fromCoroutine(copy_store(source, target, io.StringIO())))


def test_a_copy_keeps_every_identity(source, target):
    fill(source)
    summary = copy(source, target)
    assert summary.lines()[0] == (
        f"2 users, 11 mailboxes: 8 messages copied ({summary.bytes} bytes), 0 with flags brought up to date,"
        " 0 removed, 0 already there, 0 mailboxes not copied"
    )
    assert summary.bytes > 8 * len(message(1)) and summary.conflicts == []
    before = dump(source)
    assert dump(target) == before
    inbox = result_of(target.get_mailbox("alice", "INBOX"))
    # The copy goes on from the source's counters: the next UID and modseq,
    # and a new mailbox's UIDVALIDITY, are above everything copied.
    record = result_of(target.append(inbox.id, message(9)))
    assert (record.uid, record.modseq) == (before["alice"][0]["INBOX"][0][1], before["alice"][0]["INBOX"][0][2] + 1)
    created = result_of(target.create_mailbox("alice", "New"))
    assert created.uidvalidity > max(box[0][0] for box in before["alice"][0].values())
    # The devices' marks count: the desktop deleting 1 and 5 too takes them.
    assert result_of(target.delete_for_device(inbox.id, "desktop", [1, 5])) == [1, 5]


def test_copying_again_changes_nothing_then_brings_the_copy_up_to_date(source, target):
    fill(source)
    copy(source, target)
    again = copy(source, target)
    assert (again.copied, again.updated, again.removed, again.already) == (0, 0, 0, 8)
    assert dump(target) == dump(source)
    # The old server served on meanwhile.
    inbox = result_of(source.get_mailbox("alice", "INBOX"))
    result_of(source.append(inbox.id, message(10)))
    result_of(source.store_flags(inbox.id, [1], {"\\Flagged"}, "add"))
    result_of(source.expunge(inbox.id, [6]))
    result_of(source.delete_for_device(inbox.id, "desktop", [2]))
    result_of(source.set_subscribed("alice", "Work/2026", False))
    result_of(source.delete_mailbox("bob", "Junk"))
    result_of(source.create_mailbox("bob", "Later"))
    third = copy(source, target)
    assert (third.copied, third.updated, third.removed) == (1, 1, 1)
    assert third.notes == ["bob/Junk: only in the target; left alone"]
    expected = dump(source)
    got = dump(target)
    del got["bob"][0]["Junk"]
    assert got == expected


def test_a_mailbox_changed_on_the_target_or_another_is_not_overwritten(source, target):
    fill(source)
    copy(source, target)
    here = result_of(target.get_mailbox("alice", "INBOX"))
    result_of(target.store_flags(here.id, [1], {"$Here"}, "add"))
    result_of(target.delete_mailbox("bob", "Junk"))  # another incarnation, with mail
    bob = result_of(target.create_mailbox("bob", "Junk"))
    result_of(target.append(bob.id, message(40)))
    summary = copy(source, target)
    assert summary.conflicts == [
        f"alice/INBOX: HIGHESTMODSEQ {here.highestmodseq + 1} here, above the source's {here.highestmodseq}:"
        " changed here since it was copied; not copied",
        f"bob/Junk: UIDVALIDITY {bob.uidvalidity} here,"
        f" {result_of(source.get_mailbox('bob', 'Junk')).uidvalidity} in the source:"
        " another mailbox of that name; not copied",
    ]
    assert "$Here" in result_of(target.get_records(here.id, [1]))[0].flags
    assert [r.uid for r in result_of(target.list_messages(bob.id))] == [1]


def test_a_mailbox_made_on_the_target_but_never_used_takes_the_source_uidvalidity(source, target):
    fill(source)
    # A user logged in on a node before the copy: INBOX and the rest exist, empty.
    result_of(target.ensure_user("alice"))
    summary = copy(source, target)
    assert summary.conflicts == []
    assert dump(target)["alice"] == dump(source)["alice"]


def test_the_progress_bar():
    assert render_bar(0, 0, 0, 0, width=10) == "[##########] 100%  0/0 messages, 0.0/0.0 MB"
    assert render_bar(5, 20, 1_500_000, 6_000_000, width=10) == "[##........]  25%  5/20 messages, 1.5/6.0 MB"

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    bar = ProgressBar(terminal, 2, 2000)
    bar.advance(1, 1000)
    bar.advance(1, 1000)
    bar.finish()
    assert terminal.getvalue().split("\r")[1:] == [
        render_bar(1, 2, 1000, 2000), render_bar(2, 2, 2000, 2000), render_bar(2, 2, 2000, 2000) + "\n"
    ]
    quiet = io.StringIO()
    ProgressBar(quiet, 2, 2000).advance(2, 2000)
    assert quiet.getvalue() == ""


def test_blobs_urls():
    assert parse_blobs(None) is None and parse_blobs("postgresql") is None
    assert parse_blobs("s3://mail") == {"bucket": "mail", "prefix": "", "endpoint": None, "region": "us-east-1"}
    assert parse_blobs("s3://mail/gw/?endpoint=http://127.0.0.1:8333&region=eu-west-1") == {
        "bucket": "mail", "prefix": "gw/", "endpoint": "http://127.0.0.1:8333", "region": "eu-west-1"
    }
    for url, message in (
        ("https://s3.example.org/mail", "give s3://BUCKET[/PREFIX][?endpoint=URL&region=NAME] or postgresql"),
        ("s3:///gw", "give s3://BUCKET"),
        ("s3://mail?bucket=x", "unknown parameter 'bucket' (known: endpoint, region)"),
        ("s3://mail?region=a&region=b", "each parameter once"),
    ):
        with pytest.raises(ValueError) as caught:
            parse_blobs(url)
        assert str(caught.value).startswith(f"--blobs {url!r}: ") and message in str(caught.value)


def run_cli(*args):
    out = io.StringIO()
    code = main(list(args), stdout=out)
    return code, out.getvalue()


def test_the_command_copies_into_s3_and_says_what_it_did(source, tmp_path, postgres_dsn, seaweed, monkeypatch):
    fill(source)
    bucket = seaweed.create_bucket()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweed.ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweed.SECRET_KEY)
    blobs = f"s3://{bucket}/gw/?endpoint={seaweed.endpoint}&region={seaweed.REGION}"
    code, out = run_cli("--data", str(tmp_path / "data"), "migrate", "--to", postgres_dsn, "--blobs", blobs)
    assert code == 0
    assert out.startswith("2 users, 11 mailboxes: 8 messages copied (")
    names = [item["Key"] for item in seaweed.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert len(names) == 8 and all(name.startswith("gw/") for name in names)
    code, out = run_cli("--data", str(tmp_path / "data"), "migrate", "--to", postgres_dsn, "--blobs", blobs)
    assert (code, out.splitlines()[0].endswith("0 removed, 8 already there, 0 mailboxes not copied")) == (0, True)


@pytest.mark.parametrize(
    "args, code, line",
    [
        (["--to", "mysql://db/mail"], os.EX_USAGE,
         "gateway: --to 'mysql://db/mail': give a postgresql:// URL or a libpq connection string\n"),
        (["--to", "postgresql://db/mail", "--blobs", "ftp://x"], os.EX_USAGE,
         "gateway: --blobs 'ftp://x': give s3://BUCKET[/PREFIX][?endpoint=URL&region=NAME] or postgresql\n"),
    ],
)
def test_the_command_refuses_bad_targets_in_one_line(tmp_path, source, capsys, args, code, line):
    assert main(["--data", str(tmp_path / "data"), "migrate", *args]) == code
    assert capsys.readouterr().err == line


def test_the_command_without_a_store_to_copy(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "empty"), "migrate", "--to", "postgresql://db/mail"]) == os.EX_NOINPUT
    assert capsys.readouterr().err == f"gateway: {tmp_path}/empty/store: no SQLite store to copy (no index.sqlite)\n"
