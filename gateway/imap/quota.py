"""
QUOTA (RFC 9208) on the wire: GETQUOTA, GETQUOTAROOT and SETQUOTA's
answers for the one quota root every user has (``gateway.policy.quota``).

Pure: no Twisted.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.imap.wire import quote
from gateway.policy.quota import ROOT

# RFC 9208 7: the resources this server counts, as capabilities.
CAPABILITIES = (b"QUOTA", b"QUOTA=RES-STORAGE", b"QUOTA=RES-MESSAGE")
# RFC 9208 4.3 SETQUOTA: limits are the administrator's (the config and the
# users file), not the user's.
SETQUOTA_REFUSED = b"[NOPERM] Quota limits are set by the administrator"
NO_SUCH_ROOT = b"[NONEXISTENT] No such quota root"
OVER_QUOTA = b"[OVERQUOTA] Quota exceeded"


def quota_root(name: bytes) -> bytes:
    """The root name on the wire."""
    return quote(name)


def quotaroot_response(mailbox: bytes, roots: Iterable[str] = (ROOT,)) -> bytes:
    """``QUOTAROOT mailbox root...`` (RFC 9208 5.2), without the leading ``* ``; ``mailbox`` on the wire."""
    return b"QUOTAROOT " + mailbox + b"".join(b" " + quote(root.encode("utf-8")) for root in roots)


def quota_response(resources: Iterable[tuple[str, int, int]], root: str = ROOT) -> bytes:
    """``QUOTA root (resource usage limit ...)`` (RFC 9208 5.1), without the leading ``* ``."""
    listed = b" ".join(b"%s %d %d" % (name.encode("ascii"), usage, limit) for name, usage, limit in resources)
    return b"QUOTA " + quote(root.encode("utf-8")) + b" (" + listed + b")"
