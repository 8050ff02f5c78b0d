"""
Decisions the IMAP protocol takes about untrusted input, kept apart from
I/O so each is tested directly: what a literal marker ``{n}``/``{n+}`` at
the end of a command line says, and what a tag may be.  (Where a password
may travel in plain text is ``gateway.policy.plaintext``, shared with POP3.)

Pure: no Twisted.
"""

from __future__ import annotations

import re

# RFC 7888 5: under LITERAL-, a non-synchronizing literal is at most this.
LITERAL_MINUS_MAX = 4096

# Stands for a literal size written with more digits than any real size has
# (int() of thousands of digits is slow and, past 4300, refused).
HUGE = 2**64

_MARKER = re.compile(rb"\{([^{}\r\n]*)\}\Z")


def literal_marker(line: bytes) -> tuple[int | None, bool] | None:
    """
    The literal announced at the end of ``line``: None when there is none,
    else ``(size, non_synchronizing)``.  ``size`` is None when the braces
    hold no valid number: RFC 3501 9 ``number`` is ASCII digits only, so
    ``{-1}``, ``{+5}``, ``{1_0}`` and ``{ 5}`` (all of which ``int()``
    takes) are refused.  More than 19 digits read as ``HUGE``.
    """
    match = _MARKER.search(line)
    if match is None:
        return None
    text = match[1]
    non_synchronizing = text.endswith(b"+")
    digits = text[:-1] if non_synchronizing else text
    if not digits or not re.fullmatch(rb"[0-9]+", digits):
        return None, non_synchronizing
    digits = digits.lstrip(b"0") or b"0"
    if len(digits) > 19:
        return HUGE, non_synchronizing
    return int(digits), non_synchronizing


def looks_like_tag(token: bytes) -> bool:
    """RFC 3501 9 ``tag``: ASTRING-CHAR except ``+``."""
    return bool(re.fullmatch(rb'[^\x00-\x20\x7f-\xff(){%*"\\+]{1,64}', token))
