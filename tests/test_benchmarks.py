"""
The benchmark kit (benchmarks/): the corpus is the same bytes every time, and
the load generator really drives the gateway over loopback, and its bulk
FETCH reader counts what the line-by-line one counts.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import fcntl
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import attrs
import pytest

from benchmarks import compare, corpus, pagecache, placement, wire
from benchmarks.harness import CpuMeter
from benchmarks.load import prepare, report, run_scenarios
from benchmarks.report import Outcomes, table
from benchmarks.scenarios import SCENARIOS, Settings, Target, UnknownScenario, Users, choose
from benchmarks.servers import CHECKOUT, Gateway, checkout_environment, cpu_seconds, is_checkout
from gateway.auth import hash_password
from tests.serverproc import GatewayProcess


def test_warming_reads_every_regular_file_and_nothing_else(tmp_path):
    (tmp_path / "mail" / "new").mkdir(parents=True)
    (tmp_path / "mail" / "new" / "1").write_bytes(b"x" * 3_000_000)
    (tmp_path / "index").write_bytes(b"y" * 10)
    # A FIFO nobody writes to would block a plain open; a link leads outside.
    os.mkfifo(tmp_path / "mail" / "fifo")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "big").write_bytes(b"z" * 100)
    (tmp_path / "mail" / "link").symlink_to(tmp_path / "elsewhere" / "big")
    assert pagecache.warm(tmp_path / "mail") == 3_000_000
    assert pagecache.warm(tmp_path) == 3_000_110


def _flags(directory: Path) -> int:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        buffer = bytearray(8)
        fcntl.ioctl(fd, placement._GET_FLAGS, buffer, True)
        return int.from_bytes(buffer[:4], "little")
    finally:
        os.close(fd)


@pytest.mark.parametrize("where", ["tmp", "checkout"])
def test_the_servers_files_are_placed_apart_where_the_file_system_can(tmp_path, where):
    """
    Subdirectories of a directory with ext4's top-directory flag are spread
    as the root's are; where the file system has no such flag (tmpfs) the
    reason comes back and nothing changes.
    """
    with tempfile.TemporaryDirectory(dir=tmp_path if where == "tmp" else Path.cwd()) as name:
        directory = Path(name)
        before = _flags(directory)
        note = placement.spread_subdirectories(directory)
        if note is None:
            assert _flags(directory) == before | placement._TOPDIR
            # Asked again, the flag stays and nothing fails.
            assert placement.spread_subdirectories(directory) is None
        else:
            assert str(directory) in note
            assert _flags(directory) == before


def test_placing_apart_a_directory_that_is_gone_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        placement.spread_subdirectories(tmp_path / "gone")


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


def test_reading_flags_leave_a_realistic_inbox():
    flags = dict(corpus.reading_flags(1_000))
    unread = set(range(1, 1_001)) - set(flags["\\Seen"])
    # The newest 5% and every 50th older message are unread.
    assert set(range(951, 1_001)) <= unread and 50 in unread and len(unread) == 50 + 19
    assert flags["\\Answered"][:2] == [7, 14]
    lists = {frozenset(flag for flag, numbers in flags.items() if n in set(numbers)) for n in range(1, 1_001)}
    assert 10 < len(lists) < 64


def test_scenarios_are_chosen_by_key_or_prefix():
    assert [s.key for s in choose(["pop3-first-download"])] == ["pop3-first-download-1", "pop3-first-download-8"]
    assert [s.key for s in choose(["idle-push", "lmtp-4"])] == ["lmtp-4", "idle-push"]
    assert {s.key for s in choose(["large"])} == {
        "large-select", "large-fetch-flags", "large-search-unseen", "large-pop3", "large-mixed"}
    assert choose([]) == SCENARIOS
    with pytest.raises(UnknownScenario, match="pop3-first-download-1"):
        choose(["pop3-first-down"])
    assert len({s.key for s in SCENARIOS}) == len(SCENARIOS)


def test_table_puts_the_worst_realistic_case_first():
    outcomes = Outcomes()
    for value in (100.0, 300.0, 200.0):
        outcomes.add("imap-fetch-headers", "dovecot", {"msg/s": value})
        outcomes.add("imap-fetch-headers", "gateway", {"msg/s": value / 2})
        outcomes.add("pop3-pipelined-1", "dovecot", {"msg/s": value})
        outcomes.add("pop3-pipelined-1", "gateway", {"msg/s": value / 10})
    # Lower is better: four times the memory is worse than half the rate.
    outcomes.add("idle-1k", "dovecot", {"KB/session": 10.0})
    outcomes.add("idle-1k", "gateway", {"KB/session": 40.0})
    outcomes.fail("pop3-login-rate", "gateway", "ProtocolError: POP3: -ERR [AUTH] Authentication failed")
    outcomes.add("pop3-login-rate", "dovecot", {"logins/s": 5.0})
    text = table(outcomes, SCENARIOS, ["dovecot", "gateway"])
    rows = text.splitlines()[2:]
    assert rows[0] == "| idle session SELECTed on 1,000 msgs | KB/session (lower is better) | 10.0 | 40.0 | 4.00x |"
    assert rows[1] == "| imap FETCH header set | msg/s (higher is better) | 200 | 100 | 0.50x |"
    assert rows[2] == ("| pop3 login rate | logins/s (higher is better) | 5.00 | "
                       "FAILED: ProtocolError: POP3: -ERR [AUTH] Authentication failed | - |")
    # The best case comes after every realistic one, however bad it is.
    assert rows[3] == "| pop3 UIDL+RETR pipelined, 1 conn (best case) | msg/s (higher is better) | 200 | 20.0 | 0.10x |"
    assert report(outcomes, SCENARIOS, ["dovecot", "gateway"]).startswith(
        "Worst realistic case: idle session SELECTed on 1,000 msgs, KB/session: gateway 40.0, dovecot 10.0 (4.00x)")


@pytest.fixture
def gateway(tmp_path):
    users = Users(bulk=("bulk1",), poll=("poll001", "poll002"), idle="idler", sink="sink", big="big",
                  password="bench-password", medium="medium", large="large")
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    stored = hash_password(users.password)
    names = [*users.bulk, *users.poll, users.idle, users.sink, users.big, users.medium, users.large]
    (data / "users").write_text("".join(f"{name}:{stored}\n" for name in names))
    (data / "users").chmod(0o600)
    with GatewayProcess(data) as server:
        yield server, users


def test_load_generator_drives_the_gateway(gateway):
    server, users = gateway
    target = Target("127.0.0.1", server.port("pop3"), server.port("imap"), server.port("lmtp"), users,
                    pid=server.process.pid)
    settings = attrs.evolve(Settings(), duration=0.2, first_run_passes=2, push_sessions=5, push_rounds=1,
                            mailbox_idle_sessions=4, mixed_clients=2, cap=15.0)
    scenarios = choose(["pop3-first-download-1", "pop3-fetchmail-1", "pop3-pipelined-1", "imap-first-sync-1",
                        "imap-fetch-headers", "imap-fetch-bodies",
                        "imap-fetch-compressed", "idle-push", "idle-1k", "large", "lmtp-1"])

    async def scenario_run():
        await prepare(target.host, target.lmtp, target.imap, users, messages=12, poll_messages=2,
                      medium_messages=30, large_messages=60)
        return await run_scenarios({"gateway": target}, settings, 1, scenarios, log=lambda text: None)

    outcomes = asyncio.run(scenario_run())
    assert outcomes.errors == {}
    for key, metric in [("pop3-first-download-1", "msg/s"), ("pop3-first-download-1", "MB/s"),
                        ("pop3-fetchmail-1", "msg/s"), ("imap-first-sync-1", "msg/s"), ("imap-first-sync-1", "MB/s"),
                        ("pop3-first-download-1", "CPU us/msg"), ("pop3-pipelined-1", "CPU us/msg"),
                        ("pop3-pipelined-1", "msg/s"), ("imap-fetch-headers", "msg/s"), ("large-mixed", "ops/s")]:
        assert outcomes.median(key, "gateway", metric) > 0, key
    for key in ("large-select", "large-fetch-flags", "large-search-unseen", "large-pop3"):
        assert 0 < outcomes.median(key, "gateway", "ms") < 15_000, key
    assert outcomes.median("idle-1k", "gateway", "KB/session") is not None
    # The same bodies cross the wire in fewer bytes under COMPRESS=DEFLATE (RFC 4978).
    plain = outcomes.median("imap-fetch-bodies", "gateway", "wire bytes/msg")
    assert 0 < outcomes.median("imap-fetch-compressed", "gateway", "wire bytes/msg") < plain
    assert outcomes.median("imap-fetch-compressed", "gateway", "msg/s") > 0
    # No store engines of its own to count.
    assert outcomes.median("pop3-first-download-1", "gateway", "store CPU us/msg") is None
    # A delivery's two waits, told apart.
    assert outcomes.median("lmtp-1", "gateway", "msg/s") > 0
    for name in ("commands ms", "stored ms"):
        assert 0 < outcomes.median("lmtp-1", "gateway", name) < 15_000, name
    assert outcomes.median("idle-push", "gateway", "missed") == 0
    assert 0 < outcomes.median("idle-push", "gateway", "p99 ms") < 15_000


class ScriptedConnection(wire.Connection):
    """What a server sends, in the chunks given, each read when the client asks for more."""

    def __init__(self, chunks):
        self.buffer = bytearray()
        self.received = 0
        self._inflate = self._deflate = None
        self.chunks = list(chunks)

    async def _fill(self):
        if not self.chunks:
            raise wire.ProtocolError("connection closed by server")
        self.buffer += self.chunks.pop(0)

    def write(self, data):
        pass


# A literal holding what looks like a FETCH line and the tagged reply, a
# line with two literals, one of them empty, and an untagged non-FETCH line.
SKIMMED = (
    b"* 1 FETCH (UID 1 BODY[] {22}\r\n* 9 FETCH (X)\r\nb1 OK x)\r\n"
    b"* 2 FETCH (UID 2 FLAGS (\\Seen))\r\n"
    b"* 3 EXISTS\r\n"
    b"* 3 FETCH (BODY[HEADER] {0}\r\n BODY[TEXT] {5}\r\nab\r\nc)\r\n"
    b"b1 OK FETCH completed\r\n"
    b"* 4 EXISTS\r\n"
)


def skim(chunks, command=b"FETCH 1:* ALL"):
    """The count, and what is left for the next command to read."""
    imap = wire.Imap(ScriptedConnection(chunks))
    return asyncio.run(imap.skim(command)), bytes(imap.connection.buffer) + b"".join(imap.connection.chunks)


@pytest.mark.parametrize("split", range(1, len(SKIMMED)))
def test_the_bulk_fetch_reader_counts_what_the_line_reader_counts_wherever_reads_end(split):
    line_reader = wire.Imap(ScriptedConnection([SKIMMED]))
    line_reader.send(b"FETCH 1:* ALL")
    _, expected = asyncio.run(line_reader.response(b"b1", keep=False))
    assert expected == 3
    assert skim([SKIMMED[:split], SKIMMED[split:]]) == (3, b"* 4 EXISTS\r\n")


def test_the_bulk_fetch_reader_byte_by_byte_and_when_nothing_is_fetched():
    assert skim([SKIMMED[i:i + 1] for i in range(len(SKIMMED))]) == (3, b"* 4 EXISTS\r\n")
    assert skim([b"b1 OK nothing\r\n"]) == (0, b"")


def test_the_bulk_fetch_reader_raises_on_no():
    with pytest.raises(wire.ProtocolError, match="b1 NO"):
        skim([b"* 1 FETCH (UID 1)\r\nb1 NO [SERVERBUG] oops\r\n"])


def test_ratios_are_of_each_run_against_the_other_server_in_that_run():
    # The machine twice as fast in run 2 and three times in run 3: the
    # gateway is 1.5x in two runs of three, 0.9x in one.  Set against each
    # other's medians (180 against 200) it would seem 0.9x.
    outcomes = Outcomes()
    for run, dovecot, gateway in ((1, 100.0, 150.0), (2, 200.0, 180.0), (3, 300.0, 450.0)):
        outcomes.add("imap-mixed", "dovecot", {"ops/s": dovecot}, run)
        outcomes.add("imap-mixed", "gateway", {"ops/s": gateway}, run)
    # A run one server failed has no ratio.
    outcomes.add("imap-mixed", "gateway", {"ops/s": 1.0}, 4)
    outcomes.fail("imap-mixed", "dovecot", "ProtocolError")
    assert outcomes.ratio("imap-mixed", "ops/s", ["dovecot", "gateway"]) == 1.5
    assert table(outcomes, SCENARIOS, ["dovecot", "gateway"]).splitlines()[2] == (
        "| imap mixed, 8 clients | ops/s (higher is better) | 200 (3 ok, 1 failed) | 165 | 1.50x |")


def test_figures_at_or_below_zero_are_not_ranked():
    outcomes = Outcomes()
    outcomes.add("idle-1k", "dovecot", {"KB/session": 520.0})
    outcomes.add("idle-1k", "gateway", {"KB/session": -0.5})
    outcomes.add("imap-mixed", "dovecot", {"ops/s": 100.0})
    outcomes.add("imap-mixed", "gateway", {"ops/s": 90.0})
    text = report(outcomes, SCENARIOS, ["dovecot", "gateway"])
    assert text.startswith("Worst realistic case: imap mixed, 8 clients, ops/s: gateway 90.0, dovecot 100 (0.90x)")
    assert "| idle session SELECTed on 1,000 msgs | KB/session (lower is better) | 520 | -0.50 | - |" in text


def test_server_cpu_per_unit_is_shown_but_never_the_worst_case():
    outcomes = Outcomes()
    outcomes.add("pop3-first-download-1", "dovecot", {"msg/s": 100.0, "CPU us/msg": 100.0})
    outcomes.add("pop3-first-download-1", "gateway", {"msg/s": 90.0, "CPU us/msg": 400.0})
    text = report(outcomes, SCENARIOS, ["dovecot", "gateway"])
    assert text.startswith("Worst realistic case: pop3 first download, 1 client, msg/s: gateway 90.0, dovecot 100")
    assert "| pop3 first download, 1 client | CPU us/msg (lower is better) | 100 | 400 | 4.00x |" in text


def test_cpu_seconds_counts_the_tree_and_the_children_it_reaped():
    # A shell whose child burns a fifth of a second of CPU and is reaped
    # before the shell waits on: the child's time is in the shell's cutime.
    burn = "import time\nend = time.process_time() + 0.2\nwhile time.process_time() < end: pass"
    shell = subprocess.Popen(["sh", "-c", f'"{sys.executable}" -c "{burn}"; echo done; exec sleep 30'],
                             stdout=subprocess.PIPE)
    try:
        assert shell.stdout.readline() == b"done\n"
        assert 0.2 <= cpu_seconds(shell.pid) < 5
    finally:
        shell.kill()
        shell.wait()
        shell.stdout.close()


def test_server_cpu_is_measured_finer_than_a_clock_tick():
    # A short run of a fast server spends less than one 10 ms tick: counted
    # in ticks it would read as no CPU at all, or as a whole tick (other
    # threads of this process may add a little).
    before = cpu_seconds(os.getpid())
    start = time.thread_time()
    while time.thread_time() - start < 0.004:
        pass
    spent = cpu_seconds(os.getpid()) - before
    assert 0.0036 <= spent < 0.0099


def _burn(seconds: float) -> None:
    start = time.thread_time()
    while time.thread_time() - start < seconds:
        pass


def test_server_cpu_adds_up_its_windows_and_leaves_out_what_is_between():
    # The first downloads: a pass of messages, then the unread marking and
    # a login off the clock, then the next pass.
    target = Target("127.0.0.1", 0, 0, 0, compare.make_users(compare.QUICK), pid=os.getpid())
    meter = CpuMeter(target, "CPU us/msg")
    for _ in range(2):
        meter.start()
        _burn(0.01)
        asyncio.run(meter.stop(10))
        _burn(0.05)
    # 20 ms over 20 messages; 120 ms had the gaps counted.
    assert 1000 <= meter.metrics()["CPU us/msg"] < 1500


def test_the_gateway_under_test_is_the_checkout_of_the_benchmarks(tmp_path, monkeypatch):
    # Another gateway the interpreter would find first (as the checkout a
    # shared virtualenv was installed from): the server must not run it.
    other = tmp_path / "other"
    (other / "gateway").mkdir(parents=True)
    (other / "gateway" / "__init__.py").write_text("")
    monkeypatch.setenv("PYTHONPATH", str(other))
    probe = [sys.executable, "-P", "-c", "import gateway, sys; sys.stdout.write(gateway.__file__)"]
    found = subprocess.run(probe, cwd=tmp_path, env=checkout_environment(), capture_output=True, check=True)
    assert Path(found.stdout.decode()) == CHECKOUT / "gateway" / "__init__.py"


def test_a_gateway_of_another_checkout_runs_that_checkout(tmp_path, monkeypatch):
    # benchmarks.compare --against: the baseline's processes import the
    # other checkout's gateway, not this one's.
    other = tmp_path / "other"
    (other / "gateway").mkdir(parents=True)
    (other / "gateway" / "__init__.py").write_text("")
    (other / "twisted" / "plugins").mkdir(parents=True)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    assert is_checkout(other) and is_checkout(CHECKOUT)
    baseline = Gateway(tmp_path / "baseline", {}, 1, name="baseline", checkout=other)
    probe = [sys.executable, "-P", "-c", "import gateway, sys; sys.stdout.write(gateway.__file__)"]
    found = subprocess.run(probe, cwd=tmp_path, env=checkout_environment(baseline.checkout), capture_output=True,
                           check=True)
    assert Path(found.stdout.decode()) == other / "gateway" / "__init__.py"


@pytest.mark.parametrize("arguments, error", [
    (["--against", "{tmp}"], "not a gateway checkout"),
    (["--against", "{checkout}", "--server", "gateway"], "leave out --server"),
    (["--against", "{checkout}", "--backend", "postgresql"], "--backend sqlite only"),
    (["--parse", "first-fetch", "--backend", "postgresql"], "--backend sqlite only"),
    (["--parse", "never"], "invalid choice: 'never'"),
])
def test_compare_against_refuses_what_it_cannot_compare(tmp_path, capsys, arguments, error):
    arguments = [a.format(tmp=tmp_path, checkout=CHECKOUT) for a in arguments]
    with pytest.raises(SystemExit) as exited:
        compare.main(["--only", "pop3-login-rate", *arguments])
    assert exited.value.code == 2
    assert error in capsys.readouterr().err
