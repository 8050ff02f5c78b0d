"""
Bodies in the index's own PostgreSQL database, for sites that want one
engine only: each body as numbered chunks in ``blob_chunks``, written and
read one chunk at a time, so a 50 MB body is never in memory whole.  They
are written in the transaction that names them, so a body and its row
commit together.
"""

from __future__ import annotations

import datetime

from zope.interface import implementer

from gateway.store.blobs.interface import BlobMissing, IBlobStore
from gateway.store.blobs.spool import CHUNK, fetched


@implementer(IBlobStore)
class ChunkedBlobs:
    # Read and written through the index's own transactions.
    in_index = True

    def __init__(self, spool_dir: str | None = None):
        self._spool_dir = spool_dir

    def put(self, transaction, key, file):
        if transaction.one("SELECT 1 FROM blob_chunks WHERE key = %s AND seq = 0", (key,)):
            return  # the same bytes, stored for another message
        file.seek(0)
        seq = 0
        while True:
            chunk = file.read(CHUNK)
            if not chunk and seq:
                break
            transaction.execute("INSERT INTO blob_chunks (key, seq, data) VALUES (%s, %s, %s)", (key, seq, chunk))
            seq += 1
            if not chunk:
                break  # an empty body: one empty chunk says it exists

    def open(self, transaction, key):
        # Single-row mode: one chunk at a time off the wire.
        rows = transaction.cursor.stream("SELECT data FROM blob_chunks WHERE key = %s ORDER BY seq", (key,))
        first = next(rows, None)
        if first is None:
            raise BlobMissing(key)

        def chunks():
            yield first[0]
            for (data,) in rows:
                yield data

        return fetched(chunks(), key, self._spool_dir)

    def delete(self, transaction, key):
        transaction.execute("DELETE FROM blob_chunks WHERE key = %s", (key,))

    def keys(self, transaction, written_before: datetime.datetime):
        # Chunks commit with their row: none is ever left half-written, and
        # a key without a row is an orphan whenever it was written.
        return [row[0] for row in transaction.all("SELECT DISTINCT key FROM blob_chunks WHERE seq = 0")]
