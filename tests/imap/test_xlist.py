"""
XLIST, Gmail's LIST from before SPECIAL-USE (RFC 6154), for the clients that
know only it (Outlook 2013, old iOS Mail): LIST's answer, the special uses
under XLIST's names and INBOX marked \\Inbox.
"""

from imapclient import IMAPClient

from tests.imap.test_server import Session
from tests.serverproc import GatewayProcess


def test_capability_names_xlist(store):
    s = Session(store)
    assert b" XLIST " in s.greeting
    assert b" XLIST " in s.login().command(b"c CAPABILITY")[0] + b" "


def test_xlist_answers_as_list_with_special_uses_in_xlist_form(store):
    s = Session(store).login()
    assert s.command(b'c CREATE "Work/Project"') == [b"c OK CREATE completed"]
    listed = s.command(b'l LIST "" "*"')
    assert s.command(b'x XLIST "" "*"') == [
        b'* XLIST (\\HasNoChildren \\Inbox) "/" "INBOX"',
        b'* XLIST (\\HasNoChildren \\Drafts) "/" "Drafts"',
        b'* XLIST (\\HasNoChildren \\Spam) "/" "Junk"',
        b'* XLIST (\\HasNoChildren \\Sent) "/" "Sent"',
        b'* XLIST (\\HasNoChildren \\Trash) "/" "Trash"',
        b'* XLIST (\\Noselect \\HasChildren) "/" "Work"',
        b'* XLIST (\\HasNoChildren) "/" "Work/Project"',
        b"x OK XLIST completed",
    ]
    # The same mailboxes, in the same order, as LIST gives.
    assert [line.rsplit(b'"/" ', 1)[1] for line in listed[:-1]] == [
        line.rsplit(b'"/" ', 1)[1] for line in s.command(b'x XLIST "" "*"')[:-1]
    ]
    assert s.command(b'x XLIST "" "%"')[-2] == b'* XLIST (\\Noselect \\HasChildren) "/" "Work"'
    assert s.command(b'x XLIST "" ""') == [b'* XLIST (\\Noselect) "/" ""', b"x OK XLIST completed"]


def test_xlist_needs_login_and_arguments(store):
    s = Session(store)
    assert s.command(b'x XLIST "" "*"')[-1].startswith(b"x BAD")
    s.login()
    assert s.command(b"x XLIST")[-1].startswith(b"x BAD")


def test_xlist_over_a_real_socket_with_imapclient(tmp_path):
    with GatewayProcess(tmp_path / "data", pop3=None, lmtp=None) as server:
        server.add_user("alice", "secret")
        with IMAPClient("127.0.0.1", server.port("imap"), ssl=False, timeout=10) as client:
            client.login("alice", "secret")
            assert b"XLIST" in client.capabilities()
            assert client.xlist_folders() == [
                ((b"\\HasNoChildren", b"\\Inbox"), b"/", "INBOX"),
                ((b"\\HasNoChildren", b"\\Drafts"), b"/", "Drafts"),
                ((b"\\HasNoChildren", b"\\Spam"), b"/", "Junk"),
                ((b"\\HasNoChildren", b"\\Sent"), b"/", "Sent"),
                ((b"\\HasNoChildren", b"\\Trash"), b"/", "Trash"),
            ]
            # What a client that knows only XLIST looks for: its Sent folder.
            assert client.find_special_folder(b"\\Sent") == "Sent"
