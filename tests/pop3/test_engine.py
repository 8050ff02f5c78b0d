"""
Where the POP3 server meets Twisted's POP3 (gateway/pop3/engine.py): the
private names of Twisted's it relies on are there alone, and each still
means what the engine takes it to mean in the Twisted installed.
"""

from pathlib import Path

from twisted.mail import pop3 as twisted_pop3
from twisted.protocols.basic import LineOnlyReceiver

import gateway.pop3
from gateway.config import LimitsConfig
from gateway.pop3.engine import Pop3Engine
from gateway.pop3.server import Pop3Server
from tests.pop3.test_hostile import connect, tls_server  # noqa: F401  (fixture)
from tests.twisted_private import private_uses, twisted_source

PACKAGE = Path(gateway.pop3.__file__).parent


def test_twisted_private_names_are_used_in_the_engine_alone():
    assert private_uses(PACKAGE, twisted_pop3.POP3, adapter="engine.py") == {}


def test_the_server_is_built_on_the_engine():
    assert issubclass(Pop3Server, Pop3Engine) and issubclass(Pop3Engine, twisted_pop3.POP3)


def test_line_only_receiver_keeps_unparsed_input_in_buffer():
    # gateway.net.tls.start_tls_discarding_buffer empties ``_buffer`` at
    # STLS, and the engine's framing keeps a partial line there for it.
    assert "self._buffer" in twisted_source(LineOnlyReceiver.dataReceived)
    assert LineOnlyReceiver._buffer == b""


def test_the_queue_is_the_engines_own():
    # ``blocked`` is the name start_tls_discarding_buffer empties (Twisted's
    # IMAP4Server has one too); the engine sets it up, not Twisted's default.
    engine = Pop3Engine(None, LimitsConfig())
    assert engine.blocked is None


def test_a_partial_line_pipelined_behind_stls_is_dropped(tls_server):  # noqa: F811
    s = connect(tls_server)
    s.read()
    s.send(b"STLS\r\nUSER al")
    assert s.read() == b"+OK Begin TLS negotiation\r\n"
    # Were "USER al" kept, this would complete it into "USER alice".
    assert s.ask(b"ice") == b"-ERR Unknown command\r\n"
