"""
The one login sequence (gateway/policy/login.py), driven with a Clock and a
checker whose answers the test gives: what is checked, when, and what each
caller is told.
"""

import attrs
import pytest
from twisted.cred.checkers import ICredentialsChecker, InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from zope.interface import Interface, implementer

from gateway.config import AuthConfig, Config, LimitsConfig, ProxyConfig, loads
from gateway.policy.login import BadCredentials, Granted, LockedOut, LoginPolicy, TooManySessions
from tests.deferreds import failure_of, result_of

PASSWORDS = {b"alice": b"secret", b"bob": b"other"}


class IThing(Interface):
    """The avatar interface the protocol asks for."""


@implementer(ICredentialsChecker)
class HeldChecker:
    """Each check waits until the test calls ``answer``; ``asked`` counts the checks (the hashes)."""

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self):
        self.waiting: list[tuple[bytes, bytes, Deferred]] = []
        self.asked = 0

    def requestAvatarId(self, credentials):
        self.asked += 1
        d = Deferred()
        self.waiting.append((credentials.username, credentials.password, d))
        return d

    def answer(self, count=None):
        """Answer the oldest ``count`` checks (all by default) as the passwords say."""
        answered, self.waiting = self.waiting[:count], self.waiting[len(self.waiting[:count]):]
        for user, password, d in answered:
            if PASSWORDS.get(user) == password:
                d.callback(user.decode())
            else:
                d.errback(UnauthorizedLogin())


class InUse(Exception):
    """A realm's own refusal (as POP3's locked maildrop)."""


@implementer(IRealm)
@attrs.define
class Realm:
    logouts: int = 0
    refuse: bool = False

    def requestAvatar(self, avatar_id, mind, *interfaces):
        if self.refuse:
            raise InUse()
        return succeed((IThing, avatar_id, self.logout))

    def logout(self):
        self.logouts += 1


def setup(**limits):
    clock = Clock()
    checker = HeldChecker()
    realm = Realm()
    options = dict(failed_logins_per_ip=10, password_checks_per_ip=4)
    options.update(limits)
    config = Config(auth=AuthConfig(failure_delay=2.0), limits=LimitsConfig(**options))
    return LoginPolicy(config, clock), Portal(realm, [checker]), checker, realm, clock


def settle(checker, clock, attempts):
    """Answer every check and let every delay pass (bounded); returns the outcomes."""
    for _ in range(100):
        if all(d.called for d in attempts):
            break
        checker.answer()
        clock.advance(MAX_WAIT)
    outcomes = []
    for d in attempts:
        d.addBoth(outcomes.append)
    assert len(outcomes) == len(attempts)
    return outcomes


def attempt(policy, portal, user=b"alice", password=b"wrong", ip="192.0.2.1", **options):
    return policy.login(portal, "imap", ip, user, password, IThing, **options)


def test_forty_parallel_wrong_logins_get_ten_password_checks():
    policy, portal, checker, realm, clock = setup()
    attempts = [attempt(policy, portal) for _ in range(40)]
    # Thirty find ten attempts in flight: locked out, never checked.
    clock.advance(2.0)
    locked = [d for d in attempts if d.called]
    assert len(locked) == 30 and all(failure_of(d, LockedOut) for d in locked)
    for _ in range(10):
        checker.answer()
        clock.advance(MAX_WAIT)
    assert checker.asked == 10
    assert all(failure_of(d, BadCredentials) for d in attempts if d not in locked)
    assert policy.addresses_checking() == 0


MAX_WAIT = 15.0


def test_password_checks_per_address_are_bounded_and_hold_their_place_through_the_delay():
    policy, portal, checker, realm, clock = setup(password_checks_per_ip=2)
    # Spraying: every login for another user, so no lockout helps.
    guesses = [attempt(policy, portal, user=b"user%d" % n) for n in range(6)]
    assert checker.asked == 2
    checker.answer()
    # Wrong: answered after the delay (2 s, then 4 s), the places held till then.
    clock.advance(1.9)
    assert checker.asked == 2 and not any(d.called for d in guesses)
    clock.advance(0.1)
    assert failure_of(guesses[0], BadCredentials)
    assert checker.asked == 3
    # Another address is not held up.
    elsewhere = attempt(policy, portal, user=b"bob", password=b"other", ip="192.0.2.2")
    assert checker.asked == 4
    outcomes = settle(checker, clock, guesses[1:] + [elsewhere])
    assert all(outcome.check(BadCredentials) for outcome in outcomes[:-1])
    outcomes[-1].end()
    assert checker.asked == 7 and policy.addresses_checking() == 0


def test_a_correct_password_queued_behind_failures_is_granted_never_refused():
    policy, portal, checker, realm, clock = setup(password_checks_per_ip=1)
    guesses = [attempt(policy, portal, user=b"user%d" % n) for n in range(20)]
    checker.answer()
    clock.advance(2.0)
    right = attempt(policy, portal, user=b"bob", password=b"other")
    waited = 0.0
    while not right.called and waited < 600:
        checker.answer()
        clock.advance(MAX_WAIT)
        waited += MAX_WAIT
    granted = result_of(right)
    assert isinstance(granted, Granted) and granted.avatar == "bob"
    granted.end()
    assert realm.logouts == 1
    assert all(outcome.check(BadCredentials) for outcome in settle(checker, clock, guesses))


def test_a_login_cancelled_while_queued_is_never_checked():
    policy, portal, checker, realm, clock = setup(password_checks_per_ip=1, failed_logins_per_ip=2)
    first = attempt(policy, portal)
    queued = attempt(policy, portal)
    queued.cancel()
    assert failure_of(queued, CancelledError)
    # Its place in the lockout count is free again: a third may queue.
    third = attempt(policy, portal, password=b"secret")
    checker.answer()
    clock.advance(2.0)
    assert failure_of(first, BadCredentials)
    checker.answer()
    assert result_of(third).avatar == "alice"
    assert checker.asked == 2


def test_a_client_leaving_during_its_check_frees_nothing_early():
    policy, portal, checker, realm, clock = setup(password_checks_per_ip=1)
    wrong = attempt(policy, portal)
    wrong.cancel()
    assert failure_of(wrong, CancelledError)
    queued = attempt(policy, portal, user=b"bob", password=b"other")
    checker.answer()
    # The check ran on and its delay holds the place.
    clock.advance(1.9)
    assert checker.asked == 1
    clock.advance(0.1)
    assert checker.asked == 2
    checker.answer()
    assert result_of(queued).avatar == "bob"
    right = attempt(policy, portal, password=b"secret")
    assert checker.asked == 3
    right.cancel()
    assert failure_of(right, CancelledError)
    checker.answer()
    # The session the cancelled check opened was ended at once.
    assert realm.logouts == 1
    assert policy.sessions.count("alice") == 0 and policy.sessions.count("bob") == 1


def test_sessions_per_user():
    policy, portal, checker, realm, clock = setup(max_connections_per_user=1)
    first = attempt(policy, portal, password=b"secret")
    second = attempt(policy, portal, password=b"secret")
    with capturedLogs() as events:
        checker.answer()
    granted = result_of(first)
    assert failure_of(second, TooManySessions)
    assert realm.logouts == 1
    assert "reason=too-many-sessions" in " ".join(e["log_format"].format(**e) for e in events)
    granted.end()
    third = attempt(policy, portal, password=b"secret")
    checker.answer()
    assert result_of(third).avatar == "alice"


def test_a_realm_refusal_is_logged_with_its_reason_and_counts_no_failure():
    policy, portal, checker, realm, clock = setup(failed_logins_per_ip=1)
    realm.refuse = True
    with capturedLogs() as events:
        refused = attempt(policy, portal, password=b"secret", refusals={InUse: "in-use"})
        checker.answer()
    assert failure_of(refused, InUse)
    assert [e["log_format"].format(**e) for e in events if e.get("log_namespace") == "gateway.auth"] == [
        "login failed: protocol=imap user=alice ip=192.0.2.1 reason=in-use"
    ]
    realm.refuse = False
    again = attempt(policy, portal, password=b"secret")
    checker.answer()
    assert result_of(again).avatar == "alice"


def test_originating_ip_only_from_trusted_front_ends():
    config = Config(proxy=ProxyConfig(login_trusted_networks=("10.0.0.0/8",)))
    policy = LoginPolicy(config, Clock())
    assert policy.originating_ip("10.1.2.3", "192.0.2.7") == "192.0.2.7"
    assert policy.originating_ip("::ffff:10.1.2.3", "::ffff:192.0.2.7") == "192.0.2.7"
    assert policy.originating_ip("10.1.2.3", "2001:DB8::1") == "2001:db8::1"
    assert policy.originating_ip("10.1.2.3", "not an address") is None
    assert policy.originating_ip("192.0.2.1", "192.0.2.7") is None
    assert LoginPolicy(Config(), Clock()).originating_ip("127.0.0.1", "192.0.2.7") is None


def test_retune_applies_a_reloaded_config():
    policy, portal, checker, realm, clock = setup(failed_logins_per_ip=10)
    for _ in range(2):
        assert settle(checker, clock, [attempt(policy, portal)])[0].check(BadCredentials)
    policy.retune(Config(auth=AuthConfig(failure_delay=0.5), limits=LimitsConfig(
        failed_logins_per_ip=2, max_connections_per_user=7, lockout_exempt_networks=("192.0.2.128/25",))))
    locked = attempt(policy, portal, password=b"secret")
    clock.advance(MAX_WAIT)
    assert failure_of(locked, LockedOut)
    assert policy.sessions.max_per_user == 7
    exempt = attempt(policy, portal, ip="192.0.2.200")
    checker.answer()
    clock.advance(0.49)
    assert not exempt.called
    clock.advance(0.01)
    assert failure_of(exempt, BadCredentials)


@pytest.mark.parametrize("user", [b"\xff\xfe", b"x" * 5000])
def test_odd_user_names_fail_like_any_other(user):
    policy, portal, checker, realm, clock = setup()
    failed = attempt(policy, portal, user=user)
    checker.answer()
    clock.advance(2.0)
    assert failure_of(failed, BadCredentials)


def test_a_checker_that_answers_at_once_hands_places_on_in_order():
    """A synchronous checker runs the next check inside the release of the place before it."""
    clock = Clock()
    checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret", bob=b"other")
    config = Config(auth=AuthConfig(failure_delay=1.0), limits=LimitsConfig(password_checks_per_ip=1))
    policy = LoginPolicy(config, clock)
    portal = Portal(Realm(), [checker])
    first = attempt(policy, portal)
    then = [attempt(policy, portal, user=b"bob", password=b"other") for _ in range(3)]
    assert not any(d.called for d in then)
    clock.advance(1.0)
    assert failure_of(first, BadCredentials)
    assert [result_of(d).avatar for d in then] == [b"bob"] * 3
    assert policy.addresses_checking() == 0


def test_a_queue_longer_than_the_recursion_limit_is_handed_on_in_a_loop():
    """
    With the credential cache every check ends inside the release that
    started it; handing places on by recursion lost the end of a long queue
    (a hundred sessions of one user logging in at once, from an office
    exempt from the lockout that attempts in flight would otherwise hit).
    """
    import sys

    clock = Clock()
    checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
    count = sys.getrecursionlimit() + 100
    limits = LimitsConfig(
        password_checks_per_ip=1, lockout_exempt_networks=("192.0.2.0/24",), max_connections_per_user=count
    )
    config = Config(auth=AuthConfig(failure_delay=1.0), limits=limits)
    policy = LoginPolicy(config, clock)
    portal = Portal(Realm(), [checker])
    first = attempt(policy, portal)
    queued = [attempt(policy, portal, password=b"secret") for _ in range(count)]
    clock.advance(1.0)
    assert failure_of(first, BadCredentials)
    assert all(d.called for d in queued)
    assert {result_of(d).avatar for d in queued} == {b"alice"}
    assert policy.addresses_checking() == 0


def test_networks_by_name_exempt_from_lockout_never_from_the_delay():
    config = loads('[networks]\noffice = ["192.0.2.0/25"]\n[auth]\nfailure_delay = 1.0\n'
                   '[limits]\nfailed_logins_per_ip = 1\nlockout_exempt_networks = ["office"]\n'
                   '[proxy]\nlogin_trusted_networks = ["office"]\n')
    clock = Clock()
    checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
    policy = LoginPolicy(config, clock)
    portal = Portal(Realm(), [checker])
    for _ in range(3):
        failed = attempt(policy, portal, ip="192.0.2.7")
        clock.advance(0.99)
        assert not failed.called
        clock.advance(15)
        assert failure_of(failed, BadCredentials)
    assert result_of(attempt(policy, portal, ip="192.0.2.7", password=b"secret")).avatar == b"alice"
    # Outside the office, one failure locks the user out there.
    assert failure_of(settle_one(policy, portal, clock, "192.0.2.200"), BadCredentials)
    locked = attempt(policy, portal, ip="192.0.2.200", password=b"secret")
    clock.advance(MAX_WAIT)
    assert failure_of(locked, LockedOut)
    assert policy.originating_ip("192.0.2.7", "198.51.100.1") == "198.51.100.1"
    assert policy.originating_ip("192.0.2.200", "198.51.100.1") is None


def settle_one(policy, portal, clock, ip):
    failed = attempt(policy, portal, ip=ip)
    clock.advance(MAX_WAIT)
    return failed
