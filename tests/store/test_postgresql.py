"""
The PostgreSQL backend against a private PostgreSQL (tests/store/engines.py):
the IMailStore contract with bodies in SeaweedFS over S3 and with bodies in
PostgreSQL, plus what only a shared store must do.
"""

from __future__ import annotations

import pytest
from twisted.internet import reactor
from zope.interface.verify import verifyObject

from gateway.store.blobs.s3 import S3Blobs
from gateway.store.interfaces import IChangeFeed, IGroupCommitStore, IImportableStore, IMailStore
from gateway.store.postgresql.chunks import ChunkedBlobs
from gateway.store.postgresql.store import PostgreSQLStore
from tests.deferreds import failure_of, result_of
from tests.store.contract import MESSAGE, MailStoreContract, inbox


def s3_blobs(seaweed, bucket):
    return S3Blobs(bucket, endpoint=seaweed.endpoint, region=seaweed.REGION,
                   access_key=seaweed.ACCESS_KEY, secret_key=seaweed.SECRET_KEY)


@pytest.fixture(params=["s3", "postgresql"])
def blobs(request):
    if request.param == "s3":
        seaweed = request.getfixturevalue("seaweed")
        return s3_blobs(seaweed, seaweed.create_bucket())
    return ChunkedBlobs()


@pytest.fixture
def store(postgres_dsn, blobs):
    s = PostgreSQLStore(reactor, postgres_dsn, blobs, pool_size=4)
    yield s
    s.close()


class TestPostgreSQLStore(MailStoreContract):
    """The contract, with each kind of body store."""


def test_provides_contracts(store):
    assert verifyObject(IMailStore, store)
    assert verifyObject(IChangeFeed, store.changes)
    assert verifyObject(IGroupCommitStore, store)
    assert verifyObject(IImportableStore, store)
