"""
The login state a node of several processes shares (``[server] workers``):
the failed-login throttle (the lockout per user at an address and the
delay per address, ``throttle.py``) and the sessions per user
(``limits.LoginLimiter``) are the main process's, and the workers ask it,
as Dovecot's login processes ask anvil.  A guesser who reaches several
processes gets the failures the config allows, no more, and a user the
sessions it allows, in all.

Each worker holds an AMP connection to the main process (a socket pair
made when it starts).  A login a worker serves costs one round trip to
begin, one more when its password is wrong or once it is granted (the
session count); the end of an attempt or of a session is sent without
waiting.  What a worker held when it ends (attempts under way, sessions)
is given back when its connection closes, so a crashed worker leaves no
one locked out or over the session limit.

``LoginPolicy`` (``login.py``) takes the ``Shared...`` objects in place of
its own and awaits their Deferreds; the process that holds the state
answers at once, as before.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.protocols import amp

from gateway.policy.limits import Counter
from gateway.policy.throttle import Attempt


class Begin(amp.Command):
    arguments = [(b"ip", amp.Unicode()), (b"user", amp.String())]
    # ``account`` empty: an exempt address, whose failures never lock.
    response = [(b"locked", amp.Boolean()), (b"address", amp.Unicode()), (b"account", amp.String())]


class Failed(amp.Command):
    arguments = [(b"address", amp.Unicode()), (b"account", amp.String())]
    response = [(b"delay", amp.Float())]


class Release(amp.Command):
    arguments = [(b"address", amp.Unicode()), (b"account", amp.String())]
    requiresAnswer = False


class RefusalDelay(amp.Command):
    arguments = [(b"ip", amp.Unicode())]
    response = [(b"delay", amp.Float())]


class OpenSession(amp.Command):
    arguments = [(b"user", amp.Unicode())]
    response = [(b"granted", amp.Boolean())]


class CloseSession(amp.Command):
    arguments = [(b"user", amp.Unicode())]
    requiresAnswer = False


def _attempt(address: str, account: bytes) -> Attempt:
    return Attempt(address, (address, account) if account else None)


class LoginAuthority(amp.AMP):
    """The main process's end of one worker's connection, over its ``LoginPolicy``."""

    def __init__(self, policy) -> None:
        super().__init__()
        self.policy = policy
        # What this worker holds, given back if it goes without saying so.
        self._attempts = Counter()
        self._sessions = Counter()

    @Begin.responder
    def begin(self, ip: str, user: bytes):
        attempt = self.policy.throttle.begin(ip, user)
        if attempt is None:
            return {"locked": True, "address": "", "account": b""}
        self._attempts.add(attempt)
        return {"locked": False, "address": attempt.address,
                "account": attempt.account[1] if attempt.account else b""}

    @Failed.responder
    def failed(self, address: str, account: bytes):
        attempt = _attempt(address, account)
        self._attempts.remove(attempt)
        return {"delay": self.policy.throttle.failed(attempt)}

    @Release.responder
    def release(self, address: str, account: bytes):
        attempt = _attempt(address, account)
        self._attempts.remove(attempt)
        self.policy.throttle.release(attempt)
        return {}

    @RefusalDelay.responder
    def refusal_delay(self, ip: str):
        return {"delay": self.policy.throttle.refusal_delay(ip)}

    @OpenSession.responder
    def open_session(self, user: str):
        granted = self.policy.sessions.try_acquire(user)
        if granted:
            self._sessions.add(user)
        return {"granted": granted}

    @CloseSession.responder
    def close_session(self, user: str):
        self._sessions.remove(user)
        self.policy.sessions.release(user)
        return {}

    def connectionLost(self, reason) -> None:
        super().connectionLost(reason)
        for attempt, count in self._attempts.counts.items():
            for _ in range(count):
                self.policy.throttle.release(attempt)
        for user, count in self._sessions.counts.items():
            for _ in range(count):
                self.policy.sessions.release(user)
        self._attempts.counts.clear()
        self._sessions.counts.clear()


class SharedThrottle:
    """A worker's ``LoginThrottle``: the main process's, over ``connection``."""

    def __init__(self, connection: amp.AMP) -> None:
        self.connection = connection

    def configure(self, *settings) -> None:
        """The main process's reload tunes the node's throttle."""

    def begin(self, ip: str, user: bytes) -> Deferred:
        def answered(answer):
            return None if answer["locked"] else _attempt(answer["address"], answer["account"])

        return self.connection.callRemote(Begin, ip=ip, user=user).addCallback(answered)

    def failed(self, attempt: Attempt) -> Deferred:
        account = attempt.account[1] if attempt.account else b""
        return self.connection.callRemote(Failed, address=attempt.address, account=account).addCallback(
            lambda answer: answer["delay"])

    def release(self, attempt: Attempt) -> None:
        account = attempt.account[1] if attempt.account else b""
        self.connection.callRemote(Release, address=attempt.address, account=account)

    def refusal_delay(self, ip: str) -> Deferred:
        return self.connection.callRemote(RefusalDelay, ip=ip).addCallback(lambda answer: answer["delay"])


class SharedSessions:
    """A worker's ``LoginLimiter``: the main process's, over ``connection``."""

    def __init__(self, connection: amp.AMP) -> None:
        self.connection = connection
        # Set by a reload, as the local limiter's; the main process's own applies.
        self.max_per_user = None

    def try_acquire(self, user: str) -> Deferred:
        return self.connection.callRemote(OpenSession, user=user).addCallback(lambda answer: answer["granted"])

    def release(self, user: str) -> None:
        self.connection.callRemote(CloseSession, user=user)
