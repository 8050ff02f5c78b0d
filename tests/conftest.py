"""
Fixtures shared across test folders: a SQLite store, one real reactor on a
thread of its own, and the private engines of tests/store/engines.py; and
the run's temporary files in memory where the machine has room.
"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from gateway.store.sqlite.store import SQLiteStore
from tests.reactorthread import ReactorThread
from tests.store.engines import postgres_cluster, postgres_database, postgres_dsn, seaweed  # noqa: F401

# Every test builds throw-away stores that fsync as a deployment's must, and
# the fsyncs were most of the run's time.  A kill -9 loses nothing from the
# page cache either way, so the crash tests prove the same on tmpfs; the
# full-disk tests mount their own.  Room for the whole run (a few hundred
# MB) with plenty to spare, or the usual disk.  A short name: socket paths
# under it must stay within AF_UNIX's 108 bytes (HAProxy's 97).
RAM_TMP = Path("/dev/shm")
RAM_TMP_NEEDED = 4 << 30


def pytest_configure(config):
    if "TMPDIR" in os.environ or not RAM_TMP.is_dir() or shutil.disk_usage(RAM_TMP).free < RAM_TMP_NEEDED:
        return
    directory = tempfile.mkdtemp(prefix="gw", dir=RAM_TMP)
    # Like /tmp: the private PostgreSQL runs as an unprivileged user.
    os.chmod(directory, 0o1777)
    os.environ["TMPDIR"] = tempfile.tempdir = directory
    config.add_cleanup(lambda: shutil.rmtree(directory, ignore_errors=True))


@pytest.fixture
def store(tmp_path):
    """A SQLite store of the test's own, without threads (its writes done when the call returns), closed after."""
    store = SQLiteStore(tmp_path / "store")
    yield store
    store.close()


@pytest.fixture(scope="session")
def reactor_thread():
    """One real reactor on a thread of its own for the whole run (see tests/reactorthread.py)."""
    running = ReactorThread()
    running.start()
    yield running
    running.stop()
