"""
The SQLite store is synchronous underneath; its contract is Deferreds.
"""

from __future__ import annotations

import functools

from twisted.internet import defer


def deferred(method):
    """Run a synchronous store method and hand back a fired Deferred."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        return defer.execute(method, *args, **kwargs)

    return wrapper
