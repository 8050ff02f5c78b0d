"""
The store's contract is Deferreds: a read answers at once, a write when the
writer has committed it.
"""

from __future__ import annotations

import functools

from twisted.internet import defer


def deferred(method):
    """
    A store method as the contract wants it: what it returns (a value, or
    the Deferred of a write) or raises, as a Deferred.
    """

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        return defer.maybeDeferred(method, *args, **kwargs)

    return wrapper
