"""
A node's copies of bodies (gateway/store/blobs/cache.py) in front of a body
store that counts what it is asked.
"""

from __future__ import annotations

import contextlib
import hashlib
import io

import pytest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gateway.store.blobs.cache import CachedBlobs
from gateway.store.blobs.interface import BlobMissing, IBlobStore
from gateway.store.blobs.spool import BlobCorrupt


@implementer(IBlobStore)
class Remote:
    """An object store in memory, counting its reads; an upload closes its file, as boto3's does."""

    def __init__(self):
        self.objects: dict[str, bytes] = {}
        self.reads: list[str] = []

    def put(self, transaction, key, file):
        self.objects[key] = file.read()
        file.close()

    def open(self, transaction, key):
        self.reads.append(key)
        if key not in self.objects:
            raise BlobMissing(key)
        return io.BytesIO(self.objects[key])

    def delete(self, transaction, key):
        self.objects.pop(key, None)

    def keys(self, transaction, written_before):
        return list(self.objects)


def body(n: int, size: int = 1000) -> tuple[str, bytes]:
    data = (b"%04d" % n) * (size // 4)
    return hashlib.sha256(data).hexdigest(), data


@pytest.fixture
def remote():
    return Remote()


def test_a_body_read_or_stored_is_read_again_from_the_copy(remote, tmp_path):
    cache = CachedBlobs(remote, tmp_path / "cache", 100_000)
    assert verifyObject(IBlobStore, cache)
    stored_key, stored = body(1)
    cache.put(None, stored_key, io.BytesIO(stored))
    read_key, read = body(2)
    remote.objects[read_key] = read
    with cache.open(None, read_key) as f:
        assert f.read() == read
    for _ in range(3):
        for key, data in ((stored_key, stored), (read_key, read)):
            with cache.open(None, key) as f:
                assert f.read() == data
    assert remote.reads == [read_key]
    assert sorted(path.name for path in (tmp_path / "cache").iterdir()) == sorted([stored_key, read_key])


def test_the_least_recently_used_go_first_past_the_limit(remote, tmp_path):
    cache = CachedBlobs(remote, tmp_path / "cache", 8000)  # bodies of 1000 bytes: at most 8
    bodies = [body(n) for n in range(10)]
    for key, data in bodies:
        cache.put(None, key, io.BytesIO(data))
    # 0 and 1 went; 2 is used again, so 3 goes for the next one.
    cache.open(None, bodies[2][0]).close()
    key, data = body(10)
    cache.put(None, key, io.BytesIO(data))
    kept = {path.name for path in (tmp_path / "cache").iterdir()}
    assert kept == {bodies[n][0] for n in (2, 4, 5, 6, 7, 8, 9)} | {key}
    cache.open(None, bodies[0][0]).close()
    assert remote.reads == [bodies[0][0]]


def test_big_bodies_and_deleted_ones_are_not_kept(remote, tmp_path):
    cache = CachedBlobs(remote, tmp_path / "cache", 8000)
    big_key, big = body(1, size=2000)  # over an eighth of the room
    cache.put(None, big_key, io.BytesIO(big))
    key, data = body(2)
    cache.put(None, key, io.BytesIO(data))
    cache.delete(None, key)
    assert list((tmp_path / "cache").iterdir()) == []
    with pytest.raises(BlobMissing):
        cache.open(None, key)


def test_a_copy_gone_from_disk_is_fetched_again_and_the_start_empties_the_directory(remote, tmp_path):
    cache = CachedBlobs(remote, tmp_path / "cache", 8000)
    key, data = body(1)
    cache.put(None, key, io.BytesIO(data))
    (tmp_path / "cache" / key).unlink()
    with cache.open(None, key) as f:
        assert f.read() == data
    assert remote.reads == [key]
    (tmp_path / "cache" / ".part-left-by-a-crash").write_bytes(b"x")
    CachedBlobs(remote, tmp_path / "cache", 8000)
    assert list((tmp_path / "cache").iterdir()) == []


class Streaming(Remote):
    """An object store that streams a body with its size (as S3Blobs.stream), counting what it sends."""

    def __init__(self):
        super().__init__()
        self.corrupt: set[str] = set()

    @contextlib.contextmanager
    def stream(self, key):
        self.reads.append(key)
        if key not in self.objects:
            raise BlobMissing(key)
        data = self.objects[key]
        if key in self.corrupt:
            data = b"X" + data[1:]
        yield len(data), iter([data[:100], data[100:]])


def test_a_streamed_body_is_written_where_it_is_kept_and_checked(tmp_path):
    remote = Streaming()
    cache = CachedBlobs(remote, tmp_path / "cache", 8000)
    key, data = body(1)
    bad_key, bad = body(2)
    big_key, big = body(3, size=2000)
    remote.objects.update({key: data, bad_key: bad, big_key: big})
    remote.corrupt.add(bad_key)
    with cache.open(None, key) as f:
        assert f.read() == data
    with cache.open(None, key) as f:
        assert f.read() == data
    assert remote.reads == [key]
    with pytest.raises(BlobCorrupt):
        cache.open(None, bad_key)
    with cache.open(None, big_key) as f:
        assert f.read() == big
    # Only the good, small body is kept; nothing half-written is left.
    assert [path.name for path in (tmp_path / "cache").iterdir()] == [key]
    assert cache.holds(key) and not cache.holds(big_key) and not cache.holds(bad_key)
