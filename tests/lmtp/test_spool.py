"""
The DATA spool (gateway/lmtp/spool.py): with one recipient its file is the
whole copy, and the SQLite store takes that file as the body (one inode,
written once); with bare LFs, or several recipients, the store writes its
own CRLF copy as before.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.lmtp import spool as spool_module
from gateway.lmtp.spool import DataSpool
from gateway.mail import message
from gateway.store.traced import TracedMessage, WholeCopy
from tests.deferreds import result_of
from tests.lmtp.test_hostile import Session, bodies, store, traced  # noqa: F401  (store: a fixture)


@pytest.fixture
def spooled_inodes(monkeypatch):
    """The inode of every spool file the LMTP listener opens, in order."""
    inodes = []
    real = spool_module.anonymous_file

    def recording(directory):
        file = real(directory)
        inodes.append(os.fstat(file.fileno()).st_ino)
        return file

    monkeypatch.setattr(spool_module, "anonymous_file", recording)
    return inodes


def body_inodes(store, user="alice"):
    info = result_of(store.get_mailbox(user, "INBOX"))
    return [os.stat(store.root / "mail" / str(info.id) / str(record.uid)).st_ino
            for record in result_of(store.list_messages(info.id))]


def test_one_recipient_copy_is_the_spool_file_itself(store, spooled_inodes):
    session = Session(store)
    session.start()
    assert session.send(b"Subject: once\r\n\r\nwritten once\r\n.\r\n") == [
        b"250 2.0.0 <alice@example.test> Saved as UID 1"
    ]
    # The stored body is the inode LMTP spooled into: no second write.
    assert body_inodes(store) == spooled_inodes
    [body] = bodies(store)
    fields, rest = traced(body)
    assert fields["recipient"] == b"alice@example.test"
    assert rest == b"Subject: once\r\n\r\nwritten once\r\n"
    # Nothing is left in tmp/ once it is stored.
    assert os.listdir(store.root / "tmp") == []


def test_bare_line_feeds_are_stored_as_crlf_in_a_copy(store, spooled_inodes):
    session = Session(store)
    session.start()
    assert session.send(b"Subject: lf\n\nbare\nfeeds\r\n.\r\n") == [b"250 2.0.0 <alice@example.test> Saved as UID 1"]
    [body] = bodies(store)
    assert traced(body)[1] == b"Subject: lf\r\n\r\nbare\r\nfeeds\r\n"
    assert body_inodes(store) != spooled_inodes


def test_several_recipients_each_get_their_own_fields(store, spooled_inodes):
    session = Session(store)
    session.start(b"<alice@example.test>", b"<bob@example.test>")
    assert session.send(b"Subject: two\r\n\r\nx\r\n.\r\n") == [
        b"250 2.0.0 <alice@example.test> Saved as UID 1",
        b"250 2.0.0 <bob@example.test> Saved as UID 1",
    ]
    for user in ("alice", "bob"):
        [body] = bodies(store, user)
        fields, rest = traced(body)
        assert fields["recipient"] == b"%s@example.test" % user.encode()
        assert rest == b"Subject: two\r\n\r\nx\r\n"
        assert body_inodes(store, user) != spooled_inodes


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(data)) for cut in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


@given(st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n"]), max_size=30).map(b"".join),
       st.lists(st.integers(0, 40), max_size=6))
def test_a_spool_is_normalised_only_if_the_store_would_leave_it_as_it_is(tmp_path_factory, data, cuts):
    # Whatever the chunking, "normalised" means exactly: CRLF-normalising
    # changes nothing, so taking the file as it is stores the same bytes.
    spool = DataSpool(str(tmp_path_factory.getbasetemp()), b"F: 1\r\n", 1000)
    try:
        for chunk in chunked(data, cuts):
            spool.write(chunk)
        spool.finish()
        copy = spool.copy_for(b"F: 1\r\n")
        assert isinstance(copy, WholeCopy)
        stored = copy.read()
        assert stored == b"F: 1\r\n" + data
        assert copy.normalised == (b"".join(message.crlf_chunks([stored])) == stored)
    finally:
        spool.close()


def test_without_fields_each_copy_is_traced_on_top(tmp_path):
    spool = DataSpool(str(tmp_path), b"", 1000)
    try:
        spool.write(b"m\r\n")
        spool.finish()
        copy = spool.copy_for(b"F: 2\r\n")
        assert isinstance(copy, TracedMessage)
        assert copy.read() == b"F: 2\r\nm\r\n"
    finally:
        spool.close()


def test_the_size_limit_counts_the_message_not_the_fields(tmp_path):
    spool = DataSpool(str(tmp_path), b"F: " + b"x" * 50 + b"\r\n", 10)
    try:
        spool.write(b"0123456789")
        assert not spool.too_big
        spool.write(b"!")
        assert spool.too_big
    finally:
        spool.close()
