"""
Client addresses as the limits and the trust rules see them: one text per
client, IPv6 clients grouped by their network, loopback, and lists of
networks from the config, where a network is a CIDR, a name from
``[networks]`` or the built-in ``local``.

Pure: no Twisted.  Hosts are the ``host`` texts Twisted's addresses carry;
anything that is not an IP address (a UNIX socket, named ``local`` by the
protocols) is kept as its own text and belongs only to ``local``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping

import attrs

# RFC 6177 and RIPE-690: a subscriber gets a /64 at the least, usually a /56
# or /48, and picks addresses inside it freely (RFC 8981 temporary
# addresses change daily by design).  One /64 is one client.
DEFAULT_IPV6_PREFIX = 64

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# The built-in network: peers on this machine (loopback addresses, and UNIX
# sockets, which have no address at all).
LOCAL = "local"

# What a name in [networks] looks like: never an address, never a CIDR.
NETWORK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")


class UnknownNetwork(ValueError):
    """A name that is neither a CIDR, ``local``, nor one of ``[networks]``."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.known = sorted({*known, LOCAL})
        super().__init__(f"unknown network {name!r} (known: {', '.join(self.known)})")


def network_entry(text: str) -> str:
    """
    ``text`` if it is a CIDR or a bare address (a network of one), or could
    be a network name; raises ValueError saying why it is neither.
    """
    try:
        ipaddress.ip_network(text)
    except ValueError as error:
        if NETWORK_NAME.fullmatch(text):
            return text
        raise ValueError(f"{text!r} is not a network: {error}") from None
    return text


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an address, IPv4-mapped IPv6 folded to IPv4; None if it is none."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def normalise_ip(host: str) -> str:
    """
    One text per address.

    A dual-stack listener reports IPv4 clients as ``::ffff:a.b.c.d``; counting
    those apart from ``a.b.c.d`` would double the per-IP allowance.  A zone
    (``fe80::1%eth0``) is dropped.
    """
    address = _address(host)
    return host if address is None else str(address)


def is_ip(host: str) -> bool:
    return _address(host) is not None


def limit_key(host: str, ipv6_prefix: int = DEFAULT_IPV6_PREFIX) -> str:
    """
    The key a per-address limit counts ``host`` under: an IPv4 address
    alone, an IPv6 address as its ``/ipv6_prefix`` network, since a client
    with a /64 has 2**64 addresses to rotate through and would otherwise get
    as many allowances.
    """
    address = _address(host)
    if address is None:
        return host
    if isinstance(address, ipaddress.IPv4Address) or ipv6_prefix >= 128:
        return str(address)
    return str(ipaddress.IPv6Network((address, ipv6_prefix), strict=False))


@attrs.frozen
class Networks:
    """
    Networks from the config (``["lan", "10.0.0.0/8", "2001:db8::/32"]``);
    ``host in networks`` asks whether an address falls in one of them.
    ``local`` holds loopback addresses and peers without an address.
    """

    networks: tuple[Network, ...] = ()
    local: bool = False

    @classmethod
    def parse(cls, entries: Iterable[str], named: Mapping[str, Networks] | None = None) -> Networks:
        """
        CIDRs and bare addresses, ``local``, and names of ``named`` (the
        ``[networks]`` table, resolved); raises ValueError (UnknownNetwork for
        a name not there).  config.py checks every entry first.
        """
        networks: list[Network] = []
        local = False
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry))
                continue
            except ValueError:
                if not NETWORK_NAME.fullmatch(entry):
                    raise
            if entry == LOCAL:
                local = True
            elif named is not None and entry in named:
                networks.extend(named[entry].networks)
                local = local or named[entry].local
            else:
                raise UnknownNetwork(entry, named or ())
        return cls(tuple(dict.fromkeys(networks)), local)

    def __contains__(self, host: object) -> bool:
        if not isinstance(host, str):
            return False
        address = _address(host)
        if address is None:
            # A UNIX socket's peer (the protocols name it "local").
            return self.local and bool(host)
        if self.local and address.is_loopback:
            return True
        return any(address in network for network in self.networks)

    def __bool__(self) -> bool:
        return bool(self.networks) or self.local


# Every peer there is: the plain-text rule's "true".
EVERYWHERE = Networks((ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")), local=True)
