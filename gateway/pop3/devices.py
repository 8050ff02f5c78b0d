"""
POP3 views per device, as pure rules: ``alice#phone`` logs in as alice, with
her password, to a view of INBOX of the device's own.

Its DELE hides a message from that device alone; the message leaves INBOX
(by the user's ``pop3.delete_policy``) once every device the user has
deleted it, so a phone and a desktop both set to delete mail from the
server each get every message once.  The decisions, and why:

- Devices are the ones that logged in, not the ones that "saw" a message:
  a desktop switched off for a week has seen nothing, and must still get
  what the phone deleted meanwhile.  A device logging in for the first
  time is counted in from then on: it sees what is still there, including
  what other devices deleted but not all, and nothing already gone.
- A device unused for ``pop3.forget_devices_after`` days is forgotten, or
  a phone thrown away would hold every message back for ever; and a user
  has at most ``pop3.max_devices``, so that a client cannot make the store
  keep a view per made-up name.
- The plain login (``alice``) is the maildrop itself: its DELE applies the
  delete policy at once, for every device, as before.
- One session per device, not per user (RFC 1939 8 asks for one per
  maildrop, and each device view is one): a phone and a desktop polling at
  the same minute would otherwise take turns answering [IN-USE], which old
  clients show as an error.  Their QUITs are each one store step, and a
  message every device deleted is taken once.  The same device twice (two
  copies of one profile) still gets [IN-USE].
- RSET, STAT, LIST and UIDL work per view as RFC 1939 says; UIDLs are the
  maildrop's, the same in every view.
- Deletions live in the index beside the flags; like the flags, an index
  rebuilt from the files starts them afresh.

No Twisted here.
"""

from __future__ import annotations

import re

import attrs

SEPARATOR = b"#"

# Letters, digits and '.', '-', '_': what a client's account settings take
# in a user name, and never a user name's own '#'.
_DEVICE = re.compile(rb"[A-Za-z0-9._-]{1,64}")

SECONDS_PER_DAY = 86400


class InvalidDevice(ValueError):
    """``user#device`` with a device name we do not take."""


@attrs.frozen
class DeviceLogin:
    """Whom a POP3 login names: the account, and the device when there is one."""

    user: bytes
    device: str | None = None


def split_login(name: bytes, device_views: bool) -> DeviceLogin:
    """
    ``alice#phone`` -> alice on the device phone, when ``device_views``;
    otherwise, or without a ``#``, the name as given (a user name never
    holds ``#``, so ``alice#phone`` then fails as an unknown user).
    """
    user, separator, device = name.partition(SEPARATOR)
    if not device_views or not separator:
        return DeviceLogin(name)
    if not user or not _DEVICE.fullmatch(device):
        raise InvalidDevice(name)
    return DeviceLogin(user, device.decode("ascii"))


def forget_before(now: float, forget_devices_after: int) -> float:
    """The last login before which a device is forgotten, ``now`` in seconds."""
    return now - forget_devices_after * SECONDS_PER_DAY
