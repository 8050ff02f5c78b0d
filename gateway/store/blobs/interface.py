"""
What a body store does.  Its calls block; a backend makes them from its
thread pool, inside the index transaction that will name the body.
"""

from __future__ import annotations

from zope.interface import Interface

from gateway.store.interfaces import StoreError


class BlobMissing(StoreError):
    """No body is stored under the key."""


class IBlobStore(Interface):
    """
    Bodies stored under their content address: a key names exactly one
    sequence of bytes, so writing a key again writes the same bytes, and
    two messages with the same body share one.

    Every call gets the index transaction it is part of; a store kept in
    the index's own database writes through it, an object store ignores it.
    """

    def put(transaction, key, file):
        """
        Store the bytes of ``file`` (a binary file at its start) under
        ``key``, durably, before returning: the caller commits the row that
        names the key only afterwards.
        """

    def open(transaction, key):
        """
        @return: a binary file at the start of the bytes stored under
            ``key``, local (reading it never waits on the network); the
            caller closes it.
        @raise BlobMissing: nothing is stored under ``key``.
        """

    def delete(transaction, key):
        """Remove what is stored under ``key``, if anything."""

    def keys(transaction, written_before):
        """
        The keys that may be orphans of a transaction that never committed:
        those whose bytes were written before ``written_before`` (an aware
        datetime).  A store that writes within the index transaction never
        holds an uncommitted body, and may give every key it holds.

        @return: an iterable of keys.
        """
