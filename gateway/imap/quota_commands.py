"""
QUOTA (RFC 9208): GETQUOTA, GETQUOTAROOT and SETQUOTA, and the check that
APPEND and COPY do not take a user past a limit (``gateway.policy.quota``:
one root, "", over all of a user's mailboxes, STORAGE and MESSAGE).

A mixin of ``gateway.imap.server.IMAPServer``; the limits are the
factory's ``quotas``.  MOVE within one root changes no usage and is never
refused, as Dovecot (its quota_move_requires_check); a user over quota may
still delete and expunge (RFC 9208 4.3).
"""

from __future__ import annotations

import re

from twisted.mail import imap4

from gateway.imap import quota
from gateway.imap.arguments import astring, final_astring
from gateway.imap.errors import CommandError, bad
from gateway.imap.responses import Data
from gateway.imap.wire import quote
from gateway.policy.quota import ROOT, OverQuota, check_quota

# RFC 9208 4.3.3: "(" [setquota_resource *(SP setquota_resource)] ")".
_SETQUOTA_LIST = re.compile(rb" *\((?: *[A-Za-z0-9-]+ +[0-9]{1,20})*\s*\) *")
# An ASTRING-CHAR run (RFC 3501 9) goes back as the client may have sent it, unquoted.
_ATOM = re.compile(rb"[!#$&'+,\-./0-9:;<=>?@A-Z\[^_`a-z|}~]+")


class NoSuchRoot(CommandError):
    text = quota.NO_SUCH_ROOT


class SetQuotaRefused(CommandError):
    text = quota.SETQUOTA_REFUSED


class OverQuotaError(CommandError):
    text = quota.OVER_QUOTA


def _mailbox_on_wire(wire_name: bytes) -> bytes:
    return wire_name if _ATOM.fullmatch(wire_name) else quote(wire_name)


class QuotaCommands:
    async def check_quota(self, octets: int, messages: int) -> None:
        """Refuse (NO [OVERQUOTA]) what would take the user past a limit."""
        try:
            await check_quota(self.store, self.factory.quotas, self.account.user, octets, messages)
        except OverQuota:
            raise OverQuotaError() from None

    async def _quota_lines(self) -> Data:
        limits = self.factory.quotas.limits_for(self.account.user)
        usage = await self.store.quota_usage(self.account.user)
        return Data(quota.quota_response(limits.resources(usage)))

    def do_GETQUOTA(self, tag, root):
        self.run_command(tag, self._getquota, root)

    async def _getquota(self, root):
        if root != ROOT.encode("utf-8"):
            raise NoSuchRoot()
        self.send(await self._quota_lines())
        return b"GETQUOTA completed"

    def do_GETQUOTAROOT(self, tag, wire_name):
        self.run_command(tag, self._getquotaroot, wire_name)

    async def _getquotaroot(self, wire_name):
        # RFC 9208 4.3.2: of an existing mailbox (NO [NONEXISTENT] otherwise).
        await self.account.select(self.mailbox_name(wire_name))
        self.send(Data(quota.quotaroot_response(_mailbox_on_wire(wire_name))))
        self.send(await self._quota_lines())
        return b"GETQUOTAROOT completed"

    def do_SETQUOTA(self, tag, root, resources):
        if not _SETQUOTA_LIST.fullmatch(resources or b""):
            raise bad(b"SETQUOTA takes a root and a list of resource limits")
        # RFC 9208 4.3.3: the limits are the administrator's.
        self.run_command(tag, self._refuse_setquota)

    async def _refuse_setquota(self):
        raise SetQuotaRefused()

    auth_GETQUOTA = select_GETQUOTA = (do_GETQUOTA, final_astring)
    auth_GETQUOTAROOT = select_GETQUOTAROOT = (do_GETQUOTAROOT, final_astring)
    auth_SETQUOTA = select_SETQUOTA = (do_SETQUOTA, astring, imap4.IMAP4Server.arg_line)
