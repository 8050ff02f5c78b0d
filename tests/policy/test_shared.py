"""
The login state of a node of several processes (gateway/policy/shared.py):
two worker processes' LoginPolicies over AMP to the main process's, in
memory (iosim), with the checker and clock of test_login.
"""

from twisted.internet.task import Clock
from twisted.protocols import amp
from twisted.test.iosim import connect, makeFakeClient, makeFakeServer

from gateway.config import AuthConfig, Config, LimitsConfig
from gateway.policy.login import BadCredentials, Granted, LockedOut, LoginPolicy, TooManySessions
from gateway.policy.shared import LoginAuthority, SharedSessions, SharedThrottle
from tests.deferreds import failure_of, result_of
from tests.policy.test_login import MAX_WAIT, HeldChecker, IThing, Realm

from twisted.cred.portal import Portal


def config(**limits) -> Config:
    options = dict(failed_logins_per_ip=3, password_checks_per_ip=4, max_connections_per_user=2)
    options.update(limits)
    return Config(auth=AuthConfig(failure_delay=1.0), limits=LimitsConfig(**options))


class Node:
    """The main process's policy and, per worker, a policy sharing it over a pumped AMP connection."""

    def __init__(self, workers=2, **limits):
        self.clock = Clock()
        self.checker = HeldChecker()
        self.portal = Portal(Realm(), [self.checker])
        self.main = LoginPolicy(config(**limits), self.clock)
        self.workers, self.pumps, self.authorities = [], [], []
        for _ in range(workers):
            authority = LoginAuthority(self.main)
            client = amp.AMP()
            pump = connect(authority, makeFakeServer(authority), client, makeFakeClient(client), greet=False)
            worker = LoginPolicy(config(**limits), self.clock)
            worker.share(SharedThrottle(client), SharedSessions(client))
            self.workers.append(worker)
            self.pumps.append(pump)
            self.authorities.append(authority)

    def settle(self, attempt=None):
        """
        Carry every message and answer every check, letting delays pass a
        second at a time until ``attempt`` is answered (bounded: the longest
        delay is MAX_WAIT).
        """
        for _ in range(int(MAX_WAIT) + 2):
            for pump in self.pumps:
                pump.flush()
            self.checker.answer()
            if attempt is not None and attempt.called:
                return
            self.clock.advance(1)

    def login(self, policy, password=b"wrong", user=b"alice"):
        attempt = policy.login(self.portal, "pop3", "192.0.2.1", user, password, IThing)
        self.settle(attempt)
        return attempt


def test_failures_in_every_process_count_to_one_lockout():
    node = Node()
    first, second = node.workers
    # Three failures for alice at this address, one in each process.
    assert failure_of(node.login(first), BadCredentials)
    assert failure_of(node.login(second), BadCredentials)
    assert failure_of(node.login(node.main), BadCredentials)
    # Each process has seen one failure, the node three: locked out everywhere,
    # the right password unchecked.
    asked = node.checker.asked
    for policy in (first, second, node.main):
        assert failure_of(node.login(policy, b"secret"), LockedOut)
    assert node.checker.asked == asked
    # Once the failures leave the window, the right password logs in again.
    node.clock.advance(300)
    granted = result_of(node.login(second, b"secret"))
    assert isinstance(granted, Granted)
    granted.end()


def test_sessions_per_user_count_across_processes():
    node = Node()
    first, second = node.workers
    one = result_of(node.login(first, b"secret"))
    two = result_of(node.login(second, b"secret"))
    assert failure_of(node.login(node.main, b"secret"), TooManySessions)
    assert failure_of(node.login(first, b"secret"), TooManySessions)
    # One ends (its close goes without an answer): the next login gets its place.
    one.end()
    node.settle()
    three = result_of(node.login(node.main, b"secret"))
    assert node.main.sessions.count("alice") == 2
    two.end()
    three.end()
    node.settle()
    assert node.main.sessions.count("alice") == 0


def test_a_worker_that_goes_gives_back_what_it_held():
    node = Node()
    first, second = node.workers
    result_of(node.login(first, b"secret"))
    result_of(node.login(first, b"secret"))
    # An attempt under way: its password check not answered yet.
    waiting = first.login(node.portal, "pop3", "192.0.2.1", b"alice", b"wrong", IThing)
    node.pumps[0].flush()
    assert not waiting.called
    assert node.main.throttle.tracked()[2] == 1
    # The worker dies with two sessions and an attempt open.
    node.pumps[0].client.transport.loseConnection()
    node.pumps[0].flush()
    assert node.main.sessions.count("alice") == 0
    assert node.main.throttle.tracked()[2] == 0
    granted = result_of(node.login(second, b"secret"))
    granted.end()
