"""
Fixtures shared across test folders: one real reactor on a thread of its
own, and the private engines of tests/store/engines.py.
"""

import pytest

from tests.reactorthread import ReactorThread
from tests.store.engines import postgres_cluster, postgres_database, postgres_dsn, seaweed  # noqa: F401


@pytest.fixture(scope="session")
def reactor_thread():
    """One real reactor on a thread of its own for the whole run (see tests/reactorthread.py)."""
    running = ReactorThread()
    running.start()
    yield running
    running.stop()
