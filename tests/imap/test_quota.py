"""Tests for gateway.imap.quota: QUOTA responses as RFC 9208's examples write them."""

from gateway.imap.quota import quotaroot_response, quota_response
from gateway.policy.quota import QuotaLimits
from gateway.store.model import QuotaUsage


def test_rfc_9208_examples():
    # RFC 9208 4.3.2 (GETQUOTAROOT INBOX) and 5.1.
    assert quotaroot_response(b"INBOX") == b'QUOTAROOT INBOX ""'
    assert quota_response([("STORAGE", 10, 512)]) == b'QUOTA "" (STORAGE 10 512)'
    assert quota_response(QuotaLimits(512 * 1024, 1000).resources(QuotaUsage(10 * 1024, 7))) == \
        b'QUOTA "" (STORAGE 10 512 MESSAGE 7 1000)'


def test_no_limits_no_resources():
    assert quota_response(QuotaLimits().resources(QuotaUsage(5, 5))) == b'QUOTA "" ()'
