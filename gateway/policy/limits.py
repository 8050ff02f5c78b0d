"""
Counting limits on connections and logins: pure bookkeeping, no I/O.

The Twisted side (``gateway/net/connlimit.py``, the protocols) asks these objects
whether to accept a connection or a login and tells them when one ends or
fails.  Every structure here is bounded: per-IP and per-user counters exist
only while their count is non-zero, and failed-login history keeps at most
``max_tracked`` addresses, least recently failed first out.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable


def normalise_ip(host: str) -> str:
    """
    The address a limit is counted under.

    A dual-stack listener reports IPv4 clients as ``::ffff:a.b.c.d``; counting
    those apart from ``a.b.c.d`` would double the per-IP allowance.  Anything
    that is not an IP address (a UNIX socket path, a test's fake peer) is
    counted under its own text.
    """
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def is_loopback(host: str | None) -> bool:
    """
    Whether a connection to local address ``host`` never left the machine,
    so a plain-text password crosses no network: 127.0.0.0/8, ::1 and
    IPv4-mapped loopback, or ``None`` for a UNIX socket (no host).  Anything
    else that is not an IP address is not trusted.
    """
    if host is None:
        return True
    try:
        address = ipaddress.ip_address(normalise_ip(host))
    except ValueError:
        return False
    return address.is_loopback


class _Counter:
    """Live counts per key, present only while non-zero."""

    def __init__(self) -> None:
        self.counts: dict[Hashable, int] = {}

    def get(self, key: Hashable) -> int:
        return self.counts.get(key, 0)

    def add(self, key: Hashable) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    def remove(self, key: Hashable) -> None:
        count = self.counts.get(key, 0)
        if count <= 1:
            self.counts.pop(key, None)
        else:
            self.counts[key] = count - 1


class ConnectionLimiter:
    """
    At most ``max_total`` connections at once, and ``max_per_ip`` from any one
    address.  ``try_acquire`` and ``release`` are O(1); every successful
    acquire must be matched by exactly one release.
    """

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.total = 0
        self._per_ip = _Counter()
        self._addressless = 0

    def try_acquire(self, ip: str | None) -> bool:
        """``ip`` None is a peer without an address (a UNIX socket): only the total applies."""
        if self.total >= self.max_total:
            return False
        if ip is None:
            self._addressless += 1
        else:
            key = normalise_ip(ip)
            if self._per_ip.get(key) >= self.max_per_ip:
                return False
            self._per_ip.add(key)
        self.total += 1
        return True

    def release(self, ip: str | None) -> None:
        if ip is None:
            if self._addressless == 0:
                raise ValueError("release of a peer without an address, without a matching acquire")
            self._addressless -= 1
            self.total -= 1
            return
        key = normalise_ip(ip)
        if self._per_ip.get(key) == 0:
            raise ValueError(f"release of {ip!r} without a matching acquire")
        self.total -= 1
        self._per_ip.remove(key)

    def count(self, ip: str) -> int:
        return self._per_ip.get(normalise_ip(ip))

    def tracked(self) -> int:
        """How many addresses hold a connection (memory grows with this only)."""
        return len(self._per_ip.counts)


class LoginLimiter:
    """At most ``max_per_user`` authenticated sessions per user, across protocols."""

    def __init__(self, max_per_user: int) -> None:
        self.max_per_user = max_per_user
        self._per_user = _Counter()

    def try_acquire(self, user: str) -> bool:
        if self._per_user.get(user) >= self.max_per_user:
            return False
        self._per_user.add(user)
        return True

    def release(self, user: str) -> None:
        if self._per_user.get(user) == 0:
            raise ValueError(f"release of {user!r} without a matching acquire")
        self._per_user.remove(user)

    def count(self, user: str) -> int:
        return self._per_user.get(user)


class FailedLoginTracker:
    """
    Failed logins per address in a sliding window of ``window`` seconds.

    After n failures in the window the next answer waits
    ``min(max_delay, base_delay * 2 ** (n - 1))`` seconds, and once n reaches
    ``max_failures`` the address is ``blocked`` until old failures slide out
    of the window.  A success does not wipe the record: behind a NAT the
    guesser and the legitimate user share an address.

    Memory is bounded twice: per address only the latest ``max_failures``
    timestamps are kept (more could not change the answer), and at most
    ``max_tracked`` addresses are remembered, the least recently failed
    forgotten first.  ``clock`` returns seconds (pass ``reactor.seconds``).
    """

    def __init__(
        self,
        max_failures: int,
        window: float,
        base_delay: float,
        max_delay: float,
        clock: Callable[[], float],
        max_tracked: int = 65536,
    ) -> None:
        if max_failures < 1 or max_tracked < 1:
            raise ValueError("max_failures and max_tracked must be at least 1")
        self.max_failures = max_failures
        self.window = window
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_tracked = max_tracked
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def record_failure(self, ip: str) -> float:
        """Note a failed login; returns the delay to apply before answering it."""
        key = normalise_ip(ip)
        times = self._failures.pop(key, None)
        if times is None:
            times = deque(maxlen=self.max_failures)
        times.append(self._clock())
        self._failures[key] = times
        while len(self._failures) > self.max_tracked:
            self._failures.popitem(last=False)
        return self.delay(ip)

    def failures(self, ip: str) -> int:
        """Failures from ``ip`` still inside the window."""
        key = normalise_ip(ip)
        times = self._failures.get(key)
        if times is None:
            return 0
        oldest_kept = self._clock() - self.window
        while times and times[0] <= oldest_kept:
            times.popleft()
        if not times:
            del self._failures[key]
            return 0
        return len(times)

    def delay(self, ip: str) -> float:
        """Seconds to wait before answering the next failure from ``ip``."""
        count = self.failures(ip)
        if count == 0:
            return 0.0
        # Cap the exponent too: 2 ** 10000 as a float overflows.
        return min(self.max_delay, self.base_delay * 2 ** min(count - 1, 64))

    def blocked(self, ip: str) -> bool:
        return self.failures(ip) >= self.max_failures

    def tracked(self) -> int:
        return len(self._failures)


# The longest a failed login is made to wait, however many came before it.
MAX_FAILURE_DELAY = 30.0


def login_guards(limits, failure_delay: float, clock: Callable[[], float]) -> tuple[LoginLimiter, FailedLoginTracker]:
    """
    The per-user session limiter and per-IP failed-login tracker that every
    login-taking protocol shares, from the ``[limits]`` config section, so a
    guesser cannot double its attempts by switching from POP3 to IMAP.
    """
    return (
        LoginLimiter(limits.max_connections_per_user),
        FailedLoginTracker(
            limits.failed_logins_per_ip,
            limits.failed_login_window,
            failure_delay,
            max(MAX_FAILURE_DELAY, failure_delay),
            clock,
        ),
    )
