"""
A SQLite store with ``[store] parse = "first-fetch"`` parses a message's
structure the first time a reader asks for it, not at delivery: what it
answers is what parsing at delivery gives, and one parse serves every
reader.
"""

import os

import pytest
from twisted.internet import defer

from gateway.mail import message
from gateway.store.encoding import structure_columns
from gateway.store.sqlite.store import SQLiteStore
from gateway.store.sqlite.structures import PARSE_BATCH
from tests.deferreds import result_of
from tests.store.contract import inbox

MULTIPART = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: Bob <bob@example.org>, Carol <carol@example.org>\r\n"
    b"Subject: parts\r\n"
    b"Message-ID: <parts@example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n'
    b"\r\n"
    b"--b\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"one\r\n"
    b"--b\r\n"
    b"Content-Type: text/html\r\n"
    b"\r\n"
    b"<p>two</p>\r\n"
    b"--b--\r\n"
)


@pytest.fixture
def store(tmp_path):
    """A store that leaves parsing to the first reader, without threads."""
    store = SQLiteStore(tmp_path / "store", parse_at_delivery=False)
    yield store
    store.close()


def kept(store, box):
    return store._write_db.execute(
        "SELECT uid FROM message_structures WHERE mailbox_id = ? ORDER BY uid", (box.id,)
    ).fetchall()


def test_by_default_a_delivery_parses(tmp_path):
    store = SQLiteStore(tmp_path / "store")
    box = inbox(store)
    record = result_of(store.append(box.id, MULTIPART))
    assert kept(store, box) == [(record.uid,)]
    store.close()


def test_a_delivery_leaves_the_structure_to_the_first_reader(store):
    box = inbox(store)
    record = result_of(store.append(box.id, MULTIPART))
    assert kept(store, box) == []
    structures = result_of(store.get_structures(box.id, [record.uid]))
    assert structure_columns(structures[record.uid]) == structure_columns(message.parse_bytes(MULTIPART))
    assert kept(store, box) == [(record.uid,)]
    # Its summary too, from the triggers: a header FETCH reads that from now on.
    assert store._write_db.execute("SELECT count(*) FROM message_summaries").fetchone()[0] == 1


def test_fetch_rows_answers_a_message_not_yet_parsed_as_one_parsed(store, tmp_path):
    box = inbox(store)
    first = result_of(store.append(box.id, MULTIPART))
    second = result_of(store.append(box.id, MULTIPART))
    columns = ("size", "internaldate", "envelope", "bodystructure", "header", "modseq")
    result_of(store.get_structures(box.id, [first.uid]))
    rows = result_of(store.fetch_rows(box.id, [first.uid, second.uid], columns))
    assert [row[0] for row in rows] == [first.uid, second.uid]
    assert rows[0][1:] == rows[1][1:-1] + (rows[0][-1],)
    assert rows[1][3] == message.parse_bytes(MULTIPART).envelope


def test_what_the_record_answers_needs_no_parse(store):
    box = inbox(store)
    record = result_of(store.append(box.id, MULTIPART))
    assert result_of(store.fetch_rows(box.id, [record.uid], ("size", "modseq"))) == [
        (record.uid, record.size, record.modseq)
    ]
    assert result_of(store.fetch_rows(box.id, [record.uid], ())) == [(record.uid,)]
    result_of(store.get_records(box.id, [record.uid]))
    assert kept(store, box) == []


def test_get_messages_parses_what_is_missing_and_keeps_the_rest(store):
    box = inbox(store)
    uids = [result_of(store.append(box.id, MULTIPART)).uid for _ in range(PARSE_BATCH + 3)]
    result_of(store.get_structures(box.id, uids[:2]))
    messages = result_of(store.get_messages(box.id, uids))
    assert [record.uid for record, _ in messages] == uids
    assert {structure.envelope for _, structure in messages} == {message.parse_bytes(MULTIPART).envelope}
    assert kept(store, box) == [(uid,) for uid in uids]


def test_a_message_expunged_before_its_parse_is_not_answered_nor_kept(store, tmp_path):
    box = inbox(store)
    gone = result_of(store.append(box.id, MULTIPART))
    there = result_of(store.append(box.id, MULTIPART))
    # Its body went first (an expunge in another process, half done).
    os.unlink(tmp_path / "store" / "mail" / str(box.id) / str(gone.uid))
    assert set(result_of(store.get_structures(box.id, [gone.uid, there.uid]))) == {there.uid}
    assert result_of(store.fetch_rows(box.id, [gone.uid, there.uid], ("envelope",))) == [
        (there.uid, message.parse_bytes(MULTIPART).envelope)
    ]
    assert kept(store, box) == [(there.uid,)]


def test_a_structure_parsed_after_its_expunge_is_not_kept(store):
    box = inbox(store)
    record = result_of(store.append(box.id, MULTIPART))
    parsed = store._parse_bodies(box.id, [record.uid])
    result_of(store.expunge(box.id, [record.uid]))
    result_of(store._writer.submit(lambda step: store._insert_parsed(box.id, parsed, step), durable=False))
    assert kept(store, box) == []


def test_readers_asking_at_once_share_one_parse(store, monkeypatch):
    box = inbox(store)
    record = result_of(store.append(box.id, MULTIPART))
    jobs = []

    def held(mailbox_id, uids):
        jobs.append(((mailbox_id, uids), defer.Deferred()))
        return jobs[-1][1]

    monkeypatch.setattr(store, "_parse_off_reactor", held)
    answers = [store.get_structures(box.id, [record.uid]) for _ in range(3)]
    answers.append(store.fetch_rows(box.id, [record.uid], ("envelope",)))
    assert len(jobs) == 1
    args, done = jobs[0]
    done.callback(store._parse_bodies(*args))
    expected = message.parse_bytes(MULTIPART)
    assert [structure_columns(result_of(d)[record.uid]) for d in answers[:3]] == [structure_columns(expected)] * 3
    assert result_of(answers[3]) == [(record.uid, expected.envelope)]
    assert store._parsing == {}


def test_a_full_index_still_answers_what_it_parsed(tmp_path):
    store = SQLiteStore(tmp_path / "store", parse_at_delivery=False)
    box = inbox(store)
    record = result_of(store.append(box.id, MULTIPART))
    pages = store._write_db.execute("PRAGMA page_count").fetchone()[0]
    store._write_db.execute(f"PRAGMA max_page_count = {pages}")
    big = b"".join(b"X-Filler-%05d: a header the index has no room for\r\n" % n for n in range(2000)) + MULTIPART
    other = result_of(store.append(box.id, big))
    structures = result_of(store.get_structures(box.id, [record.uid, other.uid]))
    assert structures[other.uid].header.startswith(b"X-Filler-00000")
    assert kept(store, box) == []
    assert store._parsing == {}
    store.close()


def test_a_copy_of_a_message_not_yet_parsed_is_parsed_when_asked(store):
    box = inbox(store)
    result_of(store.create_mailbox("alice", "Archive"))
    archive = result_of(store.get_mailbox("alice", "Archive"))
    record = result_of(store.append(box.id, MULTIPART))
    [(_, copied)] = result_of(store.copy(box.id, [record.uid], archive.id))
    assert kept(store, archive) == []
    structure = result_of(store.get_structures(archive.id, [copied]))[copied]
    assert structure_columns(structure) == structure_columns(message.parse_bytes(MULTIPART))


def test_a_rebuilt_index_parses_when_asked(tmp_path):
    store = SQLiteStore(tmp_path / "store")
    box = inbox(store)
    record = result_of(store.append(box.id, MULTIPART))
    result_of(store.get_structures(box.id, [record.uid]))
    store.rebuild_index()
    assert kept(store, box) == []
    structure = result_of(store.get_structures(box.id, [record.uid]))[record.uid]
    assert structure.envelope == message.parse_bytes(MULTIPART).envelope
    store.close()
