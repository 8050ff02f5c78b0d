"""
The server configuration: a TOML file read into frozen attrs values.

Every key is optional and every unknown section or key is an error, so a typo
stops the server with one line naming the file, the key and the problem
instead of silently running with a default.
"""

from __future__ import annotations

import ipaddress
import math
import re
import tomllib
from collections.abc import Callable, Iterable
from os import PathLike
from typing import Any, NoReturn

import attrs

from gateway.pop3.uidl import DEFAULT_FORMAT, UidlFormat, UidlFormatError


# What POP3 DELE does at QUIT (issue 6).
DELETE_POLICIES = ("expunge", "trash", "hide")

# RFC 3501 9: ATOM-CHAR, less the list, quoted and resp specials.
_KEYWORD = re.compile(r"[!#$&'+-Z^-z|~]{1,64}")


class ConfigError(Exception):
    """The configuration is unusable; str() is one line: file: key: problem."""


@attrs.frozen
class ListenersConfig:
    """Twisted server endpoint strings per protocol; empty disables it."""

    pop3: tuple[str, ...] = ("tcp:1110:interface=127.0.0.1",)
    imap: tuple[str, ...] = ("tcp:1143:interface=127.0.0.1",)
    lmtp: tuple[str, ...] = ("tcp:2424:interface=127.0.0.1",)
    # RFC 8314: implicit TLS (995, 993); gateway/net/tls.py wraps these itself.
    pop3s: tuple[str, ...] = ()
    imaps: tuple[str, ...] = ()
    # Prometheus scrapes; off by default so that two servers on one host (or
    # a test suite) never fight over a fixed port.
    metrics: tuple[str, ...] = ()


@attrs.frozen
class Pop3Config:
    uidl_format: str = DEFAULT_FORMAT
    # RFC 2449/3206: a second concurrent session gets -ERR [IN-USE].
    lock_session: bool = True
    retr_sets_seen: bool = True
    # RFC 1939 3: an autologout timer "of at least 10 minutes".
    idle_timeout: int = 600
    # What DELE then QUIT does (RFC 1939 says expunge); see DEFAULT_TOML.
    delete_policy: str = "expunge"
    # Like Dovecot's pop3_deleted_flag: an IMAP keyword.
    hidden_flag: str = "$POP3Deleted"
    # Per-user exceptions to delete_policy, as sorted (user, policy) pairs.
    delete_policy_users: tuple[tuple[str, str], ...] = ()
    uidl: UidlFormat = attrs.field(init=False, repr=False, eq=False)

    def delete_policy_for(self, user: str) -> str:
        for name, policy in self.delete_policy_users:
            if name == user:
                return policy
        return self.delete_policy

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "uidl", UidlFormat.parse(self.uidl_format))


@attrs.frozen
class ImapConfig:
    # RFC 3501 5.4: an autologout timer "of at least 30 minutes".
    idle_timeout: int = 1800


@attrs.frozen
class LmtpConfig:
    # Advertised in LHLO as SIZE (RFC 1870); the same 50 MB as APPENDLIMIT.
    max_message_size: int = 52428800
    # RFC 5321 4.5.3.1.8: at least 100 recipients per transaction.
    max_recipients: int = 100
    # Dovecot's lmtp_save_to_detail_mailbox: user+folder@ delivers into folder.
    save_to_detail_mailbox: bool = False


@attrs.frozen
class AuthConfig:
    failure_delay: float = 2.0
    plaintext_without_tls: bool = False


@attrs.frozen
class TlsConfig:
    """Certificate (leaf first, then intermediates) and key, PEM, relative to the data dir."""

    certificate: str = "tls/cert.pem"
    key: str = "tls/key.pem"


@attrs.frozen
class LimitsConfig:
    max_connections: int = 1000
    max_connections_per_ip: int = 50
    max_connections_per_user: int = 20
    max_line_length: int = 8192
    # RFC 7889 APPENDLIMIT: 50 MB.
    max_literal_size: int = 52428800
    max_nesting: int = 32
    max_bad_commands: int = 20
    # Absolute, from connect to login: a byte-a-second client cannot hold on.
    prelogin_timeout: int = 60
    # Per user at an address (gateway/policy/throttle.py).
    failed_logins_per_ip: int = 10
    failed_login_window: int = 300
    password_checks_per_ip: int = 4
    lockout_exempt_networks: tuple[str, ...] = ()
    # RFC 6177: a subscriber holds a /64 at the least.
    ipv6_prefix: int = 64


@attrs.frozen
class ProxyConfig:
    """Who may name the client's address: PROXY headers, IMAP ID x-originating-ip."""

    trusted: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
    # Like Dovecot's login_trusted_networks; none by default.
    login_trusted_networks: tuple[str, ...] = ()


@attrs.frozen
class Config:
    hostname: str = "localhost"
    listeners: ListenersConfig = ListenersConfig()
    pop3: Pop3Config = Pop3Config()
    imap: ImapConfig = ImapConfig()
    lmtp: LmtpConfig = LmtpConfig()
    auth: AuthConfig = AuthConfig()
    tls: TlsConfig = TlsConfig()
    limits: LimitsConfig = LimitsConfig()
    proxy: ProxyConfig = ProxyConfig()

    @property
    def uidl(self) -> UidlFormat:
        return self.pop3.uidl

    def with_listeners(
        self,
        pop3: Iterable[str] | None = None,
        imap: Iterable[str] | None = None,
        lmtp: Iterable[str] | None = None,
        pop3s: Iterable[str] | None = None,
        imaps: Iterable[str] | None = None,
        metrics: Iterable[str] | None = None,
    ) -> Config:
        """A copy where the given listener lists replace the configured ones."""
        given = {"pop3": pop3, "imap": imap, "lmtp": lmtp, "pop3s": pop3s, "imaps": imaps, "metrics": metrics}
        overrides = {name: tuple(endpoints) for name, endpoints in given.items() if endpoints is not None}
        return attrs.evolve(self, listeners=attrs.evolve(self.listeners, **overrides))


DEFAULT_TOML = """\
# gateway configuration.  Every option is shown with its default value;
# uncomment and edit to change it.  Unknown sections or keys are errors.

# Name used in greetings and in LMTP replies.
# hostname = "localhost"

[listeners]
# Twisted server endpoint strings, a string or a list of strings; [] disables
# the protocol.  The default serves loopback only.  Examples:
#   "tcp:110"                           every address, plain text
#   "tcp:143:interface=192.0.2.10"      one address
#   "haproxy:tcp:143"                   behind a load balancer speaking the
#                                       PROXY protocol (see [proxy])
#   "unix:/run/gateway/lmtp.sock:mode=0660:group=postfix"
#                                       a UNIX socket (the usual way to take
#                                       mail from a local MTA, or to serve a
#                                       local webmail): mode (octal, default
#                                       0600), user and group own it.  A
#                                       socket left by a crash is replaced.
# Implicit TLS (RFC 8314) is pop3s and imaps below, with plain "tcp:"
# endpoints: the server adds TLS itself with the [tls] certificate, so that
# a renewed certificate is picked up without a restart.  Twisted's
# "ssl:995:privateKey=..." endpoints would pin the certificate and are refused.
# pop3 = ["tcp:1110:interface=127.0.0.1"]
# imap = ["tcp:1143:interface=127.0.0.1"]
# lmtp = ["tcp:2424:interface=127.0.0.1"]
# POP3 over implicit TLS, usually "tcp:995".
# pop3s = []
# IMAP over implicit TLS, usually "tcp:993".
# imaps = []
# Prometheus metrics over HTTP at /metrics, also read by `gateway status`.
# Off by default; anyone who reaches it sees the server's counters, so keep it
# on loopback or a monitoring network, e.g. "tcp:9154:interface=127.0.0.1".
# metrics = []

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
# What DELE does once QUIT ends the session: "expunge" removes the message
# (RFC 1939); "trash" moves it to the Trash folder (special-use \\Trash, else
# the folder named Trash, created if missing); "hide" sets hidden_flag on it,
# so POP3 never lists it again while IMAP still shows it.  UIDLs of the other
# messages never change.
# delete_policy = "expunge"
# The IMAP keyword "hide" sets.  Messages carrying it are left out of POP3
# under every policy, so leaving "hide" does not bring them back.
# hidden_flag = "$POP3Deleted"
# Exceptions for some users, as a table of user name to policy: {alice="hide"}
# keeps the mail alice's phone deletes over POP3 in the INBOX her desktop
# reads over IMAP, whatever delete_policy says for everyone else.
# delete_policy_users = {}

[imap]
# Seconds of inactivity before the session is closed; RFC 3501 5.4 asks for
# at least 30 minutes.
# idle_timeout = 1800

[lmtp]
# Largest message in bytes, advertised in LHLO as SIZE (50 MB); a bigger one
# is refused with 552.
# max_message_size = 52428800
# Recipients in one transaction; RCPTs beyond get 452 4.5.3 and the MTA sends
# them in another transaction.  RFC 5321 asks for at least 100.
# max_recipients = 100
# Deliver user+folder@domain into the folder "folder" when it exists, as
# Dovecot's lmtp_save_to_detail_mailbox.  Off, such mail goes to INBOX.  On,
# a folder with a special use (Sent, Drafts, Trash, Junk...) is never chosen
# this way: the sender picks the address, and must not plant "sent" mail.
# save_to_detail_mailbox = false

[auth]
# Seconds to wait before answering a failed login.
# failure_delay = 2.0
# Accept LOGIN, USER/PASS and AUTH PLAIN before TLS on listeners that are not
# loopback.  Off, such a listener advertises LOGINDISABLED (IMAP), leaves USER
# out of CAPA (POP3) and refuses plain-text logins until STARTTLS/STLS.
# plaintext_without_tls = false

[tls]
# PEM certificate (leaf first, then intermediates) and its unencrypted key,
# relative to the data dir.  When both are left at these defaults and neither
# exists, the first run writes a self-signed pair for the hostname there.
# Both are reloaded on SIGHUP and when either file changes.
# certificate = "tls/cert.pem"
# key = "tls/key.pem"

[limits]
# Connections at once, in all; from one IP address; logged in as one user.
# max_connections = 1000
# max_connections_per_ip = 50
# max_connections_per_user = 20
# Longest command line in bytes.
# max_line_length = 8192
# Largest IMAP literal in bytes (APPEND message size, APPENDLIMIT), 50 MB.
# max_literal_size = 52428800
# Deepest nesting of parentheses in an IMAP command (SEARCH, lists).
# max_nesting = 32
# Bad commands in one session before it is closed.
# max_bad_commands = 20
# Seconds from connecting to logging in, however busy the client looks
# (LMTP: from connecting, or from the last message, to DATA).
# prelogin_timeout = 60
# Failed logins for one user from one address within the window (seconds)
# before that user's logins from there are refused, unchecked, until older
# failures leave the window.  Other users at that address log in as ever:
# behind a NAT or a webmail front end one stale password must not lock out
# everyone.  Every failure from an address is answered after [auth]
# failure_delay, doubled for each earlier failure from there in the window,
# up to 15 seconds; a correct password is never delayed.
# failed_logins_per_ip = 10
# failed_login_window = 300
# Password checks from one address at once; more wait their turn, so that
# parallel connections cannot multiply the guessing rate the delay allows.
# password_checks_per_ip = 4
# Networks whose users are never locked out, e.g. ["192.0.2.0/24"] for an
# office, or a webmail front end that does not name its clients (see
# [proxy] login_trusted_networks); their failures are still delayed.
# lockout_exempt_networks = []
# IPv6 clients count by network, this prefix long, for every limit per
# address (connections, failed logins): a subscriber holds a /64 or more and
# may pick any address in it.  32 to 128.
# ipv6_prefix = 64

[proxy]
# Networks allowed to send a PROXY protocol header on "haproxy:" listeners;
# a connection from anywhere else is dropped.
# trusted = ["127.0.0.1/32", "::1/128"]
# Front ends (webmail, IMAP proxies) allowed to name their client's address
# before login with IMAP ID ("x-originating-ip" "192.0.2.7"), as Dovecot's
# login_trusted_networks: the limits and the auth log then use that address.
# login_trusted_networks = []
"""


def command_line_listeners(overrides: dict[str, list[str]]) -> dict[str, tuple[str, ...]]:
    """The ``--pop3``/``--lmtp``/... listener options, checked as ``[listeners]`` is."""
    reader = _Reader("command line")
    return {
        # One endpoint is read as a string, so that a problem names "--lmtp", not "--lmtp[0]".
        name: (reader.metrics_endpoints if name == "metrics" else reader.endpoints)(
            f"--{name}", endpoints[0] if len(endpoints) == 1 else list(endpoints)
        )
        for name, endpoints in overrides.items()
    }


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
                {
                    "pop3": self.endpoints,
                    "imap": self.endpoints,
                    "lmtp": self.endpoints,
                    "pop3s": self.endpoints,
                    "imaps": self.endpoints,
                    "metrics": self.metrics_endpoints,
                },
            ),
            "pop3": (
                Pop3Config,
                {
                    "uidl_format": self.uidl_format,
                    "lock_session": self.boolean,
                    "retr_sets_seen": self.boolean,
                    "idle_timeout": self.seconds,
                    "delete_policy": self.delete_policy,
                    "hidden_flag": self.keyword,
                    "delete_policy_users": self.delete_policy_users,
                },
            ),
            "imap": (ImapConfig, {"idle_timeout": self.seconds}),
            "lmtp": (
                LmtpConfig,
                {
                    "max_message_size": self.count,
                    "max_recipients": self.recipients,
                    "save_to_detail_mailbox": self.boolean,
                },
            ),
            "auth": (AuthConfig, {"failure_delay": self.delay, "plaintext_without_tls": self.boolean}),
            "tls": (TlsConfig, {"certificate": self.path, "key": self.path}),
            "limits": (
                LimitsConfig,
                {
                    "max_connections": self.count,
                    "max_connections_per_ip": self.count,
                    "max_connections_per_user": self.count,
                    "max_line_length": self.line_length,
                    "max_literal_size": self.count,
                    "max_nesting": self.count,
                    "max_bad_commands": self.count,
                    "prelogin_timeout": self.seconds,
                    "failed_logins_per_ip": self.count,
                    "failed_login_window": self.seconds,
                    "password_checks_per_ip": self.count,
                    "lockout_exempt_networks": self.networks,
                    "ipv6_prefix": self.ipv6_prefix,
                },
            ),
            "proxy": (ProxyConfig, {"trusted": self.networks, "login_trusted_networks": self.networks}),
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
        # RFC 1035 2.3.4; it goes into every LMTP reply and Received field.
        if len(value) > 253:
            self.fail(key, f"a host name has at most 253 characters, not {len(value)}")
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
            behind_proxy = endpoint.lower().startswith("haproxy:")
            inner = endpoint[len("haproxy:"):] if behind_proxy else endpoint
            if inner.lower().startswith("ssl:"):
                self.fail(where, f"{endpoint!r}: use a tcp: endpoint in pop3s/imaps, TLS comes from [tls]")
            if inner.lower().startswith("unix:"):
                if behind_proxy:
                    # [proxy] trusted names networks; a UNIX-socket peer has
                    # no address to check against them.
                    self.fail(where, f"{endpoint!r}: the PROXY protocol is taken on TCP listeners only")
                self.unix_endpoint(where, inner)
        return tuple(items)

    def unix_endpoint(self, key: str, endpoint: str) -> None:
        # Only configs that name a UNIX socket pay for Twisted's endpoint parser.
        from gateway.net.unix import UnixListener, UnixListenerError

        try:
            UnixListener.parse(endpoint)
        except UnixListenerError as error:
            self.fail(key, f"{endpoint!r}: {error}")

    def metrics_endpoints(self, key: str, value: Any) -> tuple[str, ...]:
        endpoints = self.endpoints(key, value)
        for index, endpoint in enumerate(endpoints):
            if endpoint.lower().startswith("haproxy:"):
                where = key if isinstance(value, str) else f"{key}[{index}]"
                self.fail(where, f"{endpoint!r}: the metrics listener does not take the PROXY protocol")
        return endpoints

    def path(self, key: str, value: Any) -> str:
        if not isinstance(value, str):
            self.fail(key, f"must be a file path string, not {_kind(value)}")
        if not value or "\0" in value:
            self.fail(key, f"{value!r} is not a file path")
        return value

    def count(self, key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"must be a whole number, not {_kind(value)}")
        if value <= 0:
            self.fail(key, f"must be positive, not {value}")
        return value

    def recipients(self, key: str, value: Any) -> int:
        value = self.count(key, value)
        # RFC 5321 4.5.3.1.8: a server must take at least 100.
        if value < 100:
            self.fail(key, f"must be at least 100, not {value}")
        return value

    def line_length(self, key: str, value: Any) -> int:
        value = self.count(key, value)
        # RFC 2683 3.2.1.5 asks servers to take lines of 8000 octets; POP3
        # (RFC 2449 4) allows 255.  Below 1000 even ordinary commands fail.
        if value < 1000:
            self.fail(key, f"must be at least 1000, not {value}")
        return value

    def ipv6_prefix(self, key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"must be a prefix length (64), not {_kind(value)}")
        # Shorter than an ISP's allocation (RIRs hand out /32s), a prefix
        # would count unrelated networks as one client.
        if not 32 <= value <= 128:
            self.fail(key, f"must be from 32 to 128, not {value}")
        return value

    def networks(self, key: str, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list):
            self.fail(key, f"must be a list of networks (\"10.0.0.0/8\"), not {_kind(value)}")
        for index, network in enumerate(value):
            where = f"{key}[{index}]"
            if not isinstance(network, str):
                self.fail(where, f"network must be a string, not {_kind(network)}")
            try:
                ipaddress.ip_network(network)
            except ValueError as error:
                self.fail(where, f"{network!r} is not a network: {error}")
        return tuple(value)

    def uidl_format(self, key: str, value: Any) -> str:
        if not isinstance(value, str):
            self.fail(key, f"must be a string, not {_kind(value)}")
        try:
            UidlFormat.parse(value)
        except UidlFormatError as error:
            self.fail(key, str(error))
        return value

    def delete_policy(self, key: str, value: Any) -> str:
        if value not in DELETE_POLICIES:
            self.fail(key, f"must be one of {', '.join(map(repr, DELETE_POLICIES))}, not {_kind(value)}")
        return value

    def delete_policy_users(self, key: str, value: Any) -> tuple[tuple[str, str], ...]:
        if not isinstance(value, dict):
            self.fail(key, f"must be a table of user = policy, not {_kind(value)}")
        return tuple(sorted((user, self.delete_policy(f"{key}.{user}", policy)) for user, policy in value.items()))

    def keyword(self, key: str, value: Any) -> str:
        if not isinstance(value, str):
            self.fail(key, f"must be a string, not {_kind(value)}")
        # RFC 3501 9: flag-keyword = atom; system flags (\Deleted...) are not ours to reuse.
        if not _KEYWORD.fullmatch(value):
            self.fail(key, f"{value!r} is not an IMAP keyword (an atom such as \"$POP3Deleted\")")
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
