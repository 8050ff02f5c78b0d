"""
gateway.pop3.server on a StringTransport: byte-exact conversations through the real
protocol class, over a real SQLiteStore and gateway.auth's MailRealm, with a
Clock for every timer.

Each test named ``*_twisted_*`` or commented "gap" shows a defect of
twisted.mail.pop3.POP3 that Pop3Server closes.
"""

import base64
import errno

import attrs
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import Portal
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.mail import pop3 as twisted_pop3
from zope.interface.verify import verifyObject

from gateway.net import metrics
from gateway.pop3 import engine, server as pop3
from gateway.pop3 import maildrop as maildrop_module
from gateway.pop3.maildrop import SEEN_DELAY
from gateway.auth import MailRealm
from gateway.config import AuthConfig, Config, LimitsConfig, Pop3Config
from gateway.net.metrics import Metrics
from gateway.store.sqlite.store import SQLiteStore
from tests.deferreds import failure_of, result_of

FIRST = b"From: a@example.org\r\nSubject: one\r\n\r\nline 1\r\n.dot line\r\nline 3\r\n"
SECOND = b"From: b@example.org\r\nSubject: two\r\n\r\n.\r\n..\r\nend\r\n"


LOOPBACK = IPv4Address("TCP", "127.0.0.1", 110)
CLIENT = IPv4Address("TCP", "127.0.0.1", 40000)


class Transport(StringTransport):
    """
    A StringTransport that remembers TCP_NODELAY and, while ``full``, pauses
    a streaming producer after every write, as a TCP transport does once its
    buffer is over its size.
    """

    no_delay = False
    full = False
    # Writes made: each is one send on a real connection (gateway.net.writethrough).
    writes = 0

    def setTcpNoDelay(self, enabled):
        self.no_delay = enabled

    def write(self, data):
        self.writes += 1
        super().write(data)
        if self.full and self.producer is not None and self.streaming:
            self.producer.pauseProducing()

    def writeSequence(self, data):
        self.write(b"".join(data))


class Checker(InMemoryUsernamePasswordDatabaseDontUse):
    """In-memory passwords; like gateway.auth.PasswordChecker, the avatar id is a str."""

    def requestAvatarId(self, credentials):
        return super().requestAvatarId(credentials).addCallback(bytes.decode)


@attrs.define
class Server:
    store: SQLiteStore
    config: Config
    clock: Clock
    factory: object

    def inbox(self, user="alice"):
        result_of(self.store.ensure_user(user))
        return result_of(self.store.get_mailbox(user, "INBOX"))

    def deliver(self, message, user="alice"):
        return result_of(self.store.append(self.inbox(user).id, message))

    def uids(self, user="alice"):
        return [record.uid for record in result_of(self.store.list_messages(self.inbox(user).id))]

    def connect(self, host=LOOPBACK, peer=CLIENT):
        return Session(self.factory.buildProtocol(peer), host, peer)


class Session:
    def __init__(self, protocol, host=LOOPBACK, peer=CLIENT):
        self.protocol = protocol
        self.transport = Transport(hostAddress=host, peerAddress=peer)
        protocol.makeConnection(self.transport)

    def send(self, data):
        self.protocol.dataReceived(data)
        self.pump()

    def pump(self):
        # Play the socket draining the buffer: resume a paused sender.
        for _ in range(10_000):
            producer = self.transport.producer
            if producer is None:
                return
            producer.resumeProducing()
        raise AssertionError("producer never finished")

    def read(self):
        data = self.transport.value()
        self.transport.clear()
        return data

    def ask(self, line):
        self.send(line + b"\r\n")
        return self.read()

    def login(self, user=b"alice", password=b"secret"):
        self.read()
        self.send(b"USER " + user + b"\r\nPASS " + password + b"\r\n")
        reply = self.read()
        assert reply.startswith(b"+OK Send PASS\r\n+OK Maildrop has"), reply
        return reply

    def drop(self):
        self.transport.loseConnection()
        self.protocol.connectionLost(None)


def make_server(tmp_path, limits=LimitsConfig(), auth=AuthConfig(failure_delay=2.0), context_factory=None,
                **pop3_options):
    store = SQLiteStore(tmp_path / "store")
    config = Config(hostname="mail.example.org", pop3=Pop3Config(**pop3_options), auth=auth, limits=limits)
    checker = Checker()
    checker.addUser(b"alice", b"secret")
    checker.addUser(b"bob", b"hunter2")
    checker.addUser(b"carol", b"two  spaces ")
    clock = Clock()
    portal = Portal(MailRealm({twisted_pop3.IMailbox: pop3.avatar_factory(store, config, clock)}), [checker])
    return Server(store, config, clock, pop3.build_factory(portal, config, clock, context_factory=context_factory))


@pytest.fixture
def server(tmp_path):
    s = make_server(tmp_path)
    yield s
    s.store.close()


@pytest.fixture
def session(server):
    server.deliver(FIRST)
    server.deliver(SECOND)
    s = server.connect()
    s.login()
    return s


class WrappedStore:
    """The server's store, but for the methods a test's subclass replaces."""

    def __init__(self, store):
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)


def open_maildrops_over(server, store, **options):
    """From now on the server's sessions open their maildrops over ``store``."""
    server.factory.portal.realm = MailRealm(
        {twisted_pop3.IMailbox: pop3.avatar_factory(store, server.config, server.clock, **options)}
    )


def uidl(server, uid, user="alice"):
    return server.config.uidl.format(server.inbox(user).uidvalidity, uid).encode()


# Greeting and capabilities


def test_greeting_names_host_without_apop_timestamp_and_sets_nodelay(server):
    s = server.connect()
    assert s.read() == b"+OK mail.example.org POP3 gateway ready\r\n"
    assert s.transport.no_delay is True


def test_capa_lists_exactly_what_is_implemented(server):
    # gap (Twisted 6755): stock POP3 lists CELERITY, AUSPEX, POTENCE, PIPELINE.
    s = server.connect()
    s.read()
    assert s.ask(b"CAPA") == (
        b"+OK Capability list follows\r\n"
        b"TOP\r\nUIDL\r\nUSER\r\nSASL PLAIN\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
        b"PIPELINING\r\nEXPIRE NEVER\r\nIMPLEMENTATION gateway\r\n.\r\n"
    )


def test_last_is_unknown(session):
    # RFC 1725 removed LAST; Twisted still answers it.
    assert session.ask(b"LAST") == b"-ERR Unknown command\r\n"


def test_apop_and_rpop_before_login(server):
    s = server.connect()
    s.read()
    assert s.ask(b"APOP alice 0123456789abcdef") == b"-ERR Unknown command\r\n"
    assert s.ask(b"RPOP alice") == b"-ERR Unknown command\r\n"


# Login


def test_user_pass_login_reports_maildrop(server):
    server.deliver(FIRST)
    s = server.connect()
    s.read()
    assert s.ask(b"USER alice") == b"+OK Send PASS\r\n"
    assert s.ask(b"PASS secret") == b"+OK Maildrop has 1 messages (%d octets)\r\n" % len(FIRST)


def test_wrong_password_answers_after_failure_delay(server):
    s = server.connect()
    s.read()
    s.send(b"USER alice\r\nPASS wrong\r\nNOOP\r\n")
    assert s.read() == b"+OK Send PASS\r\n"
    server.clock.advance(1.9)
    assert s.read() == b""
    server.clock.advance(0.1)
    # The pipelined NOOP waited for the login to finish (RFC 2449 PIPELINING).
    assert s.read() == b"-ERR [AUTH] Authentication failed\r\n-ERR Command not valid in this state\r\n"


def test_unknown_user_fails_like_wrong_password(server):
    s = server.connect()
    s.read()
    s.send(b"USER mallory\r\nPASS secret\r\n")
    server.clock.advance(2)
    assert s.read() == b"+OK Send PASS\r\n-ERR [AUTH] Authentication failed\r\n"


def test_pass_without_user(server):
    s = server.connect()
    s.read()
    assert s.ask(b"PASS secret") == b"-ERR USER required before PASS\r\n"


def test_password_with_spaces(server):
    s = server.connect()
    s.read()
    s.send(b"USER carol\r\nPASS two  spaces \r\n")
    assert s.read() == b"+OK Send PASS\r\n+OK Maildrop has 0 messages (0 octets)\r\n"


def auth_plain(*fields):
    return base64.b64encode(b"\0".join(fields))


def test_auth_plain_with_initial_response(server):
    s = server.connect()
    s.read()
    assert s.ask(b"AUTH PLAIN " + auth_plain(b"", b"alice", b"secret")) == b"+OK Maildrop has 0 messages (0 octets)\r\n"
    assert s.ask(b"STAT") == b"+OK 0 0\r\n"


def test_auth_plain_with_continuation(server):
    s = server.connect()
    s.read()
    assert s.ask(b"AUTH PLAIN") == b"+ \r\n"
    assert s.ask(auth_plain(b"alice", b"alice", b"secret")) == b"+OK Maildrop has 0 messages (0 octets)\r\n"


def test_auth_plain_wrong_password_is_delayed(server):
    s = server.connect()
    s.read()
    assert s.ask(b"AUTH PLAIN " + auth_plain(b"", b"alice", b"nope")) == b""
    server.clock.advance(2)
    assert s.read() == b"-ERR [AUTH] Authentication failed\r\n"


def test_auth_cancel_and_bad_responses(server):
    s = server.connect()
    s.read()
    assert s.ask(b"AUTH PLAIN") == b"+ \r\n"
    assert s.ask(b"*") == b"-ERR Authentication cancelled\r\n"
    assert s.ask(b"AUTH PLAIN !!!") == b"-ERR Invalid BASE64 encoding\r\n"
    assert s.ask(b"AUTH PLAIN " + auth_plain(b"bob", b"alice", b"secret")) == (
        b"-ERR Invalid authorization identity\r\n"
    )
    assert s.ask(b"AUTH CRAM-MD5") == b"-ERR Unsupported authentication mechanism\r\n"
    assert s.ask(b"AUTH") == b"+OK Supported mechanisms follow\r\nPLAIN\r\n.\r\n"


def test_commands_checked_against_state(server):
    s = server.connect()
    s.read()
    assert s.ask(b"STAT") == b"-ERR Command not valid in this state\r\n"
    assert s.ask(b"RETR 1") == b"-ERR Command not valid in this state\r\n"
    s.login()
    # RFC 1939 4: USER/PASS only in the AUTHORIZATION state; a second login
    # would otherwise replace the maildrop and leak its lock.
    assert s.ask(b"USER bob") == b"-ERR Command not valid in this state\r\n"
    assert s.ask(b"AUTH PLAIN " + auth_plain(b"", b"bob", b"hunter2")) == b"-ERR Command not valid in this state\r\n"
    assert s.ask(b"NOOP") == b"+OK\r\n"


def test_syntax_errors_get_fixed_text(session):
    assert session.ask(b"RETR") == b"-ERR Syntax error\r\n"
    assert session.ask(b"TOP 1") == b"-ERR Syntax error\r\n"
    assert session.ask(b"NOOP extra") == b"-ERR Syntax error\r\n"
    assert session.ask(b"") == b"-ERR Unknown command\r\n"
    assert session.ask(b"\xff\xfe") == b"-ERR Unknown command\r\n"


# STAT, LIST, UIDL


def test_stat_list_uidl(server, session):
    first, second = server.uids()
    assert session.ask(b"STAT") == b"+OK 2 %d\r\n" % (len(FIRST) + len(SECOND))
    assert session.ask(b"LIST") == b"+OK 2 messages (%d octets)\r\n1 %d\r\n2 %d\r\n.\r\n" % (
        len(FIRST) + len(SECOND),
        len(FIRST),
        len(SECOND),
    )
    assert session.ask(b"LIST 2") == b"+OK 2 %d\r\n" % len(SECOND)
    assert session.ask(b"UIDL") == b"+OK Unique-ID listing follows\r\n1 %s\r\n2 %s\r\n.\r\n" % (
        uidl(server, first),
        uidl(server, second),
    )


def test_uidl_n_includes_message_number(server, session):
    # gap (Twisted 9104): stock POP3 answers "+OK <uidl>" without the number.
    assert session.ask(b"UIDL 2") == b"+OK 2 %s\r\n" % uidl(server, server.uids()[1])


def test_uidl_uses_configured_format(tmp_path):
    server = make_server(tmp_path, uidl_format="%v.%u")
    server.deliver(FIRST)
    s = server.connect()
    s.login()
    inbox = server.inbox()
    assert s.ask(b"UIDL 1") == b"+OK 1 %d.%d\r\n" % (inbox.uidvalidity, server.uids()[0])
    server.store.close()


def test_later_arrivals_appear_at_next_login(server, session):
    server.deliver(b"Subject: three\r\n\r\nnew\r\n")
    assert session.ask(b"STAT").startswith(b"+OK 2 ")
    assert session.ask(b"LIST 3") == b"-ERR No such message, only 2 messages in maildrop\r\n"
    session.ask(b"QUIT")
    session.drop()
    again = server.connect()
    again.login()
    assert again.ask(b"STAT").startswith(b"+OK 3 ")


@pytest.mark.parametrize("command", [b"LIST", b"UIDL", b"RETR", b"DELE"])
def test_bad_message_numbers(server, session, command):
    # gap: Twisted reads int(), so "+1" and "1_0" name messages, and
    # "DELE 0" deletes index -1, the last message.
    for argument in (b"0", b"+1", b"1_0", b"-1", b"99999999999999999999", b"x", b"\xd9\xa1"):
        assert session.ask(command + b" " + argument) == b"-ERR Invalid message number\r\n", argument
    assert session.ask(b"STAT") == b"+OK 2 %d\r\n" % (len(FIRST) + len(SECOND))
    assert session.ask(b"QUIT").startswith(b"+OK")
    assert len(server.uids()) == 2


def test_number_with_extra_space_is_refused(session):
    assert session.ask(b"RETR  1") == b"-ERR Syntax error\r\n"
    assert session.ask(b"TOP 1 -1") == b"-ERR Invalid line count\r\n"
    assert session.ask(b"TOP 1 +1") == b"-ERR Invalid line count\r\n"


def test_numbers_beyond_the_maildrop(session):
    assert session.ask(b"RETR 3") == b"-ERR No such message, only 2 messages in maildrop\r\n"
    assert session.ask(b"DELE 3") == b"-ERR No such message, only 2 messages in maildrop\r\n"


def test_multiline_answers_go_out_in_one_write(server, session):
    # Each write is a send of its own: a status line sent apart from its
    # listing would wake the client twice.
    for s, command in ((session, b"CAPA"), (session, b"LIST"), (session, b"UIDL"), (server.connect(), b"AUTH")):
        s.read()
        s.transport.writes = 0
        answer = s.ask(command)
        assert answer.startswith(b"+OK ") and answer.endswith(b"\r\n.\r\n")
        assert s.transport.writes == 1, command


# DELE, RSET, QUIT


def test_deleted_messages_leave_stat_list_uidl(server, session):
    # gap: Twisted's STAT and LIST count deleted messages (as size 0).
    assert session.ask(b"DELE 1") == b"+OK Message 1 deleted\r\n"
    assert session.ask(b"STAT") == b"+OK 1 %d\r\n" % len(SECOND)
    assert session.ask(b"LIST") == b"+OK 1 messages (%d octets)\r\n2 %d\r\n.\r\n" % (len(SECOND), len(SECOND))
    assert session.ask(b"UIDL") == b"+OK Unique-ID listing follows\r\n2 %s\r\n.\r\n" % uidl(server, server.uids()[1])
    # gap: Twisted answers LIST n / UIDL n on a deleted message with +OK.
    assert session.ask(b"LIST 1") == b"-ERR Message 1 already deleted\r\n"
    assert session.ask(b"UIDL 1") == b"-ERR Message 1 already deleted\r\n"
    assert session.ask(b"RETR 1") == b"-ERR Message 1 already deleted\r\n"
    assert session.ask(b"TOP 1 0") == b"-ERR Message 1 already deleted\r\n"
    assert session.ask(b"DELE 1") == b"-ERR Message 1 already deleted\r\n"


def test_rset_undeletes(server, session):
    session.ask(b"DELE 1")
    session.ask(b"DELE 2")
    assert session.ask(b"RSET") == b"+OK Maildrop has 2 messages (%d octets)\r\n" % (len(FIRST) + len(SECOND))
    assert session.ask(b"QUIT") == b"+OK Bye, 0 messages deleted\r\n"
    assert len(server.uids()) == 2


def test_quit_expunges_deleted_messages(server, session):
    second = server.uids()[1]
    session.ask(b"DELE 1")
    assert server.uids() == [server.uids()[0], second]  # nothing before QUIT
    assert session.ask(b"QUIT") == b"+OK Bye, 1 messages deleted\r\n"
    assert session.transport.disconnecting
    assert server.uids() == [second]


def test_quit_answers_once_the_maildrop_is_free_for_every_node(server, monkeypatch):
    # A cluster's store frees a maildrop for the other nodes only once its
    # server has the unlock (gateway/store/postgresql/maildrops.py); the
    # client that logs in on another node as it reads QUIT's answer must get in.
    freed = Deferred()
    lock_maildrop = server.store.lock_maildrop

    def freed_later(release):
        def release_everywhere():
            release()
            return freed
        return release_everywhere

    monkeypatch.setattr(server.store, "lock_maildrop", lambda user, device=None: lock_maildrop(user, device)
                        .addCallback(lambda release: release and freed_later(release)))
    server.deliver(FIRST)
    session = server.connect()
    session.login()
    assert session.ask(b"QUIT") == b""
    assert not session.transport.disconnecting
    freed.callback(None)
    assert session.read() == b"+OK Bye, 0 messages deleted\r\n"
    assert session.transport.disconnecting


def test_quit_before_login(server):
    s = server.connect()
    s.read()
    assert s.ask(b"QUIT") == b"+OK Bye\r\n"
    assert s.transport.disconnecting


def test_dropped_connection_removes_nothing(server, session):
    session.ask(b"DELE 1")
    session.ask(b"DELE 2")
    session.drop()
    assert len(server.uids()) == 2


def test_commands_after_quit_are_ignored(server, session):
    session.send(b"DELE 1\r\nQUIT\r\nRSET\r\nNOOP\r\n")
    assert session.read() == b"+OK Message 1 deleted\r\n+OK Bye, 1 messages deleted\r\n"
    assert len(server.uids()) == 1


def test_quit_expunge_reaches_the_change_feed(server, session):
    inbox = server.inbox()
    second = server.uids()[1]
    told = []
    server.store.changes.subscribe(inbox.id, lambda mailbox_id, modseq: told.append(mailbox_id))
    session.ask(b"DELE 2")
    assert told == []
    session.ask(b"QUIT")
    assert told == [inbox.id]
    assert result_of(server.store.changes_since(inbox.id, inbox.highestmodseq)).expunged == (second,)


# RETR and TOP


def test_retr_sends_message_dot_stuffed(session):
    assert session.ask(b"RETR 1") == (
        b"+OK %d octets\r\n" % len(FIRST)
        + b"From: a@example.org\r\nSubject: one\r\n\r\nline 1\r\n..dot line\r\nline 3\r\n.\r\n"
    )
    assert session.ask(b"RETR 2") == (
        b"+OK %d octets\r\n" % len(SECOND) + b"From: b@example.org\r\nSubject: two\r\n\r\n..\r\n...\r\nend\r\n.\r\n"
    )


def test_retr_stuffs_dots_at_chunk_boundaries(server, monkeypatch):
    # gap: Twisted's transformChunk only sees "\r\n." inside one chunk.
    message = b"Subject: x\r\n\r\n" + b"".join(b".%d\r\n" % i for i in range(50))
    server.deliver(message)
    monkeypatch.setattr(pop3, "SEND_CHUNK", 5)
    s = server.connect()
    s.login()
    s.transport.full = True
    wire = s.ask(b"RETR 1")
    body = wire.split(b"\r\n", 1)[1]
    assert body == b"Subject: x\r\n\r\n" + b"".join(b"..%d\r\n" % i for i in range(50)) + b".\r\n"


def test_retr_reads_a_message_in_one_read_of_its_size(session, monkeypatch):
    # One octet over the size comes back short: the end of the file, with
    # no read() for EOF, and no buffer of SEND_CHUNK for a small message.
    reads = []
    open_message_now = session.protocol.mbox.open_message_now

    def recording(number):
        file = open_message_now(number)
        read = file.read

        def recorded(size):
            reads.append(size)
            return read(size)

        file.read = recorded
        return file

    monkeypatch.setattr(session.protocol.mbox, "open_message_now", recording)
    assert session.ask(b"RETR 1").endswith(b"line 3\r\n.\r\n")
    assert session.ask(b"TOP 2 0").endswith(b"Subject: two\r\n\r\n.\r\n")
    assert reads == [len(FIRST) + 1, len(SECOND) + 1]


def test_retr_completes_unterminated_last_line(server):
    server.deliver(b"Subject: x\r\n\r\nno newline")
    s = server.connect()
    s.login()
    assert s.ask(b"RETR 1").endswith(b"\r\nno newline\r\n.\r\n")


def test_top_sends_header_and_n_lines(session):
    assert session.ask(b"TOP 1 0") == b"+OK Top of message follows\r\nFrom: a@example.org\r\nSubject: one\r\n\r\n.\r\n"
    assert session.ask(b"TOP 1 2") == (
        b"+OK Top of message follows\r\nFrom: a@example.org\r\nSubject: one\r\n\r\nline 1\r\n..dot line\r\n.\r\n"
    )
    assert session.ask(b"TOP 2 99").endswith(b"\r\n..\r\n...\r\nend\r\n.\r\n")


def test_top_of_more_lines_than_octets_is_the_whole_message_unfiltered(server, session, monkeypatch):
    # RFC 1939 7: more lines than the body has, the entire message.
    # fetchmail keeping mail sends TOP n 99999999 for every message: no
    # line of it is looked at, and it is not flagged \Seen.
    def no_filter(lines):
        raise AssertionError(f"TOP {lines} filtered a message of fewer octets")

    monkeypatch.setattr(pop3, "TopFilter", no_filter)
    whole = session.ask(b"RETR 1").split(b"\r\n", 1)[1]
    stuffed = SECOND.replace(b"\r\n.", b"\r\n..")
    assert session.ask(b"TOP 2 99999999") == b"+OK Top of message follows\r\n" + stuffed + b".\r\n"
    assert session.ask(b"TOP 1 %d" % len(FIRST)) == b"+OK Top of message follows\r\n" + whole
    server.clock.advance(SEEN_DELAY)
    assert not seen(server, 2)


def seen(server, number):
    record = result_of(server.store.list_messages(server.inbox().id))[number - 1]
    return "\\Seen" in record.flags


def test_retr_sets_seen_top_does_not(server, session):
    session.ask(b"TOP 1 1")
    server.clock.advance(SEEN_DELAY)
    assert not seen(server, 1)
    session.ask(b"RETR 1")
    server.clock.advance(SEEN_DELAY)
    assert seen(server, 1)
    assert not seen(server, 2)


def test_retrs_one_at_a_time_flag_seen_in_one_index_write_within_the_delay(server, session, monkeypatch):
    # What a client downloading its mail sends: one RETR, its answer, the
    # next.  The \Seen flags wait at most SEEN_DELAY, then go in one write.
    writes = []
    store_flags = server.store.store_flags
    monkeypatch.setattr(server.store, "store_flags", lambda *args: writes.append(args[1]) or store_flags(*args))
    session.ask(b"RETR 1")
    server.clock.advance(SEEN_DELAY / 3)
    session.ask(b"RETR 2")
    assert not seen(server, 1) and writes == []
    server.clock.advance(SEEN_DELAY)
    assert seen(server, 1) and seen(server, 2)
    assert writes == [server.uids()]
    server.clock.advance(SEEN_DELAY * 10)
    assert len(writes) == 1


def test_pipelined_retrs_flag_seen_in_one_index_write(server, session, monkeypatch):
    writes = []
    store_flags = server.store.store_flags
    monkeypatch.setattr(server.store, "store_flags", lambda *args: writes.append(args[1]) or store_flags(*args))
    session.send(b"RETR 1\r\nRETR 2\r\nRETR 1\r\n")
    server.clock.advance(SEEN_DELAY)
    assert seen(server, 1) and seen(server, 2)
    assert writes == [server.uids()]
    session.ask(b"RETR 2")
    server.clock.advance(SEEN_DELAY)
    assert len(writes) == 1


def test_seen_delays_of_sessions_fall_due_together(tmp_path, monkeypatch):
    # Two users' sessions: their saves are due at the same clock tick, so
    # the writer can commit them as one group.
    server = make_server(tmp_path)
    server.deliver(FIRST)
    server.deliver(FIRST, user="bob")
    alice, bob = server.connect(), server.connect()
    alice.login()
    bob.login(b"bob", b"hunter2")
    writes = []
    store_flags = server.store.store_flags
    monkeypatch.setattr(server.store, "store_flags",
                        lambda *args: writes.append(server.clock.seconds()) or store_flags(*args))
    alice.ask(b"RETR 1")
    server.clock.advance(SEEN_DELAY / 2)
    bob.ask(b"RETR 1")
    server.clock.advance(SEEN_DELAY)
    assert len(writes) == 2 and writes[0] == writes[1]
    server.store.close()


def test_quit_saves_seen_at_once_and_before_its_deletions(server, session):
    # RFC 1939 6: QUIT's UPDATE state; the \Seen flags RETR set are saved
    # first, without waiting for the delay, so a message read and deleted
    # under the "trash" policy would reach Trash \Seen.
    order = []
    store_flags, expunge = server.store.store_flags, server.store.expunge
    server.store.store_flags = lambda *args: order.append("seen") or store_flags(*args)
    server.store.expunge = lambda *args: order.append("expunge") or expunge(*args)
    session.ask(b"RETR 2")
    session.ask(b"DELE 1")
    assert session.ask(b"QUIT") == b"+OK Bye, 1 messages deleted\r\n"
    assert order == ["seen", "expunge"]
    assert seen(server, 1)  # message 2 is now the first


def test_seen_is_saved_at_once_when_the_connection_drops(server, session):
    session.ask(b"RETR 1")
    session.drop()
    assert seen(server, 1)


def test_seen_is_saved_when_the_connection_drops_mid_pipeline(server, session):
    session.transport.full = True
    session.protocol.dataReceived(b"RETR 1\r\nRETR 2\r\nNOOP\r\n")
    # The socket drains once: RETR 1 is done, RETR 2 waits in turn.
    session.transport.producer.resumeProducing()
    server.clock.advance(SEEN_DELAY)
    assert not seen(server, 1)  # saved when the pipeline is answered
    session.transport.producer.stopProducing()
    session.drop()
    # RETR 1 was sent whole; RETR 2 never was.
    assert seen(server, 1)
    assert not seen(server, 2)


def test_retr_sets_seen_can_be_turned_off(tmp_path):
    server = make_server(tmp_path, retr_sets_seen=False)
    server.deliver(FIRST)
    s = server.connect()
    s.login()
    assert s.ask(b"RETR 1").startswith(b"+OK")
    assert not seen(server, 1)
    server.store.close()


def test_message_expunged_by_another_session(server, session):
    inbox = server.inbox()
    first, second = server.uids()
    result_of(server.store.expunge(inbox.id, [first, second]))
    assert session.ask(b"RETR 1") == b"-ERR Message 1 was expunged by another session\r\n"
    assert session.ask(b"TOP 1 0") == b"-ERR Message 1 was expunged by another session\r\n"
    assert session.ask(b"DELE 1") == b"-ERR Message 1 was expunged by another session\r\n"
    assert session.ask(b"DELE 2") == b"-ERR Message 2 was expunged by another session\r\n"
    # The numbers cannot move, so listings still show the snapshot.
    assert session.ask(b"LIST") == b"+OK 2 messages (%d octets)\r\n1 %d\r\n2 %d\r\n.\r\n" % (
        len(FIRST) + len(SECOND),
        len(FIRST),
        len(SECOND),
    )
    assert session.ask(b"UIDL 2") == b"+OK 2 %s\r\n" % uidl(server, second)
    assert session.ask(b"NOOP") == b"+OK\r\n"
    assert session.ask(b"QUIT") == b"+OK Bye, 0 messages deleted\r\n"


def test_pipelined_commands_answer_in_order(server):
    first = uidl(server, server.deliver(FIRST).uid)
    s = server.connect()
    s.read()
    s.send(b"USER alice\r\nPASS secret\r\nSTAT\r\nRETR 1\r\nBOGUS\r\nUIDL 1\r\nDELE 1\r\nQUIT\r\n")
    assert s.read() == (
        b"+OK Send PASS\r\n"
        b"+OK Maildrop has 1 messages (%d octets)\r\n" % len(FIRST)
        + b"+OK 1 %d\r\n" % len(FIRST)
        + b"+OK %d octets\r\n" % len(FIRST)
        + FIRST.replace(b"\r\n.", b"\r\n..")
        + b".\r\n"
        + b"-ERR Unknown command\r\n"
        + b"+OK 1 %s\r\n" % first
        + b"+OK Message 1 deleted\r\n"
        + b"+OK Bye, 1 messages deleted\r\n"
    )
    assert server.uids() == []


def test_lines_wait_while_a_message_streams(server, monkeypatch):
    server.deliver(FIRST)
    monkeypatch.setattr(pop3, "SEND_CHUNK", 16)
    s = server.connect()
    s.login()
    s.transport.full = True
    s.protocol.dataReceived(b"RETR 1\r\nNOOP\r\n")
    # The status line and the first chunk, then nothing until the socket drains.
    assert s.read() == b"+OK %d octets\r\n" % len(FIRST) + FIRST[:16]
    s.pump()
    assert s.read() == FIRST[16:].replace(b"\r\n.", b"\r\n..") + b".\r\n+OK\r\n"


class CountingOpens(WrappedStore):
    """A store that counts the bodies opened at once."""

    def __init__(self, store):
        super().__init__(store)
        self.opened = []

    def open_message_now(self, mailbox_id, uid):
        self.opened.append(uid)
        return self._store.open_message_now(mailbox_id, uid)


def counting_session(server, **options):
    counting = CountingOpens(server.store)
    open_maildrops_over(server, counting, **options)
    s = server.connect()
    s.login()
    return counting, s


def test_the_next_message_is_opened_while_the_client_takes_one(server):
    first, second, third = (server.deliver(m).uid for m in (FIRST, SECOND, FIRST))
    counting, s = counting_session(server)
    assert s.ask(b"RETR 1").endswith(b"line 3\r\n.\r\n")
    assert counting.opened == [first, second]
    # Read and dot-stuffed ahead (a session downloading alone), sent as RETR sends it.
    assert s.ask(b"RETR 2") == b"+OK %d octets\r\n" % len(SECOND) + SECOND.replace(b"\r\n.", b"\r\n..") + b".\r\n"
    assert counting.opened == [first, second, third]
    # TOP of the whole message (fetchmail's) opens ahead too; TOP of a few lines does not.
    assert s.ask(b"TOP 3 99999999").endswith(b"line 3\r\n.\r\n")
    assert s.ask(b"TOP 1 0") == b"+OK Top of message follows\r\nFrom: a@example.org\r\nSubject: one\r\n\r\n.\r\n"
    assert counting.opened == [first, second, third, first]
    server.clock.advance(SEEN_DELAY)
    assert seen(server, 1) and seen(server, 2)
    assert not seen(server, 3)


def test_a_failure_to_open_ahead_leaves_the_answer_sent_alone(server):
    server.deliver(FIRST)
    server.deliver(SECOND)

    class NoFilesLeft(WrappedStore):
        fail = True

        def open_message_now(self, mailbox_id, uid):
            if uid == 2 and self.fail:
                raise OSError(errno.EMFILE, "Too many open files")
            return self._store.open_message_now(mailbox_id, uid)

    store = NoFilesLeft(server.store)
    open_maildrops_over(server, store)
    s = server.connect()
    s.login()
    assert s.ask(b"RETR 1") == b"+OK %d octets\r\n" % len(FIRST) + FIRST.replace(b"\r\n.", b"\r\n..") + b".\r\n"
    assert s.ask(b"RETR 2") == b"-ERR [SYS/TEMP] Internal server error, try again later\r\n"
    store.fail = False
    assert s.ask(b"RETR 2").startswith(b"+OK %d octets" % len(SECOND))


def test_opening_ahead_keeps_to_the_budget_the_sessions_share(server):
    alice = [server.deliver(m).uid for m in (FIRST, SECOND, FIRST)]
    bob = [server.deliver(m, user="bob").uid for m in (SECOND, SECOND)]
    # No octets to prepare messages with: files opened ahead only.
    budget = maildrop_module.AheadBudget(files=1, octets=0)
    counting, a = counting_session(server, ahead_budget=budget)
    b = server.connect()
    b.login(b"bob", b"hunter2")
    a.ask(b"RETR 1")
    assert budget.files == 0
    assert counting.opened == [alice[0], alice[1]]
    b.ask(b"RETR 1")  # none left to open bob's message 2 ahead with
    assert counting.opened == [alice[0], alice[1], bob[0]]
    a.ask(b"RETR 2")
    b.ask(b"RETR 2")
    assert counting.opened == [alice[0], alice[1], bob[0], alice[2], bob[1]]
    assert budget.files == 0
    a.ask(b"RETR 3")  # the last: nothing to open ahead
    assert budget.files == 1
    a.ask(b"RETR 1")
    assert budget.files == 0
    # The end of the session closes it and gives it back.
    assert a.ask(b"QUIT").startswith(b"+OK")
    assert budget.files == 1


def stuffed(message: bytes) -> bytes:
    """``message`` as RETR sends it after the "+OK" line."""
    return (b"." if message.startswith(b".") else b"") + message.replace(b"\r\n.", b"\r\n..") + b".\r\n"


def test_a_session_downloading_alone_has_the_next_message_prepared(server):
    # RFC 1939 3: a line starting with "." is stuffed, the message's first too.
    starts_with_a_dot = b".first line\r\n\r\n..\r\n"
    uids = [server.deliver(m).uid for m in (FIRST, SECOND, starts_with_a_dot)]
    budget = maildrop_module.AheadBudget()
    counting, s = counting_session(server, ahead_budget=budget)
    assert s.ask(b"RETR 1") == b"+OK %d octets\r\n" % len(FIRST) + stuffed(FIRST)
    # Read, stuffed and closed: octets held, no file.
    assert counting.opened == uids[:2]
    assert budget.files == maildrop_module.OPEN_AHEAD_FILES
    assert budget.octets == maildrop_module.PREPARED_OCTETS - len(stuffed(SECOND))
    assert s.ask(b"RETR 2") == b"+OK %d octets\r\n" % len(SECOND) + stuffed(SECOND)
    assert s.ask(b"RETR 3") == b"+OK %d octets\r\n" % len(starts_with_a_dot) + stuffed(starts_with_a_dot)
    assert counting.opened == uids
    assert budget.octets == maildrop_module.PREPARED_OCTETS
    # fetchmail's TOP of the whole message is sent from what was prepared too.
    s.ask(b"RETR 1")
    assert s.ask(b"TOP 2 99999999") == b"+OK Top of message follows\r\n" + stuffed(SECOND)
    assert counting.opened == [*uids, uids[0], uids[1], uids[2]]
    server.clock.advance(SEEN_DELAY)
    assert seen(server, 1) and seen(server, 2) and seen(server, 3)


def test_sessions_downloading_together_open_ahead_without_preparing(server):
    for user in ("alice", "bob"):
        for m in (FIRST, SECOND, FIRST):
            server.deliver(m, user=user)
    budget = maildrop_module.AheadBudget()
    counting, a = counting_session(server, ahead_budget=budget)
    b = server.connect()
    b.login(b"bob", b"hunter2")
    a.ask(b"RETR 1")  # alone so far: alice's message 2 prepared
    assert budget.octets == maildrop_module.PREPARED_OCTETS - len(stuffed(SECOND))
    assert b.ask(b"RETR 1").endswith(stuffed(FIRST))  # within LONE_WINDOW of alice: opened only
    assert budget.files == maildrop_module.OPEN_AHEAD_FILES - 1
    assert a.ask(b"RETR 2").endswith(stuffed(SECOND))
    assert budget.octets == maildrop_module.PREPARED_OCTETS
    assert budget.files == maildrop_module.OPEN_AHEAD_FILES - 2
    # Once bob has sent nothing for LONE_WINDOW, alice downloads alone again.
    server.clock.advance(maildrop_module.LONE_WINDOW)
    assert a.ask(b"RETR 3").endswith(stuffed(FIRST))
    assert b.ask(b"RETR 2").endswith(stuffed(SECOND))
    server.clock.advance(maildrop_module.LONE_WINDOW)
    a.ask(b"RETR 1")
    assert budget.octets == maildrop_module.PREPARED_OCTETS - len(stuffed(SECOND))
    # The end of each session gives back what it held.
    for s in (a, b):
        assert s.ask(b"QUIT").startswith(b"+OK")
    assert budget == maildrop_module.AheadBudget(last_sender=budget.last_sender, last_sent=budget.last_sent,
                                                 crowded=budget.crowded)


def test_a_prepared_message_asked_for_by_lines_is_read_again(server):
    uids = [server.deliver(m).uid for m in (FIRST, SECOND)]
    budget = maildrop_module.AheadBudget()
    counting, s = counting_session(server, ahead_budget=budget)
    s.ask(b"RETR 1")
    assert s.ask(b"TOP 2 0") == b"+OK Top of message follows\r\nFrom: b@example.org\r\nSubject: two\r\n\r\n.\r\n"
    assert counting.opened == [uids[0], uids[1], uids[1]]
    assert budget.octets == maildrop_module.PREPARED_OCTETS


@pytest.mark.parametrize("octets", [maildrop_module.PREPARED_OCTETS, 0], ids=["prepared", "opened"])
def test_a_message_ahead_and_deleted_meanwhile_is_not_sent(server, octets):
    server.deliver(FIRST)
    server.deliver(SECOND)
    counting, s = counting_session(server, ahead_budget=maildrop_module.AheadBudget(octets=octets))
    s.ask(b"RETR 1")
    assert s.ask(b"DELE 2") == b"+OK Message 2 deleted\r\n"
    assert s.ask(b"RETR 2") == b"-ERR Message 2 already deleted\r\n"
    assert s.ask(b"RSET").startswith(b"+OK")
    assert s.ask(b"RETR 2") == b"+OK %d octets\r\n" % len(SECOND) + stuffed(SECOND)


def test_big_messages_are_opened_ahead_not_prepared(server, monkeypatch):
    monkeypatch.setattr(maildrop_module, "PREPARE_AT_MOST", len(SECOND) - 1)
    server.deliver(FIRST)
    server.deliver(SECOND)
    budget = maildrop_module.AheadBudget()
    counting, s = counting_session(server, ahead_budget=budget)
    s.ask(b"RETR 1")
    assert budget.files == maildrop_module.OPEN_AHEAD_FILES - 1
    assert budget.octets == maildrop_module.PREPARED_OCTETS
    assert s.ask(b"RETR 2") == b"+OK %d octets\r\n" % len(SECOND) + stuffed(SECOND)


def test_a_failure_to_read_ahead_leaves_the_message_to_its_retr(server):
    server.deliver(FIRST)
    server.deliver(SECOND)

    class Unreadable:
        def read(self, size):
            raise OSError(errno.EIO, "Input/output error")

        def close(self):
            pass

    class FailingReads(WrappedStore):
        fail = True

        def open_message_now(self, mailbox_id, uid):
            if uid == 2 and self.fail:
                self.fail = False
                return Unreadable()
            return self._store.open_message_now(mailbox_id, uid)

    open_maildrops_over(server, FailingReads(server.store))
    s = server.connect()
    s.login()
    assert s.ask(b"RETR 1") == b"+OK %d octets\r\n" % len(FIRST) + stuffed(FIRST)
    assert s.ask(b"RETR 2") == b"+OK %d octets\r\n" % len(SECOND) + stuffed(SECOND)


def test_small_message_goes_out_in_one_write(session):
    writes = []
    session.transport.write = writes.append
    session.protocol.dataReceived(b"RETR 1\r\n")
    assert writes == [b"+OK %d octets\r\n" % len(FIRST) + FIRST.replace(b"\r\n.", b"\r\n..") + b".\r\n"]


def test_next_command_waits_for_a_full_buffer_to_drain(session):
    # The whole message is written, but a full transport buffer holds the
    # next RETR back: memory stays at one message per session.
    session.transport.full = True
    session.protocol.dataReceived(b"RETR 1\r\nRETR 2\r\n")
    assert session.read().endswith(b"line 3\r\n.\r\n")
    session.pump()
    assert session.read().startswith(b"+OK %d octets\r\n" % len(SECOND))


def test_connection_lost_while_a_message_waits(server):
    server.deliver(FIRST)
    s = server.connect()
    s.login()
    s.transport.full = True
    s.protocol.dataReceived(b"RETR 1\r\n")
    s.transport.producer.stopProducing()
    s.drop()
    # Not sent whole, so not \Seen; the maildrop lock is released.
    assert not seen(server, 1)
    other = server.connect()
    other.login()


def test_reading_pauses_while_too_many_lines_queue(session):
    session.transport.full = True
    session.protocol.dataReceived(b"RETR 1\r\n" + b"NOOP\r\n" * engine.MAX_QUEUED_LINES)
    assert session.transport.producerState == "paused"
    session.pump()
    assert session.transport.producerState == "producing"
    assert session.read().endswith(b".\r\n" + b"+OK\r\n" * engine.MAX_QUEUED_LINES)


# Locking


def test_second_session_gets_in_use(server, session):
    other = server.connect()
    other.read()
    other.send(b"USER alice\r\nPASS secret\r\n")
    assert other.read() == b"+OK Send PASS\r\n-ERR [IN-USE] Maildrop is locked by another session\r\n"
    bob = server.connect()
    bob.login(b"bob", b"hunter2")


def test_lock_released_when_connection_is_gone(server, session):
    session.drop()
    other = server.connect()
    other.login()


def test_lock_released_after_quit(server, session):
    session.ask(b"QUIT")
    session.drop()
    server.connect().login()


def test_lock_released_before_quit_is_answered(server, session):
    # RFC 1939 6: the UPDATE state releases the maildrop; a client that
    # logs in again the moment it reads the answer is not told IN-USE.
    assert session.ask(b"QUIT").startswith(b"+OK")
    server.connect().login()


def test_locking_can_be_turned_off(tmp_path):
    server = make_server(tmp_path, lock_session=False)
    server.connect().login()
    server.connect().login()
    server.store.close()


def test_login_finishing_after_disconnect_releases_lock(server):
    s = server.connect()
    s.read()
    factory = server.factory
    pending = []
    original = factory.portal.login

    def slow_login(*args):
        held = Deferred()
        pending.append((original(*args), held))
        return held

    factory.portal.login = slow_login
    s.send(b"USER alice\r\nPASS secret\r\n")
    s.drop()
    result, held = pending[0]
    held.callback(result_of(result))
    factory.portal.login = original
    server.connect().login()


class SlowExpungeStore(WrappedStore):
    """A store whose expunge waits until the test fires it."""

    def __init__(self, store):
        super().__init__(store)
        self.expunges = []

    def expunge(self, mailbox_id, uids):
        held = Deferred()
        self.expunges.append((held, mailbox_id, uids))
        return held

    def finish(self):
        held, mailbox_id, uids = self.expunges.pop()
        held.callback(result_of(self._store.expunge(mailbox_id, uids)))


class RemoteBodiesStore(WrappedStore):
    """A store with no body at hand (an object store's, uncached): each opens when the test says."""

    def __init__(self, store):
        super().__init__(store)
        self.opening = []

    def open_message_now(self, mailbox_id, uid):
        return None

    def open_message(self, mailbox_id, uid):
        held = Deferred()
        self.opening.append((held, mailbox_id, uid))
        return held

    def finish(self):
        held, mailbox_id, uid = self.opening.pop(0)
        try:
            held.callback(self._store.open_message_now(mailbox_id, uid))
        except Exception:
            held.errback()


def remote_bodies_session(server):
    remote = RemoteBodiesStore(server.store)
    open_maildrops_over(server, remote)
    s = server.connect()
    s.login()
    return remote, s


def test_retr_waits_for_a_body_not_at_hand_and_later_commands_wait_behind_it(server):
    server.deliver(FIRST)
    server.deliver(SECOND)
    remote, s = remote_bodies_session(server)
    s.send(b"RETR 1\r\nNOOP\r\nTOP 2 0\r\n")
    assert s.read() == b""
    remote.finish()
    assert s.read() == b"+OK %d octets\r\n" % len(FIRST) + FIRST.replace(b"\r\n.", b"\r\n..") + b".\r\n+OK\r\n"
    remote.finish()
    assert s.read() == b"+OK Top of message follows\r\nFrom: b@example.org\r\nSubject: two\r\n\r\n.\r\n"
    server.clock.advance(SEEN_DELAY)
    assert seen(server, 1)
    assert not seen(server, 2)


def test_a_body_not_at_hand_expunged_meanwhile(server):
    server.deliver(FIRST)
    remote, s = remote_bodies_session(server)
    s.send(b"RETR 1\r\n")
    result_of(server.store.expunge(server.inbox().id, server.uids()))
    remote.finish()
    assert s.read() == b"-ERR Message 1 was expunged by another session\r\n"
    assert s.ask(b"DELE 1") == b"-ERR Message 1 was expunged by another session\r\n"


def test_lock_held_until_quit_has_expunged(server):
    server.deliver(FIRST)
    slow = SlowExpungeStore(server.store)
    open_maildrops_over(server, slow)
    s = server.connect()
    s.login()
    s.send(b"DELE 1\r\nQUIT\r\n")
    s.drop()
    # The client is gone but the expunge is not done: a new session would
    # see a message that is about to disappear.
    other = server.connect()
    other.read()
    other.send(b"USER alice\r\nPASS secret\r\n")
    assert other.read().endswith(b"-ERR [IN-USE] Maildrop is locked by another session\r\n")
    slow.finish()
    assert server.uids() == []
    server.connect().login()


# Avatar


def test_maildrop_provides_imailbox(server):
    server.deliver(FIRST)
    server.deliver(SECOND)
    maildrop, logout = result_of(pop3.avatar_factory(server.store, server.config, server.clock)("alice"))
    verifyObject(twisted_pop3.IMailbox, maildrop)
    assert maildrop.listMessages() == [len(FIRST), len(SECOND)]
    assert maildrop.getUidl(0) == uidl(server, server.uids()[0])
    maildrop.deleteMessage(0)
    assert maildrop.listMessages() == [0, len(SECOND)]
    assert maildrop.listMessages(0) == 0
    with pytest.raises(ValueError):
        maildrop.listMessages(5)
    with pytest.raises(ValueError):
        maildrop.getUidl(0)
    maildrop.undeleteMessages()
    with result_of(maildrop.getMessage(1)) as body:
        assert body.read() == SECOND
    maildrop.deleteMessage(1)
    assert result_of(maildrop.sync()) == 1
    assert len(server.uids()) == 1
    logout()


def test_avatar_factory_lock_and_logout(server):
    factory = pop3.avatar_factory(server.store, server.config, server.clock)
    _, logout = result_of(factory("alice"))
    failure_of(factory("alice"), pop3.MaildropLocked)
    result_of(factory("bob"))
    logout()
    result_of(factory("alice"))
    logout()  # a stale second logout must not free the new session's lock
    failure_of(factory("alice"), pop3.MaildropLocked)


# Errors, timeouts, limits


class BrokenStore(WrappedStore):
    """A store whose bodies fail to open with a text the client must not see."""

    def open_message(self, mailbox_id, uid):
        raise RuntimeError("/secret/path/to/body is unreadable")

    open_message_now = open_message


def test_internal_errors_are_logged_not_sent(tmp_path):
    server = make_server(tmp_path)
    server.deliver(FIRST)
    open_maildrops_over(server, BrokenStore(server.store))
    s = server.connect()
    s.login()
    with capturedLogs() as events:
        reply = s.ask(b"RETR 1")
    assert reply == b"-ERR [SYS/TEMP] Internal server error, try again later\r\n"
    assert any("log_failure" in event and "secret" in str(event["log_failure"].value) for event in events)
    assert s.ask(b"NOOP") == b"+OK\r\n"
    server.store.close()


def test_idle_timeout_comes_from_config(tmp_path):
    # gap: Twisted's POP3 closes after 300 s; RFC 1939 3 asks at least 10 min.
    server = make_server(tmp_path, idle_timeout=600)
    s = server.connect()
    s.login()
    server.clock.advance(599)
    assert not s.transport.disconnecting
    s.ask(b"NOOP")
    server.clock.advance(599)
    assert not s.transport.disconnecting
    server.clock.advance(1)
    assert s.transport.disconnecting
    server.store.close()


def test_idle_timeout_does_not_apply_deletions(server, session):
    session.ask(b"DELE 1")
    server.clock.advance(600)
    assert session.transport.disconnecting
    session.drop()
    assert len(server.uids()) == 2


def test_overlong_line_is_answered_discarded_and_the_session_goes_on(server):
    # gap: LineOnlyReceiver drops the connection, and the rest of the packet.
    s = server.connect()
    s.read()
    limit = server.config.limits.max_line_length
    s.send(b"USER " + b"a" * limit + b"\r\nCAPA\r\n")
    assert s.read().startswith(b"-ERR Line too long\r\n+OK Capability list follows\r\n")
    # Without an end of line, answered as soon as the limit is passed, and
    # nothing of it is kept.
    s.send(b"x" * (limit + 1))
    assert s.read() == b"-ERR Line too long\r\n"
    assert s.protocol._buffer == b""
    s.send(b"y" * 100_000 + b"\r")
    s.send(b"\nUSER alice\r\n")
    assert s.read() == b"+OK Send PASS\r\n"
    assert not s.transport.disconnecting
    # A line of exactly the limit is a line.
    assert s.ask(b"PASS " + b"p" * (limit - 5)) == b""
    server.clock.advance(2)
    assert s.read() == b"-ERR [AUTH] Authentication failed\r\n"


# Metrics


@pytest.fixture
def counted():
    m = Metrics(CollectorRegistry())
    previous = metrics.activate(m)
    yield m
    metrics.activate(previous)


def command_counts(m):
    text = generate_latest(m.registry).decode()
    return {
        sample.labels["command"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "gateway_command_duration_seconds_count" and sample.labels["protocol"] == "pop3"
    }


def test_every_command_is_timed(server, counted):
    server.deliver(FIRST)
    s = server.connect()
    s.login()
    s.ask(b"STAT")
    s.ask(b"retr 1")
    s.ask(b"BOGUS")
    s.ask(b"QUIT")
    assert command_counts(counted) == {"USER": 1, "PASS": 1, "STAT": 1, "RETR": 1, "OTHER": 1, "QUIT": 1}


def test_auth_with_continuation_is_timed_once(server, counted):
    s = server.connect()
    s.read()
    assert s.ask(b"AUTH PLAIN") == b"+ \r\n"
    assert command_counts(counted) == {}
    assert s.ask(auth_plain(b"", b"alice", b"secret")).startswith(b"+OK")
    assert command_counts(counted) == {"AUTH": 1}


def test_a_waiting_retr_is_timed_when_its_answer_is_complete(server, counted):
    server.deliver(FIRST)
    s = server.connect()
    s.login()
    s.transport.full = True
    s.protocol.dataReceived(b"RETR 1\r\n")
    assert "RETR" not in command_counts(counted)
    s.pump()
    assert command_counts(counted)["RETR"] == 1
