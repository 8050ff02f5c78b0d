"""
Failed logins: a delay per client address and a lockout per user at an
address, as pure bookkeeping (``gateway/policy/login.py`` runs the waits).

Why these keys:

- Behind a NAT (a company's one public address, a mobile carrier), or
  behind a webmail front end that does not name its clients, many people
  share an address.  Locking the address after N failures lets one phone
  with a stale password, or ten typos, lock every one of them out.  A
  correct password is never refused because of someone else's failures, so
  the lockout counts (address, user): a guesser gets ``max_failures``
  tries per account per window from an address, and the account's owner
  elsewhere, or everyone else here, logs in.
- A success does not wipe the record: behind a NAT the guesser and the
  owner share an address, and the owner's login must not give the guesser
  a fresh count.
- The cost per address stays: each failure from the address is answered
  after ``base_delay * 2 ** (n - 1)`` seconds, n its failures in the window,
  at most ``max_delay`` (Dovecot's auth failure delay stops at 15 s).
  Correct passwords are not delayed.  ``login.py`` lets only a few password
  checks per address run at once, each holding its place through its
  delay, so parallel connections do not multiply the rate.
- An attempt counts as a failure from the moment it asks for a password
  check until it succeeds: forty logins sent at once cannot all have their
  passwords checked before the first failure is recorded.
- Addresses in ``exempt`` (an office, a front end that cannot name its
  clients) are never locked out; their failures are still delayed.
- IPv6 addresses count by their ``/ipv6_prefix`` network
  (``addresses.limit_key``).

Memory is bounded: each failure window keeps at most ``max_tracked`` keys
and a few timestamps per key; the user part of an account key is a 16-byte
digest, so long user names cost nothing; pending counts exist only while
attempts are in flight (one per connection at most).

Pure: no Twisted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import attrs

from gateway.policy.addresses import DEFAULT_IPV6_PREFIX, Networks, limit_key
from gateway.policy.limits import Counter, FailureWindow

# The longest a failed login is made to wait, however many came before it
# (Dovecot's limit); a longer failure_delay is used as it is.
MAX_FAILURE_DELAY = 15.0

# Past this exponent the float overflows (2 ** 10000).
_MAX_EXPONENT = 64


def failure_delay(failures: int, base: float, cap: float) -> float:
    """The wait before answering a failure that makes ``failures`` in the window."""
    if failures <= 0:
        return 0.0
    return min(cap, base * 2 ** min(failures - 1, _MAX_EXPONENT))


def _saturation(base: float, cap: float) -> int:
    """How many failures make the delay reach ``cap``: more need not be kept."""
    if base <= 0:
        return 1
    failures = 1
    while failures < _MAX_EXPONENT and base * 2 ** (failures - 1) < cap:
        failures += 1
    return failures


@attrs.frozen
class Attempt:
    """One login attempt under way: the keys its outcome is counted under."""

    address: str
    # None from an exempt address: its failures never lock.
    account: tuple[str, bytes] | None


class LoginThrottle:
    """See the module docstring.  ``clock`` returns seconds (``reactor.seconds``)."""

    def __init__(
        self,
        max_failures: int,
        window: float,
        base_delay: float,
        clock: Callable[[], float],
        *,
        max_delay: float = MAX_FAILURE_DELAY,
        ipv6_prefix: int = DEFAULT_IPV6_PREFIX,
        exempt: Networks = Networks(),
        max_tracked: int = 65536,
    ) -> None:
        self._addresses = FailureWindow(1, window, clock, max_tracked)
        self._accounts = FailureWindow(max_failures, window, clock, max_tracked)
        self._pending = Counter()
        self.configure(max_failures, window, base_delay, max_delay, ipv6_prefix, exempt)

    def configure(
        self, max_failures: int, window: float, base_delay: float, max_delay: float, ipv6_prefix: int,
        exempt: Networks,
    ) -> None:
        """Set every limit (at start and on reload); what is counted so far stays."""
        if max_failures < 1:
            raise ValueError("max_failures must be at least 1")
        self.max_failures = max_failures
        self.base_delay = base_delay
        self.max_delay = max(max_delay, base_delay)
        self.ipv6_prefix = ipv6_prefix
        self.exempt = exempt
        self._accounts.depth = max_failures
        self._accounts.window = self._addresses.window = window
        self._addresses.depth = _saturation(base_delay, self.max_delay)

    def begin(self, ip: str, user: bytes) -> Attempt | None:
        """
        A login for ``user`` from ``ip`` wants its password checked: the
        attempt, counted as a failure until ``failed`` or ``release``, or
        None when the user is locked out at this address.
        """
        address = limit_key(ip, self.ipv6_prefix)
        if ip in self.exempt:
            return Attempt(address, None)
        account = (address, hashlib.blake2b(user, digest_size=16).digest())
        if self._accounts.count(account) + self._pending.get(account) >= self.max_failures:
            return None
        self._pending.add(account)
        return Attempt(address, account)

    def failed(self, attempt: Attempt) -> float:
        """The password was wrong: record it; returns the delay before answering."""
        if attempt.account is not None:
            self._pending.remove(attempt.account)
            self._accounts.record(attempt.account)
        return failure_delay(self._addresses.record(attempt.address), self.base_delay, self.max_delay)

    def release(self, attempt: Attempt) -> None:
        """The attempt ended with no failed check (success, or never checked)."""
        if attempt.account is not None:
            self._pending.remove(attempt.account)

    def refusal_delay(self, ip: str) -> float:
        """The wait before refusing a locked-out login: as a failure's, at least ``base_delay``."""
        failures = self._addresses.count(limit_key(ip, self.ipv6_prefix))
        return max(self.base_delay, failure_delay(failures, self.base_delay, self.max_delay))

    def tracked(self) -> tuple[int, int, int]:
        """Addresses, accounts and attempts in flight remembered (memory grows with these only)."""
        return self._addresses.tracked(), self._accounts.tracked(), len(self._pending.counts)
