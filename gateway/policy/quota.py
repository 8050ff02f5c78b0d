"""
Quotas (RFC 9208): how much mail a user may keep, and whether a new message
fits.  One quota root per user, over all of the user's mailboxes, with two
resources: STORAGE (the messages' sizes together, counted in units of 1024
octets on the wire) and MESSAGE (their number).  The store keeps the usage
(``IMailStore.quota_usage``); this module holds the limits and the
decision, for every protocol that adds mail (IMAP APPEND and COPY, LMTP;
an IMAP MOVE keeps the usage as it is).  POP3 only removes mail and never asks.

Limits come from ``[quota]`` in the config, for everyone, and per user from
the users file's extra fields, in Dovecot's words so that a passwd-file
taken from Dovecot keeps its quotas: ``userdb_quota_rule=*:storage=1G``
(or ``quota_rule``, ``quota_rule2``...), ``*:messages=10000``,
``*:bytes=...``, several limits in one rule (``*:storage=1G:messages=100``)
or ``*:ignore``.  ``storage`` counts kilobytes unless a unit (B, K, M, G, T)
says otherwise, ``bytes`` octets; 0 means no limit.  Rules for one mailbox
(``Trash:storage=+100M``) have no meaning with one root over all mailboxes
and are left aside.

Pure: no Twisted.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import attrs

from gateway.store.model import QuotaUsage

STORAGE = "STORAGE"
MESSAGE = "MESSAGE"

# RFC 9208 3.2: the quota root's name.  One root per user, and an empty
# name as Dovecot's default root has ("User quota" there, "" here: shorter
# and what RFC 9208's own examples use for a user's root).
ROOT = ""

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"([0-9]{1,15})\s*([KMGT]?)B?", re.IGNORECASE)
_RULE_FIELD = re.compile(r"(?:userdb_)?quota_rule[0-9]*")


class QuotaRuleError(ValueError):
    """A quota rule or size that cannot be read; str() says why."""


class OverQuota(Exception):
    """New mail would take a user past a limit; ``resource`` names it (STORAGE, MESSAGE)."""

    def __init__(self, resource: str):
        super().__init__(resource)
        self.resource = resource


def parse_size(text: str, unit: int = 1) -> int:
    """
    Octets of a size such as ``1G``, ``500M``, ``1024K`` or ``300``; a bare
    number counts in ``unit`` octets.
    """
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise QuotaRuleError(f"{text!r} is not a size (a number, or with a unit: 500M, 1G)")
    number, suffix = int(match[1]), match[2].upper()
    has_unit = bool(suffix) or text.strip().upper().endswith("B")
    return number * (_UNITS[suffix] if has_unit else unit)


@attrs.frozen
class QuotaLimits:
    """``storage`` in octets and ``messages``; None is no limit."""

    storage: int | None = None
    messages: int | None = None

    @property
    def unlimited(self) -> bool:
        return self.storage is None and self.messages is None

    def over(self, usage: QuotaUsage, octets: int = 0, messages: int = 0) -> str | None:
        """
        The resource (STORAGE or MESSAGE) that ``usage`` plus ``octets`` in
        ``messages`` more messages would take past its limit, or None when
        they fit.  Adding nothing never goes over (RFC 9208 4.3: a user
        over quota may still delete).
        """
        if messages and self.messages is not None and usage.messages + messages > self.messages:
            return MESSAGE
        if octets and self.storage is not None and usage.storage + octets > self.storage:
            return STORAGE
        return None

    def resources(self, usage: QuotaUsage) -> list[tuple[str, int, int]]:
        """
        RFC 9208 5.1: (resource, usage, limit) of each limited resource,
        STORAGE in units of 1024 octets (usage rounded up, so that a full
        quota never shows as less than full).
        """
        found = []
        if self.storage is not None:
            found.append((STORAGE, -(-usage.storage // 1024), self.storage // 1024))
        if self.messages is not None:
            found.append((MESSAGE, usage.messages, self.messages))
        return found


def _limit(value: int) -> int | None:
    return value or None


def rule_limits(rule: str) -> dict[str, int | None] | None:
    """
    What one Dovecot quota rule (``*:storage=1G:messages=100``) sets:
    ``storage`` (octets) and ``messages``, None for no limit; ``*:ignore``
    sets both to None.  None when the rule is not about all mailboxes.
    """
    mailbox, _, limits = rule.partition(":")
    if mailbox.strip() != "*":
        return None
    found: dict[str, int | None] = {}
    for item in limits.split(":"):
        item = item.strip()
        if item.lower() in ("ignore", "noenforcing"):
            found.update(storage=None, messages=None)
            continue
        if not item:
            continue
        name, equals, value = item.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not equals:
            raise QuotaRuleError(f"quota rule {rule!r}: expected NAME=VALUE, not {item!r}")
        if value.startswith(("+", "-")) or value.endswith("%"):
            raise QuotaRuleError(f"quota rule {rule!r}: a limit for all mailboxes is absolute, not {value!r}")
        if name in ("storage", "bytes"):
            try:
                found["storage"] = _limit(parse_size(value, 1024 if name == "storage" else 1))
            except QuotaRuleError as error:
                raise QuotaRuleError(f"quota rule {rule!r}: {error}") from None
        elif name == "messages":
            if not value.isdigit():
                raise QuotaRuleError(f"quota rule {rule!r}: messages must be a number, not {value!r}")
            found["messages"] = _limit(int(value))
        else:
            raise QuotaRuleError(f"quota rule {rule!r}: unknown limit {name!r} (storage, bytes, messages)")
    return found


def extra_field_limits(extra: str) -> dict[str, int | None] | None:
    """
    What the quota rules among a users-file line's extra fields (space-
    separated NAME=VALUE, Dovecot's passwd-file) set, later rules over
    earlier ones; None when there are none.
    """
    found: dict[str, int | None] | None = None
    for field in extra.split():
        name, equals, value = field.partition("=")
        if not equals or _RULE_FIELD.fullmatch(name.lower()) is None:
            continue
        limits = rule_limits(value)
        if limits is not None:
            found = {**(found or {}), **limits}
    return found


class Quotas:
    """
    Each user's limits: what the users file's rules set, the config's
    ``[quota]`` for the rest.  ``config`` is a Config, or anything whose
    ``current`` is one (a reloaded config takes effect at once);
    ``user_limits(name)`` reads the users file (L{extra_field_limits}).
    """

    def __init__(self, config, user_limits: Callable[[str], dict[str, int | None] | None] = lambda name: None):
        self._config = config
        self._user_limits = user_limits

    def limits_for(self, user: str) -> QuotaLimits:
        quota = getattr(self._config, "current", self._config).quota
        limits = {"storage": _limit(quota.storage * 1024), "messages": _limit(quota.messages)}
        limits.update(self._user_limits(user) or {})
        return QuotaLimits(**limits)

    @property
    def full_tempfail(self) -> bool:
        """Whether a delivery over quota is refused for now (4.2.2) rather than for good (5.2.2)."""
        return getattr(self._config, "current", self._config).quota.full_tempfail


async def check_quota(store, quotas: Quotas | None, user: str, octets: int, messages: int = 1) -> None:
    """
    Raise L{OverQuota} when ``messages`` new messages of ``octets`` in all
    would take ``user`` past a limit.  The store's usage is read, not
    locked: two messages arriving at the same moment may both fit and
    together go a little over, as with Dovecot.
    """
    if quotas is None:
        return
    limits = quotas.limits_for(user)
    if limits.unlimited:
        return
    resource = limits.over(await store.quota_usage(user), octets, messages)
    if resource is not None:
        raise OverQuota(resource)
