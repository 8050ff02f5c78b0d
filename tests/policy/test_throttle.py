"""
Failed logins (gateway/policy/throttle.py): a delay per address, a lockout
per user at an address, attempts in flight counted as failures.
"""

from hypothesis import given, settings, strategies as st

from gateway.policy.addresses import Networks
from gateway.policy.throttle import MAX_FAILURE_DELAY, LoginThrottle, failure_delay


class FakeClock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def throttle(clock, **options):
    settings = dict(max_failures=4, window=300, base_delay=1.0, clock=clock)
    settings.update(options)
    return LoginThrottle(**settings)


def fail(throttle, ip, user=b"alice"):
    attempt = throttle.begin(ip, user)
    assert attempt is not None, "locked out"
    return throttle.failed(attempt)


def test_the_delay_doubles_per_failure_from_the_address_up_to_15_seconds():
    failures = throttle(FakeClock(), base_delay=2.0, max_failures=100)
    # Whoever fails, the address pays: a guesser spraying user names too.
    delays = [fail(failures, "192.0.2.1", b"user%d" % n) for n in range(6)]
    assert delays == [2.0, 4.0, 8.0, MAX_FAILURE_DELAY, MAX_FAILURE_DELAY, MAX_FAILURE_DELAY]
    assert MAX_FAILURE_DELAY == 15.0  # Dovecot's limit
    assert fail(failures, "192.0.2.2") == 2.0


def test_a_failure_delay_longer_than_the_cap_is_kept():
    assert fail(throttle(FakeClock(), base_delay=20.0), "192.0.2.1") == 20.0


def test_huge_counts_do_not_overflow():
    assert failure_delay(10_000, 1.0, 60.0) == 60.0
    assert failure_delay(0, 1.0, 60.0) == 0.0


def test_a_user_is_locked_out_at_the_address_and_nobody_else_is():
    clock = FakeClock()
    failures = throttle(clock)
    for _ in range(4):
        fail(failures, "192.0.2.1", b"alice")
    assert failures.begin("192.0.2.1", b"alice") is None
    assert failures.begin("::ffff:192.0.2.1", b"alice") is None
    # Bob behind the same NAT, and alice elsewhere, log in as ever.
    assert failures.begin("192.0.2.1", b"bob") is not None
    assert failures.begin("192.0.2.2", b"alice") is not None
    # The window slides: at 1300 the first failure is one window old.
    clock.now = 1300.0
    assert failures.begin("192.0.2.1", b"alice") is not None


def test_a_success_does_not_wipe_the_record():
    failures = throttle(FakeClock())
    for _ in range(3):
        fail(failures, "192.0.2.1")
    failures.release(failures.begin("192.0.2.1", b"alice"))
    fail(failures, "192.0.2.1")
    assert failures.begin("192.0.2.1", b"alice") is None


def test_attempts_in_flight_count_as_failures_until_they_end():
    failures = throttle(FakeClock())
    in_flight = [failures.begin("192.0.2.1", b"alice") for _ in range(4)]
    assert None not in in_flight
    # Forty at once: the fifth finds four failures already.
    assert failures.begin("192.0.2.1", b"alice") is None
    failures.release(in_flight.pop())
    again = failures.begin("192.0.2.1", b"alice")
    assert again is not None
    for attempt in in_flight + [again]:
        failures.failed(attempt)
    assert failures.begin("192.0.2.1", b"alice") is None
    assert failures.tracked() == (1, 1, 0)


def test_ipv6_clients_count_by_their_network():
    failures = throttle(FakeClock(), ipv6_prefix=64)
    for n in range(4):
        fail(failures, f"2001:db8:1:2::{n + 1:x}")
    assert failures.begin("2001:db8:1:2:ffff:ffff:ffff:ffff", b"alice") is None
    assert failures.begin("2001:db8:1:3::1", b"alice") is not None
    assert failures.refusal_delay("2001:db8:1:2::abcd") == 8.0
    # A reload to /128 counts addresses one by one from then on.
    failures.configure(4, 300, 1.0, MAX_FAILURE_DELAY, 128, Networks())
    assert failures.begin("2001:db8:1:2::99", b"alice") is not None


def test_exempt_networks_are_delayed_but_never_locked_out():
    failures = throttle(FakeClock(), exempt=Networks.parse(["192.0.2.0/24"]))
    delays = [fail(failures, "192.0.2.1") for _ in range(10)]
    assert delays[:3] == [1.0, 2.0, 4.0] and delays[-1] == MAX_FAILURE_DELAY
    assert failures.begin("192.0.2.1", b"alice") is not None
    assert failures.tracked() == (1, 0, 0)


def test_refusal_delay_is_at_least_the_base_delay():
    failures = throttle(FakeClock(), max_failures=1, base_delay=2.0)
    assert failures.refusal_delay("192.0.2.1") == 2.0
    for n in range(5):
        fail(failures, "192.0.2.1", b"u%d" % n)
    assert failures.refusal_delay("192.0.2.1") == MAX_FAILURE_DELAY


def test_memory_is_bounded_whatever_the_names_and_addresses():
    clock = FakeClock()
    failures = throttle(clock, max_tracked=50)
    for n in range(1000):
        fail(failures, f"10.0.{n // 250}.{n % 250}", b"x" * 8000 + b"%d" % n)
    addresses, accounts, pending = failures.tracked()
    assert addresses <= 50 and accounts <= 50 and pending == 0


@settings(max_examples=300)
@given(st.lists(st.tuples(st.sampled_from(["begin", "fail", "pass", "tick"]), st.sampled_from([b"a", b"b"]))))
def test_locks_match_a_model(steps):
    """Failures plus attempts in flight for (address, user) never pass max_failures."""
    clock = FakeClock()
    failures = throttle(clock, max_failures=3, window=10)
    history = {b"a": [], b"b": []}
    open_attempts = {b"a": [], b"b": []}
    for action, user in steps:
        if action == "tick":
            clock.now += 4
        elif action == "begin":
            recent = [t for t in history[user] if t > clock.now - 10]
            attempt = failures.begin("192.0.2.1", user)
            assert (attempt is None) == (len(recent) + len(open_attempts[user]) >= 3)
            if attempt is not None:
                open_attempts[user].append(attempt)
        elif open_attempts[user]:
            attempt = open_attempts[user].pop(0)
            if action == "fail":
                failures.failed(attempt)
                history[user].append(clock.now)
            else:
                failures.release(attempt)
