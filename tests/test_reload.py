import imaplib
import os
import poplib
import signal
import socket
import time

import smtplib

import pytest
from prometheus_client import CollectorRegistry
from twisted.logger import formatEvent, globalLogPublisher

from gateway.net import metrics
from gateway.auth import UsersFile
from gateway.config import Config, load, loads
from gateway.reload import ConfigReloader, LiveConfig, plan_reload
from tests.serverproc import LOOPBACK, GatewayProcess, run_gateway


@pytest.fixture
def logged():
    events = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def texts(events):
    return [formatEvent(event) for event in events if event.get("log_namespace") == "gateway.reload"]


def test_plan_takes_live_options():
    running = Config()
    loaded = loads("[auth]\nfailure_delay = 0.5\n[limits]\nmax_connections_per_ip = 3\n[pop3]\nidle_timeout = 900\n")
    plan = plan_reload(running, loaded)
    assert plan.config == loaded
    assert plan.applied == ("pop3.idle_timeout", "auth.failure_delay", "limits.max_connections_per_ip")
    assert plan.needs_restart == () and plan.refused == ()


def test_plan_keeps_restart_only_options():
    running = Config()
    loaded = loads(
        'hostname = "mail.example.org"\n[listeners]\nimap = "tcp:143"\n[tls]\nkey = "k.pem"\n'
        '[proxy]\ntrusted = ["10.0.0.0/8"]\n[imap]\nidle_timeout = 3600\n'
    )
    plan = plan_reload(running, loaded)
    assert plan.needs_restart == ("hostname", "listeners.imap", "tls.key", "proxy.trusted")
    assert plan.applied == ("imap.idle_timeout",)
    assert plan.config.hostname == "localhost"
    assert plan.config.listeners == running.listeners
    assert plan.config.tls == running.tls
    assert plan.config.proxy == running.proxy
    assert plan.config.imap.idle_timeout == 3600


def test_plan_takes_lmtp_options_live():
    # Every LMTP session reads [lmtp] when it connects (LMTPFactory).
    loaded = loads("[lmtp]\nmax_message_size = 1000000\nsave_to_detail_mailbox = true\n")
    plan = plan_reload(Config(), loaded)
    assert plan.applied == ("lmtp.max_message_size", "lmtp.save_to_detail_mailbox")
    assert plan.needs_restart == () and plan.config == loaded


def test_plan_refuses_a_new_uidl_format():
    running = Config()
    loaded = loads('[pop3]\nuidl_format = "%v.%u"\nretr_sets_seen = false\n')
    plan = plan_reload(running, loaded)
    assert plan.refused == ("pop3.uidl_format",)
    assert plan.applied == ("pop3.retr_sets_seen",)
    assert plan.config.pop3.uidl_format == "%08Xu%08Xv"
    # The derived formatter follows the kept format, not the refused one.
    assert plan.config.uidl.format(0x6B086FFD, 1) == "000000016b086ffd"
    assert plan.config.pop3.retr_sets_seen is False


def test_plan_refuses_a_new_hidden_flag():
    plan = plan_reload(Config(), loads('[pop3]\nhidden_flag = "$Gone"\ndelete_policy = "hide"\n'))
    assert plan.refused == ("pop3.hidden_flag",)
    assert plan.applied == ("pop3.delete_policy",)
    assert plan.config.pop3.hidden_flag == Config().pop3.hidden_flag
    assert plan.config.pop3.delete_policy == "hide"


def test_plan_of_the_same_config_changes_nothing():
    plan = plan_reload(Config(), Config())
    assert (plan.applied, plan.needs_restart, plan.refused) == ((), (), ())


def test_live_config_reads_the_current_config():
    live = LiveConfig(Config())
    assert live.auth.failure_delay == 2.0
    live.current = loads("[auth]\nfailure_delay = 0\n")
    assert live.auth.failure_delay == 0.0
    assert live.uidl.format(1, 2) == "0000000200000001"


class FakeReactor:
    def __init__(self):
        self.calls = []

    def callFromThread(self, f, *args):
        self.calls.append((f, args))


def make_reloader(tmp_path, text, applied):
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    users = UsersFile(tmp_path / "users")
    live = LiveConfig(loads(text))
    reloader = ConfigReloader(live, lambda: load(path), applied.append, users, FakeReactor())
    return reloader, live, path, users


def test_reload_applies_and_logs_what_changed(tmp_path, logged):
    applied = []
    reloader, live, path, _ = make_reloader(tmp_path, "", applied)
    path.write_text("[auth]\nfailure_delay = 0.25\n[listeners]\npop3 = 'tcp:110'\n")
    assert reloader.reload("test") is True
    assert live.auth.failure_delay == 0.25
    assert live.listeners.pop3 == ("tcp:1110:interface=127.0.0.1",)
    assert applied == [live.current]
    lines = texts(logged)
    assert "Config reload (test): listeners.pop3 changed, needs a restart to take effect" in lines
    assert "Config reloaded (test): auth.failure_delay" in lines


def test_broken_config_keeps_the_running_one_and_says_why(tmp_path, logged):
    applied = []
    registry_metrics = metrics.Metrics(CollectorRegistry())
    previous = metrics.activate(registry_metrics)
    try:
        reloader, live, path, _ = make_reloader(tmp_path, "[auth]\nfailure_delay = 0.5\n", applied)
        running = live.current
        path.write_text("[auth]\nfailure_delay = -1\n")
        assert reloader.reload("SIGHUP") is False
        assert live.current is running
        assert applied == []
        assert registry_metrics.registry.get_sample_value("gateway_config_last_reload_successful") == 0
        path.write_text("[auth]\nfailure_delay = 1\n")
        assert reloader.reload("SIGHUP") is True
        assert registry_metrics.registry.get_sample_value("gateway_config_last_reload_successful") == 1
    finally:
        metrics.activate(previous)
    assert (
        f"Config not reloaded (SIGHUP), keeping the running one: {path}: auth.failure_delay: "
        "must be zero or more seconds, not -1" in texts(logged)
    )


def test_refused_uidl_format_is_logged(tmp_path, logged):
    reloader, live, path, _ = make_reloader(tmp_path, "", [])
    path.write_text('[pop3]\nuidl_format = "%v-%u"\n')
    assert reloader.reload("SIGHUP") is True
    assert live.pop3.uidl_format == "%08Xu%08Xv"
    assert any(line.startswith("Config reload (SIGHUP): pop3.uidl_format not changed: a new UIDL format")
               for line in texts(logged))


def test_networks_reload_where_they_are_read_at_each_login(tmp_path, logged):
    reloader, live, path, _ = make_reloader(
        tmp_path, '[networks]\nscanners = ["192.0.2.0/25"]\n[auth]\nplaintext_without_tls = ["scanners"]\n', [])
    assert "192.0.2.200" not in live.plaintext_networks
    path.write_text('[networks]\nscanners = ["192.0.2.0/24"]\n[auth]\nplaintext_without_tls = ["scanners"]\n')
    assert reloader.reload("SIGHUP") is True
    assert "192.0.2.200" in live.plaintext_networks
    assert "Config reloaded (SIGHUP): networks" in texts(logged)


def test_a_network_a_restart_only_option_still_uses_cannot_go_at_a_reload(tmp_path, logged):
    text = '[networks]\nbalancers = ["10.0.0.2"]\n[proxy]\ntrusted = ["balancers"]\n'
    reloader, live, path, _ = make_reloader(tmp_path, text, [])
    running = live.current
    # [proxy] keeps its running value until a restart, and it names
    # "balancers", which the new file no longer has.
    path.write_text('[proxy]\ntrusted = ["10.0.0.2"]\n')
    assert reloader.reload("SIGHUP") is False
    assert live.current is running
    assert ("Config not reloaded (SIGHUP), keeping the running one: proxy.trusted[0]: "
            "unknown network 'balancers' (known: local)") in texts(logged)


def test_reload_reads_the_users_file(tmp_path, logged):
    reloader, _, _, users = make_reloader(tmp_path, "", [])
    writer = UsersFile(tmp_path / "users")
    writer.add("alice", "secret")
    # Same inode, size and mtime would hide the change from the stat check;
    # SIGHUP reads the file whatever its stamp.
    stat = os.stat(tmp_path / "users")
    users._stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    reloader.reload("SIGHUP")
    assert "alice" in users


def test_bad_users_file_keeps_the_previous_users(tmp_path, logged):
    reloader, _, _, users = make_reloader(tmp_path, "", [])
    UsersFile(tmp_path / "users").add("alice", "secret")
    users.load()
    (tmp_path / "users").write_bytes(b"\xff\n")
    reloader.reload("SIGHUP")
    assert "alice" in users
    assert any(line.startswith("Users file not reloaded (SIGHUP), keeping the previous users:")
               for line in texts(logged))


def test_sighup_schedules_a_reload_and_chains_the_previous_handler(tmp_path):
    called = []
    original = signal.signal(signal.SIGHUP, lambda signum, frame: called.append(signum))
    try:
        reloader, _, _, _ = make_reloader(tmp_path, "", [])
        reloader.startService()
        os.kill(os.getpid(), signal.SIGHUP)
        assert reloader.reactor.calls == [(reloader.reload, ("SIGHUP",))]
        assert called == [signal.SIGHUP]
        reloader.stopService()
        assert signal.getsignal(signal.SIGHUP) is not reloader._on_hangup
        os.kill(os.getpid(), signal.SIGHUP)
        assert called == [signal.SIGHUP, signal.SIGHUP]
    finally:
        signal.signal(signal.SIGHUP, original)


# -- end to end: a real twistd, a real SIGHUP --------------------------------


def wait_for_log(server, text, count=1):
    """Bounded wait until ``text`` appears ``count`` times in the server log."""
    for _ in range(600):
        if server.log().count(text) >= count:
            return
        time.sleep(0.05)
    pytest.fail(f"{text!r} not logged {count} time(s); log:\n{server.log()[-3000:]}")


def imap_greeting(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        return sock.makefile("rb").readline()


def test_sighup_applies_a_new_limit_without_dropping_sessions(tmp_path):
    config = tmp_path / "gateway.toml"
    config.write_text("[auth]\nfailure_delay = 0\n[limits]\nmax_connections_per_ip = 50\n")
    data = tmp_path / "data"
    run_gateway(data, "user", "add", "alice", input=b"secret\n")
    with GatewayProcess(data, config=config, extra_args=["--metrics", LOOPBACK]) as server:
        server.deliver("alice", b"Subject: one\r\n\r\nbody\r\n")
        pop = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=10)
        pop.user("alice")
        pop.pass_("secret")
        uidls = pop.uidl()[1]
        pop.quit()
        session = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=10)
        session.login("alice", "secret")
        session.select("INBOX")

        config.write_text("[auth]\nfailure_delay = 0\n[limits]\nmax_connections_per_ip = 2\n")
        server.process.send_signal(signal.SIGHUP)
        wait_for_log(server, "Config reloaded (SIGHUP): limits.max_connections_per_ip")
        # The open session goes on; one more connection fits, the next not.
        assert session.noop()[0] == "OK"
        assert session.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[0] == "OK"
        second = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=10)
        assert imap_greeting(server.port("imap")) == b"* BYE Too many connections\r\n"
        second.logout()

        # A broken config changes nothing, and the log says why.
        config.write_text("[limits]\nmax_connections_per_ip = 0\n")
        server.process.send_signal(signal.SIGHUP)
        wait_for_log(server, "Config not reloaded (SIGHUP), keeping the running one: ")
        assert f"{config}: limits.max_connections_per_ip: must be positive, not 0" in server.log()
        second = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=10)
        assert imap_greeting(server.port("imap")) == b"* BYE Too many connections\r\n"
        second.logout()
        status = run_gateway(data, "status").stdout.decode()
        assert "config: the last reload was refused" in status

        # A longer failure delay holds the next failed login at least that long.
        config.write_text("[auth]\nfailure_delay = 1.5\n[limits]\nmax_connections_per_ip = 2\n")
        server.process.send_signal(signal.SIGHUP)
        wait_for_log(server, "Config reloaded (SIGHUP): auth.failure_delay")
        pop = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=10)
        pop.user("alice")
        started = time.monotonic()
        with pytest.raises(poplib.error_proto):
            pop.pass_("wrong")
        assert time.monotonic() - started >= 1.5
        pop.quit()
        assert session.noop()[0] == "OK"

        # A new UIDL format is refused: POP3 clients see the same UIDLs.
        config.write_text('[auth]\nfailure_delay = 0\n[pop3]\nuidl_format = "%v.%u"\n')
        server.process.send_signal(signal.SIGHUP)
        wait_for_log(server, "Config reload (SIGHUP): pop3.uidl_format not changed")
        wait_for_log(server, "Config reloaded (SIGHUP): auth.failure_delay, limits.max_connections_per_ip")
        pop = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=10)
        pop.user("alice")
        pop.pass_("secret")
        assert pop.uidl()[1] == uidls
        pop.quit()
        assert session.noop()[0] == "OK"
        session.logout()


def lhlo_size(lmtp: smtplib.LMTP) -> int:
    code, _ = lmtp.ehlo("client.example.org")
    assert code == 250
    return int(lmtp.esmtp_features["size"])


def test_sighup_applies_lmtp_settings_to_the_next_session(tmp_path):
    config = tmp_path / "gateway.toml"
    config.write_text("[lmtp]\nmax_message_size = 100000\n")
    data = tmp_path / "data"
    run_gateway(data, "user", "add", "alice", input=b"secret\n")
    with GatewayProcess(data, config=config, pop3=None, imap=None) as server:
        port = server.port("lmtp")
        with smtplib.LMTP("127.0.0.1", port, timeout=10) as before:
            assert lhlo_size(before) == 100000
            config.write_text("[lmtp]\nmax_message_size = 2000\n")
            server.process.send_signal(signal.SIGHUP)
            wait_for_log(server, "Config reloaded (SIGHUP): lmtp.max_message_size")
            with smtplib.LMTP("127.0.0.1", port, timeout=10) as after:
                assert lhlo_size(after) == 2000
                after.mail("bob@example.org")
                after.rcpt("alice@example.org")
                assert after.data(b"Subject: big\r\n\r\n" + b"x" * 3000 + b"\r\n")[0] == 552
            # The session open at the reload keeps the size it announced.
            before.mail("bob@example.org")
            before.rcpt("alice@example.org")
            assert before.data(b"Subject: big\r\n\r\n" + b"x" * 3000 + b"\r\n")[0] == 250
