"""
LMTP recipients: which user (and which folder) an RCPT address names.

Recipients are users of the users file: ``user``, ``user@any.domain``, and
``user+detail@any.domain`` (Dovecot's ``recipient_delimiter``), which
delivers into INBOX.  With ``[lmtp] save_to_detail_mailbox`` (Dovecot's
``lmtp_save_to_detail_mailbox``, off by default there too) it delivers into
the folder ``detail`` when that exists and has no special use: an outside
sender must not be able to plant mail in Sent, Drafts or Trash, where the
user would take it for their own.

No Twisted import here.
"""

from __future__ import annotations

import attrs

# RFC 5321 4.5.3.1.1: a local part has at most 64 octets; so do our users.
MAX_LOCAL_PART = 64
# RFC 5321 4.5.3.1.3: a path has at most 256 octets, brackets included; so
# every reply that names an accepted recipient stays under 512 (4.5.3.1.5),
# and every trace field line under RFC 5322's 998 (2.1.1).
MAX_ADDRESS = 254


@attrs.frozen
class Recipient:
    """
    One accepted RCPT: the address as given, and where it delivers.  A
    ``detail`` mailbox is taken only when it has no special use.
    """

    address: bytes
    user: str
    mailbox: str = "INBOX"
    detail: bool = False


def resolve_recipient(local_part: str, users, domain: str | None = None) -> tuple[str, str] | None:
    """
    The (user, mailbox) a recipient names, or None when it names no user:
    the mailbox is the ``+detail`` or INBOX.  A user named by the whole
    address (``alice@example.org``, as in a Dovecot passwd-file of virtual
    users) is matched before one named by the local part alone, and a user
    whose name contains ``+`` before a detail.
    """
    for suffix in ([f"@{domain}"] if domain else []) + [""]:
        if local_part + suffix in users:
            return local_part + suffix, "INBOX"
        user, delimiter, detail = local_part.partition("+")
        if delimiter and detail and user + suffix in users:
            return user + suffix, detail
    return None


def header_safe(address: bytes) -> bool:
    """Addresses go into trace headers: no control characters (no CR)."""
    return not any(byte < 0x20 or byte == 0x7F for byte in address)
