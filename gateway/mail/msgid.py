"""
Message IDs as THREAD=REFERENCES compares them (RFC 5256 3): found in
Message-ID, References and In-Reply-To fields and normalised, so that
``<"a.b"@host>`` and ``<a.b@host>`` are the same ID.  Comparison stays
case-sensitive, as the RFC says.

Pure: no Twisted.
"""

from __future__ import annotations

import re

# A comment may sit anywhere CFWS may (RFC 5322 3.2.2); not nested here:
# one level is what MUAs write, and a nested one only loses that ID.
_COMMENT = re.compile(r"\((?:[^()\\]|\\.)*\)")
_ANGLED = re.compile(r"<([^<>]*)>")
_QUOTED_LOCAL = re.compile(r'"((?:[^"\\]|\\.)*)"\s*@\s*(\S+)')
_PLAIN = re.compile(r"[^\s\"<>()]+")


def _normalise(inside: str) -> str | None:
    inside = _COMMENT.sub("", inside).strip()
    quoted = _QUOTED_LOCAL.fullmatch(inside)
    if quoted is not None:
        local = re.sub(r"\\(.)", r"\1", quoted[1])
        return f"{local}@{quoted[2]}" if local and "@" not in quoted[2] else None
    inside = re.sub(r"\s*@\s*", "@", inside)
    if _PLAIN.fullmatch(inside) is None or inside.count("@") > 1 or inside.startswith("@"):
        return None
    return inside


def message_ids(value: str | None) -> list[str]:
    """Every valid ID in a field value, in order (References)."""
    if not value:
        return []
    found = []
    for match in _ANGLED.finditer(value):
        normalised = _normalise(match[1])
        if normalised is not None:
            found.append(normalised)
    return found


def first_message_id(value: str | None) -> str | None:
    """The first valid ID in a field value (Message-ID, In-Reply-To), or None."""
    if not value:
        return None
    for match in _ANGLED.finditer(value):
        normalised = _normalise(match[1])
        if normalised is not None:
            return normalised
    return None
