"""
Opening the store the configuration names: the one place that names a
backend (DESIGN.md).  Everything else holds the store by its interfaces.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path

from gateway.store.interfaces import NoStore
from gateway.store.sqlite.check import SQLiteMaintenance
from gateway.store.sqlite.store import SQLiteStore


# How often each node of a cluster looks for bodies no message names any
# more; one at a time collects.
COLLECTION_INTERVAL = 3600.0


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
                           serving=serving, parse_at_delivery=settings.parse == "delivery")
    if settings.backend == "postgresql":
        # Only the server keeps copies of bodies: a tool running beside it
        # must not empty its cache.
        cache = Path(data_dir) / "cache" / "bodies" if serving else None
        store = _open_postgresql(settings, reactor, cache=cache)
        if serving:
            store.collect_orphans_every(COLLECTION_INTERVAL)
        return store
    raise ValueError(f"unknown store backend {settings.backend!r}")


def _open_postgresql(settings, reactor, migrate_schema: bool = True, cache: Path | None = None):
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
    if cache is not None and blobs_settings.cache_size:
        from gateway.store.blobs.cache import CachedBlobs

        blobs = CachedBlobs(blobs, cache, blobs_settings.cache_size << 20)
    return PostgreSQLStore(reactor, settings.dsn, blobs, pool_size=settings.pool_size,
                           connect_timeout=settings.connect_timeout, migrate_schema=migrate_schema,
                           flag_durability=settings.flag_durability)


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


def open_copy_source(data_dir: Path, reactor):
    """
    The SQLite store of the data dir ``data_dir``, whatever the config now
    says, for ``gateway migrate`` to copy; it may be serving meanwhile.
    """
    root = Path(data_dir) / "store"
    if not (root / "index.sqlite").is_file():
        raise NoStore(f"{root}: no SQLite store to copy (no index.sqlite)")
    return SQLiteStore(root, reactor=reactor)


def open_copy_target(to: str, blobs: str | None, reactor, connections: int):
    """
    The PostgreSQL store at ``to`` (a ``postgresql://`` URL or a libpq
    connection string) with bodies where ``blobs`` says (L{parse_blobs}),
    its schema created or migrated: what ``gateway migrate`` copies into.

    @raise ValueError: ``to`` or ``blobs`` is not one of those.
    """
    from gateway.store.postgresql.chunks import ChunkedBlobs
    from gateway.store.postgresql.store import PostgreSQLStore

    if "://" in to and not to.startswith(("postgresql://", "postgres://")):
        raise ValueError(f"--to {to!r}: give a postgresql:// URL or a libpq connection string")
    where = parse_blobs(blobs)
    if where is None:
        store_blobs = ChunkedBlobs()
    else:
        from gateway.store.blobs.s3 import S3Blobs

        store_blobs = S3Blobs(connections=connections, **where)
        store_blobs.check()
    return PostgreSQLStore(reactor, to, store_blobs, pool_size=connections)


def parse_blobs(url: str | None) -> dict | None:
    """
    Where ``gateway migrate --blobs`` puts bodies: None (or "postgresql")
    for PostgreSQL itself, else ``s3://BUCKET[/PREFIX][?endpoint=URL&region=NAME]``
    as L{S3Blobs} arguments; credentials come the usual boto3 way
    (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or an instance role).

    @raise ValueError: with the one line to show.
    """
    if url is None or url == "postgresql":
        return None
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"--blobs {url!r}: give s3://BUCKET[/PREFIX][?endpoint=URL&region=NAME] or postgresql")
    try:
        query = urllib.parse.parse_qs(parts.query, strict_parsing=bool(parts.query), max_num_fields=2)
    except ValueError as e:
        raise ValueError(f"--blobs {url!r}: {e}") from None
    unknown = sorted(set(query) - {"endpoint", "region"})
    if unknown:
        raise ValueError(f"--blobs {url!r}: unknown parameter {unknown[0]!r} (known: endpoint, region)")
    if any(len(values) > 1 for values in query.values()):
        raise ValueError(f"--blobs {url!r}: each parameter once")
    return {
        "bucket": parts.netloc,
        # As store.blobs.prefix: verbatim, so "s3://mail/gw/" names "gw/...".
        "prefix": parts.path[1:],
        "endpoint": query.get("endpoint", [None])[0],
        "region": query.get("region", ["us-east-1"])[0],
    }

