"""
Debian's aerc against the real server: with threading on, it asks UID
THREAD REFERENCES, and with a sort order UID SORT, then fetches the
messages in the order answered.  aerc is a terminal program: it runs on a
pseudo-terminal for a few seconds, and a relay between it and the server
records both directions.  `.ci/run` installs the ``aerc`` package.
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import signal
import socket
import threading
import time

import imapclient
import pytest

from tests.serverproc import GatewayProcess, run_gateway

AERC = shutil.which("aerc")

pytestmark = pytest.mark.skipif(
    AERC is None and os.environ.get("CI") != "true", reason="aerc is not installed"
)

MESSAGES = [
    b"From: Carol <carol@example.org>\r\nSubject: plans\r\nMessage-ID: <1@x>\r\n"
    b"Date: Mon, 3 Jan 2000 10:00:00 +0000\r\n\r\nfirst\r\n",
    b"From: Alice <alice@example.org>\r\nSubject: Re: plans\r\nMessage-ID: <2@x>\r\nReferences: <1@x>\r\n"
    b"Date: Wed, 5 Jan 2000 10:00:00 +0000\r\n\r\nsecond\r\n",
    b"From: Bob <bob@example.org>\r\nSubject: other\r\nMessage-ID: <3@x>\r\n"
    b"Date: Tue, 4 Jan 2000 10:00:00 +0000\r\n\r\nthird\r\n",
]


class Relay:
    """Accepts one connection and passes bytes both ways to ``port``, keeping a copy of each direction."""

    def __init__(self, port: int):
        self.port = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.sent = bytearray()
        self.answered = bytearray()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        client, _ = self.listener.accept()
        upstream = socket.create_connection(("127.0.0.1", self.port))
        threading.Thread(target=self._pump, args=(client, upstream, self.sent), daemon=True).start()
        self._pump(upstream, client, self.answered)

    @staticmethod
    def _pump(source, sink, copy):
        try:
            while chunk := source.recv(65536):
                copy += chunk
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            sink.close()


def run_aerc(tmp_path, imap_port: int, ui: str, done) -> Relay:
    """aerc with ``ui`` in its [ui] section until ``done(relay)`` or 20 seconds."""
    relay = Relay(imap_port)
    config = tmp_path / "config" / "aerc"
    config.mkdir(parents=True)
    (config / "accounts.conf").write_text(
        f"[test]\nsource = imap+insecure://alice:secret@127.0.0.1:{relay.listener.getsockname()[1]}\n"
        "outgoing = /bin/true\ndefault = INBOX\nfrom = Alice <alice@example.org>\n")
    (config / "accounts.conf").chmod(0o600)
    (config / "aerc.conf").write_text(f"[ui]\n{ui}\n")
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "config"), HOME=str(tmp_path), TERM="xterm")
    pid, terminal = pty.fork()
    if pid == 0:
        os.execve(AERC, [AERC], env)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not done(relay):
            # Keep reading its screen so that aerc never blocks on the terminal.
            if select.select([terminal], [], [], 0.1)[0]:
                try:
                    os.read(terminal, 65536)
                except OSError:
                    break
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(terminal)
    return relay


def fetched_after(relay: Relay, command: bytes) -> bool:
    sent = bytes(relay.sent)
    return command in sent and b"UID FETCH" in sent[sent.index(command):]


@pytest.fixture
def server(tmp_path):
    data = tmp_path / "data"
    run_gateway(data, "user", "add", "alice", input=b"secret\n")
    with GatewayProcess(data, pop3=None, lmtp=None) as process:
        c = imapclient.IMAPClient("127.0.0.1", port=process.port("imap"), ssl=False, timeout=30)
        c.login("alice", "secret")
        for body in MESSAGES:
            c.append("INBOX", body)
        c.logout()
        yield process


def test_aerc_threads_by_server_thread(server, tmp_path):
    relay = run_aerc(tmp_path, server.port("imap"), "threading-enabled = true",
                     lambda relay: fetched_after(relay, b"UID THREAD"))
    sent = bytes(relay.sent)
    assert b' UID THREAD REFERENCES "UTF-8" (ALL)\r\n' in sent, sent
    answered = bytes(relay.answered)
    assert b"* THREAD (1 2)(3)\r\n" in answered
    assert b" OK THREAD completed\r\n" in answered
    assert fetched_after(relay, b"UID THREAD")


def test_aerc_sorts_by_server_sort(server, tmp_path):
    relay = run_aerc(tmp_path, server.port("imap"), "sort = -r date from",
                     lambda relay: fetched_after(relay, b"UID SORT"))
    sent = bytes(relay.sent)
    assert b' UID SORT (REVERSE DATE FROM) "UTF-8" ALL\r\n' in sent, sent
    answered = bytes(relay.answered)
    assert b"* SORT 2 3 1\r\n" in answered
    assert b" OK SORT completed\r\n" in answered
    assert fetched_after(relay, b"UID SORT")
