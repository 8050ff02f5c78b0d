"""
The replies to a message's end of DATA (RFC 2033 4.2): one per accepted
recipient, in RCPT order, each once that recipient's copy is stored (every
copy of the message under one index commit where the store groups them,
``gateway.lmtp.delivery.GroupCommit``) or refused: over quota
(``gateway.policy.quota``), a store that cannot take it now, or a failure.

A mixin of ``gateway.lmtp.server.LMTPServer``.
"""

from __future__ import annotations

import errno
from time import monotonic

from twisted.internet import defer
from twisted.logger import Logger

from gateway.lmtp import replies
from gateway.lmtp.recipients import Recipient
from gateway.lmtp.trace import Transaction, trace_fields
from gateway.net import metrics
from gateway.policy.quota import OverQuota, check_quota
from gateway.store.interfaces import StoreFull, TemporaryFailure

log = Logger()


def _disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError):
        # The DATA spool's own disk.
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(error, StoreFull)


def _temporary_failure(error: BaseException) -> replies.LmtpError:
    """The reply to a delivery the store could not take now."""
    if _disk_full(error):
        return replies.MailSystemFull()
    return replies.TryLater()


class DeliveryReplies:
    """
    What the session does from a message's end of DATA (``_end_of_data``
    starts ``_deliver_message``) to its last reply, after which it reads
    commands again (``_delivered``).
    """

    async def _deliver_message(self, spool, transaction: Transaction, recipients, started: float):
        """
        RFC 2033 4.2: one reply per accepted recipient, in RCPT order.  DATA
        is timed from the final dot to the last of them: the store's work,
        not how fast the client sent the message.
        """
        try:
            if spool.too_big:
                refusal = replies.MessageTooBig()
            else:
                finished = spool.finish()
                if finished is not None:
                    await finished
                refusal = None if spool.error is None else _temporary_failure(spool.error)
            started_together = None
            if refusal is None and self._deliveries.batching:
                # Every recipient at once: one index commit for them all.
                started_together = [self._start_delivery(spool, transaction, r) for r in recipients]
            for index, recipient in enumerate(recipients):
                if refusal is not None:
                    self._refuse(refusal, recipient.address)
                    continue
                delivery = (
                    started_together[index]
                    if started_together is not None
                    else self._start_delivery(spool, transaction, recipient)
                )
                outcome = await self._outcome_of(recipient, delivery)
                if isinstance(outcome, replies.LmtpError):
                    self._refuse(outcome, recipient.address)
                else:
                    self.sendCode(250, b"2.0.0 <%s> Saved as UID %d" % (recipient.address, outcome))
        finally:
            spool.close()
            metrics.observe_command("lmtp", b"DATA", monotonic() - started)
            self._delivered()

    def _start_delivery(self, spool, transaction: Transaction, recipient: Recipient) -> defer.Deferred:
        # Every copy's own fields on top of the spool they share, which the
        # store reads (and parses) once for them all; the one copy of a
        # single recipient has them in the spool already.
        fields = spool.fields or trace_fields(transaction, recipient.address)
        message = spool.copy_for(fields)
        return defer.Deferred.fromCoroutine(self._deliver_copy(recipient, message, len(fields) + self._size))

    async def _deliver_copy(self, recipient: Recipient, message, size: int):
        await check_quota(self._deliveries.store, self._quotas, recipient.user, size)
        return await self._deliveries.deliver(recipient.user, message, recipient.mailbox,
                                              special_use=not recipient.detail)

    async def _outcome_of(self, recipient: Recipient, delivery: defer.Deferred) -> int | replies.LmtpError:
        """The UID a recipient's copy was stored under, or why it was not."""
        try:
            record = await delivery
        except OverQuota as e:
            log.info("Delivery to {user} refused: over its {resource} quota", user=recipient.user,
                     resource=e.resource)
            return replies.OverQuotaForNow() if self._quotas.full_tempfail else replies.OverQuota()
        except TemporaryFailure as e:
            log.warn("Delivery to {user} deferred: {error}", user=recipient.user, error=str(e))
            metrics.count_delivery("tempfail")
            metrics.count_store_error("deliver")
            return _temporary_failure(e)
        except Exception:
            log.failure("While delivering to {user}", user=recipient.user)
            metrics.count_delivery("error")
            metrics.count_store_error("deliver")
            return replies.InternalError()
        metrics.count_delivery("ok")
        return record.uid
