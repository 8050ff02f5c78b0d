"""
One log line per login attempt, the same for every protocol, in a form
fail2ban can match::

    login ok: protocol=imap user=alice ip=192.0.2.7
    login failed: protocol=pop3 user=alice ip=192.0.2.7 reason=bad-credentials

The user name is what the client sent, reduced to printable ASCII so that a
hostile name cannot forge a second line; passwords never reach this module.
"""

from __future__ import annotations

from twisted.logger import Logger

from gateway.net import metrics

log = Logger(namespace="gateway.auth")

_MAX_USER = 64


def printable(text: str | bytes | None) -> str:
    if text is None:
        return "-"
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    cleaned = "".join(c if 0x21 <= ord(c) < 0x7F else "?" for c in text[:_MAX_USER])
    return cleaned or "-"


def login_succeeded(protocol: str, user, ip: str) -> None:
    metrics.count_login(protocol, ok=True)
    log.info("login ok: protocol={protocol} user={user} ip={ip}", login_result="ok", **_fields(protocol, user, ip))


def login_failed(protocol: str, user, ip: str, reason: str) -> None:
    metrics.count_login(protocol, ok=False)
    log.warn(
        "login failed: protocol={protocol} user={user} ip={ip} reason={reason}",
        reason=reason,
        login_result="failed",
        **_fields(protocol, user, ip),
    )


def _fields(protocol: str, user, ip: str) -> dict[str, str]:
    return {"protocol": protocol, "user": printable(user), "ip": printable(ip)}
