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


@given(st.text(min_size=1, max_size=300), st.text("0123456789abcdef", min_size=1, max_size=12))
def test_a_list_change_names_its_user_and_node_and_old_readers_skip_it(user, node):
    payload = notices.encode_list(node, user)
    assert " " not in payload and len(payload.encode()) < 8000
    assert notices.decode_lists(payload) == [(node, user)]
    assert notices.decode(payload) == {}


def test_list_changes_beside_mailbox_changes_in_one_payload():
    payload = "7:42 " + notices.encode_list("n1", "alice@example.org") + " " + notices.encode_list("n2", "b ob:1")
    assert notices.decode(payload) == {7: 42}
    assert notices.decode_lists(payload) == [("n1", "alice@example.org"), ("n2", "b ob:1")]


def test_a_user_too_long_to_name_is_any_user_and_unreadable_ones_are_skipped():
    assert notices.decode_lists(notices.encode_list("n1", "x" * 8000)) == [("n1", None)]
    assert notices.decode_lists("@n1/%ff @n2 @/bob 7:1 @n3/carol") == [("", "bob"), ("n3", "carol")]
