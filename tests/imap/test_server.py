"""
Byte-level IMAP conversations through the real protocol class on a
StringTransport, over a real SQLite store (gateway/imap/server.py).
"""


import pytest
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import Portal
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.internet.task import Clock
from twisted.mail import imap4
from zope.interface.verify import verifyObject

from gateway.auth import MailRealm
from gateway.config import AuthConfig, Config
from gateway.imap import account
from gateway.imap.server import build_factory
from tests.deferreds import result_of

MESSAGE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.org\r\n"
    b"Subject: hello\r\n"
    b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
    b"\r\n"
    b"Hello, Bob.\r\n"
)


LOOPBACK = IPv4Address("TCP", "127.0.0.1", 143)
CLIENT = IPv4Address("TCP", "127.0.0.1", 50000)


class Session:
    def __init__(self, store, config=None, factory=None, host=LOOPBACK, peer=CLIENT, clock=None):
        self.clock = clock or Clock()
        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret", bob=b"other")
        realm = MailRealm({imap4.IAccount: account.avatar_factory(store, config or Config())})
        config = config or Config(auth=AuthConfig(failure_delay=1.0))
        self.factory = factory or build_factory(Portal(realm, [checker]), store, config, self.clock)
        self.server = self.factory.buildProtocol(None)
        self.transport = StringTransport(hostAddress=host, peerAddress=peer)
        self.server.makeConnection(self.transport)
        self.greeting = self.read()

    def read(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data

    def send(self, data: bytes) -> bytes:
        self.server.dataReceived(data)
        return self.read()

    def command(self, line: bytes) -> list[bytes]:
        return self.send(line + b"\r\n").split(b"\r\n")[:-1]

    def login(self, user=b"alice", password=b"secret"):
        lines = self.command(b"L LOGIN " + user + b" " + password)
        assert lines[-1].startswith(b"L OK"), lines
        return self


def test_greeting_and_capability(store):
    s = Session(store)
    assert s.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 ")
    lines = s.command(b"a CAPABILITY")
    caps = lines[0].split()
    for cap in (b"IMAP4rev1", b"LITERAL-", b"APPENDLIMIT=52428800", b"SASL-IR", b"ID", b"ENABLE", b"IDLE", b"NAMESPACE",
                b"UIDPLUS", b"MOVE", b"CHILDREN", b"SPECIAL-USE", b"AUTH=PLAIN"):
        assert cap in caps
    assert lines[1] == b"a OK CAPABILITY completed"
    assert b"LITERAL+" not in caps and b"LOGINDISABLED" not in caps
    # RFC 7888 5: after login non-synchronizing literals may be big.
    caps = s.login().command(b"b CAPABILITY")[0].split()
    assert b"LITERAL+" in caps and b"LITERAL-" not in caps and b"AUTH=PLAIN" not in caps


def test_avatar_provides_iaccount(store):
    factory = account.avatar_factory(store, Config())
    avatar, logout = result_of(factory("carol"))
    assert verifyObject(imap4.IAccount, avatar)
    names = [name for name, _ in result_of(avatar.listMailboxes("", "*"))]
    assert names == ["Drafts", "INBOX", "Junk", "Sent", "Trash"]


def test_login_failure_is_delayed_and_says_no(store):
    s = Session(store)
    assert s.command(b"a LOGIN alice wrong") == []
    s.clock.advance(1.0)
    assert s.read() == b"a NO [AUTHENTICATIONFAILED] Authentication failed\r\n"


def test_authenticate_plain_with_initial_response(store):
    # RFC 4959: the response rides on the command line.
    s = Session(store)
    lines = s.command(b"a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==")
    assert lines[-1].startswith(b"a OK [CAPABILITY ")
    assert s.command(b"b SELECT INBOX")[-1] == b"b OK [READ-WRITE] SELECT completed"


def test_authenticate_plain_with_continuation(store):
    s = Session(store)
    assert s.command(b"x AUTHENTICATE")[-1] == b"x NO [CANNOT] Unsupported authentication mechanism"
    assert s.command(b"y AUTHENTICATE PLAIN") == [b"+ "]
    assert s.command(b"*") == [b"y BAD AUTHENTICATE cancelled"]
    assert s.command(b"a AUTHENTICATE PLAIN") == [b"+ "]
    assert s.command(b"AGFsaWNlAHNlY3JldA==")[-1].startswith(b"a OK")


def test_select_sends_every_response_with_text(store):
    s = Session(store).login()
    inbox = result_of(store.get_mailbox("alice", "INBOX"))
    result_of(store.append(inbox.id, MESSAGE))
    result_of(store.append(inbox.id, MESSAGE, flags={"\\Seen", "work"}))
    lines = s.command(b"s SELECT inbox")
    assert lines == [
        b"* FLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen work)",
        b"* OK [PERMANENTFLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen work \\*)] Flags permitted",
        b"* 2 EXISTS",
        b"* 2 RECENT",
        b"* OK [UNSEEN 1] First unseen message",
        # Twisted 26.10 sends "* OK [UIDVALIDITY n]" with no text after it.
        b"* OK [UIDVALIDITY %d] UIDs valid" % inbox.uidvalidity,
        b"* OK [UIDNEXT 3] Predicted next UID",
        b"s OK [READ-WRITE] SELECT completed",
    ]
    # \Recent belongs to the first session only (RFC 3501 2.3.2).
    other = Session(store).login()
    assert b"* 0 RECENT" in other.command(b"e EXAMINE INBOX")


def test_list_with_children_and_special_use(store):
    s = Session(store).login()
    assert s.command(b'c CREATE "Work/Project &AOk-t&AOk-"') == [b"c OK CREATE completed"]
    lines = s.command(b'l LIST "" "*"')
    assert lines == [
        b'* LIST (\\HasNoChildren) "/" "INBOX"',
        b'* LIST (\\HasNoChildren \\Drafts) "/" "Drafts"',
        b'* LIST (\\HasNoChildren \\Junk) "/" "Junk"',
        b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"',
        b'* LIST (\\HasNoChildren \\Trash) "/" "Trash"',
        b'* LIST (\\Noselect \\HasChildren) "/" "Work"',
        b'* LIST (\\HasNoChildren) "/" "Work/Project &AOk-t&AOk-"',
        b"l OK LIST completed",
    ]
    assert s.command(b'l LIST "" ""') == [b'* LIST (\\Noselect) "/" ""', b"l OK LIST completed"]
    # Not modified UTF-7: no mailbox can have the name (NO, as Dovecot).
    assert s.command(b'x CREATE "caf\xc3\xa9"') == [b"x NO Mailbox name is not modified UTF-7"]


def test_append_without_flag_list_and_with_literal_plus(store):
    # Twisted 26.10 answers "APPEND INBOX {n}" with BAD (TypeError).
    s = Session(store).login()
    inbox = result_of(store.get_mailbox("alice", "INBOX"))
    assert s.command(b"a APPEND INBOX {%d}" % len(MESSAGE)) == [b"+ Ready for literal data"]
    lines = s.send(MESSAGE + b"\r\n").split(b"\r\n")[:-1]
    assert lines == [b"a OK [APPENDUID %d 1] APPEND completed" % inbox.uidvalidity]
    # LITERAL+: no continuation, and the next command may follow at once.
    lines = s.send(
        b'b APPEND INBOX (\\Seen) " 7-Feb-1994 21:52:25 -0800" {%d+}\r\n' % len(MESSAGE)
        + MESSAGE + b"\r\nc NOOP\r\n"
    ).split(b"\r\n")[:-1]
    assert lines == [b"b OK [APPENDUID %d 2] APPEND completed" % inbox.uidvalidity, b"c OK NOOP completed"]
    records = result_of(store.list_messages(inbox.id))
    assert [r.flags for r in records] == [frozenset(), {"\\Seen"}]
    assert records[1].internaldate.isoformat() == "1994-02-07T21:52:25-08:00"
    assert s.command(b"d APPEND Nowhere {1+}\r\nx")[-1] == b"d NO [TRYCREATE] No such mailbox"


def test_fetch_store_expunge_and_uid_forms(store):
    s = Session(store).login()
    inbox = result_of(store.get_mailbox("alice", "INBOX"))
    for _ in range(3):
        result_of(store.append(inbox.id, MESSAGE))
    s.command(b"s SELECT INBOX")
    lines = s.command(b"f FETCH 1:* (UID FLAGS RFC822.SIZE)")
    assert lines == [
        b"* %d FETCH (UID %d FLAGS (\\Recent) RFC822.SIZE %d)" % (n, n, len(MESSAGE)) for n in (1, 2, 3)
    ] + [b"f OK FETCH completed"]
    assert s.command(b"f FETCH 4 FLAGS")[-1].startswith(b"f BAD")
    assert s.command(b"t STORE 2 +FLAGS (\\Deleted)") == [
        b"* 2 FETCH (UID 2 FLAGS (\\Deleted \\Recent))", b"t OK STORE completed"
    ]
    assert s.command(b"t UID STORE 3 +FLAGS.SILENT (\\Seen)") == [b"t OK STORE completed"]
    assert s.command(b"e EXPUNGE") == [b"* 2 EXPUNGE", b"e OK EXPUNGE completed"]
    assert s.command(b"u UID FETCH 3 (FLAGS)") == [
        b"* 2 FETCH (UID 3 FLAGS (\\Recent \\Seen))", b"u OK FETCH completed"
    ]
    lines = s.command(b"e FETCH 1 ENVELOPE")
    assert lines[0].startswith(b'* 1 FETCH (ENVELOPE ("Mon, 7 Feb 1994 21:52:25 -0800" "hello" ')


def test_other_sessions_changes_wait_for_allowed_moments(store):
    one = Session(store).login()
    two = Session(store).login()
    inbox = result_of(store.get_mailbox("alice", "INBOX"))
    for _ in range(3):
        result_of(store.append(inbox.id, MESSAGE))
    one.command(b"s SELECT INBOX")
    two.command(b"s SELECT INBOX")
    two.command(b"a STORE 1 +FLAGS (\\Deleted \\Flagged)")
    assert two.command(b"b EXPUNGE") == [b"* 1 EXPUNGE", b"b OK EXPUNGE completed"]
    two.command(b"c STORE 1 +FLAGS.SILENT (\\Answered)")
    result_of(store.append(inbox.id, MESSAGE))
    # RFC 3501 7.4.1: no EXPUNGE during FETCH; message 1 keeps its number.
    lines = one.command(b"f FETCH 2 (UID)")
    assert lines == [
        b"* 2 FETCH (UID 2)",
        b"* 4 EXISTS",
        # This session SELECTed first: it holds \Recent for all four.
        b"* 4 RECENT",
        b"* 2 FETCH (UID 2 FLAGS (\\Answered \\Recent))",
        b"f OK FETCH completed",
    ]
    assert one.command(b"f FETCH 1 (UID)") == [
        b"f OK [EXPUNGEISSUED] Some messages were expunged meanwhile; completed for the others"
    ]
    assert one.command(b"n NOOP") == [b"* 1 EXPUNGE", b"n OK NOOP completed"]
    assert one.command(b"f FETCH 3 (UID)") == [b"* 3 FETCH (UID 4)", b"f OK FETCH completed"]


def test_idle_reports_at_once(store):
    one = Session(store).login()
    two = Session(store).login()
    one.command(b"s SELECT INBOX")
    two.command(b"s SELECT INBOX")
    assert one.command(b"i IDLE") == [b"+ idling"]
    assert two.command(b"a APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE)[-1].startswith(b"a OK")
    # RFC 3501 2.3.2: \Recent is the appending session's, which has INBOX
    # selected and reports the message first.
    assert one.read() == b"* 1 EXISTS\r\n* 0 RECENT\r\n"
    two.command(b"b STORE 1 +FLAGS (\\Deleted)")
    assert one.read() == b"* 1 FETCH (UID 1 FLAGS (\\Deleted))\r\n"
    two.command(b"c EXPUNGE")
    assert one.read() == b"* 1 EXPUNGE\r\n"
    assert one.command(b"DONE") == [b"i OK IDLE terminated"]


def test_copy_move_and_uidplus(store):
    s = Session(store).login()
    inbox = result_of(store.get_mailbox("alice", "INBOX"))
    trash = result_of(store.get_mailbox("alice", "Trash"))
    for _ in range(3):
        result_of(store.append(inbox.id, MESSAGE))
    s.command(b"s SELECT INBOX")
    assert s.command(b"c COPY 1:2 Trash") == [
        b"c OK [COPYUID %d 1:2 1:2] COPY completed" % trash.uidvalidity
    ]
    assert s.command(b"c COPY 1 Nowhere") == [b"c NO [TRYCREATE] No such mailbox"]
    assert s.command(b"m UID MOVE 2:3 Trash") == [
        b"* OK [COPYUID %d 2:3 3:4] Moved" % trash.uidvalidity,
        b"* 3 EXPUNGE",
        b"* 2 EXPUNGE",
        b"m OK MOVE completed",
    ]
    s.command(b"s SELECT Trash")
    s.command(b"a STORE 1:3 +FLAGS.SILENT (\\Deleted)")
    # RFC 4315 2.1: only the named UIDs go.
    assert s.command(b"u UID EXPUNGE 2:3") == [b"* 3 EXPUNGE", b"* 2 EXPUNGE", b"u OK EXPUNGE completed"]
    assert s.command(b"x STATUS Trash (MESSAGES UIDNEXT UNSEEN)") == [
        b'* STATUS "Trash" (MESSAGES 2 UIDNEXT 5 UNSEEN 2)', b"x OK STATUS completed"
    ]


def test_rename_delete_subscribe(store):
    s = Session(store).login()
    assert s.command(b"c CREATE a/b") == [b"c OK CREATE completed"]
    assert s.command(b"c CREATE a/b")[-1].startswith(b"c NO [ALREADYEXISTS]")
    assert s.command(b"r RENAME a/b x") == [b"r OK RENAME completed"]
    assert s.command(b"u SUBSCRIBE x") == [b"u OK SUBSCRIBE completed"]
    assert s.command(b'l LSUB "" x') == [b'* LSUB () "/" "x"', b"l OK LSUB completed"]
    s.command(b"u UNSUBSCRIBE x")
    assert s.command(b'l LSUB "" x') == [b"l OK LSUB completed"]
    assert s.command(b"d DELETE x") == [b"d OK DELETE completed"]
    assert s.command(b"d DELETE INBOX")[-1].startswith(b"d NO")
    assert s.command(b"d DELETE x")[-1].startswith(b"d NO [NONEXISTENT]")


def test_misc_commands(store):
    s = Session(store).login()
    assert s.command(b"n NAMESPACE") == [b'* NAMESPACE (("" "/")) NIL NIL', b"n OK NAMESPACE completed"]
    assert s.command(b'i ID ("name" "test")')[0] == b'* ID ("name" "gateway" "version" "0.1.0")'
    assert s.command(b"e ENABLE X-UNKNOWN") == [b"* ENABLED", b"e OK ENABLE completed"]
    assert s.command(b"e ENABLE")[-1].startswith(b"e BAD")
    assert s.command(b"i ID")[-1].startswith(b"i BAD")
    assert s.command(b"b BOGUS")[-1].startswith(b"b BAD")
    assert s.command(b"f FETCH 1 FLAGS")[-1].startswith(b"f BAD")  # not selected
    assert s.command(b"o LOGOUT") == [b"* BYE Logging out", b"o OK LOGOUT completed"]


NESTED = (
    b"From: =?UTF-8?B?SsO8cmdlbg==?= <j@example.org>\r\n"
    b"To: bob@example.org\r\n"
    b"Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=outer\r\n"
    b"\r\n"
    b"preamble\r\n"
    b"--outer\r\n"
    b"Content-Type: multipart/alternative; boundary=inner\r\n"
    b"\r\n"
    b"--inner\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
    b"plain body\r\n"
    b"--inner\r\n"
    b"Content-Type: text/html\r\n"
    b"\r\n"
    b"<p>html body</p>\r\n"
    b"--inner--\r\n"
    b"--outer\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"From: carol@example.org\r\n"
    b"Subject: inner message\r\n"
    b"\r\n"
    b"inner text\r\n"
    b"--outer--\r\n"
)


def test_fetch_sections_of_nested_multipart(store):
    s = Session(store).login()
    inbox = result_of(store.get_mailbox("alice", "INBOX"))
    result_of(store.append(inbox.id, NESTED))
    s.command(b"s SELECT INBOX")

    def fetch(items):
        data = s.send(b"f FETCH 1 " + items + b"\r\n")
        assert data.endswith(b"f OK FETCH completed\r\n"), data
        return data[: -len(b"f OK FETCH completed\r\n")]

    assert fetch(b"BODY.PEEK[1.1]") == b"* 1 FETCH (BODY[1.1] {10}\r\nplain body)\r\n"
    assert fetch(b"BODY.PEEK[1.2.MIME]") == b"* 1 FETCH (BODY[1.2.MIME] {27}\r\nContent-Type: text/html\r\n\r\n)\r\n"
    assert fetch(b"BODY.PEEK[2.HEADER.FIELDS (SUBJECT)]") == (
        b"* 1 FETCH (BODY[2.HEADER.FIELDS (SUBJECT)] {26}\r\nSubject: inner message\r\n\r\n)\r\n"
    )
    # RFC 2046 5.1.1: the CRLF before a boundary belongs to the boundary.
    assert fetch(b"BODY.PEEK[2.TEXT]") == b"* 1 FETCH (BODY[2.TEXT] {10}\r\ninner text)\r\n"
    assert fetch(b"BODY.PEEK[2.1]") == b"* 1 FETCH (BODY[2.1] {10}\r\ninner text)\r\n"
    assert fetch(b"BODY.PEEK[9]") == b"* 1 FETCH (BODY[9] NIL)\r\n"
    # Twisted 5613: the partial reply names only the origin octet.
    assert fetch(b"BODY.PEEK[]<6.4>") == b"* 1 FETCH (BODY[]<6> {4}\r\n=?UT)\r\n"
    whole = fetch(b"(UID RFC822.SIZE BODY.PEEK[])")
    assert whole == b"* 1 FETCH (UID 1 RFC822.SIZE %d BODY[] {%d}\r\n%s)\r\n" % (len(NESTED), len(NESTED), NESTED)
    assert fetch(b"RFC822.HEADER") == b"* 1 FETCH (RFC822.HEADER {%d}\r\n%s)\r\n" % (
        NESTED.index(b"\r\n\r\n") + 4, NESTED[: NESTED.index(b"\r\n\r\n") + 4]
    )
    structure = fetch(b"BODYSTRUCTURE")
    assert structure.startswith(b'* 1 FETCH (BODYSTRUCTURE ((("text" "plain" ("charset" "us-ascii")')
    assert b'"message" "rfc822"' in structure.lower()
    # BODY[...] without PEEK sets \Seen and reports it.
    assert fetch(b"BODY[1.1]") == b"* 1 FETCH (BODY[1.1] {10}\r\nplain body FLAGS (\\Recent \\Seen))\r\n"
    assert fetch(b"RFC822") == b"* 1 FETCH (RFC822 {%d}\r\n%s)\r\n" % (len(NESTED), NESTED)
    text = NESTED[NESTED.index(b"\r\n\r\n") + 4:]
    assert fetch(b"RFC822.TEXT") == b"* 1 FETCH (RFC822.TEXT {%d}\r\n%s)\r\n" % (len(text), text)


def test_search(store):
    s = Session(store).login()
    inbox = result_of(store.get_mailbox("alice", "INBOX"))
    result_of(store.append(inbox.id, MESSAGE, flags={"\\Seen"}))
    result_of(store.append(inbox.id, NESTED))
    result_of(store.append(inbox.id, MESSAGE, flags={"\\Flagged"}))
    s.command(b"s SELECT INBOX")
    assert s.command(b"a SEARCH UNSEEN") == [b"* SEARCH 2 3", b"a OK SEARCH completed"]
    assert s.command(b"a SEARCH OR FLAGGED SUBJECT hello NOT 1") == [b"* SEARCH 3", b"a OK SEARCH completed"]
    assert s.command(b'a UID SEARCH SUBJECT "gr\xc3\xbc\xc3\x9fe"') == [b"* SEARCH 2", b"a OK SEARCH completed"]
    assert s.command(b"a SEARCH BODY inner") == [b"* SEARCH 2", b"a OK SEARCH completed"]
    # RFC 3501 6.4.4: strings in the named charset; any Python decodes.
    assert s.command(b'a SEARCH CHARSET ISO-8859-1 SUBJECT "gr\xfc\xdfe"') == [b"* SEARCH 2", b"a OK SEARCH completed"]
    assert s.command(b"a SEARCH CHARSET KOI8-R ALL") == [b"* SEARCH 1 2 3", b"a OK SEARCH completed"]
    assert s.command(b"a SEARCH CHARSET X-NO-SUCH ALL")[-1].startswith(b"a NO [BADCHARSET")
    assert s.command(b"a SEARCH CHARSET BASE64 ALL")[-1].startswith(b"a NO [BADCHARSET")
    assert s.command(b"a SEARCH FOO")[-1].startswith(b"a BAD")


class RecordingTransport(StringTransport):
    no_delay = None
    tls = None

    def setTcpNoDelay(self, enabled):
        self.no_delay = enabled

    def startTLS(self, context_factory):
        self.tls = context_factory


def test_tcp_nodelay_and_starttls_drops_pipelined_plaintext(store):
    from twisted.internet.interfaces import ITLSTransport
    from zope.interface import directlyProvides

    checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
    realm = MailRealm({imap4.IAccount: account.avatar_factory(store, Config())})
    context = object()
    factory = build_factory(Portal(realm, [checker]), store, Config(), Clock(), context_factory=context)
    server = factory.buildProtocol(None)
    transport = RecordingTransport()
    directlyProvides(transport, ITLSTransport)
    server.makeConnection(transport)
    assert transport.no_delay is True
    assert b" STARTTLS" in transport.value()
    transport.clear()
    # RFC 3501 6.2.1: what was pipelined in the clear must not be run.
    server.dataReceived(b"a STARTTLS\r\nb LOGIN alice secret\r\n")
    assert transport.value() == b"a OK Begin TLS negotiation now\r\n"
    assert transport.tls is context
    assert server.state == "unauth"


def test_search_with_literal_and_select_errors(store):
    s = Session(store).login()
    inbox = result_of(store.get_mailbox("alice", "INBOX"))
    result_of(store.append(inbox.id, NESTED))
    assert s.command(b"s SELECT Nowhere") == [b"s NO [NONEXISTENT] No such mailbox"]
    s.command(b"s SELECT INBOX")
    assert s.command(b"a SEARCH CHARSET UTF-8 SUBJECT {6}") == [b"+ Ready for literal data"]
    assert s.command(b"gr\xc3\xbc\xc3\x9f") == [b"* SEARCH 1", b"a OK SEARCH completed"]
    # RFC 7889: refused before the client sends a byte of it.
    assert s.command(b"b APPEND INBOX {999999999}") == [b"b NO [TOOBIG] Message exceeds APPENDLIMIT"]
    assert s.command(b'c LOGIN "x" "y"')[-1].startswith(b"c BAD")  # already logged in


@pytest.mark.parametrize(
    "line",
    [b"a FETCH", b"a FETCH 1", b"a STORE 1 FLAGS", b"a UID", b"a UID FOO 1", b"a SELECT", b"a COPY 1",
     b"a SEARCH", b"a SEARCH (", b"a LIST", b'a LIST ""', b"a STATUS INBOX ()", b"a APPEND", b"a APPEND INBOX",
     b"a FETCH 1 (BODY[", b"a UID EXPUNGE", b"a CREATE", b"a FETCH 0 FLAGS", b"a STORE 1 +FLAGS (\\Bogus)",
     b'a EXAMINE "unterminated'],
)
def test_malformed_commands_get_bad_with_fixed_text(store, line):
    s = Session(store).login()
    result_of(store.append(result_of(store.get_mailbox("alice", "INBOX")).id, MESSAGE))
    s.command(b"s SELECT INBOX")
    [answer] = s.command(line)
    assert answer.startswith(b"a BAD ") and b"Internal error" not in answer
    assert s.command(b"n NOOP") == [b"n OK NOOP completed"]


# Metrics


def test_every_command_is_timed_until_its_tagged_answer(store):
    from prometheus_client import CollectorRegistry

    from gateway.net import metrics

    counted = metrics.Metrics(CollectorRegistry())
    previous = metrics.activate(counted)
    try:
        s = Session(store)
        s.login()
        s.command(b"a SELECT INBOX")
        s.command(b"b UID FETCH 1:* (FLAGS)")
        s.command(b"c uid search all")
        s.command(b"d BOGUS")
        assert s.send(b"e IDLE\r\n") == b"+ idling\r\n"
        s.command(b"DONE")
    finally:
        metrics.activate(previous)

    def count(command):
        return counted.registry.get_sample_value(
            "gateway_command_duration_seconds_count", {"protocol": "imap", "command": command}
        )

    assert [count(c) for c in ("LOGIN", "SELECT", "UID FETCH", "UID SEARCH", "OTHER", "IDLE")] == [1, 1, 1, 1, 1, 1]
    assert count("FETCH") is None
