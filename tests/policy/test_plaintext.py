"""The one rule for plain-text passwords, POP3's and IMAP's (gateway/policy/plaintext.py)."""

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

from gateway.policy.plaintext import plaintext_allowed

LOOPBACK = IPv4Address("TCP", "127.0.0.1", 143)
NETWORK = IPv4Address("TCP", "192.0.2.1", 143)


def test_plaintext_needs_tls_loopback_or_the_config():
    assert plaintext_allowed(LOOPBACK, secure=False, configured=False)
    assert plaintext_allowed(IPv6Address("TCP", "::1", 143), secure=False, configured=False)
    assert not plaintext_allowed(NETWORK, secure=False, configured=False)
    assert not plaintext_allowed(IPv6Address("TCP", "2001:db8::1", 143), secure=False, configured=False)
    assert plaintext_allowed(NETWORK, secure=True, configured=False)
    assert plaintext_allowed(NETWORK, secure=False, configured=True)


def test_a_unix_socket_is_local():
    assert plaintext_allowed(UNIXAddress(b"/run/gateway/imap.sock"), secure=False, configured=False)
