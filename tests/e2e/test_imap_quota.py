"""
QUOTA (RFC 9208) end to end: the real server with limits from [quota] and
from the users file (Dovecot's userdb_quota_rule), driven by imaplib's
GETQUOTA, GETQUOTAROOT, SETQUOTA, APPEND and COPY; POP3 reads and deletes
over quota as before.
"""

from __future__ import annotations

import imaplib
import poplib

import pytest

from tests.serverproc import GatewayProcess, run_gateway

MESSAGE = b"From: a@example.org\r\nSubject: q\r\n\r\n" + b"x" * 2000 + b"\r\n"


@pytest.fixture
def server(tmp_path):
    data = tmp_path / "data"
    run_gateway(data, "user", "add", "alice", input=b"pw\n")
    run_gateway(data, "user", "add", "bob", input=b"pw\n")
    users = data / "users"
    users.write_text("".join(
        line + ("::::::userdb_quota_rule=*:messages=1" if line.startswith("bob:") else "") + "\n"
        for line in users.read_text().splitlines()
    ))
    config = tmp_path / "gateway.toml"
    config.write_text("[auth]\nfailure_delay = 0\n[quota]\nstorage = 5\nmessages = 100\n")
    with GatewayProcess(data, lmtp=None, config=config) as process:
        yield process


def login(server, user):
    client = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=30)
    client.login(user, "pw")
    return client


def test_quota_with_imaplib(server):
    alice = login(server, "alice")
    assert alice.append("INBOX", None, None, MESSAGE)[0] == "OK"
    typ, data = alice.getquotaroot("INBOX")
    assert typ == "OK"
    assert data == [[b'INBOX ""'], [b'"" (STORAGE 2 5 MESSAGE 1 100)']]
    assert alice.getquota('""') == ("OK", [b'"" (STORAGE 2 5 MESSAGE 1 100)'])
    typ, data = alice.setquota('""', "(STORAGE 10)")
    assert typ == "NO" and data == [b"[NOPERM] Quota limits are set by the administrator"]
    # 5 KB: a second message of 2 KB fits, a third does not.
    assert alice.append("INBOX", None, None, MESSAGE)[0] == "OK"
    typ, data = alice.append("INBOX", None, None, MESSAGE)
    assert typ == "NO" and data == [b"[OVERQUOTA] Quota exceeded"]
    alice.select("INBOX")
    typ, data = alice.copy("1", "Trash")
    assert typ == "NO" and data == [b"[OVERQUOTA] Quota exceeded"]
    typ, data = alice._simple_command("MOVE", "1", "Trash")
    assert typ == "OK"
    alice.logout()

    # The users file's rule for bob: one message.
    bob = login(server, "bob")
    assert bob.append("INBOX", None, None, MESSAGE)[0] == "OK"
    assert bob.getquota('""') == ("OK", [b'"" (STORAGE 2 5 MESSAGE 1 1)'])
    assert bob.append("Sent", None, None, MESSAGE)[0] == "NO"
    bob.logout()

    # POP3 is not limited: alice over quota reads and deletes.
    pop = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=30)
    pop.user("alice")
    pop.pass_("pw")
    assert pop.stat()[0] == 1
    assert pop.retr(1)[1][-1] == b"x" * 2000
    pop.dele(1)
    pop.quit()
    alice = login(server, "alice")
    assert alice.append("INBOX", None, None, MESSAGE)[0] == "OK"
    alice.logout()
