"""Fixtures shared across test folders: the private engines of tests/store/engines.py."""

from tests.store.engines import postgres_cluster, postgres_database, postgres_dsn, seaweed  # noqa: F401
