import pytest
from hypothesis import given, settings, strategies as st

from gateway.policy.addresses import limit_key
from gateway.policy.addresses import Networks
from gateway.policy.limits import ADDRESSLESS, ConnectionLimiter, FailureWindow, LoginLimiter


class FakeClock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def test_per_ip_limit_refuses_the_next_and_frees_on_release():
    limiter = ConnectionLimiter(max_total=100, max_per_ip=2)
    assert limiter.try_acquire("192.0.2.1")
    assert limiter.try_acquire("192.0.2.1")
    assert not limiter.try_acquire("192.0.2.1")
    assert limiter.try_acquire("192.0.2.2")
    limiter.release("192.0.2.1")
    assert limiter.try_acquire("192.0.2.1")
    assert limiter.total == 3


def test_ipv4_mapped_counts_with_ipv4():
    limiter = ConnectionLimiter(max_total=100, max_per_ip=2)
    assert limiter.try_acquire("192.0.2.1") == "192.0.2.1"
    assert limiter.try_acquire("::ffff:192.0.2.1") == "192.0.2.1"
    assert not limiter.try_acquire("192.0.2.1")
    assert not limiter.try_acquire("::ffff:192.0.2.1")
    assert limiter.count("::ffff:192.0.2.1") == 2


def test_total_limit_across_addresses():
    limiter = ConnectionLimiter(max_total=3, max_per_ip=10)
    assert all(limiter.try_acquire(f"192.0.2.{n}") for n in range(3))
    assert not limiter.try_acquire("192.0.2.99")
    limiter.release("192.0.2.0")
    assert limiter.try_acquire("192.0.2.99")


def test_peers_without_an_address_count_in_the_total_only():
    # UNIX-socket clients have no IP: no per-IP limit, the total still holds.
    limiter = ConnectionLimiter(max_total=3, max_per_ip=1)
    assert limiter.try_acquire(None) == ADDRESSLESS
    assert limiter.try_acquire(None) == ADDRESSLESS
    assert limiter.try_acquire("192.0.2.1")
    assert limiter.try_acquire(None) is None
    limiter.release(ADDRESSLESS)
    assert limiter.try_acquire(None) == ADDRESSLESS
    assert limiter.tracked() == 1
    limiter.release(ADDRESSLESS)
    limiter.release(ADDRESSLESS)
    with pytest.raises(ValueError, match="without a matching acquire"):
        limiter.release(ADDRESSLESS)
    assert limiter.total == 1



def test_refused_acquire_counts_nothing():
    limiter = ConnectionLimiter(max_total=1, max_per_ip=1)
    assert limiter.try_acquire("192.0.2.1")
    assert limiter.try_acquire("192.0.2.2") is None
    assert limiter.total == 1
    assert limiter.tracked() == 1


def test_release_without_acquire_is_an_error():
    limiter = ConnectionLimiter(max_total=1, max_per_ip=1)
    with pytest.raises(ValueError, match="without a matching acquire"):
        limiter.release("192.0.2.1")


def test_ipv6_addresses_count_by_their_prefix():
    limiter = ConnectionLimiter(max_total=100, max_per_ip=2)
    assert limiter.try_acquire("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert limiter.try_acquire("2001:db8:1:2:a:b:c:d") == "2001:db8:1:2::/64"
    # A third address of the same /64 is the same client.
    assert limiter.try_acquire("2001:db8:1:2::ffff") is None
    assert limiter.try_acquire("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert limiter.count("2001:db8:1:2::99") == 2


def test_a_new_prefix_applies_to_new_connections_and_releases_stay_balanced():
    limiter = ConnectionLimiter(max_total=100, max_per_ip=1)
    held = limiter.try_acquire("2001:db8::1")
    limiter.ipv6_prefix = 128
    assert limiter.try_acquire("2001:db8::2") == "2001:db8::2"
    limiter.release(held)
    limiter.release("2001:db8::2")
    assert limiter.total == 0 and limiter.tracked() == 0


@settings(max_examples=200)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from(
    ["10.0.0.1", "::ffff:10.0.0.1", "10.0.0.2", "::1", "::2", "2001:db8::1", "2001:db8:0:1::1", None]))))
def test_counts_match_a_model_and_memory_empties(operations):
    limiter = ConnectionLimiter(max_total=5, max_per_ip=2)
    held = []
    for acquire, ip in operations:
        if acquire:
            key = ADDRESSLESS if ip is None else limit_key(ip)
            expected = len(held) < 5 and (ip is None or held.count(key) < 2)
            assert limiter.try_acquire(ip) == (key if expected else None)
            if expected:
                held.append(key)
        elif held:
            limiter.release(held.pop(0))
        assert limiter.total == len(held)
    for key in held:
        limiter.release(key)
    assert limiter.total == 0
    assert limiter.tracked() == 0


def test_login_limiter_per_user():
    logins = LoginLimiter(max_per_user=2)
    assert logins.try_acquire("alice")
    assert logins.try_acquire("alice")
    assert not logins.try_acquire("alice")
    assert logins.try_acquire("bob")
    logins.release("alice")
    assert logins.try_acquire("alice")
    assert logins.count("alice") == 2
    with pytest.raises(ValueError):
        logins.release("carol")


def test_failures_slide_out_of_the_window():
    clock = FakeClock()
    failures = FailureWindow(depth=4, window=300, clock=clock)
    for step in range(4):
        clock.now = 1000.0 + step * 90
        assert failures.record("192.0.2.1") == step + 1
    # At 1300 the failure from 1000 is exactly one window old: out.
    clock.now = 1300.0
    assert failures.count("192.0.2.1") == 3
    clock.now = 1600.0
    assert failures.count("192.0.2.1") == 0
    assert failures.tracked() == 0


def test_tracked_keys_are_capped_least_recent_first():
    clock = FakeClock()
    failures = FailureWindow(depth=4, window=300, clock=clock, max_tracked=3)
    for n in range(3):
        failures.record(f"192.0.2.{n}")
    failures.record("192.0.2.0")  # now the most recent
    failures.record("192.0.2.9")
    assert failures.tracked() == 3
    assert failures.count("192.0.2.1") == 0
    assert failures.count("192.0.2.0") == 2
    assert failures.count("192.0.2.9") == 1


def test_history_per_key_is_bounded_and_follows_a_new_depth():
    clock = FakeClock()
    failures = FailureWindow(depth=3, window=300, clock=clock)
    for _ in range(10_000):
        failures.record("192.0.2.1")
    assert failures.count("192.0.2.1") == 3
    failures.depth = 5
    assert failures.record("192.0.2.1") == 4
    failures.depth = 2
    assert failures.record("192.0.2.1") == 2


def test_exempt_networks_are_held_to_the_total_only():
    limiter = ConnectionLimiter(max_total=5, max_per_ip=1, exempt=Networks.parse(["192.0.2.0/24"]))
    keys = [limiter.try_acquire("192.0.2.1") for _ in range(4)]
    assert None not in keys and limiter.count("192.0.2.1") == 4
    # A dual-stack listener's IPv4 peer is the same address, exempt too.
    assert limiter.try_acquire("::ffff:192.0.2.1") is not None
    assert limiter.try_acquire("192.0.2.1") is None  # the total
    for key in keys:
        limiter.release(key)
    assert limiter.try_acquire("198.51.100.1") is not None
    assert limiter.try_acquire("198.51.100.1") is None
