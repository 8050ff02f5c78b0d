"""
CONDSTORE and QRESYNC end to end (RFC 7162): the real server (``twistd -n
gateway``) on a loopback port the OS picks, driven by imapclient and, where
imapclient has no words for it (QRESYNC), imaplib.
"""

from __future__ import annotations

import imaplib

import imapclient
import pytest

from tests.serverproc import GatewayProcess, run_gateway

MESSAGE = b"From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: hello\r\n\r\nHello, Bob.\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("condstore") / "data"
    run_gateway(data, "user", "add", "alice", input=b"secret\n")
    with GatewayProcess(data, lmtp=None) as process:
        yield process


def client(server) -> imapclient.IMAPClient:
    c = imapclient.IMAPClient("127.0.0.1", port=server.port("imap"), ssl=False, timeout=30)
    c.login("alice", "secret")
    return c


def test_changedsince_finds_another_sessions_store(server):
    watcher, writer = client(server), client(server)
    try:
        assert b"CONDSTORE" in watcher.capabilities()
        for _ in range(3):
            writer.append("INBOX", MESSAGE)
        assert watcher.enable("CONDSTORE") == [b"CONDSTORE"]
        known = watcher.select_folder("INBOX", readonly=True)[b"HIGHESTMODSEQ"]
        writer.select_folder("INBOX")
        uids = writer.search(["ALL"])
        writer.add_flags(uids[1], [b"$Done"])

        changed = watcher.fetch(uids, ["FLAGS"], modifiers=["CHANGEDSINCE %d" % known])
        assert list(changed) == [uids[1]]
        # EXAMINE shows \Recent without claiming it (RFC 3501 6.3.2).
        assert changed[uids[1]][b"FLAGS"] == (b"\\Recent", b"$Done")
        assert changed[uids[1]][b"MODSEQ"] == (known + 1,)
        # Nothing since then.
        assert watcher.fetch(uids, ["FLAGS"], modifiers=["CHANGEDSINCE %d" % (known + 1)]) == {}

        # A conditional STORE that lost the race changes nothing.
        writer.add_flags(uids[2], [b"\\Flagged"])
        # imapclient has no UNCHANGEDSINCE; imaplib's _simple_command returns
        # the tagged answer, where MODIFIED is.
        typ, tagged = writer._imap._simple_command(
            "UID", "STORE", "%d" % uids[2], "(UNCHANGEDSINCE %d)" % known, "+FLAGS.SILENT", "(\\Seen)"
        )
        assert typ == "OK" and tagged[-1].startswith(b"[MODIFIED %d]" % uids[2]), tagged
        assert watcher.search(["MODSEQ", str(known + 1)]) == [uids[1], uids[2]]
        assert watcher.get_flags(uids[2])[uids[2]] == (b"\\Flagged", b"\\Recent")
    finally:
        watcher.logout()
        writer.logout()


def test_qresync_select_catches_up_with_another_sessions_changes(server):
    writer = client(server)
    resyncing = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=30)
    try:
        resyncing.login("alice", "secret")
        assert resyncing.enable("QRESYNC")[0] == "OK"
        assert resyncing.untagged_responses.pop("ENABLED") == [b"QRESYNC"]
        writer.create_folder("Resync")
        for _ in range(3):
            writer.append("Resync", MESSAGE)
        known = writer.folder_status("Resync", ["UIDVALIDITY", "HIGHESTMODSEQ"])
        writer.select_folder("Resync")
        writer.delete_messages([2])
        writer.expunge()
        writer.add_flags([3], [b"$Later"])
        highest = writer.folder_status("Resync", ["HIGHESTMODSEQ"])[b"HIGHESTMODSEQ"]

        typ, _ = resyncing._simple_command(
            "SELECT", "Resync (QRESYNC (%d %d))" % (known[b"UIDVALIDITY"], known[b"HIGHESTMODSEQ"])
        )
        assert typ == "OK"
        assert resyncing.untagged_responses.pop("VANISHED") == [b"(EARLIER) 2"]
        assert resyncing.untagged_responses.pop("FETCH") == [b"2 (UID 3 FLAGS ($Later) MODSEQ (%d))" % highest]

        # Once selected, expunges come as VANISHED, not EXPUNGE.
        writer.delete_messages([1])
        writer.expunge()
        assert resyncing.noop()[0] == "OK"
        assert resyncing.untagged_responses.pop("VANISHED") == [b"1"]
        assert "EXPUNGE" not in resyncing.untagged_responses
    finally:
        resyncing.logout()
        writer.logout()
