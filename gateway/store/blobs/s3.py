"""
Bodies in an S3-compatible object store (AWS S3, SeaweedFS, MinIO, Ceph
RGW...), one object per content address.

boto3 is the client: the reference implementation of the S3 protocol,
maintained with the service, and what every S3-compatible server tests
against.  Its clients are thread-safe, so one client serves the store's
whole thread pool; uploads from a file go in bounded parts (multipart past a
threshold), so a 50 MB body never sits in memory; retries with backoff are
built in.  Every call here blocks and is made from the store's thread pool.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Iterator

import boto3
import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from zope.interface import implementer

from gateway.store.blobs.interface import BlobMissing, IBlobStore
from gateway.store.blobs.spool import CHUNK, fetched
from gateway.store.interfaces import StoreFull, TemporaryFailure

_MISSING = {"404", "NoSuchKey", "NotFound"}
# What S3 servers answer when they have no room (507 from MinIO and
# SeaweedFS, quota errors from Ceph RGW).
_FULL = {"507", "InsufficientStorage", "QuotaExceeded", "XMinioStorageFull"}


class S3Unavailable(TemporaryFailure):
    """The object store did not answer, or refused."""


@implementer(IBlobStore)
class S3Blobs:
    """
    ``bucket`` must exist; objects are named ``prefix`` + key.  Without
    ``access_key``, boto3 looks for credentials the usual way (environment,
    instance role).
    """

    def __init__(self, bucket: str, endpoint: str | None = None, region: str = "us-east-1",
                 access_key: str | None = None, secret_key: str | None = None, prefix: str = "",
                 connections: int = 10, spool_dir: str | None = None, path_style: bool = True):
        self.bucket = bucket
        self.prefix = prefix
        self._spool_dir = spool_dir
        self._client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint or None,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=Config(
                s3={"addressing_style": "path" if path_style else "virtual"},
                retries={"mode": "standard", "max_attempts": 3},
                connect_timeout=5,
                read_timeout=60,
                max_pool_connections=connections,
            ),
        )
        # Parts are read one at a time into memory: bounded by the part size.
        self._transfer = TransferConfig(
            multipart_threshold=16 * 1024 * 1024, multipart_chunksize=8 * 1024 * 1024, use_threads=False
        )

    def check(self) -> None:
        """
        @raise S3Unavailable: the bucket cannot be reached with these
            credentials (said once at start rather than at the first
            delivery).
        """
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            raise S3Unavailable(f"S3 bucket {self.bucket}: {e}") from e

    def _name(self, key: str) -> str:
        return self.prefix + key

    def put(self, transaction, key, file):
        file.seek(0)
        try:
            self._client.upload_fileobj(file, self.bucket, self._name(key), Config=self._transfer)
        except botocore.exceptions.ClientError as e:
            if e.response.get("Error", {}).get("Code") in _FULL:
                raise StoreFull(f"the object store is full: {e}") from e
            raise S3Unavailable(f"cannot store body {key}: {e}") from e
        except (botocore.exceptions.BotoCoreError, boto3.exceptions.S3UploadFailedError) as e:
            if any(code in str(e) for code in _FULL):
                raise StoreFull(f"the object store is full: {e}") from e
            raise S3Unavailable(f"cannot store body {key}: {e}") from e

    def open(self, transaction, key):
        with self.stream(key) as (_, chunks):
            return fetched(chunks, key, self._spool_dir)

    @contextlib.contextmanager
    def stream(self, key):
        """
        The body under ``key`` as it arrives: (its size, an iterator of its
        chunks), unchecked (the caller hashes it), for a cache to write it
        where it keeps it rather than copying it there.

        @raise BlobMissing: nothing is stored under ``key``.
        @raise S3Unavailable: the object store failed, before or while
            sending it.
        """
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._name(key))
        except botocore.exceptions.ClientError as e:
            if e.response.get("Error", {}).get("Code") in _MISSING:
                raise BlobMissing(key) from None
            raise S3Unavailable(f"cannot read body {key}: {e}") from e
        except botocore.exceptions.BotoCoreError as e:
            raise S3Unavailable(f"cannot read body {key}: {e}") from e
        body = response["Body"]

        def chunks():
            try:
                yield from body.iter_chunks(CHUNK)
            except (botocore.exceptions.BotoCoreError, OSError) as e:
                raise S3Unavailable(f"cannot read body {key}: {e}") from e

        try:
            yield response["ContentLength"], chunks()
        finally:
            body.close()

    def delete(self, transaction, key):
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._name(key))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            raise S3Unavailable(f"cannot delete body {key}: {e}") from e

    def keys(self, transaction, written_before: datetime.datetime) -> Iterator[str]:
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
            for page in pages:
                for item in page.get("Contents", ()):
                    if item["LastModified"] < written_before:
                        yield item["Key"][len(self.prefix):]
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            raise S3Unavailable(f"cannot list bodies: {e}") from e
