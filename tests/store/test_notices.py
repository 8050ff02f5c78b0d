"""The NOTIFY payloads nodes wake each other with (pure)."""

from hypothesis import given
from hypothesis import strategies as st

from gateway.store.postgresql import notices

changes = st.dictionaries(st.integers(1, 2**63 - 1), st.integers(1, 2**63 - 1), max_size=2000)


@given(changes)
def test_payloads_name_every_change_and_stay_under_the_limit(changed):
    payloads = list(notices.encode(changed))
    assert all(0 < len(p.encode()) < 8000 for p in payloads)
    decoded = {}
    for payload in payloads:
        decoded.update(notices.decode(payload))
    assert decoded == changed


def test_one_change_is_one_short_payload():
    assert list(notices.encode({7: 42})) == ["7:42"]
    assert list(notices.encode({})) == []


def test_unreadable_pairs_are_skipped_and_repeats_keep_the_highest():
    assert notices.decode("1:5 junk 2: :3 x:1 1:9 1:7") == {1: 9}
