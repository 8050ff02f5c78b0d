"""
Opening the store the configuration names: the one place that names a
backend (DESIGN.md).  Everything else holds the store by its interfaces.
"""

from __future__ import annotations

from pathlib import Path

from gateway.store.sqlite.check import SQLiteMaintenance
from gateway.store.sqlite.store import SQLiteStore


def open_store(config, data_dir: Path, reactor, serving: bool = False):
    """
    The L{IMailStore} of ``config.store`` for the data dir ``data_dir``.
    Its Deferreds fire on ``reactor``'s thread; writes leave that thread.
    ``serving`` is for the server's own store, opened once at its start:
    opening it puts right what a crash left (tools open it without).
    """
    settings = config.store
    if settings.backend == "sqlite":
        return SQLiteStore(Path(data_dir) / "store", reactor=reactor, flag_durability=settings.flag_durability,
                           serving=serving)
    raise ValueError(f"unknown store backend {settings.backend!r}")


def open_maintenance(config, data_dir: Path, reactor):
    """
    The L{IStoreMaintenance} of the same store.  Checking opens nothing
    that could change the store; a repair opens it with ``open_store``.
    """
    settings = config.store
    if settings.backend == "sqlite":
        return SQLiteMaintenance(Path(data_dir) / "store", lambda: open_store(config, data_dir, reactor))
    raise ValueError(f"unknown store backend {settings.backend!r}")
