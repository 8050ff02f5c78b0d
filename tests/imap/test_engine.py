"""
Where the IMAP server meets Twisted's IMAP4Server (gateway/imap/engine.py):
the private names of Twisted's it relies on are there alone, each still
means what the engine takes it to mean in the Twisted installed, and every
answer, Twisted's own included, leaves as a response value through ``send``.
"""

import re
from pathlib import Path

import pytest
from twisted.mail import imap4
from twisted.protocols.basic import LineReceiver

import gateway.imap
from gateway.imap.engine import Engine, known_error
from gateway.imap.errors import Bad, CommandError, Nonexistent, TooManyArguments
from gateway.imap.responses import BAD, Condition, Data, Tagged
from gateway.imap.server import IMAPServer
from gateway.store.interfaces import NoSuchMailbox
from tests.imap.test_server import Session
from tests.twisted_private import private_uses, twisted_source

PACKAGE = Path(gateway.imap.__file__).parent
Server = imap4.IMAP4Server


def test_twisted_private_names_are_used_in_the_engine_alone():
    assert private_uses(PACKAGE, Server, adapter="engine.py") == {}


def test_the_server_is_built_on_the_engine():
    assert issubclass(IMAPServer, Engine) and issubclass(Engine, Server)


def test_command_tables_are_read_as_twisted_reads_them():
    # (handler, parser or value, ...): a parser is called (server, line) and
    # answers (argument, rest); the handler gets every argument after the tag.
    source = twisted_source(Server._IMAP4Server__doCommand)
    assert "maybeDeferred(arg, self, line)" in source and "args.append(arg)" in source
    assert "handler(uid=uid, *args)" in source


def test_commands_run_without_twisteds_deferred_per_argument(store, monkeypatch):  # noqa: F811
    def per_argument(*args):
        raise AssertionError("Twisted's __doCommand ran")

    monkeypatch.setattr(Server, "_IMAP4Server__doCommand", per_argument)
    s = Session(store).login()
    assert s.command(b"s SELECT INBOX")[-1].startswith(b"s OK")
    assert s.command(b"t UID FETCH 1:* (FLAGS)") == [b"t OK FETCH completed"]
    assert s.command(b"u NOOP extra") == [b"u BAD Too many arguments"]


def test_an_argument_that_waits_for_a_literal_continues_when_it_comes(store):  # noqa: F811
    s = Session(store)
    assert s.send(b"a LOGIN {5}\r\n").startswith(b"+ ")
    assert s.send(b"alice secret\r\n").startswith(b"a OK")
    # Too many arguments after a literal: answered, not raised.
    s2 = Session(store)
    s2.send(b"b LOGIN {5}\r\n")
    assert s2.send(b"alice secret extra\r\n") == b"b BAD Too many arguments\r\n"


def test_pending_line_and_literal_are_fed_from_pending_literal():
    assert "self._pendingLiteral" in twisted_source(Server.parse_pending)
    assert "self._pendingLiteral.write(data)" in twisted_source(Server.rawDataReceived)
    assert "rawDataReceived" not in vars(IMAPServer) and "parse_pending" not in vars(IMAPServer)


def test_line_receiver_keeps_what_it_has_not_run_in_buffer():
    source = twisted_source(LineReceiver.dataReceived)
    assert "self._buffer += data" in source and "while self._buffer and not self.paused:" in source


def test_twisted_answers_an_unknown_command_and_greets_through_the_routed_methods():
    assert "self.sendBadResponse(" in twisted_source(Server.dispatchCommand)
    assert "self.sendServerGreeting()" in twisted_source(Server.connectionMade)


def _raised(function) -> list[str]:
    return re.findall(r"raise IllegalClientResponse\(\s*\"([^\"]*)", twisted_source(function))


def test_the_twisted_code_still_run_raises_no_illegal_client_response():
    """
    Twisted's own exception text names the client's bytes: none of it runs,
    which the command tables ensure by using only our parsers and ``arg_line``.
    """
    assert "dispatchCommand" in vars(Engine) and "lookupCommand" in vars(Engine)
    run = [Server.parse_pending, Server.arg_line]
    assert [text for function in run for text in _raised(function)] == []
    parsers = set()
    for klass in IMAPServer.__mro__:
        if klass.__module__.startswith("twisted."):
            continue
        for name, entry in vars(klass).items():
            if re.fullmatch(r"(unauth|auth|select)_[A-Z]+", name):
                parsers.update(entry[1:])
    twisted = {parser for parser in parsers if getattr(parser, "__module__", "").startswith("twisted.")}
    assert twisted == {Server.arg_line}


def test_none_of_our_imap_modules_raises_twisted_errors():
    for path in PACKAGE.glob("*.py"):
        if path.name != "engine.py":
            assert "IllegalClientResponse" not in path.read_text(), path.name


@pytest.mark.parametrize(
    "error, expected",
    [
        (Bad(b"Invalid sequence set"), (BAD, b"Invalid sequence set")),
        (NoSuchMailbox("x"), (Nonexistent.status, Nonexistent.text)),
        (TooManyArguments(), (BAD, b"Too many arguments")),
    ],
)
def test_every_known_failure_carries_its_response(error, expected):
    known = known_error(error)
    assert isinstance(known, CommandError)
    assert (known.status, known.text) == expected
    assert known.response(b"a1") == Tagged(b"a1", *expected)


def test_an_unexpected_failure_is_not_known():
    assert known_error(ValueError("secret detail")) is None


def test_bads_are_counted_by_the_response_sent_not_its_bytes(store):  # noqa: F811
    from gateway.config import Config, LimitsConfig

    s = Session(store, config=Config(limits=LimitsConfig(max_bad_commands=2)))
    s.read()
    # Untagged data that happens to read "BAD" is no BAD response.
    for _ in range(3):
        s.server.send(Data(b"BAD news in a mailbox name"))
    assert not s.transport.disconnecting
    s.server.send(Condition(BAD, b"Internal error"))
    s.read()
    assert s.command(b"a BOGUS") == [b"a BAD Unsupported command", b"* BYE Too many invalid IMAP commands."]
    assert s.transport.disconnecting
