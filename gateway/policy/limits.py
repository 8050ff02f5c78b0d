"""
Counting limits on connections and logins: pure bookkeeping, no I/O.

The Twisted side (``gateway/net/connlimit.py``, ``gateway/policy/login.py``)
asks these objects whether to accept a connection or a login and tells them
when one ends or fails.  Every structure here is bounded: live counters
exist only while their count is non-zero, and failure history keeps at most
``max_tracked`` keys, least recently failed first out.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Hashable

from gateway.policy.addresses import DEFAULT_IPV6_PREFIX, Networks, limit_key

# The key of a peer without an address (a UNIX socket); no IP looks like it.
ADDRESSLESS = "local"


class Counter:
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
    address (an IPv6 address counts with its ``/ipv6_prefix`` network:
    ``gateway.policy.addresses.limit_key``) outside the ``exempt`` networks,
    whose connections the total alone holds.  ``try_acquire`` returns the
    key the connection was counted under, to hand back to ``release`` once,
    so a reload that changes the prefix cannot unbalance the counts.
    """

    def __init__(
        self, max_total: int, max_per_ip: int, ipv6_prefix: int = DEFAULT_IPV6_PREFIX, exempt: Networks = Networks()
    ) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.ipv6_prefix = ipv6_prefix
        self.exempt = exempt
        self.total = 0
        self._per_ip = Counter()
        self._addressless = 0

    def try_acquire(self, ip: str | None) -> str | None:
        """
        The key the connection is counted under, or None when it is refused.
        ``ip`` None is a peer without an address (a UNIX socket): only the
        total applies to it, and it is counted under ``ADDRESSLESS``.
        """
        if self.total >= self.max_total:
            return None
        if ip is None:
            self._addressless += 1
            key = ADDRESSLESS
        else:
            key = limit_key(ip, self.ipv6_prefix)
            if self._per_ip.get(key) >= self.max_per_ip and ip not in self.exempt:
                return None
            self._per_ip.add(key)
        self.total += 1
        return key

    def release(self, key: str) -> None:
        if key == ADDRESSLESS:
            if self._addressless == 0:
                raise ValueError("release of a peer without an address, without a matching acquire")
            self._addressless -= 1
            self.total -= 1
            return
        if self._per_ip.get(key) == 0:
            raise ValueError(f"release of {key!r} without a matching acquire")
        self.total -= 1
        self._per_ip.remove(key)

    def count(self, ip: str) -> int:
        return self._per_ip.get(limit_key(ip, self.ipv6_prefix))

    def tracked(self) -> int:
        """How many addresses hold a connection (memory grows with this only)."""
        return len(self._per_ip.counts)


class LoginLimiter:
    """At most ``max_per_user`` authenticated sessions per user, across protocols."""

    def __init__(self, max_per_user: int) -> None:
        self.max_per_user = max_per_user
        self._per_user = Counter()

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


class FailureWindow:
    """
    Failures per key in a sliding window of ``window`` seconds.

    Memory is bounded twice: per key only the latest ``depth`` timestamps
    are kept (the caller asks no more of a count than that), and at most
    ``max_tracked`` keys are remembered, the least recently failed forgotten
    first.  ``clock`` returns seconds (``reactor.seconds``).
    """

    def __init__(self, depth: int, window: float, clock: Callable[[], float], max_tracked: int = 65536) -> None:
        if depth < 1 or max_tracked < 1:
            raise ValueError("depth and max_tracked must be at least 1")
        self.depth = depth
        self.window = window
        self.max_tracked = max_tracked
        self._clock = clock
        self._failures: OrderedDict[Hashable, deque[float]] = OrderedDict()

    def record(self, key: Hashable) -> int:
        """Note a failure now; returns the failures of ``key`` in the window."""
        times = self._failures.pop(key, None)
        if times is None or times.maxlen != self.depth:
            # A new depth (a reload) takes effect at the key's next failure.
            times = deque(times or (), maxlen=self.depth)
        times.append(self._clock())
        self._failures[key] = times
        while len(self._failures) > self.max_tracked:
            self._failures.popitem(last=False)
        return self.count(key)

    def count(self, key: Hashable) -> int:
        """Failures of ``key`` still inside the window (at most ``depth``)."""
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

    def tracked(self) -> int:
        return len(self._failures)
