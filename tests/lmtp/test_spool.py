"""
The DATA spool (gateway/lmtp/spool.py, spill.py): a message that fits in
memory is never a file before the store's own; one that spills is, and with
one recipient the SQLite store takes that file as the body (one inode,
written once); with bare LFs, or several recipients, the store writes its
own CRLF copy as before.
"""

from __future__ import annotations

import os
from functools import partial

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer

from gateway.lmtp import spill as spill_module
from gateway.lmtp.spill import BACKLOG, SpillFile
from gateway.lmtp.spool import IN_MEMORY, DataSpool
from gateway.mail import message
from gateway.store.traced import TracedMessage, WholeCopy
from tests.deferreds import result_of
from tests.lmtp.test_hostile import Session, bodies, traced

# Past what a transaction keeps in memory.
SPILLED = b"spilled line\r\n" * (IN_MEMORY // 14 + 10)


@pytest.fixture
def spooled_inodes(monkeypatch):
    """The inode of every spool file the LMTP listener opens, in order."""
    inodes = []
    real = spill_module.anonymous_file

    def recording(directory):
        file = real(directory)
        inodes.append(os.fstat(file.fileno()).st_ino)
        return file

    monkeypatch.setattr(spill_module, "anonymous_file", recording)
    return inodes


def body_inodes(store, user="alice"):
    info = result_of(store.get_mailbox(user, "INBOX"))
    return [os.stat(store.root / "mail" / str(info.id) / str(record.uid)).st_ino
            for record in result_of(store.list_messages(info.id))]


@pytest.mark.parametrize("recipients", [(b"<alice@example.test>",), (b"<alice@example.test>", b"<bob@example.test>")])
@pytest.mark.parametrize(("data", "stored"), [
    (b"Subject: small\r\n\r\nin memory\r\n", b"Subject: small\r\n\r\nin memory\r\n"),
    # Bare line feeds and a lone CR are stored as CRLF all the same.
    (b"Subject: lf\n\nbare\nfeeds\rand a CR\r\n", b"Subject: lf\r\n\r\nbare\r\nfeeds\r\nand a CR\r\n"),
])
def test_a_message_that_fits_in_memory_makes_no_spool_file(store, spooled_inodes, recipients, data, stored):
    session = Session(store)
    session.start(*recipients)
    assert session.send(data + b".\r\n") == [b"250 2.0.0 %s Saved as UID 1" % recipient for recipient in recipients]
    assert spooled_inodes == []
    for recipient in recipients:
        [body] = bodies(store, recipient[1:].split(b"@")[0].decode())
        fields, rest = traced(body)
        assert fields["recipient"] == recipient[1:-1]
        assert rest == stored
    assert os.listdir(store.root / "tmp") == []


def test_one_recipient_copy_is_the_spool_file_itself(store, spooled_inodes):
    # A user with an INBOX: a first delivery, which the store refuses until
    # the mailboxes are made, goes again from a copy.
    result_of(store.ensure_user("alice"))
    session = Session(store)
    session.start()
    assert session.send(b"Subject: once\r\n\r\n" + SPILLED + b".\r\n") == [
        b"250 2.0.0 <alice@example.test> Saved as UID 1"
    ]
    # The stored body is the inode LMTP spooled into: no second write.
    assert len(spooled_inodes) == 1
    assert body_inodes(store) == spooled_inodes
    [body] = bodies(store)
    fields, rest = traced(body)
    assert fields["recipient"] == b"alice@example.test"
    assert rest == b"Subject: once\r\n\r\n" + SPILLED
    # Nothing is left in tmp/ once it is stored.
    assert os.listdir(store.root / "tmp") == []


def test_bare_line_feeds_are_stored_as_crlf_in_a_copy(store, spooled_inodes):
    session = Session(store)
    session.start()
    assert session.send(b"Subject: lf\n\nbare\nfeeds\r\n" + SPILLED + b".\r\n") == [
        b"250 2.0.0 <alice@example.test> Saved as UID 1"
    ]
    [body] = bodies(store)
    assert traced(body)[1] == b"Subject: lf\r\n\r\nbare\r\nfeeds\r\n" + SPILLED
    assert len(spooled_inodes) == 1
    assert body_inodes(store) != spooled_inodes


def test_several_recipients_each_get_their_own_fields(store, spooled_inodes):
    session = Session(store)
    session.start(b"<alice@example.test>", b"<bob@example.test>")
    assert session.send(b"Subject: two\r\n\r\n" + SPILLED + b".\r\n") == [
        b"250 2.0.0 <alice@example.test> Saved as UID 1",
        b"250 2.0.0 <bob@example.test> Saved as UID 1",
    ]
    assert len(spooled_inodes) == 1
    for user in ("alice", "bob"):
        [body] = bodies(store, user)
        fields, rest = traced(body)
        assert fields["recipient"] == b"%s@example.test" % user.encode()
        assert rest == b"Subject: two\r\n\r\n" + SPILLED
        assert body_inodes(store, user) != spooled_inodes


def at_once(work, *args):
    """``run`` for a SpillFile, without threads."""
    return defer.maybeDeferred(work, *args)


def spool_in(directory, fields: bytes, max_size: int, in_memory: int = IN_MEMORY) -> DataSpool:
    return DataSpool(fields, max_size, partial(SpillFile, at_once, str(directory)), in_memory)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(data)) for cut in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


@given(st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n"]), max_size=30).map(b"".join),
       st.lists(st.integers(0, 40), max_size=6))
def test_a_spool_is_normalised_only_if_the_store_would_leave_it_as_it_is(tmp_path_factory, data, cuts):
    # Whatever the chunking, "normalised" means exactly: CRLF-normalising
    # changes nothing, so taking the file as it is stores the same bytes.
    spool = spool_in(tmp_path_factory.getbasetemp(), b"F: 1\r\n", 1000, in_memory=0)
    try:
        spool.write(b"S: x\r\n")
        for chunk in chunked(data, cuts):
            spool.write(chunk)
        result_of(spool.finish())
        copy = spool.copy_for(b"F: 1\r\n")
        assert isinstance(copy, WholeCopy)
        stored = copy.read()
        assert stored == b"F: 1\r\nS: x\r\n" + data
        assert copy.normalised == (b"".join(message.crlf_chunks([stored])) == stored)
    finally:
        spool.close()


@pytest.mark.parametrize("in_memory", [0, IN_MEMORY])
def test_without_fields_each_copy_is_traced_on_top(tmp_path, in_memory):
    spool = spool_in(tmp_path, b"", 1000, in_memory)
    try:
        spool.write(b"m\r\n")
        finished = spool.finish()
        if finished is not None:
            result_of(finished)
        assert (spool.file is None) == (in_memory > 0)
        for fields in (b"F: 2\r\n", b"F: 3\r\n"):
            copy = spool.copy_for(fields)
            assert isinstance(copy, TracedMessage)
            assert copy.read() == fields + b"m\r\n"
    finally:
        spool.close()


@pytest.mark.parametrize("in_memory", [0, IN_MEMORY])
def test_the_size_limit_counts_the_message_not_the_fields(tmp_path, in_memory):
    spool = spool_in(tmp_path, b"F: " + b"x" * 50 + b"\r\n", 10, in_memory)
    try:
        spool.write(b"0123456789")
        assert not spool.too_big
        spool.write(b"!")
        assert spool.too_big
    finally:
        spool.close()


class HeldJobs:
    """``run`` for a SpillFile whose jobs wait until the test runs them, as a slow disk's."""

    def __init__(self):
        self.jobs = []

    def __call__(self, work, *args):
        job = defer.Deferred()
        self.jobs.append((job, work, args))
        return job

    def run_all(self):
        while self.jobs:
            job, work, args = self.jobs.pop(0)
            job.callback(work(*args))


def test_a_spill_file_behind_the_disk_asks_for_room(tmp_path):
    jobs = HeldJobs()
    spill = SpillFile(jobs, str(tmp_path), [b"F: 1\r\n"])
    chunk = b"x" * 1000 + b"\r\n"
    for _ in range(BACKLOG // len(chunk)):
        spill.write(chunk)
    assert spill.room() is None
    spill.write(chunk)
    room = spill.room()
    assert room is not None and not room.called
    # One job at a time: the first (the fields) runs, then all that gathered.
    assert len(jobs.jobs) == 1
    jobs.run_all()
    assert room.called and spill.backlog == 0
    finished = spill.finish()
    jobs.run_all()
    assert finished.called and spill.error is None
    assert os.pread(spill.file.fileno(), 10, 0) == b"F: 1\r\nxxxx"
    assert os.fstat(spill.file.fileno()).st_size == 6 + len(chunk) * (BACKLOG // len(chunk) + 1)
    spill.close()
    jobs.run_all()
    assert spill.file is None


def test_a_session_stops_reading_while_its_spool_file_is_behind_the_disk(store):
    session = Session(store, max_message_size=4 * BACKLOG)
    jobs = HeldJobs()
    session.server.factory.run_off_reactor = jobs
    session.start()
    assert session.transport.producerState == "producing"
    session.send(b"Subject: slow disk\r\n\r\n" + b"y" * 1000 + b"\r\n")
    for _ in range((IN_MEMORY + BACKLOG) // 1000 + 10):
        session.send(b"y" * 998 + b"\r\n")
    assert session.transport.producerState == "paused"
    jobs.run_all()
    assert session.transport.producerState == "producing"
    session.server.dataReceived(b".\r\n")
    jobs.run_all()
    session.clock.advance(0)
    assert session.replies() == [b"250 2.0.0 <alice@example.test> Saved as UID 1"]
    [body] = bodies(store)
    assert traced(body)[1].startswith(b"Subject: slow disk\r\n\r\n" + b"y" * 1000 + b"\r\n")
