"""
Migration from a real Dovecot: mail delivered into Dovecot over IMAP, its
Maildir imported with ``gateway import maildir``, and the gateway then
serving the same POP3 UIDLs (so POP3 clients download nothing again) and the
same folders, UIDs, flags, dates and bodies over IMAP.

Needs Debian's dovecot-imapd and dovecot-pop3d; skipped without them unless
CI=true.
"""

from __future__ import annotations

import datetime
import getpass
import grp
import os
import poplib
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import imapclient
import pytest

from tests.ports import free_port
from tests.serverproc import GatewayProcess, run_gateway

DOVECOT = shutil.which("dovecot") or ("/usr/sbin/dovecot" if os.path.exists("/usr/sbin/dovecot") else None)
if DOVECOT is None and os.environ.get("CI") != "true":
    pytest.skip("dovecot is not installed (apt-get install dovecot-imapd dovecot-pop3d)", allow_module_level=True)

# Parent levels are not mailboxes; the gateway makes these for every user.
GATEWAY_DEFAULT_FOLDERS = {"Drafts", "Sent", "Trash", "Junk"}


def message(number: int, subject: str) -> bytes:
    return (
        f"From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: {subject}\r\n"
        f"Date: Tue, 14 Nov 2023 22:13:{number:02d} +0000\r\nMessage-ID: <{number}@example.org>\r\n\r\n"
        f"Body of message {number}.\r\n"
    ).encode()


def _group_of(user: str) -> str:
    return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name


class Dovecot:
    """
    ``dovecot -F`` with its own config under ``root``: loopback listeners,
    passwd-file passdb with a {PLAIN} password, Maildir under root/mail.
    """

    def __init__(self, root: Path):
        self.root = root
        self.imap_port, self.pop3_port = free_port(), free_port()
        self.process = None
        if os.geteuid() == 0:
            # Dovecot refuses to run login processes or mail access as root.
            internal_user, login_user, mail_user = "dovecot", "dovenull", "mail"
            (root / "mail").mkdir()
            shutil.chown(root / "mail", mail_user, mail_user)
        else:
            internal_user = login_user = mail_user = getpass.getuser()
            (root / "mail").mkdir()
        mail_group = _group_of(mail_user)
        (root / "passwd").write_text("alice:{PLAIN}secret\n")
        (root / "passwd").chmod(0o644)
        self.config = root / "dovecot.conf"
        self.config.write_text(f"""\
protocols = imap pop3
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_internal_user = {internal_user}
default_internal_group = {_group_of(internal_user)}
default_login_user = {login_user}
first_valid_uid = 0
first_valid_gid = 0
mail_uid = {mail_user}
mail_gid = {mail_group}
mail_location = maildir:{root}/mail/%u/Maildir
pop3_uidl_format = %08Xu%08Xv
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = home={root}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
""")

    @property
    def maildir(self) -> Path:
        return self.root / "mail" / "alice" / "Maildir"

    def log(self) -> str:
        try:
            return (self.root / "dovecot.log").read_text()
        except FileNotFoundError:
            return ""

    def start(self) -> None:
        self.process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(self.config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited: {self.process.stdout.read().decode()}{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.imap_port), timeout=5).close()
                socket.create_connection(("127.0.0.1", self.pop3_port), timeout=5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"dovecot did not listen within 30s: {self.log()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        self.process.stdout.close()


@pytest.fixture
def dovecot():
    # Not tmp_path: Dovecot's unprivileged processes must reach the files,
    # and pytest's base temporary directory is private to this user.
    root = Path(tempfile.mkdtemp(prefix="gateway-dovecot-"))
    root.chmod(0o711)
    server = Dovecot(root)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def imap_state(port: int) -> dict[str, dict]:
    """Every selectable folder: UIDVALIDITY, UIDNEXT and each message's data."""
    state = {}
    with imapclient.IMAPClient("127.0.0.1", port=port, ssl=False) as client:
        client.login("alice", "secret")
        for flags, delimiter, name in client.list_folders():
            if b"\\Noselect" in flags or b"\\NonExistent" in flags:
                continue
            status = client.folder_status(name, ["UIDVALIDITY", "UIDNEXT"])
            client.select_folder(name, readonly=True)
            uids = client.search()
            messages = client.fetch(uids, ["FLAGS", "INTERNALDATE", "BODY.PEEK[]"]) if uids else {}
            state[name.replace(delimiter.decode(), "/")] = {
                "uidvalidity": status[b"UIDVALIDITY"],
                "uidnext": status[b"UIDNEXT"],
                "messages": {
                    uid: (set(data[b"FLAGS"]) - {b"\\Recent"}, data[b"INTERNALDATE"], data[b"BODY[]"])
                    for uid, data in messages.items()
                },
            }
    return state


def pop3_uidls(port: int) -> list[bytes]:
    pop = poplib.POP3("127.0.0.1", port, timeout=30)
    try:
        pop.user("alice")
        pop.pass_("secret")
        return pop.uidl()[1]
    finally:
        pop.quit()


def fill_dovecot(port: int) -> None:
    with imapclient.IMAPClient("127.0.0.1", port=port, ssl=False) as client:
        client.login("alice", "secret")
        client.create_folder("Work.2026")
        client.create_folder("\u00c9t\u00e9")
        client.create_folder("Empty")
        for number in range(1, 6):
            client.append("INBOX", message(number, f"inbox {number}"),
                          msg_time=_when(number))
        client.append("Work.2026", message(10, "work"), flags=[b"\\Seen", b"$Label1"], msg_time=_when(10))
        client.append("\u00c9t\u00e9", message(11, "summer"), flags=[b"\\Flagged"], msg_time=_when(11))
        client.select_folder("INBOX")
        client.add_flags([1], [b"\\Seen", b"\\Answered", b"$Forwarded", b"Junk"])
        client.add_flags([3], [b"\\Flagged", b"\\Draft"])
        client.add_flags([2], [b"\\Deleted"])
        client.expunge()
        # Marked but not expunged: POP3 still lists it, in both servers.
        client.add_flags([5], [b"\\Deleted"])


def _when(number: int) -> datetime.datetime:
    return datetime.datetime(2023, 11, 14, 22, 0, number, tzinfo=datetime.timezone.utc)


def test_dovecot_maildir_migrates_with_same_uidls_uids_and_flags(dovecot, tmp_path):
    dovecot.start()
    fill_dovecot(dovecot.imap_port)
    dovecot_uidls = pop3_uidls(dovecot.pop3_port)
    dovecot_state = imap_state(dovecot.imap_port)
    dovecot.stop()
    assert len(dovecot_uidls) == 4 and dovecot_uidls[0].startswith(b"1 00000001")
    assert sorted(dovecot_state["INBOX"]["messages"]) == [1, 3, 4, 5]

    data = tmp_path / "data"
    run_gateway(data, "user", "add", "alice", input=b"secret\n")
    imported = run_gateway(data, "import", "maildir", "alice", str(dovecot.maildir), check=False)
    assert imported.returncode == 0, imported.stdout.decode() + imported.stderr.decode()
    assert imported.stdout.decode().splitlines()[0] == (
        "user alice: 4 folders, 6 messages imported"
        f" ({sum(len(m[2]) for f in dovecot_state.values() for m in f['messages'].values())} bytes),"
        " 0 already imported, 0 skipped"
    )
    again = run_gateway(data, "import", "maildir", "alice", str(dovecot.maildir))
    assert "0 messages imported (0 bytes), 6 already imported" in again.stdout.decode()

    with GatewayProcess(data) as gateway:
        assert pop3_uidls(gateway.port("pop3")) == dovecot_uidls
        gateway_state = imap_state(gateway.port("imap"))

    assert set(gateway_state) == set(dovecot_state) | GATEWAY_DEFAULT_FOLDERS
    for name, folder in dovecot_state.items():
        assert gateway_state[name] == folder, name
    assert gateway_state["INBOX"]["messages"][1][0] == {b"\\Seen", b"\\Answered", b"$Forwarded", b"Junk"}


def test_gateway_export_is_served_by_dovecot_with_same_uidls_uids_and_flags(dovecot, tmp_path):
    data = tmp_path / "data"
    run_gateway(data, "user", "add", "alice", input=b"secret\n")
    with GatewayProcess(data) as gateway:
        with imapclient.IMAPClient("127.0.0.1", port=gateway.port("imap"), ssl=False) as client:
            client.login("alice", "secret")
            client.create_folder("Work/2026")
            for number in range(1, 5):
                client.append("INBOX", message(number, f"inbox {number}"), msg_time=_when(number))
            client.append("Work/2026", message(10, "work"), flags=[b"\\Seen", b"$Label1"], msg_time=_when(10))
            client.select_folder("INBOX")
            client.add_flags([1], [b"\\Seen", b"\\Answered", b"$Forwarded"])
            client.add_flags([2], [b"\\Deleted"])
            client.expunge()
        gateway_uidls = pop3_uidls(gateway.port("pop3"))
        gateway_state = imap_state(gateway.port("imap"))
    assert [line.split()[0] for line in gateway_uidls] == [b"1", b"2", b"3"]

    exported = run_gateway(data, "export", "alice", str(dovecot.maildir), check=False)
    assert exported.returncode == 0, exported.stdout.decode() + exported.stderr.decode()
    if os.geteuid() == 0:
        for path in [dovecot.maildir.parent, dovecot.maildir, *dovecot.maildir.rglob("*")]:
            shutil.chown(path, "mail", "mail")
    dovecot.start()
    assert pop3_uidls(dovecot.pop3_port) == gateway_uidls
    assert imap_state(dovecot.imap_port) == gateway_state
