"""
Tests for gateway.policy.quota: limits per user (config, users file in
Dovecot's words) and whether a message fits (RFC 9208).
"""

import pytest

from gateway.auth import UsersFile, UsersFileError, hash_password
from gateway.config import loads
from gateway.policy.quota import (
    MESSAGE,
    STORAGE,
    QuotaLimits,
    QuotaRuleError,
    Quotas,
    extra_field_limits,
    parse_size,
    rule_limits,
)
from gateway.reload import LiveConfig
from gateway.store.model import QuotaUsage


@pytest.mark.parametrize("text, unit, octets", [
    ("300", 1, 300), ("300", 1024, 300 * 1024), ("1K", 1, 1024), ("1k", 1024, 1024), ("500M", 1024, 500 << 20),
    ("2G", 1, 2 << 30), ("1T", 1, 1 << 40), ("10B", 1024, 10), ("1GB", 1, 1 << 30), (" 5 M ", 1, 5 << 20),
])
def test_parse_size(text, unit, octets):
    assert parse_size(text, unit) == octets


@pytest.mark.parametrize("text", ["", "lots", "-5", "1.5G", "1P", "99999999999999999999"])
def test_bad_sizes(text):
    with pytest.raises(QuotaRuleError):
        parse_size(text)


def test_dovecot_rules():
    assert rule_limits("*:storage=1G") == {"storage": 1 << 30}
    # storage counts kilobytes, bytes octets.
    assert rule_limits("*:storage=1024") == {"storage": 1 << 20}
    assert rule_limits("*:bytes=1024") == {"storage": 1024}
    assert rule_limits("*:messages=100") == {"messages": 100}
    assert rule_limits("*:storage=1G:messages=100") == {"storage": 1 << 30, "messages": 100}
    assert rule_limits("*:storage=0") == {"storage": None}
    assert rule_limits("*:ignore") == {"storage": None, "messages": None}
    # One root over all mailboxes: a rule for one mailbox means nothing here.
    assert rule_limits("Trash:storage=+100M") is None


@pytest.mark.parametrize("rule", ["*:storage", "*:storage=+1G", "*:storage=10%", "*:messages=many", "*:size=1G"])
def test_bad_rules(rule):
    with pytest.raises(QuotaRuleError):
        rule_limits(rule)


def test_extra_fields():
    assert extra_field_limits("") is None
    assert extra_field_limits("home=/var/mail/alice uid=5000") is None
    assert extra_field_limits("userdb_quota_rule=*:storage=2G userdb_quota_rule2=*:messages=50") == \
        {"storage": 2 << 30, "messages": 50}
    assert extra_field_limits("quota_rule=*:storage=2G quota_rule2=*:ignore") == {"storage": None, "messages": None}
    assert extra_field_limits("userdb_quota_rule=Trash:storage=+10M") is None


def test_over():
    limits = QuotaLimits(storage=1000, messages=3)
    assert limits.over(QuotaUsage(900, 2), 100, 1) is None
    assert limits.over(QuotaUsage(900, 2), 101, 1) == STORAGE
    assert limits.over(QuotaUsage(100, 3), 1, 1) == MESSAGE
    # RFC 9208 4.3: whoever is over may still remove mail.
    assert limits.over(QuotaUsage(5000, 9)) is None
    assert QuotaLimits().over(QuotaUsage(10**12, 10**9), 10**9, 1) is None


def test_resources_count_storage_in_kilobytes():
    # RFC 9208 5.1: STORAGE in units of 1024 octets.
    assert QuotaLimits(storage=10 * 1024, messages=5).resources(QuotaUsage(1025, 2)) == \
        [(STORAGE, 2, 10), (MESSAGE, 2, 5)]
    assert QuotaLimits(messages=5).resources(QuotaUsage(1025, 2)) == [(MESSAGE, 2, 5)]
    assert QuotaLimits().resources(QuotaUsage(1025, 2)) == []


def test_users_file_rules_come_before_the_config(tmp_path):
    users_path = tmp_path / "users"
    stored = hash_password("secret")
    users_path.write_text(
        f"alice:{stored}::::::userdb_quota_rule=*:storage=2M\n"
        f"bob:{stored}\n"
        f"carol:{stored}::::::userdb_quota_rule=*:ignore\n"
    )
    users = UsersFile(users_path)
    live = LiveConfig(loads("[quota]\nstorage = 1024\nmessages = 10"))
    quotas = Quotas(live, users.quota_limits)
    assert quotas.limits_for("alice") == QuotaLimits(2 << 20, 10)
    assert quotas.limits_for("bob") == QuotaLimits(1 << 20, 10)
    assert quotas.limits_for("carol") == QuotaLimits()
    assert not quotas.full_tempfail
    # A reloaded config counts at once.
    live.current = loads("[quota]\nmessages = 20\nfull_tempfail = true")
    assert quotas.limits_for("bob") == QuotaLimits(None, 20)
    assert quotas.full_tempfail


def test_a_bad_rule_in_the_users_file_names_its_line(tmp_path):
    users_path = tmp_path / "users"
    users_path.write_text(f"alice:{hash_password('secret')}::::::userdb_quota_rule=*:storage=lots\n")
    with pytest.raises(UsersFileError) as raised:
        UsersFile(users_path)
    assert str(raised.value).startswith(f"{users_path}:1: quota rule")
