"""Client addresses as limits and trust rules see them (gateway/policy/addresses.py)."""

import ipaddress

import pytest
from hypothesis import given, strategies as st

from gateway.policy.addresses import EVERYWHERE, Networks, UnknownNetwork, is_ip, limit_key, network_entry, normalise_ip


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("::FFFF:c000:0207", "192.0.2.7"),
        ("2001:DB8::1", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("/run/gateway.sock", "/run/gateway.sock"),
    ],
)
def test_normalise_ip(host, key):
    assert normalise_ip(host) == key


@pytest.mark.parametrize(
    ("host", "prefix", "key"),
    [
        ("192.0.2.7", 64, "192.0.2.7"),
        ("::ffff:192.0.2.7", 64, "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", 64, "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::1", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:3:4:5:6", 56, "2001:db8:1::/56"),
        ("2001:db8:1:2:3:4:5:6", 128, "2001:db8:1:2:3:4:5:6"),
        ("::1", 64, "::/64"),
        ("fe80::1%eth0", 64, "fe80::/64"),
        ("UNIXAddress", 64, "UNIXAddress"),
    ],
)
def test_limit_key_groups_ipv6_by_prefix(host, prefix, key):
    assert limit_key(host, prefix) == key


@given(st.integers(0, 2**128 - 1), st.integers(0, 2**64 - 1), st.integers(32, 128))
def test_two_addresses_share_a_key_exactly_when_they_share_the_prefix(a, b, prefix):
    first = ipaddress.IPv6Address(a)
    if first.ipv4_mapped is not None:
        return
    # b replaces the low 64 bits: the same /64 (and the same /prefix for any prefix up to 64).
    second = ipaddress.IPv6Address((a >> 64 << 64) | b)
    same = (a >> (128 - prefix)) == (int(second) >> (128 - prefix))
    assert (limit_key(str(first), prefix) == limit_key(str(second), prefix)) == same
    if prefix <= 64:
        assert same


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("local", True),  # a UNIX socket's peer, as the protocols name it
        ("192.0.2.1", False),
        ("::ffff:192.0.2.1", False),
        ("2001:db8::1", False),
        ("0.0.0.0", False),
        ("fe80::1%eth0", False),
        ("", False),
        (None, False),
    ],
)
def test_local_holds_loopback_addresses_and_peers_without_one(host, expected):
    assert (host in Networks(local=True)) is expected
    assert (host in Networks.parse(["local"])) is expected
    assert host not in Networks.parse(["192.168.0.0/16"])


def test_networks_hold_addresses_of_either_family_and_nothing_else():
    networks = Networks.parse(["10.0.0.0/8", "2001:db8::/32"])
    assert "10.1.2.3" in networks
    assert "::ffff:10.1.2.3" in networks  # a dual-stack listener's IPv4 peer
    assert "2001:db8:ffff::1" in networks
    assert "11.0.0.1" not in networks and "2001:db9::1" not in networks
    assert "UNIXAddress" not in networks and None not in networks and "" not in networks
    assert networks and not Networks()
    with pytest.raises(ValueError):
        Networks.parse(["10.0.0.1/8"])


def test_is_ip():
    assert is_ip("192.0.2.1") and is_ip("2001:db8::1") and is_ip("::ffff:1.2.3.4")
    assert not is_ip("example.org") and not is_ip("") and not is_ip("1.2.3.4.5")


def test_names_resolve_through_the_networks_table():
    named = {"lan": Networks.parse(["192.168.0.0/16", "fd00::/8"]), "scanners": Networks.parse(["192.168.50.0/24"])}
    networks = Networks.parse(["scanners", "10.0.0.1", "local"], named)
    assert "192.168.50.7" in networks and "::ffff:192.168.50.7" in networks
    assert "192.168.51.7" not in networks
    assert "10.0.0.1" in networks and "10.0.0.2" not in networks
    assert "127.0.0.1" in networks and "local" in networks
    assert "fd00::1" in Networks.parse(["lan"], named) and "local" not in Networks.parse(["lan"], named)
    with pytest.raises(UnknownNetwork) as raised:
        Networks.parse(["lann"], named)
    assert str(raised.value) == "unknown network 'lann' (known: lan, local, scanners)"


def test_everywhere_holds_every_peer():
    for host in ("192.0.2.1", "2001:db8::1", "::ffff:10.0.0.1", "local", "127.0.0.1"):
        assert host in EVERYWHERE


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("192.168.0.0/33", "'192.168.0.0/33' is not a network: "),
        ("10.0.0.1/8", "'10.0.0.1/8' is not a network: 10.0.0.1/8 has host bits set"),
        ("example.org", "'example.org' is not a network"),
        ("2lan", "'2lan' is not a network"),
        ("", "'' is not a network"),
    ],
)
def test_an_entry_is_a_cidr_or_could_be_a_name(text, problem):
    with pytest.raises(ValueError) as raised:
        network_entry(text)
    assert str(raised.value).startswith(problem)


@given(st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,63}", fullmatch=True))
def test_every_name_is_an_entry_and_never_an_address(name):
    assert network_entry(name) == name
    assert not is_ip(name)
