"""
The server configuration: a TOML file read into frozen attrs values.

Each option is declared once, below, with its default, its check (the
config's own kinds of value are ``gateway.config_values``) and its help
text (``gateway.options``); the reader, the commented default file
(``DEFAULT_TOML``, also in README) and what a SIGHUP may change are read off
these declarations.  Every key is optional and every unknown section or key
is an error, so a typo stops the server with one line naming the file, the
key and the problem instead of silently running with a default.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable
from os import PathLike
from typing import Any

import attrs

from gateway import config_values as values
from gateway.options import (
    RESTART,
    ConfigProblem,
    OptionError,
    boolean,
    choice,
    count,
    delay,
    kind_of,
    named_sections,
    option,
    read,
    render_defaults,
    section,
    seconds,
    table,
    table_of,
    text,
    then,
    whole,
)
from gateway.policy.addresses import EVERYWHERE, Networks, UnknownNetwork
from gateway.pop3.uidl import DEFAULT_FORMAT, UidlFormat

# What POP3 DELE does at QUIT.
DELETE_POLICIES = ("expunge", "trash", "hide")
# When what devices deleted leaves INBOX (gateway/pop3/devices.py).
DEVICE_DELETES = ("last", "never")

# Where the mail lives; gateway/store/opening.py opens each.
STORE_BACKENDS = ("sqlite", "postgresql")
# Where the postgresql backend keeps bodies.
BLOB_KINDS = ("s3", "postgresql")
# When a flag change is fsynced (README "Storage and durability").
FLAG_DURABILITIES = ("batched", "immediate")
PARSE_TIMES = ("delivery", "first-fetch")


class ConfigError(Exception):
    """The configuration is unusable; str() is one line: file: key: problem."""


_delete_policy = choice(*DELETE_POLICIES)


# -- the options --------------------------------------------------------------

# What a named listener serves: the application protocol, in implicit TLS
# (RFC 8314) for the "s" forms.
LISTENER_PROTOCOLS = ("pop3", "imap", "pop3s", "imaps")
TLS_VERSIONS = ("1.0", "1.1", "1.2", "1.3")
# RFC 8996 deprecates TLS 1.0 and 1.1; RFC 8314 4.1 asks for 1.2 at the least.
TLS_MIN_VERSION = "1.2"


@attrs.frozen
class ListenerConfig:
    """One [listeners.NAME] table: a listener with TLS and network rules of its own."""

    protocol: str = option("", choice(*LISTENER_PROTOCOLS), """
What it serves: "pop3" or "imap" (offering STLS/STARTTLS), "pop3s" or
"imaps" (implicit TLS).""", shown='"pop3s"')
    endpoints: tuple[str, ...] = option((), values.endpoints, "Endpoint strings, as for the lists above.",
                                        shown='["tcp:995:interface=192.168.1.10"]')
    tls_min_version: str = option(TLS_MIN_VERSION, choice(*TLS_VERSIONS), """
The oldest TLS this listener speaks, implicit or after STLS/STARTTLS:
"1.2" as everywhere else, "1.3", or for clients that know nothing newer
(Outlook on Windows 7, old Android, scanners) "1.1" or "1.0".  Below 1.2
the listener also takes the CBC ciphers those clients need
(ECDHE-RSA-AES128-SHA, AES128-SHA...) at OpenSSL security level 0, needs
an RSA certificate ([tls]), and every start logs a warning naming it.
Those versions and ciphers have known weaknesses (RFC 8996): keep such a
listener on the LAN with networks below.""")
    networks: tuple[str, ...] = option((), values.networks, """
Networks that may connect (names from [networks], CIDRs, or "local":
loopback and UNIX sockets); a client elsewhere is disconnected at once.
[] takes anyone who reaches the endpoints.""")

    def __attrs_post_init__(self) -> None:
        if not self.protocol:
            raise OptionError(f"protocol is missing (one of {', '.join(map(repr, LISTENER_PROTOCOLS))})")
        if not self.endpoints:
            raise OptionError("endpoints is missing (an endpoint string or a list of them)")

    @property
    def legacy_tls(self) -> bool:
        return self.tls_min_version < TLS_MIN_VERSION


@attrs.frozen
class ListenersConfig:
    """Twisted server endpoint strings per protocol; empty disables it."""

    pop3: tuple[str, ...] = option(("tcp:1110:interface=127.0.0.1",), values.endpoints, """
Twisted server endpoint strings, a string or a list of strings; [] disables
the protocol.  The default serves loopback only.  Examples:
  "tcp:110"                           every address, plain text
  "tcp:143:interface=192.0.2.10"      one address
  "haproxy:tcp:143"                   behind a load balancer speaking the
                                      PROXY protocol (see [proxy])
  "unix:/run/gateway/lmtp.sock:mode=0660:group=postfix"
                                      a UNIX socket (the usual way to take
                                      mail from a local MTA, or to serve a
                                      local webmail): mode (octal, default
                                      0600), user and group own it.  A
                                      socket left by a crash is replaced.
Implicit TLS (RFC 8314) is pop3s and imaps below, with plain "tcp:"
endpoints: the server adds TLS itself with the [tls] certificate, so that
a renewed certificate is picked up without a restart.  Twisted's
"ssl:995:privateKey=..." endpoints would pin the certificate and are refused.""")
    imap: tuple[str, ...] = option(("tcp:1143:interface=127.0.0.1",), values.endpoints)
    lmtp: tuple[str, ...] = option(("tcp:2424:interface=127.0.0.1",), values.endpoints)
    # RFC 8314: implicit TLS (995, 993); gateway/net/tls.py wraps these itself.
    pop3s: tuple[str, ...] = option((), values.endpoints, 'POP3 over implicit TLS, usually "tcp:995".')
    imaps: tuple[str, ...] = option((), values.endpoints, 'IMAP over implicit TLS, usually "tcp:993".')
    # Off by default so that two servers on one host (or a test suite) never
    # fight over a fixed port.
    metrics: tuple[str, ...] = option((), values.metrics_endpoints, """
Prometheus metrics over HTTP at /metrics, also read by `gateway status`.
Off by default; anyone who reaches it sees the server's counters, so keep it
on loopback or a monitoring network, e.g. "tcp:9154:interface=127.0.0.1".""")
    # Sorted (name, listener) pairs.
    named: tuple[tuple[str, ListenerConfig], ...] = named_sections(ListenerConfig, """
Listeners with a name of their own, served beside the lists above, each a
table [listeners.NAME] (NAME is yours; the log, the metrics and
run/ports.json call the listener so), for a TLS or network rule of its own,
e.g. a pop3s for old clients on the office LAN:""")

    def endpoint_lists(self) -> Iterable[tuple[str, tuple[str, ...]]]:
        """Every list of endpoints, with its key under [listeners] ("pop3", "legacy.endpoints")."""
        for field in attrs.fields(ListenersConfig):
            if field.name != "named":
                yield field.name, getattr(self, field.name)
        for name, listener in self.named:
            yield f"{name}.endpoints", listener.endpoints


@attrs.frozen
class Pop3Config:
    uidl_format: str = option(DEFAULT_FORMAT, values.uidl_format, """
UIDL format in Dovecot's pop3_uidl_format notation (2.3 %08Xu%08Xv or 2.4
%{uid | hex(8)}%{uidvalidity | hex(8)}).  The default matches Dovecot's, so
POP3 clients of a mailbox migrated with its UIDs download nothing again.
Other common choices: "%v.%u" (Cyrus), "%v-%u" (Courier), "%08Xv%08Xu" (UW).""",
        reload="a new UIDL format changes every UIDL")
    # RFC 2449/3206: a second concurrent session gets -ERR [IN-USE].
    lock_session: bool = option(True, boolean, "A second concurrent POP3 session on one maildrop gets -ERR [IN-USE].")
    retr_sets_seen: bool = option(True, boolean, r"RETR marks the message \Seen (as IMAP sees it).")
    # RFC 1939 3: an autologout timer "of at least 10 minutes".
    idle_timeout: int = option(600, seconds, """
Seconds of inactivity before the session is closed; RFC 1939 asks for at
least 10 minutes.""")
    delete_policy: str = option("expunge", _delete_policy, r"""
What DELE does once QUIT ends the session: "expunge" removes the message
(RFC 1939); "trash" moves it to the Trash folder (special-use \Trash, else
the folder named Trash, created if missing); "hide" sets hidden_flag on it,
so POP3 never lists it again while IMAP still shows it.  UIDLs of the other
messages never change.""")
    # Like Dovecot's pop3_deleted_flag: an IMAP keyword.
    hidden_flag: str = option("$POP3Deleted", values.keyword, """
The IMAP keyword "hide" sets.  Messages carrying it are left out of POP3
under every policy, so leaving "hide" does not bring them back.""",
        reload="a new hidden flag changes which messages POP3 lists")
    # Sorted (user, policy) pairs.
    delete_policy_users: tuple[tuple[str, str], ...] = option((), table_of(_delete_policy, "a table of user = policy"), """
Exceptions for some users, as a table of user name to policy: {alice="hide"}
keeps the mail alice's phone deletes over POP3 in the INBOX her desktop
reads over IMAP, whatever delete_policy says for everyone else.""", shown="{}")
    device_views: bool = option(True, boolean, """
Views per device: USER alice#phone (or AUTH PLAIN as alice#phone) logs in
as alice, with her password, to a view of INBOX of the device's own, where
DELE hides a message from that device alone; so a phone and a desktop both
set to delete mail from the server each get every message once.  The
device's name is letters, digits, '.', '-' and '_', up to 64.  UIDLs are the
same in every view; one session per device at a time (lock_session).""")
    device_delete: str = option("last", choice(*DEVICE_DELETES), """
When a message devices deleted leaves INBOX: "last", once every device of
the user has deleted it, as delete_policy says; "never", devices only hide
it from themselves, and it stays until IMAP or the plain login (alice)
deletes it.  A device logging in for the first time sees what is still
there, and is counted in from then on.""")
    max_devices: int = option(10, count, """
Devices per user; a new one beyond is refused (-ERR [SYS/PERM]) until one
is forgotten.""")
    forget_devices_after: int = option(90, whole(1, what="a whole number of days"), """
Days after its last login that a device is forgotten: its deletions hold
no message back any more, and if it comes back it is a new device.""")
    networks: tuple[str, ...] = option((), values.networks, """
Networks POP3 is served to (names from [networks], CIDRs, or "local":
loopback and UNIX sockets), on every POP3 listener; a client elsewhere is
answered -ERR [SYS/PERM] and disconnected before it can send a password.
[] serves everyone a listener takes.""")
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
    idle_timeout: int = option(1800, seconds, """
Seconds of inactivity before the session is closed; RFC 3501 5.4 asks for
at least 30 minutes.""")
    networks: tuple[str, ...] = option((), values.networks, """
Networks IMAP is served to, as [pop3] networks; a client elsewhere is
greeted * BYE and disconnected.""")
    fetch_cache_size: int = option(48, whole(0, what="a whole number of megabytes"), """
Megabytes of FETCH answers that never change (RFC822.SIZE, INTERNALDATE,
ENVELOPE, BODYSTRUCTURE, header fields) a process keeps as sent, shared by
its sessions: a client listing a 20,000-message mailbox needs about 12 MB.
The least recently used go first; 0 keeps none.""")


@attrs.frozen
class LmtpConfig:
    # Advertised in LHLO as SIZE (RFC 1870); the same 50 MB as APPENDLIMIT.
    max_message_size: int = option(52428800, count, """
Largest message in bytes, advertised in LHLO as SIZE (50 MB); a bigger one
is refused with 552.""")
    # RFC 5321 4.5.3.1.8: a server must take at least 100.
    max_recipients: int = option(100, then(count, values.at_least(100)), """
Recipients in one transaction; RCPTs beyond get 452 4.5.3 and the MTA sends
them in another transaction.  RFC 5321 asks for at least 100.""")
    # Dovecot's lmtp_save_to_detail_mailbox: user+folder@ delivers into folder.
    save_to_detail_mailbox: bool = option(False, boolean, """
Deliver user+folder@domain into the folder "folder" when it exists, as
Dovecot's lmtp_save_to_detail_mailbox.  Off, such mail goes to INBOX.  On,
a folder with a special use (Sent, Drafts, Trash, Junk...) is never chosen
this way: the sender picks the address, and must not plant "sent" mail.""")


@attrs.frozen
class AuthConfig:
    failure_delay: float = option(2.0, delay, "Seconds to wait before answering a failed login.")
    # Like Dovecot's disable_plaintext_auth with login_trusted_networks.
    plaintext_without_tls: bool | tuple[str, ...] = option(False, values.plaintext_networks, """
Where LOGIN, USER/PASS and AUTH PLAIN are taken before TLS: false, from
this machine only (loopback and UNIX sockets); true, from everywhere; or a
list of networks (names from [networks], CIDRs, "local" for this machine),
e.g. ["local", "scanners"] for a scanner VLAN that cannot speak TLS.  Any
client elsewhere gets LOGINDISABLED (IMAP), no USER in CAPA (POP3), and
its plain-text logins refused until STARTTLS/STLS.  Behind a trusted PROXY
balancer the client's own address counts.""")


@attrs.frozen
class TlsConfig:
    """Certificate (leaf first, then intermediates) and key, PEM, relative to the data dir."""

    certificate: str = option("tls/cert.pem", values.path, """
PEM certificate (leaf first, then intermediates) and its unencrypted key,
relative to the data dir.  When both are left at these defaults and neither
exists, the first run writes a self-signed ECDSA pair for the hostname
there.  Every pair is reloaded on SIGHUP and when a file changes.""")
    key: str = option("tls/key.pem", values.path)
    rsa_certificate: str = option("tls/rsa-cert.pem", values.optional_path, """
A second pair, with an RSA key, for clients that know no ECDSA (old
Windows, Android, appliances): each client gets the pair it can use, and a
listener below TLS 1.2 needs an RSA pair.  At these defaults, with
certificate and key at theirs, the first run writes a self-signed RSA 2048
pair here; at these defaults beside another certificate, it is used when
present.  "" for none (when certificate is RSA itself).""")
    rsa_key: str = option("tls/rsa-key.pem", values.optional_path)

    def __attrs_post_init__(self) -> None:
        if bool(self.rsa_certificate) != bool(self.rsa_key):
            raise OptionError('rsa_certificate and rsa_key are a pair: give both, or both ""')


@attrs.frozen
class LimitsConfig:
    max_connections: int = option(1000, count, "Connections at once, in all; from one IP address; logged in as one user.")
    max_connections_per_ip: int = option(50, count)
    max_connections_per_user: int = option(20, count)
    # RFC 2683 3.2.1.5 asks servers to take lines of at least 8000 octets;
    # clients resynchronising fragmented mailboxes send UID sets longer,
    # and an ID of 30 pairs of 1024 octets (RFC 2971 3.3) is longer still:
    # 64 KB as Dovecot's imap_max_line_length.  Below 1000 even ordinary
    # commands fail; bounded above so that one client cannot hold much.
    max_line_length: int = option(65536, whole(1000, 16 << 20, what="a number of bytes"), """
Longest command line in bytes, not counting the literals in it (IMAP
literals have their own limit below), 1000 to 16777216.""")
    # RFC 7889 APPENDLIMIT: 50 MB.
    max_literal_size: int = option(52428800, count, "Largest IMAP literal in bytes (APPEND message size, APPENDLIMIT), 50 MB.")
    max_nesting: int = option(32, count, "Deepest nesting of parentheses in an IMAP command (SEARCH, lists).")
    max_bad_commands: int = option(20, count, "Bad commands in one session before it is closed.")
    # Absolute, from connect to login: a byte-a-second client cannot hold on.
    prelogin_timeout: int = option(60, seconds, """
Seconds from connecting to logging in, however busy the client looks
(LMTP: from connecting, or from the last message, to DATA).""")
    # Per user at an address (gateway/policy/throttle.py).
    failed_logins_per_ip: int = option(10, count, """
Failed logins for one user from one address within the window (seconds)
before that user's logins from there are refused, unchecked, until older
failures leave the window.  Other users at that address log in as ever:
behind a NAT or a webmail front end one stale password must not lock out
everyone.  Every failure from an address is answered after [auth]
failure_delay, doubled for each earlier failure from there in the window,
up to 15 seconds; a correct password is never delayed.""")
    failed_login_window: int = option(300, seconds)
    password_checks_per_ip: int = option(4, count, """
Password checks from one address at once; more wait their turn, so that
parallel connections cannot multiply the guessing rate the delay allows.""")
    lockout_exempt_networks: tuple[str, ...] = option((), values.networks, """
Networks whose users are never locked out, e.g. ["lan"] or ["192.0.2.0/24"]
for an office, or a webmail front end that does not name its clients (see
[proxy] login_trusted_networks); their failures are still delayed.""")
    # RFC 6177: a subscriber holds a /64 at the least.  Shorter than an ISP's
    # allocation (RIRs hand out /32s), a prefix would count unrelated
    # networks as one client.
    ipv6_prefix: int = option(64, whole(32, 128, what="a prefix length (64)"), """
IPv6 clients count by network, this prefix long, for every limit per
address (connections, failed logins): a subscriber holds a /64 or more and
may pick any address in it.  32 to 128.""")
    per_ip_exempt_networks: tuple[str, ...] = option((), values.networks, """
Networks max_connections_per_ip does not hold, e.g. ["lan"] for an office
whose clients all poll at once; max_connections still counts them.""")


@attrs.frozen
class QuotaConfig:
    # As Dovecot's quota_rule = *:storage=... and *:messages=...
    storage: int = option(0, values.kilobytes, """
Most mail a user may keep, all mailboxes together (RFC 9208 STORAGE), in
kilobytes or with a unit: "500M", "2G".  0 for no limit.  A user's own
limits in the users file come first, in Dovecot's words:
alice:{ARGON2ID}...::::::userdb_quota_rule=*:storage=2G quota_rule2=*:messages=50000""")
    messages: int = option(0, whole(0, what="a number of messages"), """
Most messages a user may keep, all mailboxes together (RFC 9208 MESSAGE);
0 for no limit.""")
    # Dovecot's quota_full_tempfail.
    full_tempfail: bool = option(False, boolean, """
A message for a user over quota: false, LMTP refuses it for good (552
5.2.2, the sender gets a bounce); true, for now (452 4.2.2, the MTA keeps
it and tries again).  IMAP APPEND and COPY answer NO [OVERQUOTA] (a MOVE
changes no usage); POP3 is not limited.""")


@attrs.frozen
class ProxyConfig:
    """Who may name the client's address: PROXY headers, IMAP ID x-originating-ip."""

    trusted: tuple[str, ...] = option(("127.0.0.1/32", "::1/128"), values.networks, """
Networks allowed to send a PROXY protocol header on "haproxy:" listeners;
a connection from anywhere else is dropped.""")
    # Like Dovecot's login_trusted_networks; none by default.
    login_trusted_networks: tuple[str, ...] = option((), values.networks, """
Front ends (webmail, IMAP proxies) allowed to name their client's address
before login with IMAP ID ("x-originating-ip" "192.0.2.7"), as Dovecot's
login_trusted_networks: the limits and the auth log then use that address.""")


@attrs.frozen
class BlobsConfig:
    kind: str = option("s3", choice(*BLOB_KINDS), """
Where the "postgresql" backend keeps message bodies, each once under its
SHA-256: "s3" in an S3-compatible object store (AWS S3, SeaweedFS, MinIO,
Ceph RGW), "postgresql" in the same database, in chunks (one engine to run
and back up).""")
    bucket: str = option("", text(), "The S3 bucket; it must exist.")
    endpoint: str = option("", text(), """
The S3 endpoint URL, e.g. "https://s3.example.org"; empty for AWS.""")
    region: str = option("us-east-1", text())
    access_key: str = option("", text(), """
S3 credentials.  Left empty, boto3 reads AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY from the environment, or the machine's role.""")
    secret_key: str = option("", text())
    prefix: str = option("", text(), "Put before every object name, to share a bucket.")
    cache_size: int = option(2048, whole(0, what="a whole number of megabytes"), """
Megabytes of the bodies a node read or stored last that it keeps a copy of,
in DIR/cache/bodies (emptied when it starts), bodies over an eighth of it
never: a RETR or FETCH of a body kept reads no network, and the next few
bodies a download will ask for are fetched ahead into it.  Size it to the
mail a node's users read in a day or so.  0 keeps none.""")


@attrs.frozen
class StoreConfig:
    backend: str = option("sqlite", choice(*STORE_BACKENDS), """
Where the mail lives: "sqlite" keeps an index in DIR/store/index.sqlite
and one file per message beside it, for one server; "postgresql" keeps it
in PostgreSQL and [store.blobs], shared by every node of a cluster (README,
"Growing beyond one machine").""")
    # "batched": as Dovecot's fsync_mode = optimized.
    flag_durability: str = option("batched", choice(*FLAG_DURABILITIES), """
When a flag change (IMAP STORE, the \\Seen a POP3 RETR sets, the POP3
"hide" policy) reaches the disk.  Every session sees it at once either
way.  "batched" writes it with the next delivery, APPEND or expunge, or
within a second, whichever comes first (as Dovecot's fsync_mode optimized):
a power cut may forget the last second of flag changes, never a message.
"immediate" fsyncs each before answering, at the cost of one disk flush
per change.  Deliveries, APPEND, COPY, MOVE and expunges are always
durable before they are answered.""")
    parse: str = option("delivery", choice(*PARSE_TIMES), """
When the "sqlite" store parses a message (its ENVELOPE, BODYSTRUCTURE and
MIME parts, kept in the index for FETCH and SEARCH).  "delivery" parses
each message as it arrives, so that the first FETCH of new mail reads the
index alone.  "first-fetch" leaves it to the first FETCH, SEARCH, SORT or
THREAD that needs it (as Dovecot fills its cache): a delivery then takes
about a third less CPU, and mail read only over POP3 is never parsed.
The "postgresql" store parses at delivery.""")
    dsn: str = option("", text(), """
The "postgresql" backend's database, as a libpq connection string, e.g.
"host=db.example.org dbname=gateway user=gateway"; keep the password in the
gateway user's ~/.pgpass.  The gateway creates and migrates its tables.""")
    pool_size: int = option(10, whole(1, 1000), """
Connections to PostgreSQL per node, each with a thread running its queries.""")
    connect_timeout: int = option(10, whole(1, 300, what="a whole number of seconds"), """
Seconds a session waits for a PostgreSQL connection (the database
restarting, or every connection busy) before its client gets a temporary
error: LMTP 451, IMAP NO [UNAVAILABLE], POP3 -ERR [SYS/TEMP].""")
    blobs: BlobsConfig = section(BlobsConfig)


# How many serving processes a node runs at the most ("auto" asks for one
# per core); bounded so that a typo cannot fork a thousand processes.
MAX_WORKERS = 64


def cores() -> int:
    """The cores this process may run on (its affinity, as a container's cpuset sets it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _workers(value: Any) -> int:
    if value == "auto":
        return min(cores(), MAX_WORKERS)
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionError(f'must be a whole number or "auto", not {kind_of(value)}')
    if not 1 <= value <= MAX_WORKERS:
        raise OptionError(f'must be from 1 to {MAX_WORKERS} (or "auto"), not {value}')
    return value


@attrs.frozen
class ServerConfig:
    workers: int = option(1, _workers, """
Serving processes, each on every listener: the one twistd runs and
workers - 1 more it starts after dropping privileges, so that the node uses
more than one core; "auto" runs one per core.  Failed logins and sessions
per user count for the node; max_connections, max_connections_per_ip and
password_checks_per_ip of [limits] hold in each process (README, "Using
every core").""")


@attrs.frozen
class Config:
    hostname: str = option("localhost", values.hostname, "Name used in greetings and in LMTP replies.", reload=RESTART)
    # Sorted (name, CIDRs) pairs.
    networks: tuple[tuple[str, tuple[str, ...]], ...] = table(values.network_table, """
Networks by name, for every option below that takes a list of networks
(where "local", this machine's loopback and UNIX sockets, is built in).
A change applies at a reload, but to [listeners] and [proxy] at a restart.""",
        """\
  lan = ["192.168.0.0/16", "fd00::/8"]
  scanners = ["192.168.50.0/24"]""")
    listeners: ListenersConfig = section(ListenersConfig, reload=RESTART)
    server: ServerConfig = section(ServerConfig, reload=RESTART)
    pop3: Pop3Config = section(Pop3Config)
    imap: ImapConfig = section(ImapConfig)
    lmtp: LmtpConfig = section(LmtpConfig)
    auth: AuthConfig = section(AuthConfig)
    tls: TlsConfig = section(TlsConfig, reload=RESTART)
    limits: LimitsConfig = section(LimitsConfig)
    quota: QuotaConfig = section(QuotaConfig)
    proxy: ProxyConfig = section(ProxyConfig, reload=RESTART)
    # The store is opened once, at the start.
    store: StoreConfig = section(StoreConfig, reload=RESTART)

    # [networks] parsed, and the lists resolved so far (read per connection).
    _named: dict = attrs.field(init=False, repr=False, eq=False)
    _resolved: dict = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        named = {name: Networks.parse(cidrs) for name, cidrs in self.networks}
        object.__setattr__(self, "_resolved", {})
        for key, entries in self._network_lists():
            for index, entry in enumerate(entries):
                try:
                    Networks.parse([entry], named)
                except UnknownNetwork as error:
                    raise ConfigProblem(f"{key}[{index}]", str(error)) from None
        object.__setattr__(self, "_named", named)

    def _network_lists(self) -> Iterable[tuple[str, tuple[str, ...]]]:
        plaintext = self.auth.plaintext_without_tls
        yield "auth.plaintext_without_tls", plaintext if isinstance(plaintext, tuple) else ()
        yield "pop3.networks", self.pop3.networks
        yield "imap.networks", self.imap.networks
        yield "limits.lockout_exempt_networks", self.limits.lockout_exempt_networks
        yield "limits.per_ip_exempt_networks", self.limits.per_ip_exempt_networks
        yield "proxy.trusted", self.proxy.trusted
        yield "proxy.login_trusted_networks", self.proxy.login_trusted_networks
        for name, listener in self.listeners.named:
            yield f"listeners.{name}.networks", listener.networks

    def resolve(self, entries: tuple[str, ...]) -> Networks:
        """A list of networks from this config, its names looked up in [networks]."""
        networks = self._resolved.get(entries)
        if networks is None:
            networks = self._resolved[entries] = Networks.parse(entries, self._named)
        return networks

    @property
    def plaintext_networks(self) -> Networks:
        """Where a plain-text password is taken before TLS ([auth] plaintext_without_tls)."""
        allowed = self.auth.plaintext_without_tls
        if allowed is True:
            return EVERYWHERE
        if allowed is False:
            return Networks(local=True)
        return self.resolve(allowed)

    @property
    def uidl(self) -> UidlFormat:
        return self.pop3.uidl

    def with_listeners(self, **endpoints: Iterable[str] | None) -> Config:
        """A copy where the given listener lists (``pop3=[...]``...) replace the configured ones."""
        overrides = {name: tuple(given) for name, given in endpoints.items() if given is not None}
        return attrs.evolve(self, listeners=attrs.evolve(self.listeners, **overrides))


DEFAULT_TOML = render_defaults(Config, """\
# gateway configuration.  Every option is shown with its default value;
# uncomment and edit to change it.  Unknown sections or keys are errors.
""")


def command_line_listeners(overrides: dict[str, list[str]]) -> dict[str, tuple[str, ...]]:
    """The ``--pop3``/``--lmtp``/... listener options, checked as ``[listeners]`` is."""
    # One endpoint is read as a string, so that a problem names "--lmtp", not "--lmtp[0]".
    table = {name: endpoints[0] if len(endpoints) == 1 else list(endpoints) for name, endpoints in overrides.items()}
    try:
        listeners = read(ListenersConfig, table)
    except ConfigProblem as problem:
        raise ConfigError(f"command line: --{problem}") from None
    return {name: getattr(listeners, name) for name in overrides}


def load(path: str | PathLike[str]) -> Config:
    return load_with_text(path)[0]


def load_with_text(path: str | PathLike[str]) -> tuple[Config, str]:
    """The config at ``path`` and the text it was read from (for processes started later)."""
    source = str(path)
    try:
        with open(path, "rb") as config_file:
            text = config_file.read().decode("utf-8")
    except OSError as error:
        raise ConfigError(f"{source}: cannot read: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{source}: not UTF-8: {error.reason} at byte {error.start}") from None
    return loads(text, source), text


def load_for_tool(data_dir: str | PathLike[str], path: str | PathLike[str] | None = None) -> Config:
    """
    The config a ``gateway`` tool runs with: ``path``, else DATA/gateway.toml
    where it exists, else the defaults.  Unlike the server, a tool never
    writes the file.
    """
    if path is None:
        path = os.path.join(data_dir, "gateway.toml")
        if not os.path.exists(path):
            return Config()
    return load(path)


def loads(text: str, source: str = "<string>") -> Config:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source}: invalid TOML: {error}") from None
    try:
        return read(Config, document)
    except ConfigProblem as problem:
        raise ConfigError(f"{source}: {problem}") from None
