"""
A real reactor running on a thread of its own, for tests of code whose
Deferreds fire on a later reactor turn (the store's writer answers through
``callFromThread``), and for in-process servers driven by real clients from
the test's thread.

    def test_x(reactor_thread):
        store = reactor_thread.call(SQLiteStore, path, reactor=reactor_thread.reactor)
        record = reactor_thread.call(store.append, box_id, b"...")  # waits for the commit
"""

from __future__ import annotations

import threading

from twisted.internet import defer
from twisted.internet.selectreactor import SelectReactor
from twisted.internet.threads import blockingCallFromThread


class ReactorThread:
    def __init__(self):
        self.reactor = SelectReactor()
        self.thread = threading.Thread(
            target=self.reactor.run, kwargs={"installSignalHandlers": False}, name="reactor", daemon=True
        )
        self.ident: int | None = None

    def start(self) -> None:
        self.thread.start()
        self.ident = self.call(threading.get_ident)

    def stop(self) -> None:
        self.reactor.callFromThread(self.reactor.stop)
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the reactor thread did not stop"

    def call(self, function, *args, **kwargs):
        """``function(*args)`` on the reactor thread; its result, once any Deferred it returns has fired."""
        return blockingCallFromThread(self.reactor, lambda: function(*args, **kwargs))


class OnReactorThread:
    """
    A store seen from the test's thread: each method runs on the reactor
    thread, as the server calls it, and returns a Deferred that has fired
    with the outcome, so the contract's ``result_of`` reads it.  ``target``
    is the store itself.
    """

    def __init__(self, target, reactor_thread: ReactorThread):
        self.target = target
        self._reactor_thread = reactor_thread

    def __getattr__(self, name):
        value = getattr(self.target, name)
        if not callable(value):
            return value

        def call(*args, **kwargs):
            try:
                return defer.succeed(self._reactor_thread.call(value, *args, **kwargs))
            except Exception:
                return defer.fail()

        return call


def unwrapped(store):
    """The store behind an L{OnReactorThread}, or ``store``."""
    return getattr(store, "target", store)
