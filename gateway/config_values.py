"""
Checks of the configuration's own kinds of value (``gateway.config``): host
names, endpoint strings, networks and network tables, file paths, UIDL
formats, IMAP keywords and sizes in kilobytes.  Each takes a value as TOML gave it and returns
it as the config keeps it, or raises ``OptionError`` saying what is wrong.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from gateway.options import OptionError, each, kind_of, table_of, text, whole
from gateway.policy.addresses import LOCAL, NETWORK_NAME, network_entry
from gateway.policy.quota import QuotaRuleError, parse_size
from gateway.pop3.uidl import UidlFormat, UidlFormatError

# RFC 3501 9: ATOM-CHAR, less the list, quoted and resp specials.
_KEYWORD = re.compile(r"[!#$&'+-Z^-z|~]{1,64}")


def hostname(value: Any) -> str:
    if not isinstance(value, str):
        raise OptionError(f"must be a string, not {kind_of(value)}")
    if not value or not value.isascii() or not all(c.isalnum() or c in ".-_" for c in value):
        raise OptionError(f"{value!r} is not a host name (letters, digits, '.', '-', '_')")
    # RFC 1035 2.3.4; it goes into every LMTP reply and Received field.
    if len(value) > 253:
        raise OptionError(f"a host name has at most 253 characters, not {len(value)}")
    return value


def endpoint(value: Any) -> str:
    if not isinstance(value, str):
        raise OptionError(f"endpoint must be a string, not {kind_of(value)}")
    if not value.strip() or any(c.isspace() for c in value):
        raise OptionError(f"{value!r} is not an endpoint string (e.g. \"tcp:110\")")
    behind_proxy = value.lower().startswith("haproxy:")
    inner = value[len("haproxy:"):] if behind_proxy else value
    if inner.lower().startswith("ssl:"):
        raise OptionError(f"{value!r}: use a tcp: endpoint in pop3s/imaps, TLS comes from [tls]")
    if inner.lower().startswith("unix:"):
        if behind_proxy:
            # [proxy] trusted names networks; a UNIX-socket peer has no
            # address to check against them.
            raise OptionError(f"{value!r}: the PROXY protocol is taken on TCP listeners only")
        # Only configs that name a UNIX socket pay for Twisted's endpoint parser.
        from gateway.net.unix import UnixListener, UnixListenerError

        try:
            UnixListener.parse(inner)
        except UnixListenerError as error:
            raise OptionError(f"{value!r}: {error}") from None
    return value


def metrics_endpoint(value: Any) -> str:
    value = endpoint(value)
    if value.lower().startswith("haproxy:"):
        raise OptionError(f"{value!r}: the metrics listener does not take the PROXY protocol")
    return value


endpoints = each(endpoint, "an endpoint string or a list of them", single=True)
metrics_endpoints = each(metrics_endpoint, "an endpoint string or a list of them", single=True)


def network(value: Any) -> str:
    """A CIDR or a bare address, as [networks] lists them."""
    if not isinstance(value, str):
        raise OptionError(f"network must be a string, not {kind_of(value)}")
    try:
        ipaddress.ip_network(value)
    except ValueError as error:
        raise OptionError(f"{value!r} is not a network: {error}") from None
    return value


def network_ref(value: Any) -> str:
    """A CIDR, a bare address, or a network's name (resolved once the whole file is read)."""
    if not isinstance(value, str):
        raise OptionError(f"network must be a string, not {kind_of(value)}")
    try:
        return network_entry(value)
    except ValueError as error:
        raise OptionError(str(error)) from None


networks = each(network_ref, "a list of networks (\"10.0.0.0/8\", or a name from [networks])")


def network_table(value: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    pairs = table_of(each(network, "a list of networks (\"192.168.0.0/16\")"), "a table of name = networks")(value)
    for name, _ in pairs:
        if name == LOCAL:
            raise OptionError(f"{LOCAL!r} is built in (loopback addresses and UNIX sockets): pick another name")
        if not NETWORK_NAME.fullmatch(name):
            raise OptionError(f"{name!r} is not a network name (a letter, then letters, digits, '-' or '_')")
    return pairs


def plaintext_networks(value: Any) -> bool | tuple[str, ...]:
    if isinstance(value, bool):
        return value
    if not isinstance(value, list):
        raise OptionError(f"must be true, false or a list of networks, not {kind_of(value)}")
    return networks(value)


def path(value: Any) -> str:
    if not isinstance(value, str):
        raise OptionError(f"must be a file path string, not {kind_of(value)}")
    if not value or "\0" in value:
        raise OptionError(f"{value!r} is not a file path")
    return value


def optional_path(value: Any) -> str:
    """A file path, or "" for none."""
    return value if value == "" else path(value)


def uidl_format(value: Any) -> str:
    value = text()(value)
    try:
        UidlFormat.parse(value)
    except UidlFormatError as error:
        raise OptionError(str(error)) from None
    return value


def keyword(value: Any) -> str:
    value = text()(value)
    # RFC 3501 9: flag-keyword = atom; system flags (\Deleted...) are not ours to reuse.
    if not _KEYWORD.fullmatch(value):
        raise OptionError(f"{value!r} is not an IMAP keyword (an atom such as \"$POP3Deleted\")")
    return value


def at_least(minimum: int):
    def check(value: int) -> None:
        if value < minimum:
            raise OptionError(f"must be at least {minimum}, not {value}")

    return check


def kilobytes(value: Any) -> int:
    """A size in kilobytes: a whole number, or a string with a unit ("1G")."""
    if isinstance(value, str):
        try:
            return parse_size(value, 1024) // 1024
        except QuotaRuleError as error:
            raise OptionError(str(error)) from None
    return whole(0, what='a number of kilobytes or a size such as "1G"')(value)
