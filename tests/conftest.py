import pytest

from tests.reactorthread import ReactorThread


@pytest.fixture(scope="session")
def reactor_thread():
    """One real reactor on a thread of its own for the whole run (see tests/reactorthread.py)."""
    running = ReactorThread()
    running.start()
    yield running
    running.stop()
