"""
ESEARCH and SEARCHRES (RFC 4731, 5182), SORT and THREAD (RFC 5256) end to
end: the real server (``twistd -n gateway``) on a loopback port the OS
picks, driven by imapclient and imaplib.
"""

from __future__ import annotations

import imaplib

import imapclient
import pytest

from tests.serverproc import GatewayProcess, run_gateway


def message(subject: str, day: int, extra: str = "") -> bytes:
    return (f"From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: {subject}\r\n"
            f"Date: {day} Jan 2000 10:00:00 +0000\r\n{extra}\r\nHello.\r\n").encode()


MESSAGES = [
    message("hello", 3, "Message-ID: <1@x>\r\n"),
    message("Re: hello", 4, "Message-ID: <2@x>\r\nReferences: <1@x>\r\n"),
    message("another", 2, "Message-ID: <3@x>\r\n"),
    message("Re: hello", 5, "Message-ID: <4@x>\r\nIn-Reply-To: <1@x>\r\n"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("searchsort") / "data"
    run_gateway(data, "user", "add", "alice", input=b"secret\n")
    with GatewayProcess(data, lmtp=None) as process:
        c = imapclient.IMAPClient("127.0.0.1", port=process.port("imap"), ssl=False, timeout=30)
        c.login("alice", "secret")
        for body in MESSAGES:
            c.append("INBOX", body, flags=[b"\\Seen"] if b"another" in body else [])
        c.logout()
        yield process


def test_sort_and_thread_with_imapclient(server):
    c = imapclient.IMAPClient("127.0.0.1", port=server.port("imap"), ssl=False, timeout=30)
    try:
        c.login("alice", "secret")
        assert {b"SORT", b"THREAD=REFERENCES", b"ESEARCH", b"SEARCHRES"} <= set(c.capabilities())
        c.select_folder("INBOX")
        # imapclient's sort and thread are UID SORT and UID THREAD.
        assert c.sort(["DATE"]) == [3, 1, 2, 4]
        assert c.sort(["REVERSE SUBJECT", "DATE"], ["NOT", "SEEN"]) == [1, 2, 4]
        assert c.thread("REFERENCES") == ((3,), (1, (2,), (4,)))
        assert c.thread("ORDEREDSUBJECT", ["UNSEEN"]) == ((1, (2,), (4,)),)
    finally:
        c.logout()


def test_esearch_and_saved_result_with_imaplib(server):
    c = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=30)
    try:
        c.login("alice", "secret")
        c.select("INBOX")
        # As iOS Mail asks.
        typ, data = c._simple_command("UID", "SEARCH", "RETURN", "(ALL)", "UNSEEN")
        assert typ == "OK"
        assert c.untagged_responses.pop("ESEARCH")[0].endswith(b" UID ALL 1:2,4")
        typ, data = c.search(None, "RETURN (SAVE MIN)", "UNSEEN")
        assert typ == "OK" and c.untagged_responses.pop("ESEARCH")[0].endswith(b" MIN 1")
        typ, data = c.fetch("$", "(UID)")
        assert typ == "OK" and data == [b"1 (UID 1)"]
        typ, data = c.sort("(DATE)", "UTF-8", "OR", "$", "SEEN")
        assert (typ, data) == ("OK", [b"3 1"])
        typ, data = c.thread("REFERENCES", "US-ASCII", "ALL")
        assert (typ, data) == ("OK", [b"(3)(1 (2)(4))"])
    finally:
        c.logout()


def test_list_extended_status_and_special_use_with_imapclient(server):
    c = imapclient.IMAPClient("127.0.0.1", port=server.port("imap"), ssl=False, timeout=30)
    try:
        c.login("alice", "secret")
        assert {b"LIST-EXTENDED", b"LIST-STATUS", b"CREATE-SPECIAL-USE", b"STATUS=SIZE"} <= set(c.capabilities())
        assert c.find_special_folder(imapclient.imapclient.SENT) == "Sent"
        typ, _ = c._imap._simple_command("CREATE", "Archive/2024", "(USE (\\Archive))")
        assert typ == "OK"
        assert c.find_special_folder(imapclient.imapclient.ARCHIVE) == "Archive/2024"
        assert c.folder_status("INBOX", ["MESSAGES", "SIZE", "DELETED"]) == {
            b"MESSAGES": 4, b"SIZE": sum(len(body) for body in MESSAGES), b"DELETED": 0}
        typ, data = c._imap._simple_command("LIST", "(SPECIAL-USE)", '""', "*", "RETURN", "(STATUS", "(MESSAGES))")
        assert typ == "OK"
        listed = c._imap.untagged_responses.pop("LIST")
        statuses = c._imap.untagged_responses.pop("STATUS")
        assert listed[0] == b'(\\HasNoChildren \\Archive) "/" "Archive/2024"'
        assert b'"Archive" (' not in b"".join(statuses) and len(statuses) == len(listed) == 5
    finally:
        c.logout()


def test_imap4rev2_with_imaplib(server):
    c = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=30)
    try:
        c.login("alice", "secret")
        assert "IMAP4REV2" in c.capabilities
        assert c.enable("IMAP4rev2")[0] == "OK"
        assert c.untagged_responses.pop("ENABLED") == [b"IMAP4rev2"]
        typ, data = c.select("INBOX")
        assert (typ, data) == ("OK", [b"4"])
        assert "RECENT" not in c.untagged_responses and "UNSEEN" not in c.untagged_responses
        assert c.untagged_responses.pop("LIST") == [b'(\\HasNoChildren) "/" "INBOX"']
        typ, data = c.uid("SEARCH", "UNSEEN")
        assert typ == "OK" and c.untagged_responses.pop("ESEARCH")[0].endswith(b" UID ALL 1:2,4")
        typ, data = c.fetch("1", "(FLAGS)")
        assert data == [b"1 (FLAGS ())"]
    finally:
        c.logout()


def test_notify_with_imaplib(server, monkeypatch):
    # imaplib knows no NOTIFY; its table of commands says in which states each runs.
    monkeypatch.setitem(imaplib.Commands, "NOTIFY", ("AUTH", "SELECTED"))
    watcher = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=30)
    other = imapclient.IMAPClient("127.0.0.1", port=server.port("imap"), ssl=False, timeout=30)
    try:
        watcher.login("alice", "secret")
        other.login("alice", "secret")
        assert b"NOTIFY" in watcher.capability()[1][0].split()
        watcher.select("INBOX")
        typ, _ = watcher._simple_command(
            "NOTIFY", "SET", "(SELECTED (MessageNew (UID) MessageExpunge))",
            "(PERSONAL (MessageNew MessageExpunge MailboxName))")
        assert typ == "OK"
        other.create_folder("Notified")
        # Told without a command: imaplib reads the untagged lines as they come.
        assert watcher.readline() == b'* LIST (\\HasNoChildren) "/" "Notified"\r\n'
        other.append("Notified", MESSAGES[0])
        line = watcher.readline()
        assert line.startswith(b'* STATUS "Notified" (MESSAGES 1 UIDNEXT 2'), line
        other.append("INBOX", MESSAGES[1])
        assert watcher.readline() == b"* 5 EXISTS\r\n"
        assert watcher.readline() == b"* 1 RECENT\r\n"
        assert watcher.readline() == b"* 5 FETCH (UID 5)\r\n"
        other.delete_folder("Notified")
        assert watcher.readline() == b'* LIST (\\NonExistent) "/" "Notified"\r\n'
    finally:
        other.logout()
        watcher.logout()
