"""
Address fields as SEARCH FROM/TO/CC/BCC reads them: each address in its
parsed form, ``Display Name <local@domain>``, so that comments and folding
white space inside an addr-spec (RFC 5322 3.4.1 CFWS, ``<user (c)@ (c)
domain.org>``) do not hide it from a search for ``user@domain.org``.

Pure: no Twisted.
"""

from __future__ import annotations

from gateway.mail.fields import decode_2047
from gateway.mail.header import addresses

# Fields whose values are address lists (RFC 5322 3.6.2, 3.6.3).
ADDRESS_FIELDS = frozenset({"from", "sender", "reply-to", "to", "cc", "bcc"})


def _text(latin1: str) -> str:
    # Header bytes arrive as latin-1 text; 8-bit addresses are UTF-8 (RFC 6532).
    return latin1.encode("latin-1").decode("utf-8", "replace")


def address_text(raw: str) -> str:
    """
    The addresses of a raw field value (latin-1 text, as stored) as
    ``Name <local@domain>`` joined by ", ": display names RFC 2047-decoded,
    comments and CFWS gone, group names kept; "" when none is found.
    """
    shown = []
    for name, _, mailbox, domain in addresses(raw) or ():
        if domain is None:
            if mailbox is not None:
                shown.append(_text(mailbox) + ":")  # a group's name
            continue
        spec = f"{_text(mailbox)}@{_text(domain)}" if mailbox is not None else _text(domain)
        shown.append(f"{decode_2047(name.encode('latin-1'))} <{spec}>" if name else f"<{spec}>")
    return ", ".join(shown)
