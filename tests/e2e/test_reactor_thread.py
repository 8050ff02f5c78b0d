"""
DESIGN.md: the reactor thread never blocks on the disk.  The real server runs
in this process on a real reactor thread (tests/reactorthread.py) while
real clients (smtplib.LMTP, imaplib, poplib) drive LMTP deliveries, IMAP
APPEND, STORE, COPY and EXPUNGE and one-at-a-time POP3 RETRs over loopback;
``os.fsync`` and ``os.fdatasync`` fail when called on the reactor thread,
and every statement on the store's write connection (its commits with
``synchronous=FULL`` among them) is checked to run elsewhere.
"""

from __future__ import annotations

import imaplib
import json
import os
import poplib
import re
import smtplib
import threading
import traceback

import pytest

from gateway.auth import UsersFile
from gateway.config import Config
from gateway.lmtp.spool import IN_MEMORY
from gateway.net.tls import CertificateReloader
from gateway.service import make_service

LOOPBACK = "tcp:0:interface=127.0.0.1"
SAVED = re.compile(rb"Saved as UID (\d+)")


class ReactorThreadWatch:
    """Fails fsync on the reactor thread and records what the store's connections run where."""

    def __init__(self, reactor_ident: int):
        self.reactor_ident = reactor_ident
        self.violations: list[str] = []
        self.fsyncs_elsewhere = 0
        self.writes_elsewhere = 0
        self.lock = threading.Lock()

    def on_reactor(self) -> bool:
        return threading.get_ident() == self.reactor_ident

    def guard(self, name, real):
        def guarded(fd):
            if self.on_reactor():
                with self.lock:
                    self.violations.append(f"{name} on the reactor thread:\n{''.join(traceback.format_stack())}")
                raise OSError(f"{name} on the reactor thread")
            with self.lock:
                self.fsyncs_elsewhere += 1
            return real(fd)

        return guarded

    def write_statement(self, statement: str) -> None:
        with self.lock:
            if self.on_reactor():
                self.violations.append(f"write connection used on the reactor thread: {statement}")
            else:
                self.writes_elsewhere += 1

    def read_statement(self, statement: str) -> None:
        if self.on_reactor() and not statement.lstrip().upper().startswith(("SELECT", "PRAGMA DATA_VERSION")):
            with self.lock:
                self.violations.append(f"read connection ran {statement!r} on the reactor thread")


@pytest.fixture
def server(tmp_path, reactor_thread, monkeypatch):
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    users = UsersFile(data / "users")
    for name in ("alice", "bob"):
        users.add(name, f"{name}-password")
    config = Config().with_listeners(pop3=[LOOPBACK], imap=[LOOPBACK], lmtp=[LOOPBACK])
    service = reactor_thread.call(make_service, data, config, reactor_thread.reactor)
    # All but the certificate reloader, whose SIGHUP handler needs the main
    # thread (TLS is not what this test is about).
    children = [child for child in service if not isinstance(child, CertificateReloader)]
    for child in children:
        reactor_thread.call(child.startService)
    ports = {name: int(bound[0].rsplit(":", 1)[1]) for name, bound in
             json.loads((data / "run" / "ports.json").read_text()).items() if bound}
    watch = ReactorThreadWatch(reactor_thread.ident)
    # Only from here on: start-up (the schema, the TLS pair) is not serving.
    monkeypatch.setattr(os, "fsync", watch.guard("fsync", os.fsync))
    monkeypatch.setattr(os, "fdatasync", watch.guard("fdatasync", os.fdatasync))
    service.store._write_db.set_trace_callback(watch.write_statement)
    service.store._read_db.set_trace_callback(watch.read_statement)
    try:
        yield ports, watch
    finally:
        for child in reversed(children):
            reactor_thread.call(child.stopService)


def deliver(port: int, recipients: list[str], count: int, label: str, padding: int = 0) -> None:
    """``count`` messages, each to ``recipients``; each at least ``padding`` bytes long."""
    with smtplib.LMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo_or_helo_if_needed()
        for n in range(count):
            message = f"Subject: {label} {n}\r\n\r\n{label} body {n}\r\n".encode() * (1 + n % 7)
            message += b"padding line\r\n" * (padding // 14 + 1 if padding else 0)
            assert client.mail("sender@example.org")[0] == 250
            for recipient in recipients:
                assert client.rcpt(recipient)[0] == 250
            # RFC 2033 4.2: one reply per recipient (smtplib reads the first).
            replies = [client.data(message)]
            replies += [client.getreply() for _ in recipients[1:]]
            assert [code for code, _ in replies] == [250] * len(recipients), replies


def imap_work(port: int, rounds: int) -> None:
    with imaplib.IMAP4("127.0.0.1", port, timeout=30) as client:
        client.login("alice", "alice-password")
        for n in range(rounds):
            status, reply = client.append("INBOX", "(\\Draft)", None, f"Subject: appended {n}\r\n\r\nx\r\n".encode())
            assert status == "OK", reply
            assert client.select("INBOX")[0] == "OK"
            assert client.uid("STORE", "1:*", "+FLAGS", "(\\Flagged)")[0] == "OK"
            assert client.uid("STORE", "1:*", "-FLAGS.SILENT", "(\\Draft)")[0] == "OK"
            status, data = client.uid("SEARCH", "ALL")
            uids = data[0].split()
            assert client.uid("COPY", uids[0], "Trash")[0] == "OK"
            assert client.uid("STORE", uids[0], "+FLAGS.SILENT", "(\\Deleted)")[0] == "OK"
            assert client.expunge()[0] == "OK"
            assert client.close()[0] == "OK"
        client.logout()


def pop3_work(port: int) -> int:
    """Download bob's maildrop one command at a time (RETR sets \\Seen), delete half, QUIT."""
    client = poplib.POP3("127.0.0.1", port, timeout=30)
    client.user("bob")
    client.pass_("bob-password")
    count, _ = client.stat()
    for number in range(1, count + 1):
        client.retr(number)
        if number % 2:
            client.dele(number)
    assert client.quit().startswith(b"+OK")
    return count


def test_the_reactor_thread_never_fsyncs_or_writes_the_index(server):
    ports, watch = server
    # Mail for both: one recipient, and several (one body for all).
    deliver(ports["lmtp"], ["alice@example.test"], 10, "first")
    deliver(ports["lmtp"], ["alice@example.test", "bob@example.test"], 10, "both")
    deliver(ports["lmtp"], ["bob@example.test"], 10, "bob")
    failures = []

    def run(work, *args):
        try:
            work(*args)
        except Exception:
            failures.append(traceback.format_exc())

    threads = [
        threading.Thread(target=run, args=(deliver, ports["lmtp"], ["alice@example.test", "bob@example.test"], 15,
                                           "burst")),
        threading.Thread(target=run, args=(imap_work, ports["imap"], 6)),
        threading.Thread(target=run, args=(pop3_work, ports["pop3"])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive()
    assert failures == []
    # What the clients did is there: bob's second session sees its \Seen
    # flags and its deletions, over IMAP.
    with imaplib.IMAP4("127.0.0.1", ports["imap"], timeout=30) as client:
        client.login("bob", "bob-password")
        status, data = client.select("INBOX", readonly=True)
        remaining = int(data[0])
        status, data = client.search(None, "UNSEEN")
        unseen = len(data[0].split())
        client.logout()
    assert remaining >= 10 and unseen < remaining
    assert watch.violations == [], watch.violations[0]
    # The guard was live: the store did fsync and write, off the reactor.
    assert watch.fsyncs_elsewhere > 0 and watch.writes_elsewhere > 0


def test_the_reactor_thread_makes_and_removes_no_file_for_lmtp_mail(server, monkeypatch):
    # DESIGN.md: making a file allocates an inode, which can take a
    # millisecond on a busy disk, and removing one frees it.  A message in
    # memory is written by the store's threads; one that outgrows memory
    # (IN_MEMORY) spills to a file made and written on a thread; the body
    # several recipients' copies were made from is removed on a thread.
    # One recipient and several, small and spilled, sessions at once.
    ports, watch = server
    opened_elsewhere = []

    def guard(name, real):
        def guarded(*args, **kwargs):
            if watch.on_reactor():
                with watch.lock:
                    watch.violations.append(f"{name}{args[:1]} on the reactor thread:\n"
                                            f"{''.join(traceback.format_stack())}")
                raise OSError(f"{name} on the reactor thread")
            opened_elsewhere.append(name)
            return real(*args, **kwargs)

        return guarded

    monkeypatch.setattr(os, "open", guard("os.open", os.open))
    monkeypatch.setattr("builtins.open", guard("open", open))
    monkeypatch.setattr(os, "unlink", guard("os.unlink", os.unlink))
    monkeypatch.setattr(os, "remove", guard("os.remove", os.remove))
    failures = []

    def run(recipients, count, label, big):
        try:
            deliver(ports["lmtp"], recipients, count, label, big)
        except Exception:
            failures.append(traceback.format_exc())

    one, both = ["alice@example.test"], ["alice@example.test", "bob@example.test"]
    threads = [threading.Thread(target=run, args=args) for args in [
        (one, 15, "one", 0), (both, 15, "both", 0), (one, 3, "big one", IN_MEMORY), (both, 3, "big both", IN_MEMORY),
    ]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive()
    # Serving is over: stopping removes files of its own (ports.json).
    monkeypatch.undo()
    assert failures == [], failures[0]
    assert watch.violations == [], watch.violations[0]
    # The guard was live: files were made and removed, off the reactor.
    assert "os.unlink" in opened_elsewhere and ("os.open" in opened_elsewhere or "open" in opened_elsewhere)
    with imaplib.IMAP4("127.0.0.1", ports["imap"], timeout=30) as client:
        client.login("bob", "bob-password")
        status, data = client.select("INBOX", readonly=True)
        assert int(data[0]) == 18
        status, data = client.fetch("1:*", "(RFC822.SIZE)")
        sizes = [int(re.search(rb"RFC822.SIZE (\d+)", item).group(1)) for item in data]
        assert len([size for size in sizes if size > IN_MEMORY]) == 3
        client.logout()
