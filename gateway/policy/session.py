"""
The session policy every protocol shares: the config a session runs
under, an absolute deadline (before login, or before DATA), and the count
of bad commands that ends a session.

Written once here so that POP3, IMAP and LMTP cannot drift apart; each
protocol says only what it answers when a limit is reached.

Pure: no Twisted (the clock is passed in).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def session_config(config: Any) -> Any:
    """
    The config a new session runs under, and keeps to its end: the one a
    ``LiveConfig`` (``gateway/reload.py``) holds now, or ``config`` itself.
    A reload swaps ``LiveConfig.current`` whole, so a session never mixes
    two versions, and what changes applies from the next session on.
    """
    return getattr(config, "current", config)


class Deadline:
    """
    A time limit that traffic does not push back (Twisted's ``TimeoutMixin``
    restarts with every byte, so a client trickling a byte at a time would
    hold a session for ever): from connecting to login, or to DATA.

    ``clock`` is an ``IReactorTime``; ``expired`` is called once when the
    time is up, unless ``cancel`` came first.
    """

    def __init__(self, clock, seconds: float, expired: Callable[[], None]) -> None:
        self._clock = clock
        self.seconds = seconds
        self._expired = expired
        self._call = None

    def start(self) -> None:
        """Start counting now (again, if it was counting)."""
        self.cancel()
        self._call = self._clock.callLater(self.seconds, self._expire)

    def cancel(self) -> None:
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()

    @property
    def running(self) -> bool:
        return self._call is not None

    def _expire(self) -> None:
        self._call = None
        self._expired()


class BadCommands:
    """
    The bad commands of one session against ``[limits] max_bad_commands``.
    Which answers are bad is the protocol's to say (a ``BadCommand`` error
    in POP3 and LMTP, a BAD response in IMAP); this only counts.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def bad(self) -> bool:
        """Count one; True when it is the one that reaches the limit."""
        self.count += 1
        return self.count >= self.limit

    def good(self) -> None:
        """A command that succeeded: the count starts again."""
        self.count = 0
