"""
The server configuration: a TOML file read into frozen attrs values.

Every key is optional and every unknown section or key is an error, so a typo
stops the server with one line naming the file, the key and the problem
instead of silently running with a default.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Iterable
from os import PathLike
from typing import Any, NoReturn

import attrs

from gateway.uidl import DEFAULT_FORMAT, UidlFormat, UidlFormatError


class ConfigError(Exception):
    """The configuration is unusable; str() is one line: file: key: problem."""


@attrs.frozen
class ListenersConfig:
    """Twisted server endpoint strings per protocol; empty disables it."""

    pop3: tuple[str, ...] = ("tcp:1110:interface=127.0.0.1",)
    imap: tuple[str, ...] = ("tcp:1143:interface=127.0.0.1",)
    lmtp: tuple[str, ...] = ("tcp:2424:interface=127.0.0.1",)


@attrs.frozen
class Pop3Config:
    uidl_format: str = DEFAULT_FORMAT
    # RFC 2449/3206: a second concurrent session gets -ERR [IN-USE].
    lock_session: bool = True
    retr_sets_seen: bool = True
    # RFC 1939 3: an autologout timer "of at least 10 minutes".
    idle_timeout: int = 600
    uidl: UidlFormat = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "uidl", UidlFormat.parse(self.uidl_format))


@attrs.frozen
class ImapConfig:
    # RFC 3501 5.4: an autologout timer "of at least 30 minutes".
    idle_timeout: int = 1800


@attrs.frozen
class AuthConfig:
    failure_delay: float = 2.0


@attrs.frozen
class Config:
    hostname: str = "localhost"
    listeners: ListenersConfig = ListenersConfig()
    pop3: Pop3Config = Pop3Config()
    imap: ImapConfig = ImapConfig()
    auth: AuthConfig = AuthConfig()

    @property
    def uidl(self) -> UidlFormat:
        return self.pop3.uidl

    def with_listeners(
        self,
        pop3: Iterable[str] | None = None,
        imap: Iterable[str] | None = None,
        lmtp: Iterable[str] | None = None,
    ) -> Config:
        """A copy where the given listener lists replace the configured ones."""
        overrides = {
            name: tuple(endpoints)
            for name, endpoints in (("pop3", pop3), ("imap", imap), ("lmtp", lmtp))
            if endpoints is not None
        }
        return attrs.evolve(self, listeners=attrs.evolve(self.listeners, **overrides))


DEFAULT_TOML = """\
# gateway configuration.  Every option is shown with its default value;
# uncomment and edit to change it.  Unknown sections or keys are errors.

# Name used in greetings and in LMTP replies.
# hostname = "localhost"

[listeners]
# Twisted server endpoint strings, a string or a list of strings; [] disables
# the protocol.  The default serves loopback only.  Examples:
#   "tcp:110"                                   every address, plain text
#   "ssl:995:privateKey=key.pem:certKey=cert.pem"   implicit TLS
# pop3 = ["tcp:1110:interface=127.0.0.1"]
# imap = ["tcp:1143:interface=127.0.0.1"]
# lmtp = ["tcp:2424:interface=127.0.0.1"]

[pop3]
# UIDL format in Dovecot's pop3_uidl_format notation (2.3 %08Xu%08Xv or 2.4
# %{uid | hex(8)}%{uidvalidity | hex(8)}).  The default matches Dovecot's, so
# POP3 clients of a mailbox migrated with its UIDs download nothing again.
# Other common choices: "%v.%u" (Cyrus), "%v-%u" (Courier), "%08Xv%08Xu" (UW).
# uidl_format = "%08Xu%08Xv"
# A second concurrent POP3 session on one maildrop gets -ERR [IN-USE].
# lock_session = true
# RETR marks the message \\Seen (as IMAP sees it).
# retr_sets_seen = true
# Seconds of inactivity before the session is closed; RFC 1939 asks for at
# least 10 minutes.
# idle_timeout = 600

[imap]
# Seconds of inactivity before the session is closed; RFC 3501 5.4 asks for
# at least 30 minutes.
# idle_timeout = 1800

[auth]
# Seconds to wait before answering a failed login.
# failure_delay = 2.0
"""


def load(path: str | PathLike[str]) -> Config:
    source = str(path)
    try:
        with open(path, "rb") as config_file:
            text = config_file.read().decode("utf-8")
    except OSError as error:
        raise ConfigError(f"{source}: cannot read: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{source}: not UTF-8: {error.reason} at byte {error.start}") from None
    return loads(text, source)


def loads(text: str, source: str = "<string>") -> Config:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source}: invalid TOML: {error}") from None
    return _Reader(source).config(document)


@attrs.define
class _Reader:
    """Turns a parsed TOML document into a Config, naming the culprit key."""

    source: str

    def config(self, document: dict[str, Any]) -> Config:
        sections: dict[str, tuple[type, dict[str, Callable[[str, Any], Any]]]] = {
            "listeners": (
                ListenersConfig,
                {"pop3": self.endpoints, "imap": self.endpoints, "lmtp": self.endpoints},
            ),
            "pop3": (
                Pop3Config,
                {
                    "uidl_format": self.uidl_format,
                    "lock_session": self.boolean,
                    "retr_sets_seen": self.boolean,
                    "idle_timeout": self.seconds,
                },
            ),
            "imap": (ImapConfig, {"idle_timeout": self.seconds}),
            "auth": (AuthConfig, {"failure_delay": self.delay}),
        }
        values: dict[str, Any] = {}
        for key, value in document.items():
            if key == "hostname":
                values[key] = self.hostname(key, value)
            elif key in sections:
                section_class, readers = sections[key]
                values[key] = section_class(**self.section(key, value, readers))
            else:
                known = ", ".join(["hostname", *(f"[{name}]" for name in sections)])
                self.fail(key, f"unknown key (known: {known})")
        return Config(**values)

    def section(
        self, name: str, table: Any, readers: dict[str, Callable[[str, Any], Any]]
    ) -> dict[str, Any]:
        if not isinstance(table, dict):
            self.fail(name, f"must be a table ([{name}]), not {_kind(table)}")
        values = {}
        for key, value in table.items():
            dotted = f"{name}.{key}"
            if key not in readers:
                self.fail(dotted, f"unknown key (known: {', '.join(readers)})")
            values[key] = readers[key](dotted, value)
        return values

    def fail(self, key: str, problem: str) -> NoReturn:
        raise ConfigError(f"{self.source}: {key}: {problem}")

    def hostname(self, key: str, value: Any) -> str:
        if not isinstance(value, str):
            self.fail(key, f"must be a string, not {_kind(value)}")
        if not value or not value.isascii() or not all(c.isalnum() or c in ".-_" for c in value):
            self.fail(key, f"{value!r} is not a host name (letters, digits, '.', '-', '_')")
        return value

    def endpoints(self, key: str, value: Any) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            self.fail(key, f"must be an endpoint string or a list of them, not {_kind(value)}")
        for index, endpoint in enumerate(items):
            where = key if isinstance(value, str) else f"{key}[{index}]"
            if not isinstance(endpoint, str):
                self.fail(where, f"endpoint must be a string, not {_kind(endpoint)}")
            if not endpoint.strip() or any(c.isspace() for c in endpoint):
                self.fail(where, f"{endpoint!r} is not an endpoint string (e.g. \"tcp:110\")")
        return tuple(items)

    def uidl_format(self, key: str, value: Any) -> str:
        if not isinstance(value, str):
            self.fail(key, f"must be a string, not {_kind(value)}")
        try:
            UidlFormat.parse(value)
        except UidlFormatError as error:
            self.fail(key, str(error))
        return value

    def boolean(self, key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, not {_kind(value)}")
        return value

    def seconds(self, key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"must be a whole number of seconds, not {_kind(value)}")
        if value <= 0:
            self.fail(key, f"must be positive, not {value}")
        return value

    def delay(self, key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(key, f"must be a number of seconds, not {_kind(value)}")
        if not math.isfinite(value) or value < 0:
            self.fail(key, f"must be zero or more seconds, not {value}")
        return float(value)


def _kind(value: Any) -> str:
    """How a TOML value is named in error messages."""
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    names = {str: "a string", int: "an integer", float: "a float"}
    return f"{names.get(type(value), 'a date/time')} ({value!r})"
