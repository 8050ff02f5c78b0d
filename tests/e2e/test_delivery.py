"""
Delivery end to end: the real server (``twistd -n gateway``) fed by
Python's ``smtplib.LMTP`` over loopback, the ``gateway deliver`` MDA as a
subprocess, and a ``kill -9`` in the middle of a burst of deliveries.  What
arrived is read back from the store on disk, as a client would see it.
"""

from __future__ import annotations

import imaplib
import re
import smtplib

import pytest

from gateway.store.sqlite.store import SQLiteStore
from tests.deferreds import result_of
import tests.burst
from tests.serverproc import GatewayProcess, run_gateway

SAVED = re.compile(rb"^2\.0\.0 <[^>]+> Saved as UID (\d+)$")


def read_mailbox(data_dir, user="alice", mailbox="INBOX"):
    """(UID, body) of every message in the mailbox, ascending by UID."""
    store = SQLiteStore(data_dir / "store")
    try:
        info = result_of(store.get_mailbox(user, mailbox))
        messages = []
        for record in result_of(store.list_messages(info.id)):
            with result_of(store.open_message(info.id, record.uid)) as body:
                messages.append((record.uid, body.read()))
        return messages
    finally:
        store.close()


def lmtp_deliver(port: int, sender: str, recipient: str, message: bytes) -> int:
    """Deliver one message; the UID from the 250 reply."""
    with smtplib.LMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo_or_helo_if_needed()
        assert client.mail(sender)[0] == 250
        assert client.rcpt(recipient)[0] == 250
        code, reply = client.data(message)
        assert code == 250, reply
        return int(SAVED.match(reply).group(1))


def untraced(messages, sender: bytes, recipient: bytes):
    """
    (UID, body) pairs with the LMTP trace fields taken off each body, after
    checking them: Return-Path, Delivered-To, then Received in Dovecot's
    shape (RFC 5321 4.4), from the LHLO name and the loopback address.
    """
    trace = re.compile(
        rb"Return-Path: <" + re.escape(sender) + rb">\r\n"
        rb"Delivered-To: " + re.escape(recipient) + rb"\r\n"
        rb"Received: from \S+ \(\[127\.0\.0\.1\]\)\r\n"
        rb"\tby localhost with LMTP\r\n"
        rb"\tid [A-Za-z0-9+/]{22}\r\n"
        rb"\t\(envelope-from <" + re.escape(sender) + rb">\)\r\n"
        rb"\tfor <" + re.escape(recipient) + rb">; [A-Z][a-z]{2}, [0-9]{2} [A-Z][a-z]{2} [0-9]{4} [0-9:]{8} "
        rb"[+-][0-9]{4}\r\n"
    )
    stripped = []
    for uid, body in messages:
        match = trace.match(body)
        assert match, f"UID {uid}: {body[:400]!r}"
        stripped.append((uid, body[match.end():]))
    return stripped


@pytest.fixture
def data_dir(tmp_path):
    data = tmp_path / "data"
    run_gateway(data, "user", "add", "alice", input=b"alice-password\n")
    return data


def test_lmtp_deliveries_land_in_order_and_whole(data_dir):
    messages = [
        b"From: bob@example.org\r\nSubject: one\r\n\r\nFirst.\r\n",
        # smtplib sends these bare LFs as they are (dot-stuffed), then CRLF
        # before the final dot; the store turns every line end into CRLF.
        b"From: bob@example.org\nSubject: two\n\n.leading dot\n..two dots\n",
        b"From: bob@example.org\r\nSubject: three\r\n\r\n" + bytes(range(128, 256)) + b"\r\n",
    ]
    with GatewayProcess(data_dir, pop3=None, imap=None) as server:
        uids = [lmtp_deliver(server.port("lmtp"), "bob@example.org", "alice@example.test", m) for m in messages]
        with smtplib.LMTP("127.0.0.1", server.port("lmtp"), timeout=30) as client:
            # RFC 2033 4.1; smtplib.LMTP's own ehlo() sends LHLO.
            assert client.docmd("HELO", "client")[0] == 500
            assert client.docmd("EHLO", "client")[0] == 500
            code, lines = client.ehlo("client")
            assert code == 250
            assert lines.split(b"\n")[1:] == [b"PIPELINING", b"ENHANCEDSTATUSCODES", b"8BITMIME", b"SIZE 52428800"]
            assert client.mail("bob@example.org")[0] == 250
            assert client.rcpt("nobody@example.test") == (550, b"5.1.1 <nobody@example.test> User doesn't exist")
    assert uids == [1, 2, 3]
    assert untraced(read_mailbox(data_dir), b"bob@example.org", b"alice@example.test") == [
        (1, messages[0]),
        (2, b"From: bob@example.org\r\nSubject: two\r\n\r\n.leading dot\r\n..two dots\r\n\r\n"),
        (3, messages[2]),
    ]


def test_gateway_deliver_exit_codes(data_dir):
    delivered = run_gateway(data_dir, "deliver", "alice", input=b"From bob Mon Jan  1 00:00:00 2024\nSubject: mda\n\nHi.\n")
    assert (delivered.returncode, delivered.stderr) == (0, b"")
    unknown = run_gateway(data_dir, "deliver", "mallory", input=b"Subject: x\n\n", check=False)
    assert (unknown.returncode, unknown.stderr) == (67, b"gateway deliver: unknown user 'mallory'\n")
    empty = run_gateway(data_dir, "deliver", "alice", input=b"", check=False)
    assert empty.returncode == 65
    # A store whose spool directory cannot be created: a temporary failure,
    # so the MTA keeps the message.
    tmp = data_dir / "store" / "tmp"
    tmp.rmdir()
    tmp.write_bytes(b"")
    broken = run_gateway(data_dir, "deliver", "alice", input=b"Subject: x\n\n", check=False)
    assert broken.returncode == 75
    assert broken.stderr.startswith(b"gateway deliver: ") and broken.stderr.count(b"\n") == 1
    assert b"Traceback" not in broken.stderr
    tmp.unlink()
    assert read_mailbox(data_dir) == [(1, b"Subject: mda\r\n\r\nHi.\r\n")]


class Burst(tests.burst.Burst):
    """LMTP clients delivering numbered messages until the server goes away."""

    gone = (OSError, smtplib.SMTPException)

    def connect(self):
        client = smtplib.LMTP("127.0.0.1", self.port, timeout=30)
        client.ehlo_or_helo_if_needed()
        return client

    def send(self, client, number):
        client.mail("sender@example.org")
        client.rcpt("alice@example.test")
        code, reply = client.data(self.message(number))
        return int(SAVED.match(reply).group(1)) if code == 250 else None


def test_kill_9_mid_burst_loses_no_acknowledged_message_and_reuses_no_uid(data_dir):
    server = GatewayProcess(data_dir, pop3=None, imap=None).start()
    burst = Burst(server.port("lmtp"), threads=4, kill_after=40)
    acknowledged = burst.run_until_killed(server)

    with GatewayProcess(data_dir, pop3=None, imap=None) as server:
        after_restart = lmtp_deliver(server.port("lmtp"), "sender@example.org", "alice@example.test", b"Subject: after\r\n\r\n")

    messages = untraced(read_mailbox(data_dir), b"sender@example.org", b"alice@example.test")
    uids = [uid for uid, _ in messages]
    assert uids == sorted(set(uids))
    by_uid = dict(messages)
    # Every acknowledged message is there, under the UID it was given, whole.
    for number, uid in acknowledged.items():
        assert by_uid.get(uid) == Burst.message(number), f"message {number} (UID {uid})"
    # Whatever else survived (stored, but killed before its 250) is whole too.
    expected = {Burst.message(number) for number in range(1, burst.next_number + 1)}
    for uid, body in messages[:-1]:
        assert body in expected, f"UID {uid} is not a whole message"
    assert len({body for _, body in messages[:-1]}) == len(messages) - 1
    # No UID handed out before the crash is handed out again.
    assert after_restart > max(acknowledged.values())
    assert after_restart > max(uids[:-1])
    assert messages[-1] == (after_restart, b"Subject: after\r\n\r\n")


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def big_message(megabytes: int) -> bytes:
    """A message of at most ``megabytes`` MiB: 50 is the default size limit."""
    header = b"Subject: big\r\n\r\n"
    line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n"
    return header + line * ((megabytes * 1024 * 1024 - len(header)) // len(line))


def test_50_mb_message_keeps_server_memory_flat(data_dir):
    with GatewayProcess(data_dir, pop3=None, imap=None) as server:
        port = server.port("lmtp")
        # Warm up every code path once so that the baseline includes them.
        lmtp_deliver(port, "bob@example.org", "alice@example.test", big_message(1))
        before = peak_rss_kib(server.process.pid)
        message = big_message(50)
        uid = lmtp_deliver(port, "bob@example.org", "alice@example.test", message)
        grown = peak_rss_kib(server.process.pid) - before
    # Holding the message once would add 50 MiB; spooling adds buffers only.
    assert grown < 10 * 1024, f"server peak RSS grew by {grown} KiB"
    assert untraced(read_mailbox(data_dir)[-1:], b"bob@example.org", b"alice@example.test") == [(uid, message)]


def test_copies_for_several_recipients_are_each_the_whole_message(data_dir):
    # Recipients whose mailboxes exist and recipients whose mailboxes their
    # first delivery makes reach the store in different groups, whose
    # copies of the one spool are read at once on several threads.
    names = ["alice", "bob", "carol", "dave", "erin", "frank"]
    for name in names[1:]:
        run_gateway(data_dir, "user", "add", name, input=b"password-of-" + name.encode() + b"\n")
    numbered = b"".join(b"line %07d of a message read by six copies at once\r\n" % n for n in range(150_000))
    message = b"From: bob@example.org\r\nSubject: to six\r\n\r\n" + numbered
    with GatewayProcess(data_dir, pop3=None, imap=None) as server:
        port = server.port("lmtp")
        for name in names[::2]:
            lmtp_deliver(port, "bob@example.org", f"{name}@example.test", b"Subject: first\r\n\r\nx\r\n")
        with smtplib.LMTP("127.0.0.1", port, timeout=60) as client:
            client.ehlo_or_helo_if_needed()
            assert client.mail("bob@example.org")[0] == 250
            for name in names:
                assert client.rcpt(f"{name}@example.test")[0] == 250
            # RFC 2033 4.2: one reply per recipient, the first as DATA's.
            replies = [client.data(message)] + [client.getreply() for _ in names[1:]]
    assert [code for code, _ in replies] == [250] * len(names), replies
    for name in names:
        copy = read_mailbox(data_dir, user=name)[-1]
        recipient = f"{name}@example.test".encode()
        assert untraced([copy], b"bob@example.org", recipient)[0][1] == message, name


@pytest.mark.parametrize("save_to_detail_mailbox", [False, True])
def test_plus_detail_never_plants_mail_in_a_special_use_folder(data_dir, tmp_path, save_to_detail_mailbox):
    # An outside sender picks the address: alice+Sent@ must not put "sent"
    # mail in her Sent folder.  The detail chooses a folder only when the
    # config says so (Dovecot's lmtp_save_to_detail_mailbox), and never one
    # with a special use (RFC 6154).
    config = tmp_path / "gateway.toml"
    config.write_text(f"[lmtp]\nsave_to_detail_mailbox = {str(save_to_detail_mailbox).lower()}\n")
    with GatewayProcess(data_dir, pop3=None, config=config) as server:
        client = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=30)
        client.login("alice", "alice-password")
        assert client.create("Work")[0] == "OK"
        for detail in ("Work", "Sent", "Drafts"):
            message = f"From: outsider@example.net\r\nSubject: to +{detail}\r\n\r\nHi.\r\n".encode()
            lmtp_deliver(server.port("lmtp"), "outsider@example.net", f"alice+{detail}@example.org", message)
        subjects = {}
        for folder in ("INBOX", "Work", "Sent", "Drafts"):
            client.select(folder, readonly=True)
            _, data = client.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            subjects[folder] = sorted(part[1].strip().decode() for part in data if isinstance(part, tuple))
        client.logout()
    if save_to_detail_mailbox:
        assert subjects == {"INBOX": ["Subject: to +Drafts", "Subject: to +Sent"], "Work": ["Subject: to +Work"],
                            "Sent": [], "Drafts": []}
    else:
        assert subjects == {"INBOX": ["Subject: to +Drafts", "Subject: to +Sent", "Subject: to +Work"], "Work": [],
                            "Sent": [], "Drafts": []}
