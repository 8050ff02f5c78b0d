"""
gateway import: Maildir++ with Dovecot's uidlist and keywords, mbox, and the
store methods that keep a source server's UIDVALIDITY and UIDs.
"""

import datetime
import io
import os

import pytest
from zope.interface.verify import verifyObject

from gateway.mail import maildir
from gateway.mail import mbox
from gateway.auth import hash_password
from gateway.cli import main
from gateway.ops.migrate import Progress
from gateway.store.interfaces import IImportableStore, MailboxExists, UidNotAvailable
from gateway.store.sqlite.store import SQLiteStore
from gateway.pop3.uidl import UidlFormat
from tests.deferreds import failure_of, result_of

V = 1795715069


def msg(subject: str) -> bytes:
    return f"From: a@example.org\nSubject: {subject}\n\nbody of {subject}\n".encode()


def crlf(data: bytes) -> bytes:
    return data.replace(b"\n", b"\r\n")


# -- the store methods (IImportableStore) -------------------------------------


def test_store_provides_importable(store):
    assert verifyObject(IImportableStore, store)


def test_create_with_uidvalidity_new_and_empty_existing(store):
    result_of(store.ensure_user("alice"))
    inbox = result_of(store.create_mailbox_with_uidvalidity("alice", "INBOX", V))
    assert inbox.uidvalidity == V
    assert result_of(store.get_mailbox("alice", "INBOX")).uidvalidity == V
    work = result_of(store.create_mailbox_with_uidvalidity("alice", "Work/2026", 7))
    assert (work.name, work.uidvalidity, work.uidnext) == ("Work/2026", 7, 1)


def test_create_with_uidvalidity_refused_once_messages_were_held(store):
    result_of(store.ensure_user("alice"))
    inbox = result_of(store.get_mailbox("alice", "INBOX"))
    record = result_of(store.append(inbox.id, msg("x")))
    result_of(store.expunge(inbox.id, [record.uid]))
    failure_of(store.create_mailbox_with_uidvalidity("alice", "INBOX", V), MailboxExists)
    assert result_of(store.get_mailbox("alice", "INBOX")).uidvalidity == inbox.uidvalidity


def test_imported_uidvalidity_is_never_issued_afresh(store):
    result_of(store.create_mailbox_with_uidvalidity("alice", "INBOX", 0xFFFFFFF0))
    fresh = result_of(store.create_mailbox("alice", "Other"))
    assert fresh.uidvalidity > 0xFFFFFFF0


def test_append_with_uid(store):
    box = result_of(store.create_mailbox_with_uidvalidity("alice", "INBOX", V))
    when = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.timezone.utc)
    record = result_of(store.append_with_uid(box.id, 5, msg("five"), {"\\Seen"}, when))
    assert (record.uid, record.flags, record.internaldate) == (5, {"\\Seen"}, when)
    assert result_of(store.get_mailbox("alice", "INBOX")).uidnext == 6
    with result_of(store.open_message(box.id, 5)) as f:
        assert f.read() == crlf(msg("five"))
    failure_of(store.append_with_uid(box.id, 5, msg("again"), (), when), UidNotAvailable)
    failure_of(store.append_with_uid(box.id, 2, msg("below"), (), when), UidNotAvailable)
    assert result_of(store.append(box.id, msg("next"))).uid == 6
    assert not any((store.root / "tmp").iterdir())


def test_raise_uidnext_survives_index_rebuild(tmp_path):
    store = SQLiteStore(tmp_path / "store")
    box = result_of(store.create_mailbox_with_uidvalidity("alice", "INBOX", V))
    result_of(store.append_with_uid(box.id, 3, msg("three"), (), None))
    assert result_of(store.raise_uidnext(box.id, 43)) == 43
    assert result_of(store.raise_uidnext(box.id, 10)) == 43
    store.close()
    (tmp_path / "store" / "index.sqlite").unlink()
    for extra in ("index.sqlite-wal", "index.sqlite-shm"):
        (tmp_path / "store" / extra).unlink(missing_ok=True)
    store = SQLiteStore(tmp_path / "store")
    rebuilt = result_of(store.get_mailbox("alice", "INBOX"))
    assert (rebuilt.uidvalidity, rebuilt.uidnext) == (V, 43)
    assert [r.uid for r in result_of(store.list_messages(rebuilt.id))] == [3]
    store.close()


# -- dovecot-uidlist, dovecot-keywords, names ---------------------------------


def test_uidlist_version_3_with_extensions():
    text = f"3 V{V} N43 G3085f01b5ad4ae64b52e0000b55a1ac3\n" \
           "1 :1700000000.M1P2.host,S=120,W=123:2,S\n" \
           "2 W567 G0011 :1700000001.M2P2.host\n"
    uidlist = maildir.parse_uidlist(text)
    assert (uidlist.uidvalidity, uidlist.next_uid) == (V, 43)
    assert dict(uidlist.uids) == {"1700000000.M1P2.host,S=120,W=123": 1, "1700000001.M2P2.host": 2}
    assert uidlist.problems == ()


def test_uidlist_version_1():
    uidlist = maildir.parse_uidlist(f"1 {V} 9\n4 1700000000.M1P2.host:2,RS\n8 1700000005.x\n")
    assert (uidlist.uidvalidity, uidlist.next_uid) == (V, 9)
    assert dict(uidlist.uids) == {"1700000000.M1P2.host": 4, "1700000005.x": 8}


def test_uidlist_corrupted_lines_are_skipped_with_reasons():
    text = f"3 V{V} N20\n2 :a\nxx :b\n0 :c\n1 :d\n3 :\n4 :a\n5 :e\n"
    uidlist = maildir.parse_uidlist(text)
    assert dict(uidlist.uids) == {"a": 2, "e": 5}
    assert [p.split(":")[0] for p in uidlist.problems] == [
        "dovecot-uidlist line 3", "dovecot-uidlist line 4", "dovecot-uidlist line 5",
        "dovecot-uidlist line 6", "dovecot-uidlist line 7",
    ]
    assert "not above the previous" in uidlist.problems[2]
    assert "listed twice" in uidlist.problems[4]


@pytest.mark.parametrize("header", ["", "garbage", "3 N43", "3 Vx N43", "3 V0 N1", "1 123"])
def test_uidlist_bad_header(header):
    with pytest.raises(maildir.UidlistError):
        maildir.parse_uidlist(header + "\n1 :a\n")


def test_keywords_and_flag_letters():
    letters, problems = maildir.parse_keywords("0 $Label1\n1 Junk\nzz oops\n30 far\n")
    assert letters == {"a": "$Label1", "b": "Junk"}
    assert len(problems) == 2
    assert maildir.flags_of("1.M1.h:2,DFPRSTab", letters) == {
        "\\Draft", "\\Flagged", "$Forwarded", "\\Answered", "\\Seen", "\\Deleted", "$Label1", "Junk"}
    assert maildir.flags_of("1.M1.h:2,Sz", letters) == {"\\Seen"}
    assert maildir.flags_of("1.M1.h", letters) == frozenset()
    assert maildir.flags_of("1.M1.h:1,S", letters) == frozenset()
    assert maildir.info_of({"\\Seen", "\\Answered", "Junk", "\\Draft"}, {"Junk": "b"}) == ":2,DRSb"


@pytest.mark.parametrize(
    "dirname, name",
    [(".Sent", "Sent"), (".Work.2026", "Work/2026"), (".&AMk-t&AOk-", "\u00c9t\u00e9"),
     (".Caf&AOk-.&ZeVnLIqe-", "Caf\u00e9/\u65e5\u672c\u8a9e"), (".A&-B", "A&B")],
)
def test_folder_names_round_trip(dirname, name):
    assert maildir.folder_name(dirname) == name
    assert maildir.folder_dirname(name) == dirname


# -- import maildir through the CLI --------------------------------------------


def make_maildir(root, folders=("",)):
    for folder in folders:
        for sub in ("cur", "new", "tmp"):
            (root / folder / sub).mkdir(parents=True, exist_ok=True)
    return root


def put(folder, subdir, name, data, mtime=None):
    path = folder / subdir / name
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


@pytest.fixture(scope="module")
def users_line():
    # One slow password hash per module, not one per test.
    return f"alice:{hash_password('secret')}\n"


@pytest.fixture
def data(tmp_path, users_line):
    data = tmp_path / "data"
    data.mkdir()
    (data / "users").write_text(users_line)
    return data


def run(data, *args):
    out = io.StringIO()
    code = main(["--data", str(data), *args], stdout=out)
    return code, out.getvalue()


def mailboxes(data, user="alice"):
    """name -> (MailboxInfo, [(uid, flags, body, internaldate)])."""
    store = SQLiteStore(data / "store")
    try:
        result = {}
        for info in result_of(store.list_mailboxes(user)):
            rows = []
            for record in result_of(store.list_messages(info.id)):
                with result_of(store.open_message(info.id, record.uid)) as f:
                    rows.append((record.uid, record.flags, f.read(), record.internaldate))
            result[info.name] = (info, rows)
        return result
    finally:
        store.close()


def test_import_keeps_dovecot_uids_flags_and_dates(data, tmp_path):
    root = make_maildir(tmp_path / "Maildir", ("", ".Work.2026", ".&AMk-t&AOk-"))
    put(root, "cur", "1700000000.M1P1.host,S=40:2,RS", msg("one"), mtime=1700000100)
    put(root, "new", "1700000001.M2P1.host", msg("two"), mtime=1700000200)
    (root / "dovecot-uidlist").write_text(
        f"3 V{V} N43 Gabc\n5 W45 :1700000000.M1P1.host,S=40:2,\n9 :1700000001.M2P1.host\n")
    work = root / ".Work.2026"
    put(work, "cur", "1700000002.M3P1.host:2,FTab", msg("three"))
    (work / "dovecot-keywords").write_text("0 $Label1\n1 NonJunk\n")
    (work / "dovecot-uidlist").write_text("3 V1234 N2\n1 :1700000002.M3P1.host\n")

    code, out = run(data, "import", "maildir", "alice", str(root))
    assert code == 0, out
    assert out.splitlines()[0] == "user alice: 3 folders, 3 messages imported (154 bytes), 0 already imported, 0 skipped"
    boxes = mailboxes(data)
    inbox, rows = boxes["INBOX"]
    assert (inbox.uidvalidity, inbox.uidnext) == (V, 43)
    assert [(uid, flags, body) for uid, flags, body, _ in rows] == [
        (5, {"\\Answered", "\\Seen"}, crlf(msg("one"))), (9, set(), crlf(msg("two")))]
    assert [when.timestamp() for *_, when in rows] == [1700000100, 1700000200]
    # The POP3 UIDLs Dovecot served under its default pop3_uidl_format.
    fmt = UidlFormat.parse("%08Xu%08Xv")
    assert [fmt.format(inbox.uidvalidity, uid) for uid, *_ in rows] == ["000000056b086ffd", "000000096b086ffd"]
    work_info, work_rows = boxes["Work/2026"]
    assert (work_info.uidvalidity, work_info.uidnext) == (1234, 2)
    assert work_rows[0][:2] == (1, {"\\Flagged", "\\Deleted", "$Label1", "NonJunk"})
    assert boxes["\u00c9t\u00e9"][1] == []
    assert "\u00c9t\u00e9: 0 messages; no dovecot-uidlist" in out


def test_uidnext_after_import_is_last_uid_plus_one_when_above_n(data, tmp_path):
    root = make_maildir(tmp_path / "Maildir")
    put(root, "cur", "1700000000.a:2,", msg("one"))
    (root / "dovecot-uidlist").write_text(f"3 V{V} N3\n7 :1700000000.a\n")
    assert run(data, "import", "maildir", "alice", str(root))[0] == 0
    assert mailboxes(data)["INBOX"][0].uidnext == 8


def test_files_missing_from_uidlist_get_uids_after_next_uid(data, tmp_path):
    root = make_maildir(tmp_path / "Maildir")
    put(root, "cur", "1700000000.a:2,", msg("listed"))
    put(root, "new", "1700000009.b", msg("late"))
    put(root, "new", "1700000005.c", msg("early"))
    (root / "dovecot-uidlist").write_text(f"3 V{V} N10\n2 :1700000000.a\n")
    code, out = run(data, "import", "maildir", "alice", str(root))
    assert code == 0
    assert "2 files not in dovecot-uidlist got new UIDs in delivery order" in out
    rows = mailboxes(data)["INBOX"][1]
    assert [(uid, body) for uid, _, body, _ in rows] == [
        (2, crlf(msg("listed"))), (10, crlf(msg("early"))), (11, crlf(msg("late")))]


def test_without_uidlist_uids_follow_delivery_time_then_name(data, tmp_path):
    root = make_maildir(tmp_path / "Maildir")
    put(root, "cur", "1700000300.x:2,S", msg("third"), mtime=1)
    put(root, "new", "1700000100.b", msg("second"), mtime=3)
    put(root, "cur", "1700000100.a:2,", msg("first"), mtime=2)
    code, out = run(data, "import", "maildir", "alice", str(root))
    assert code == 0
    assert "INBOX: 3 messages; no dovecot-uidlist, UIDs assigned in delivery order" in out
    rows = mailboxes(data)["INBOX"][1]
    assert [(uid, body) for uid, _, body, _ in rows] == [
        (1, crlf(msg("first"))), (2, crlf(msg("second"))), (3, crlf(msg("third")))]


@pytest.mark.parametrize("with_uidlist", [True, False])
def test_import_twice_adds_nothing(data, tmp_path, with_uidlist):
    root = make_maildir(tmp_path / "Maildir", ("", ".Sent"))
    put(root, "cur", "1700000000.a:2,S", msg("one"))
    put(root / ".Sent", "cur", "1700000001.b:2,S", msg("sent"))
    if with_uidlist:
        (root / "dovecot-uidlist").write_text(f"3 V{V} N5\n3 :1700000000.a\n")
    assert run(data, "import", "maildir", "alice", str(root))[0] == 0
    before = mailboxes(data)
    code, out = run(data, "import", "maildir", "alice", str(root))
    assert code == 0
    assert "0 messages imported (0 bytes), 2 already imported" in out.splitlines()[0]
    assert mailboxes(data) == before
    # A flag changed in the source since (the name after ":2," changes) is
    # still the same message.
    (root / "cur" / "1700000000.a:2,S").rename(root / "cur" / "1700000000.a:2,RS")
    assert "2 already imported" in run(data, "import", "maildir", "alice", str(root))[1]
    assert mailboxes(data) == before


@pytest.mark.parametrize("with_uidlist", [True, False])
def test_message_expunged_after_import_does_not_come_back(data, tmp_path, with_uidlist):
    root = make_maildir(tmp_path / "Maildir")
    put(root, "cur", "1700000000.a:2,S", msg("one"))
    put(root, "cur", "1700000001.b:2,S", msg("two"))
    if with_uidlist:
        (root / "dovecot-uidlist").write_text(f"3 V{V} N3\n1 :1700000000.a\n2 :1700000001.b\n")
    assert run(data, "import", "maildir", "alice", str(root))[0] == 0
    store = SQLiteStore(data / "store")
    result_of(store.expunge(result_of(store.get_mailbox("alice", "INBOX")).id, [1]))
    store.close()
    code, out = run(data, "import", "maildir", "alice", str(root))
    assert code == 0, out
    assert "0 messages imported (0 bytes), 2 already imported, 0 skipped" in out
    assert [uid for uid, *_ in mailboxes(data)["INBOX"][1]] == [2]


def test_folder_with_messages_under_another_uidvalidity_is_skipped(data, tmp_path):
    assert main(["--data", str(data), "deliver", "alice"], stdin=_Stdin(msg("local"))) == 0
    root = make_maildir(tmp_path / "Maildir")
    put(root, "cur", "1700000000.a:2,", msg("one"))
    (root / "dovecot-uidlist").write_text(f"3 V{V} N5\n3 :1700000000.a\n")
    code, out = run(data, "import", "maildir", "alice", str(root))
    assert code == 1
    assert "skipped: INBOX: holds messages under UIDVALIDITY" in out
    assert f"so UIDVALIDITY {V} of dovecot-uidlist cannot be kept; 1 messages skipped" in out
    assert [body for _, _, body, _ in mailboxes(data)["INBOX"][1]] == [crlf(msg("local"))]


class _Stdin:
    def __init__(self, data):
        self.buffer = io.BytesIO(data)


def test_corrupted_uidlist_line_and_header(data, tmp_path):
    root = make_maildir(tmp_path / "Maildir", ("", ".Broken"))
    put(root, "cur", "1700000000.a:2,", msg("one"))
    put(root, "cur", "1700000001.b:2,", msg("two"))
    (root / "dovecot-uidlist").write_text(f"3 V{V} N5\n3 :1700000000.a\nnot-a-uid :1700000001.b\n")
    put(root / ".Broken", "cur", "1700000002.c:2,", msg("three"))
    (root / ".Broken" / "dovecot-uidlist").write_text("9 V1 N1\n")
    code, out = run(data, "import", "maildir", "alice", str(root))
    assert code == 0, out
    assert "warning: INBOX: dovecot-uidlist line 3: no valid UID; line skipped" in out
    assert "warning: Broken: dovecot-uidlist: unknown version in header; UIDs assigned in delivery order" in out
    boxes = mailboxes(data)
    assert [uid for uid, *_ in boxes["INBOX"][1]] == [3, 5]
    assert [uid for uid, *_ in boxes["Broken"][1]] == [1]


def test_unreadable_message_file_is_skipped_with_reason(data, tmp_path):
    root = make_maildir(tmp_path / "Maildir")
    put(root, "cur", "1700000000.a:2,", msg("one"))
    (root / "cur" / "1700000001.gone:2,").symlink_to(tmp_path / "nowhere")
    locked = put(root, "cur", "1700000002.locked:2,", msg("locked"))
    locked.chmod(0)
    can_lock = os.geteuid() != 0
    code, out = run(data, "import", "maildir", "alice", str(root))
    assert code == 1
    # A link is refused as such, whether or not it leads anywhere.
    assert "skipped: INBOX: cur/1700000001.gone:2,: a symbolic link, not followed; message skipped" in out
    if can_lock:
        assert "skipped: INBOX: cur/1700000002.locked:2,: cannot read: Permission denied; message skipped" in out
    assert len(mailboxes(data)["INBOX"][1]) == (1 if can_lock else 2)


@pytest.mark.parametrize(
    "args, code, text",
    [
        (["import", "maildir", "bob", "{tmp}/Maildir"], 67, "gateway: no such user 'bob'"),
        (["import", "maildir", "alice", "{tmp}/missing"], 66, "missing: no such file or directory"),
        (["import", "maildir", "alice", "{tmp}/plain"], 65, "plain: not a Maildir (no cur/ and new/)"),
        (["import", "mbox", "alice", "{tmp}/plain/file"], 65, "not an mbox file"),
        (["import", "mbox", "alice", "{tmp}/missing"], 66, "missing: no such file or directory"),
        (["import", "mbox", "bob", "{tmp}/plain/file"], 67, "no such user 'bob'"),
    ],
)
def test_bad_input_is_one_line(data, tmp_path, capsys, args, code, text):
    make_maildir(tmp_path / "Maildir")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "file").write_bytes(b"Subject: not mbox\n\nx\n")
    capsys.readouterr()
    assert main(["--data", str(data), *[a.format(tmp=tmp_path) for a in args]]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and text in err, err


def test_subfolder_without_cur_is_skipped(data, tmp_path):
    root = make_maildir(tmp_path / "Maildir")
    (root / ".Empty").mkdir()
    code, out = run(data, "import", "maildir", "alice", str(root))
    assert code == 1
    assert "skipped: .Empty: no cur/ and new/; folder skipped" in out


def test_progress_counter_only_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal, pipe = Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        progress = Progress(stream, 3)
        for _ in range(3):
            progress.advance()
        progress.finish()
    assert terminal.getvalue() == "\rimporting: 1/3 messages\rimporting: 2/3 messages\rimporting: 3/3 messages\n"
    assert pipe.getvalue() == ""


# -- mbox ---------------------------------------------------------------------

MBOX = (
    b"From alice@example.org Wed Jan  3 01:05:34 2024\n"
    b"From: alice@example.org\nSubject: one\nContent-Length: 3\n\n"
    b">From the start\n>>From quoted twice\nFrom inside, not after a blank line\n"
    b"\n"
    b"From here on, not a postmark (no date)\n"
    b"\n"
    b"From bob@example.org Thu Feb  1 10:00:00 2024 +0200\n"
    b"From: bob@example.org\nSubject: two\nStatus: RO\nX-Status: AF\n\nsecond\n"
    b"\n"
)


def test_read_mbox_splits_and_unquotes():
    messages = list(mbox.read_mbox(io.BytesIO(MBOX)))
    assert [m.line for m in messages] == [1, 12]
    assert messages[0].source == (
        b"From: alice@example.org\nSubject: one\nContent-Length: 3\n\n"
        b"From the start\n>From quoted twice\nFrom inside, not after a blank line\n"
        b"\nFrom here on, not a postmark (no date)\n"
    )
    assert messages[1].source == b"From: bob@example.org\nSubject: two\nStatus: RO\nX-Status: AF\n\nsecond\n"
    assert messages[1].flags == {"\\Seen", "\\Answered", "\\Flagged"}
    assert messages[1].internaldate == datetime.datetime(
        2024, 2, 1, 10, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    assert messages[0].internaldate == datetime.datetime(2024, 1, 3, 1, 5, 34).astimezone()


@pytest.mark.parametrize(
    "line, expected",
    [
        (b"From a Wed Jan  3 01:05:34 2024 UTC\n", datetime.datetime(2024, 1, 3, 1, 5, 34, tzinfo=datetime.timezone.utc)),
        (b"From a Wed Jan 3 01:05 -0500 2024\n",
         datetime.datetime(2024, 1, 3, 1, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=-5)))),
        (b"From a\n", None),
        (b"From a Wed Feb 31 01:05:34 2024\n", None),
    ],
)
def test_postmark_dates(line, expected):
    assert mbox.postmark_date(line) == expected


def test_import_mbox(data, tmp_path):
    path = tmp_path / "saved.mbox"
    path.write_bytes(MBOX)
    code, out = run(data, "import", "mbox", "alice", str(path), "--mailbox", "Archive/2024")
    assert code == 0, out
    assert "Archive/2024: 2 messages; UIDs assigned in file order" in out
    rows = mailboxes(data)["Archive/2024"][1]
    assert [uid for uid, *_ in rows] == [1, 2]
    assert rows[0][2].startswith(b"From: alice@example.org\r\n") and b"\r\nFrom the start\r\n" in rows[0][2]
    assert rows[1][1] == {"\\Seen", "\\Answered", "\\Flagged"}
    assert rows[1][3].timestamp() == datetime.datetime(2024, 2, 1, 8, 0, tzinfo=datetime.timezone.utc).timestamp()
    code, out = run(data, "import", "mbox", "alice", str(path), "--mailbox", "Archive/2024")
    assert "0 messages imported (0 bytes), 2 already imported" in out
    assert len(mailboxes(data)["Archive/2024"][1]) == 2


def test_mbox_identical_messages_are_both_imported_once(data, tmp_path):
    one = b"From a Wed Jan  3 01:05:34 2024\nSubject: same\n\nx\n\n"
    path = tmp_path / "dup.mbox"
    path.write_bytes(one + one)
    run(data, "import", "mbox", "alice", str(path))
    run(data, "import", "mbox", "alice", str(path))
    assert len(mailboxes(data)["INBOX"][1]) == 2
    path.write_bytes(one * 3)
    assert "1 messages imported" in run(data, "import", "mbox", "alice", str(path))[1]


def test_mbox_folder_data_message_is_skipped(data, tmp_path):
    path = tmp_path / "uw.mbox"
    path.write_bytes(
        b"From MAILER-DAEMON Wed Jan  3 01:05:34 2024\nSubject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\n"
        b"X-IMAP: 1700000000 0000000002\n\nThis text is part of the internal format of your mail folder.\n\n"
        b"From a Wed Jan  3 01:05:35 2024\nSubject: real\n\nx\n"
    )
    code, out = run(data, "import", "mbox", "alice", str(path))
    assert code == 0, out
    assert "folder data pseudo-message (X-IMAP)" in out
    assert len(mailboxes(data)["INBOX"][1]) == 1
