"""Tests for gateway.mail.address_text: address fields in their parsed form for SEARCH."""

import pytest

from gateway.mail.address_text import address_text


@pytest.mark.parametrize("raw, text", [
    ("<user-from (comment)@ (comment) domain.org>", "<user-from@domain.org>"),
    ("User <user-from@domain.org>", "User <user-from@domain.org>"),
    ("user-from (Real Name) @ domain.org", "Real Name <user-from@domain.org>"),
    ("=?utf-8?q?J=C3=B6rg?= <j@x.org>, team: a@b.c, d@e.f;", "Jörg <j@x.org>, team:, <a@b.c>, <d@e.f>"),
    ('"quoted\\ local"@x.org', "<quoted local@x.org>"),
    ("", ""),
])
def test_address_text(raw, text):
    assert address_text(raw) == text


def test_a_search_for_the_plain_address_finds_it():
    # The case: comments and CFWS inside the addr-spec.
    assert "user-from@domain.org" in address_text("<user-from (comment)@ (comment) domain.org>").casefold()
