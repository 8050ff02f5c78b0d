import re

from twisted.logger import formatEvent, globalLogPublisher

from gateway.policy import authlog

FAIL2BAN = re.compile(r"^login failed: protocol=\S+ user=\S+ ip=(?P<host>\S+) reason=\S+$")


def capture(action):
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        action()
    finally:
        globalLogPublisher.removeObserver(events.append)
    return [formatEvent(e) for e in events if e.get("log_namespace") == "gateway.auth"]


def test_failure_line_matches_a_fail2ban_regex():
    (line,) = capture(lambda: authlog.login_failed("pop3", b"alice", "192.0.2.7", "bad-credentials"))
    assert FAIL2BAN.match(line).group("host") == "192.0.2.7"


def test_hostile_user_name_cannot_forge_a_line():
    (line,) = capture(lambda: authlog.login_failed("imap", "x\nlogin ok: user=root ip=1.1.1.1", "10.0.0.1", "bad"))
    assert "\n" not in line and " ip=10.0.0.1 " in line
    assert FAIL2BAN.match(line)


def test_success_line():
    (line,) = capture(lambda: authlog.login_succeeded("imap", "alice", "::1"))
    assert line == "login ok: protocol=imap user=alice ip=::1"
