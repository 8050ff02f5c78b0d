"""The session policy POP3, IMAP and LMTP share (gateway/policy/session.py)."""

from twisted.internet.task import Clock

from gateway.policy.session import BadCommands, Deadline, session_config


class Live:
    def __init__(self, current):
        self.current = current


def test_a_session_runs_under_the_config_in_force_when_it_starts():
    assert session_config(Live("new")) == "new"
    assert session_config("plain") == "plain"


def test_the_deadline_is_absolute_and_fires_once():
    clock = Clock()
    fired = []
    deadline = Deadline(clock, 10, lambda: fired.append(clock.seconds()))
    deadline.start()
    assert deadline.running
    clock.advance(9.9)
    assert fired == []
    clock.advance(0.1)
    assert fired == [10]
    assert not deadline.running
    clock.advance(100)
    assert fired == [10]


def test_a_cancelled_deadline_never_fires_and_can_start_again():
    clock = Clock()
    fired = []
    deadline = Deadline(clock, 10, lambda: fired.append(clock.seconds()))
    deadline.start()
    clock.advance(5)
    deadline.cancel()
    deadline.cancel()
    clock.advance(50)
    assert fired == [] and clock.getDelayedCalls() == []
    # Started again (LMTP, after a transaction): counted from now.
    deadline.start()
    clock.advance(10)
    assert fired == [65]


def test_starting_again_restarts_the_count():
    clock = Clock()
    fired = []
    deadline = Deadline(clock, 10, lambda: fired.append(clock.seconds()))
    deadline.start()
    clock.advance(8)
    deadline.start()
    clock.advance(8)
    assert fired == []
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(2)
    assert fired == [18]


def test_bad_commands_reach_the_limit_once_counted():
    counter = BadCommands(3)
    assert [counter.bad(), counter.bad(), counter.bad()] == [False, False, True]


def test_a_good_command_starts_the_count_again():
    counter = BadCommands(2)
    assert counter.bad() is False
    counter.good()
    assert counter.bad() is False
    assert counter.bad() is True
