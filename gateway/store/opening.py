"""
Opening the store the configuration names: the one place that names a
backend (DESIGN.md).  Everything else holds the store by its interfaces.
"""

from __future__ import annotations

from pathlib import Path

from gateway.store.interfaces import NoStore
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
    if settings.backend == "postgresql":
        return _open_postgresql(settings, reactor)
    raise ValueError(f"unknown store backend {settings.backend!r}")


def _open_postgresql(settings, reactor, migrate_schema: bool = True):
    """
    The shared store of a cluster.  Its modules load only here: a
    single-node server never imports psycopg or boto3.
    """
    from gateway.store.postgresql.chunks import ChunkedBlobs
    from gateway.store.postgresql.store import PostgreSQLStore

    if not settings.dsn:
        raise NoStore('[store] backend = "postgresql" needs store.dsn, the database to use')
    blobs_settings = settings.blobs
    if blobs_settings.kind == "s3":
        from gateway.store.blobs.s3 import S3Blobs

        if not blobs_settings.bucket:
            raise NoStore('[store.blobs] kind = "s3" needs store.blobs.bucket')
        blobs = S3Blobs(
            blobs_settings.bucket,
            endpoint=blobs_settings.endpoint or None,
            region=blobs_settings.region,
            access_key=blobs_settings.access_key or None,
            secret_key=blobs_settings.secret_key or None,
            prefix=blobs_settings.prefix,
            connections=settings.pool_size,
        )
        blobs.check()
    else:
        blobs = ChunkedBlobs()
    return PostgreSQLStore(reactor, settings.dsn, blobs, pool_size=settings.pool_size, migrate_schema=migrate_schema)


def open_maintenance(config, data_dir: Path, reactor):
    """
    The L{IStoreMaintenance} of the same store.  Checking opens nothing
    that could change the store; a repair opens it with ``open_store``.
    """
    settings = config.store
    if settings.backend == "sqlite":
        return SQLiteMaintenance(Path(data_dir) / "store", lambda: open_store(config, data_dir, reactor))
    if settings.backend == "postgresql":
        from gateway.store.postgresql.check import PostgreSQLMaintenance

        # The check reads in one read-only snapshot; only --repair writes,
        # and neither migrates the schema (the nodes do).
        return PostgreSQLMaintenance(lambda: _open_postgresql(settings, reactor, migrate_schema=False))
    raise ValueError(f"unknown store backend {settings.backend!r}")
