"""
The one login sequence of every protocol (POP3 USER/PASS and AUTH PLAIN,
IMAP LOGIN and AUTHENTICATE PLAIN), and what the protocols share for it:

1. locked out (this user at this address, ``throttle.py``)?  auth log,
   the delay, refused without a password check;
2. wait for a password-check place of the client's address: at most
   ``[limits] password_checks_per_ip`` at once, the rest queue in order,
   so parallel connections cannot run guesses side by side;
3. the portal checks the password (twisted.cred);
4. wrong: the failure is recorded, logged, and answered after the delay,
   the place held all along; a client that hangs up meanwhile frees nothing;
5. right: the session limit per user (across protocols), auth log, granted.

A correct password is never refused for other users' failures: it may wait
for a place behind them (a few seconds at the worst), no more.

The protocols map the refusals to their wire answers; which client address
a session has (the peer, the PROXY header's source, or what a trusted front
end names in IMAP ID) is theirs to say.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import attrs
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.policy import authlog
from gateway.policy.addresses import is_ip, normalise_ip
from gateway.policy.limits import LoginLimiter
from gateway.policy.throttle import MAX_FAILURE_DELAY, Attempt, LoginThrottle

log = Logger()

_NO_REFUSALS: Mapping[type[Exception], str] = MappingProxyType({})


class LoginRefused(Exception):
    """A login the sequence refused; ``reason`` is what the auth log says."""

    reason = "refused"


class LockedOut(LoginRefused):
    reason = "blocked"


class BadCredentials(LoginRefused):
    reason = "bad-credentials"


class TooManySessions(LoginRefused):
    reason = "too-many-sessions"


@attrs.frozen
class Granted:
    """
    A logged-in session: its avatar, and ``end`` to call once when it
    closes, which returns what the avatar's logout does (POP3: a Deferred
    that fires once the maildrop is free on every node, or None).
    """

    avatar: Any
    end: Callable[[], Any]


class LoginPolicy:
    """
    What every login-taking listener of one server shares, so that a
    guesser gains nothing by switching protocol: the failure throttle, the
    sessions per user and the password-check places per address.  Built
    from a ``Config``; ``retune`` applies a reloaded one.
    """

    def __init__(self, config, clock) -> None:
        self._clock = clock
        limits = config.limits
        self.throttle = LoginThrottle(
            limits.failed_logins_per_ip,
            limits.failed_login_window,
            config.auth.failure_delay,
            clock.seconds,
            max_delay=MAX_FAILURE_DELAY,
            ipv6_prefix=limits.ipv6_prefix,
            exempt=config.resolve(limits.lockout_exempt_networks),
        )
        self.sessions = LoginLimiter(limits.max_connections_per_user)
        self.checks_per_address = limits.password_checks_per_ip
        # [proxy] takes a restart, so this is read once.
        self.front_ends = config.resolve(config.proxy.login_trusted_networks)
        # Only addresses with a check under way or queued have an entry.
        self._places: dict[str, DeferredSemaphore] = {}
        self._leaving: deque[str] = deque()
        self._releasing = False

    def share(self, throttle, sessions) -> None:
        """
        Count failures and sessions in the node's main process (``shared.py``):
        ``throttle`` and ``sessions`` answer as this policy's own, in Deferreds.
        """
        self.throttle = throttle
        self.sessions = sessions

    def retune(self, config) -> None:
        """A reloaded config's ``[limits]`` and ``[auth] failure_delay``, for the next logins."""
        limits = config.limits
        self.throttle.configure(
            limits.failed_logins_per_ip,
            limits.failed_login_window,
            config.auth.failure_delay,
            MAX_FAILURE_DELAY,
            limits.ipv6_prefix,
            config.resolve(limits.lockout_exempt_networks),
        )
        self.sessions.max_per_user = limits.max_connections_per_user
        # An address with checks under way keeps its old number until idle.
        self.checks_per_address = limits.password_checks_per_ip

    def originating_ip(self, peer: str, claimed: str) -> str | None:
        """
        The client address a front end at ``peer`` names for its client
        (IMAP ID ``x-originating-ip``, as Dovecot's login_trusted_networks),
        or None when ``peer`` is not a trusted front end or ``claimed`` no
        IP address.
        """
        if peer in self.front_ends and is_ip(claimed):
            return normalise_ip(claimed)
        return None

    def login(
        self,
        portal,
        protocol: str,
        client: str,
        user: bytes,
        password: bytes,
        interface,
        refusals: Mapping[type[Exception], str] = _NO_REFUSALS,
        mind: object = None,
    ) -> Deferred[Granted]:
        """
        Run the sequence for ``user`` from address ``client``; fires with a
        ``Granted`` or fails with a ``LoginRefused`` (or one of
        ``refusals``, the realm's own, logged with the reason given).
        ``mind`` goes to the realm with the user (twisted.cred's mind: what
        the protocol knows of the session, a POP3 device).

        Cancel it when the connection is lost: a login still queued for
        its place leaves the queue; one whose check has begun runs on, its
        place held through its delay, and a session it opens is ended.
        """
        return Deferred.fromCoroutine(
            self._login(portal, protocol, client, user, password, interface, refusals, mind))

    async def _login(self, portal, protocol, client, user, password, interface, refusals, mind) -> Granted:
        attempt = await _answer(self.throttle.begin(client, user))
        if attempt is None:
            authlog.login_failed(protocol, user, client, LockedOut.reason)
            await deferLater(self._clock, await _answer(self.throttle.refusal_delay(client)))
            raise LockedOut()
        try:
            await self._place(attempt.address)
        except CancelledError:
            self.throttle.release(attempt)
            raise
        checked = Deferred.fromCoroutine(
            self._check(portal, protocol, client, user, password, interface, refusals, mind, attempt)
        )
        return await _detached(checked, (LoginRefused, *refusals))

    async def _check(self, portal, protocol, client, user, password, interface, refusals, mind, attempt: Attempt):
        try:
            try:
                _, avatar, logout = await portal.login(UsernamePassword(user, password), mind, interface)
            except UnauthorizedLogin:
                delay = await _answer(self.throttle.failed(attempt))
                authlog.login_failed(protocol, user, client, BadCredentials.reason)
                await deferLater(self._clock, delay)
                raise BadCredentials() from None
            except BaseException as error:
                self.throttle.release(attempt)
                reason = next((r for kind, r in refusals.items() if isinstance(error, kind)), None)
                if reason is not None:
                    authlog.login_failed(protocol, user, client, reason)
                raise
            self.throttle.release(attempt)
        finally:
            self._leave(attempt.address)
        # The checker's avatar id: the name as given, once it is known good.
        name = user.decode("utf-8", "replace")
        if not await _answer(self.sessions.try_acquire(name)):
            logout()
            authlog.login_failed(protocol, user, client, TooManySessions.reason)
            raise TooManySessions()
        authlog.login_succeeded(protocol, user, client)

        def end():
            # What the avatar's logout returns: a Deferred to wait for, or None.
            ended = logout()
            self.sessions.release(name)
            return ended

        return Granted(avatar, end)

    def _place(self, address: str) -> Deferred:
        places = self._places.get(address)
        if places is None:
            places = self._places[address] = DeferredSemaphore(self.checks_per_address)
        return places.acquire()

    def _leave(self, address: str) -> None:
        # A release wakes the next login of the queue, whose check may end at
        # once (the credential cache) and leave in turn: done inside this
        # call, a long queue would nest one call per login until Python's
        # recursion limit.  Places are given back here one after another.
        self._leaving.append(address)
        if self._releasing:
            return
        self._releasing = True
        try:
            while self._leaving:
                self._give_back(self._leaving.popleft())
        finally:
            self._releasing = False

    def _give_back(self, address: str) -> None:
        places = self._places[address]
        if places.tokens + 1 == places.limit and not places.waiting:
            # The last place comes back.  Forget the address first: the
            # release may wake a waiter whose check ends before it returns.
            del self._places[address]
        places.release()

    def addresses_checking(self) -> int:
        """Addresses with a check under way or queued (memory grows with these only)."""
        return len(self._places)


def _detached(work: Deferred, expected: tuple[type[BaseException], ...]) -> Deferred:
    """
    ``work``'s outcome, in a Deferred whose cancelling leaves ``work``
    running: a session it grants after all is ended at once, and a refusal
    goes unanswered, since nobody is left to tell.
    """
    outcome: Deferred = Deferred()

    def deliver(result):
        if not outcome.called:
            if isinstance(result, Failure):
                outcome.errback(result)
            else:
                outcome.callback(result)
        elif isinstance(result, Granted):
            result.end()
        elif isinstance(result, Failure) and not result.check(*expected):
            log.failure("Login failed after its client left", result)

    work.addBoth(deliver)
    return outcome


async def _answer(value):
    """
    ``value``, or what it fires with when it is a Deferred: in a node of
    several processes the throttle and the sessions count answer from the
    main process (``shared.py``).
    """
    return await value if isinstance(value, Deferred) else value
