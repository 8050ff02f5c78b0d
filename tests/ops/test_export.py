"""
gateway export: a Maildir++ tree with dovecot-uidlist that imports back
(here, or into Dovecot) with the same UIDVALIDITY, UIDs, flags, dates,
bodies and folder names.
"""

import datetime
import io
import os

import pytest

from gateway.mail import maildir
from gateway.auth import hash_password
from gateway.cli import main
from gateway.store.sqlite.store import SQLiteStore
from tests.deferreds import result_of

PARIS = datetime.timezone(datetime.timedelta(hours=2))


def msg(subject: str) -> bytes:
    return f"From: a@example.org\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n".encode()


@pytest.fixture(scope="module")
def users_line():
    return f"alice:{hash_password('secret')}\n"


def data_dir(path, users_line):
    path.mkdir()
    (path / "users").write_text(users_line)
    return path


def run(data, *args):
    out = io.StringIO()
    code = main(["--data", str(data), *args], stdout=out)
    return code, out.getvalue()


def snapshot(data):
    """name -> (uidvalidity, uidnext, [(uid, flags, body, internaldate instant)])."""
    store = SQLiteStore(data / "store")
    try:
        result = {}
        for info in result_of(store.list_mailboxes("alice")):
            rows = []
            for record in result_of(store.list_messages(info.id)):
                with result_of(store.open_message(info.id, record.uid)) as f:
                    rows.append((record.uid, record.flags, f.read(), record.internaldate.timestamp()))
            result[info.name] = (info.uidvalidity, info.uidnext, rows)
        return result
    finally:
        store.close()


def fill(data):
    store = SQLiteStore(data / "store")
    try:
        result_of(store.ensure_user("alice"))
        inbox = result_of(store.get_mailbox("alice", "INBOX"))
        when = datetime.datetime(2024, 5, 1, 12, 30, tzinfo=PARIS)
        result_of(store.append(inbox.id, msg("one"), {"\\Seen"}, when))
        result_of(store.append(inbox.id, msg("two"), set(), when))
        result_of(store.append(inbox.id, msg("three"), {"\\Answered", "$Forwarded", "$Label1", "\\Draft"}, when))
        result_of(store.expunge(inbox.id, [2]))
        result_of(store.raise_uidnext(inbox.id, 10))
        work = result_of(store.create_mailbox("alice", "Work/2026"))
        result_of(store.append(work.id, msg("work"), {"\\Flagged", "\\Deleted", "Junk"}, when))
        result_of(store.create_mailbox("alice", "\u00c9t\u00e9"))
        summer = result_of(store.create_mailbox("alice", "\u00c9t\u00e9/Ao\u00fbt"))
        result_of(store.append(summer.id, msg("summer"), set(), when))
    finally:
        store.close()


def test_export_layout(tmp_path, users_line):
    data = data_dir(tmp_path / "data", users_line)
    fill(data)
    out_dir = tmp_path / "export"
    code, out = run(data, "export", "alice", str(out_dir))
    assert code == 0, out
    assert out.splitlines()[0] == "user alice: 8 folders, 4 messages exported (212 bytes), 0 skipped"
    inbox = snapshot(data)["INBOX"]
    files = sorted(os.listdir(out_dir / "cur"))
    assert [name.split(":", 1)[1] for name in files] == ["2,S", "2,DRab"]
    assert (out_dir / "dovecot-keywords").read_text() == "0 $Forwarded\n1 $Label1\n"
    uidlist = maildir.parse_uidlist((out_dir / "dovecot-uidlist").read_text())
    assert (uidlist.uidvalidity, uidlist.next_uid) == (inbox[0], 10)
    assert sorted(uidlist.uids.values()) == [1, 3]
    stamp = datetime.datetime(2024, 5, 1, 10, 30, tzinfo=datetime.timezone.utc).timestamp()
    assert all(os.stat(out_dir / "cur" / name).st_mtime == stamp for name in files)
    assert (out_dir / ".Work.2026" / "maildirfolder").exists()
    assert os.listdir(out_dir / ".Work.2026" / "cur")[0].endswith(":2,FTa")
    assert (out_dir / ".&AMk-t&AOk-.Ao&APs-t" / "cur").is_dir()
    assert not os.listdir(out_dir / "tmp")


def test_round_trip_keeps_everything(tmp_path, users_line):
    source = data_dir(tmp_path / "source", users_line)
    fill(source)
    assert run(source, "export", "alice", str(tmp_path / "export"))[0] == 0
    target = data_dir(tmp_path / "target", users_line)
    code, out = run(target, "import", "maildir", "alice", str(tmp_path / "export"))
    assert code == 0, out
    before, after = snapshot(source), snapshot(target)
    assert set(after) == {"INBOX", "Drafts", "Sent", "Trash", "Junk", "Work/2026", "\u00c9t\u00e9", "\u00c9t\u00e9/Ao\u00fbt"}
    assert after == before
    assert after["INBOX"][1] == 10
    assert [uid for uid, *_ in after["INBOX"][2]] == [1, 3]


def test_names_maildir_cannot_hold_and_too_many_keywords_are_reported(tmp_path, users_line):
    data = data_dir(tmp_path / "data", users_line)
    store = SQLiteStore(data / "store")
    result_of(store.ensure_user("alice"))
    result_of(store.create_mailbox("alice", "v1.2"))
    inbox = result_of(store.get_mailbox("alice", "INBOX"))
    result_of(store.append(inbox.id, msg("many"), {f"k{i:02d}" for i in range(27)}))
    store.close()
    code, out = run(data, "export", "alice", str(tmp_path / "export"))
    assert code == 1
    assert "skipped: v1.2: cannot be a Maildir++ folder name ('.' is the Maildir++ hierarchy separator)" in out
    assert "skipped: INBOX: keyword k26 (Maildir names hold 26 keywords per folder)" in out
    assert not (tmp_path / "export" / ".v1.2").exists()


def test_target_must_be_new_or_empty(tmp_path, users_line, capsys):
    data = data_dir(tmp_path / "data", users_line)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert main(["--data", str(data), "export", "alice", str(tmp_path / "full")]) == 73
    assert "full: exists and is not an empty directory" in capsys.readouterr().err
    assert main(["--data", str(data), "export", "bob", str(tmp_path / "new")]) == 67
    (tmp_path / "empty").mkdir()
    assert run(data, "export", "alice", str(tmp_path / "empty"))[0] == 0
    assert (tmp_path / "empty" / "cur").is_dir()
