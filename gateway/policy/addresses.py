"""
Client addresses as the limits and the trust rules see them: one text per
client, IPv6 clients grouped by their network, loopback, and lists of
networks from the config.

Pure: no Twisted.  Hosts are the ``host`` texts Twisted's addresses carry;
anything that is not an IP address (a UNIX socket, a test's fake peer) is
kept as its own text and belongs to no network.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import attrs

# RFC 6177 and RIPE-690: a subscriber gets a /64 at the least, usually a /56
# or /48, and picks addresses inside it freely (RFC 8981 temporary
# addresses change daily by design).  One /64 is one client.
DEFAULT_IPV6_PREFIX = 64

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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


def is_loopback(host: str | None) -> bool:
    """
    Whether a connection to local address ``host`` never left the machine,
    so a plain-text password crosses no network: 127.0.0.0/8, ::1 and
    IPv4-mapped loopback, or ``None`` for a UNIX socket (no host).  Anything
    else that is not an IP address is not trusted.
    """
    if host is None:
        return True
    address = _address(host)
    return address is not None and address.is_loopback


@attrs.frozen
class Networks:
    """
    A list of networks from the config (``["10.0.0.0/8", "2001:db8::/32"]``);
    ``host in networks`` asks whether an address falls in one of them.
    """

    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, texts: Iterable[str]) -> Networks:
        """Raises ValueError on a text that is not a network (config.py checks first)."""
        return cls(tuple(ipaddress.ip_network(text) for text in texts))

    def __contains__(self, host: object) -> bool:
        if not isinstance(host, str):
            return False
        address = _address(host)
        return address is not None and any(address in network for network in self.networks)

    def __bool__(self) -> bool:
        return bool(self.networks)
