"""The one rule for plain-text passwords, POP3's and IMAP's (gateway/policy/plaintext.py)."""

from gateway.policy.addresses import EVERYWHERE, Networks
from gateway.policy.plaintext import plaintext_allowed

THIS_MACHINE = Networks(local=True)


def test_by_default_plaintext_needs_tls_or_this_machine():
    assert plaintext_allowed("127.0.0.1", secure=False, allowed=THIS_MACHINE)
    assert plaintext_allowed("::1", secure=False, allowed=THIS_MACHINE)
    assert not plaintext_allowed("192.0.2.1", secure=False, allowed=THIS_MACHINE)
    assert not plaintext_allowed("2001:db8::1", secure=False, allowed=THIS_MACHINE)
    assert plaintext_allowed("192.0.2.1", secure=True, allowed=THIS_MACHINE)
    assert plaintext_allowed("192.0.2.1", secure=False, allowed=EVERYWHERE)


def test_a_unix_socket_is_this_machine():
    assert plaintext_allowed("local", secure=False, allowed=THIS_MACHINE)


def test_listed_networks_only():
    scanners = Networks.parse(["192.168.50.0/24"])
    assert plaintext_allowed("192.168.50.9", secure=False, allowed=scanners)
    assert not plaintext_allowed("192.168.51.9", secure=False, allowed=scanners)
    # A list without "local" leaves out this machine too.
    assert not plaintext_allowed("127.0.0.1", secure=False, allowed=scanners)
    assert plaintext_allowed("127.0.0.1", secure=True, allowed=scanners)
