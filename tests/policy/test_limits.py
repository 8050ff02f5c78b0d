import pytest
from hypothesis import given, settings, strategies as st

from gateway.policy.limits import ConnectionLimiter, FailedLoginTracker, LoginLimiter, normalise_ip


class FakeClock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


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
    assert limiter.try_acquire("192.0.2.1")
    assert limiter.try_acquire("::ffff:192.0.2.1")
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
    assert limiter.try_acquire(None) and limiter.try_acquire(None)
    assert limiter.try_acquire("192.0.2.1")
    assert not limiter.try_acquire(None)
    limiter.release(None)
    assert limiter.try_acquire(None)
    assert limiter.tracked() == 1
    limiter.release(None)
    limiter.release(None)
    with pytest.raises(ValueError, match="without a matching acquire"):
        limiter.release(None)
    assert limiter.total == 1


def test_refused_acquire_counts_nothing():
    limiter = ConnectionLimiter(max_total=1, max_per_ip=1)
    assert limiter.try_acquire("192.0.2.1")
    assert not limiter.try_acquire("192.0.2.2")
    assert limiter.total == 1
    assert limiter.tracked() == 1


def test_release_without_acquire_is_an_error():
    limiter = ConnectionLimiter(max_total=1, max_per_ip=1)
    with pytest.raises(ValueError, match="without a matching acquire"):
        limiter.release("192.0.2.1")


@settings(max_examples=200)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from(["10.0.0.1", "::ffff:10.0.0.1", "10.0.0.2", "::1", None]))))
def test_counts_match_a_model_and_memory_empties(operations):
    limiter = ConnectionLimiter(max_total=5, max_per_ip=2)
    held = []
    for acquire, ip in operations:
        if acquire:
            key = None if ip is None else normalise_ip(ip)
            same = sum(1 for h in held if h is not None and normalise_ip(h) == key)
            expected = len(held) < 5 and (ip is None or same < 2)
            assert limiter.try_acquire(ip) == expected
            if expected:
                held.append(ip)
        elif held:
            limiter.release(held.pop(0))
        assert limiter.total == len(held)
    for ip in held:
        limiter.release(ip)
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


def tracker(clock, **overrides):
    options = dict(max_failures=4, window=300, base_delay=1.0, max_delay=5.0, clock=clock)
    options.update(overrides)
    return FailedLoginTracker(**options)


def test_failed_logins_grow_the_delay_then_block():
    clock = FakeClock()
    failures = tracker(clock)
    assert failures.delay("192.0.2.1") == 0.0
    assert not failures.blocked("192.0.2.1")
    assert [failures.record_failure("192.0.2.1") for _ in range(3)] == [1.0, 2.0, 4.0]
    assert not failures.blocked("192.0.2.1")
    # The cap: 8 would be next.
    assert failures.record_failure("192.0.2.1") == 5.0
    assert failures.blocked("192.0.2.1")
    assert failures.blocked("::ffff:192.0.2.1")
    assert not failures.blocked("192.0.2.2")


def test_failures_slide_out_of_the_window():
    clock = FakeClock()
    failures = tracker(clock)
    for step in range(4):
        clock.now = 1000.0 + step * 90
        failures.record_failure("192.0.2.1")
    assert failures.blocked("192.0.2.1")
    # At 1300 the failure from 1000 is exactly one window old: out.
    clock.now = 1300.0
    assert failures.failures("192.0.2.1") == 3
    assert not failures.blocked("192.0.2.1")
    clock.now = 1600.0
    assert failures.failures("192.0.2.1") == 0
    assert failures.delay("192.0.2.1") == 0.0
    assert failures.tracked() == 0


def test_tracked_addresses_are_capped_least_recent_first():
    clock = FakeClock()
    failures = tracker(clock, max_tracked=3)
    for n in range(3):
        failures.record_failure(f"192.0.2.{n}")
    failures.record_failure("192.0.2.0")  # now the most recent
    failures.record_failure("192.0.2.9")
    assert failures.tracked() == 3
    assert failures.failures("192.0.2.1") == 0
    assert failures.failures("192.0.2.0") == 2
    assert failures.failures("192.0.2.9") == 1


def test_history_per_address_is_bounded():
    clock = FakeClock()
    failures = tracker(clock, max_failures=3, max_delay=1e9)
    for _ in range(10_000):
        failures.record_failure("192.0.2.1")
    assert failures.failures("192.0.2.1") == 3
    assert failures.delay("192.0.2.1") == 4.0


def test_huge_counts_do_not_overflow():
    clock = FakeClock()
    failures = tracker(clock, max_failures=5000, max_delay=60.0)
    for _ in range(2000):
        delay = failures.record_failure("192.0.2.1")
    assert delay == 60.0
