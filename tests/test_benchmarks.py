"""
The benchmark kit (benchmarks/): the corpus is the same bytes every time, and
the load generator really drives the gateway over loopback.
"""

from __future__ import annotations

import asyncio
import email
import email.policy

import attrs
import pytest

from benchmarks import corpus
from benchmarks.load import populate, run_scenarios
from benchmarks.report import Outcomes, table
from benchmarks.scenarios import SCENARIOS, Settings, Target, Users
from gateway.auth import hash_password
from tests.serverproc import GatewayProcess


def test_corpus_is_deterministic_per_seed():
    first = corpus.corpus(30, seed=5)
    assert first == corpus.corpus(30, seed=5)
    assert first != corpus.corpus(30, seed=6)
    # Message i does not depend on how many were asked for.
    assert corpus.corpus(10, seed=5) == first[:10]


def test_corpus_mixes_small_multipart_and_attachments():
    messages = corpus.corpus(60, seed=0)
    kinds = set()
    for raw in messages:
        assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only, as on the wire
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert parsed["Message-ID"] and parsed["Date"] and parsed["From"]
        if parsed.get_content_type() == "multipart/mixed":
            assert any(part.is_attachment() for part in parsed.iter_parts())
        kinds.add(parsed.get_content_type())
    assert kinds == {"text/plain", "multipart/alternative", "multipart/mixed"}


def test_big_message_has_the_asked_size():
    message = corpus.big_message(2_000_000)
    assert abs(len(message) - 2_000_000) < 2_000
    assert email.message_from_bytes(message).get_content_type() == "multipart/mixed"


def test_table_shows_medians_ratios_and_errors():
    outcomes = Outcomes()
    for value in (100.0, 300.0, 200.0):
        outcomes.add("imap FETCH header set", "dovecot", {"msg/s": value})
        outcomes.add("imap FETCH header set", "gateway", {"msg/s": value / 2})
    outcomes.fail("pop3 login rate", "gateway", "ProtocolError: POP3: -ERR [AUTH] Authentication failed")
    outcomes.add("pop3 login rate", "dovecot", {"logins/s": 5.0})
    text = table(outcomes, SCENARIOS, ["dovecot", "gateway"])
    assert "| imap FETCH header set | msg/s (higher is better) | 200 | 100 | 0.50x |" in text
    assert "| pop3 login rate | logins/s (higher is better) | 5.00 | FAILED: ProtocolError: POP3: -ERR [AUTH] Authentication failed | - |" in text


@pytest.fixture
def gateway(tmp_path):
    users = Users(bulk=("bulk1",), poll=("poll001", "poll002"), idle="idler", sink="sink", big="big",
                  password="bench-password")
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    stored = hash_password(users.password)
    names = [*users.bulk, *users.poll, users.idle, users.sink, users.big]
    (data / "users").write_text("".join(f"{name}:{stored}\n" for name in names))
    (data / "users").chmod(0o600)
    with GatewayProcess(data) as server:
        yield server, users


def test_load_generator_drives_the_gateway(gateway):
    server, users = gateway
    target = Target("127.0.0.1", server.port("pop3"), server.port("imap"), server.port("lmtp"), users)
    settings = attrs.evolve(Settings(), duration=0.2, push_sessions=5, push_rounds=1, cap=15.0)
    names = ["pop3 UIDL+RETR, 1 conn", "imap FETCH header set", "IDLE push latency"]

    async def scenario_run():
        await populate(target.host, target.lmtp, users, messages=12, poll_messages=2)
        return await run_scenarios({"gateway": target}, settings, 1, names, log=lambda text: None)

    outcomes = asyncio.run(scenario_run())
    assert outcomes.errors == {}
    assert outcomes.median("pop3 UIDL+RETR, 1 conn", "gateway", "msg/s") > 0
    assert outcomes.median("pop3 UIDL+RETR, 1 conn", "gateway", "MB/s") > 0
    assert outcomes.median("imap FETCH header set", "gateway", "msg/s") > 0
    assert outcomes.median("IDLE push latency", "gateway", "missed") == 0
    assert 0 < outcomes.median("IDLE push latency", "gateway", "p99 ms") < 15_000
