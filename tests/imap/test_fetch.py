"""FETCH attributes: parsing the request and planning the answer (gateway/imap/fetch.py)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.imap.fetch import (
    FetchSyntaxError,
    Section,
    enables_condstore,
    needs_file,
    parse_fetch,
    plan_fetch,
    sets_seen,
)


def test_macros_and_simple_items():
    assert parse_fetch(b"FAST") == ["FLAGS", "INTERNALDATE", "RFC822.SIZE"]
    assert parse_fetch(b"(uid Flags RFC822.SIZE)") == ["UID", "FLAGS", "RFC822.SIZE"]
    assert parse_fetch(b"BODYSTRUCTURE") == ["BODYSTRUCTURE"]


def test_sections():
    items = parse_fetch(
        b"(BODY.PEEK[HEADER.FIELDS (From \"Subject\")] BODY[1.2.MIME] BODY[]<10.20> BODY[3.TEXT])"
    )
    assert items == [
        Section(peek=True, text="HEADER.FIELDS", fields=("FROM", "SUBJECT")),
        Section(peek=False, part=(1, 2), text="MIME"),
        Section(peek=False, partial=(10, 20)),
        Section(peek=False, part=(3,), text="TEXT"),
    ]
    assert sets_seen(items) and needs_file(items)
    assert not sets_seen(parse_fetch(b"BODY.PEEK[2]"))


def test_reply_names_use_only_the_origin_octet():
    # RFC 3501 7.4.2; Twisted answers BODY[]<10.20> (its issue 5613).
    assert Section(peek=False, partial=(10, 20)).reply_name() == b"BODY[]<10>"
    assert Section(peek=True, part=(1, 2), text="HEADER.FIELDS.NOT", fields=("TO",)).reply_name() == (
        b"BODY[1.2.HEADER.FIELDS.NOT (TO)]"
    )


@pytest.mark.parametrize(
    "bad",
    [b"", b"(FLAGS", b"FLAGZ", b"BODY[0]", b"BODY[1.0]", b"BODY[HEADER.FIELDS]", b"BODY[MIME]",
     b"BODY[]<1.0>", b"BODY[FOO]", b"UID[1]"],
)
def test_syntax_errors(bad):
    with pytest.raises(FetchSyntaxError):
        parse_fetch(bad)


# -- planning the answer (plan_fetch) -------------------------------------------------

PEEK_HEADER = Section(peek=True, text="HEADER")
BODY = Section(peek=False)


def planned(items, **session):
    options = {"by_uid": False, "condstore": False, "qresync": False, **session}
    return list(plan_fetch(items, **options).items)


def test_uid_fetch_answers_with_the_uid_first():
    # RFC 3501 6.4.8
    assert planned(["FLAGS"], by_uid=True) == ["UID", "FLAGS"]
    assert planned(["FLAGS", "UID"], by_uid=True) == ["FLAGS", "UID"]
    assert planned(["FLAGS"]) == ["FLAGS"]


def test_under_condstore_flags_go_with_their_modseq():
    # RFC 7162 3.1.4.1, and Dovecot: FLAGS carry MODSEQ once CONDSTORE is on.
    assert planned(["FLAGS"], condstore=True) == ["FLAGS", "MODSEQ"]
    assert planned(["INTERNALDATE"], condstore=True) == ["INTERNALDATE"]
    assert planned(["INTERNALDATE"], condstore=True, changedsince=5) == ["INTERNALDATE", "MODSEQ"]


def test_a_fetch_that_set_seen_answers_with_the_flags():
    # RFC 3501 6.4.5: the \Seen flag set is reported.
    assert planned([BODY], seen_set=True) == [BODY, "FLAGS"]
    assert planned([BODY], seen_set=True, condstore=True) == [BODY, "FLAGS", "MODSEQ"]
    assert planned([BODY, "FLAGS"], seen_set=True) == [BODY, "FLAGS"]


def test_under_qresync_modseq_brings_the_uid():
    # RFC 7162 3.2.4
    assert planned(["FLAGS"], condstore=True, qresync=True) == ["UID", "FLAGS", "MODSEQ"]
    assert planned(["ENVELOPE"], condstore=True, qresync=True) == ["ENVELOPE"]


def test_what_enables_condstore():
    # RFC 7162 3.1
    assert enables_condstore(["MODSEQ"], None) and enables_condstore(["FLAGS"], 1)
    assert not enables_condstore(["FLAGS"], None)


def test_the_plan_says_what_answering_reads():
    plan = plan_fetch(["UID", "FLAGS"], by_uid=True, condstore=False, qresync=False)
    assert (plan.wants_record, plan.wants_structure, plan.wants_file, plan.wants_flags) == (False, False, False, True)
    plan = plan_fetch(["RFC822.SIZE", PEEK_HEADER], by_uid=False, condstore=False, qresync=False)
    # The whole header is stored with the structure: no file.
    assert (plan.wants_record, plan.wants_structure, plan.wants_file) == (True, True, False)
    plan = plan_fetch([BODY], by_uid=False, condstore=False, qresync=False)
    assert (plan.wants_record, plan.wants_structure, plan.wants_file) == (False, False, True)
    assert plan.layout == ((b"BODY[]", BODY, BODY),)


items = st.lists(st.sampled_from(["UID", "FLAGS", "MODSEQ", "INTERNALDATE", "ENVELOPE", BODY, PEEK_HEADER]),
                 unique=True, max_size=6)
options = st.fixed_dictionaries({
    "by_uid": st.booleans(), "condstore": st.booleans(), "qresync": st.booleans(),
    "changedsince": st.none() | st.integers(1, 10), "seen_set": st.booleans(),
})


@given(items, options)
def test_plan_rules_hold_for_any_request(asked, session):
    plan = plan_fetch(asked, **session).items
    # What was asked stays, in its order, each once.
    assert [item for item in plan if item in asked] == asked
    assert len(set(plan)) == len(plan)
    assert session["by_uid"] <= ("UID" in plan)
    assert session["seen_set"] <= ("FLAGS" in plan)
    if session["condstore"] and ("FLAGS" in plan or session["changedsince"] is not None):
        assert "MODSEQ" in plan
    if not session["condstore"]:
        assert ("MODSEQ" in plan) == ("MODSEQ" in asked)
    if session["qresync"] and "MODSEQ" in plan:
        assert "UID" in plan
    # Planning again changes nothing.
    assert plan_fetch(plan, **session).items == plan


def test_an_item_list_sent_again_is_parsed_and_planned_once_and_each_caller_has_its_own_list():
    # A client downloading sends the same FETCH for every message.
    first = parse_fetch(b"(FLAGS BODY.PEEK[])")
    first.append("UID")
    again = parse_fetch(b"(FLAGS BODY.PEEK[])")
    assert again == ["FLAGS", Section(peek=True)] and again is not first
    plan = plan_fetch(again, by_uid=True, condstore=False, qresync=False)
    assert plan_fetch(list(again), by_uid=True, condstore=False, qresync=False) is plan
    assert plan_fetch(again, by_uid=False, condstore=False, qresync=False).items == ("FLAGS", Section(peek=True))
    for _ in range(2):
        with pytest.raises(FetchSyntaxError):
            parse_fetch(b"(FLAGS")


def test_what_is_kept_of_item_lists_stays_small_whatever_clients_send():
    from gateway.imap import fetch

    fetch._parse_fetch.cache_clear()
    fetch._plan_fetch.cache_clear()
    fields = " ".join(f"X-{n:04}" for n in range(300)).encode()
    line = b"(UID BODY.PEEK[HEADER.FIELDS (" + fields + b")])"
    items = parse_fetch(line)
    assert items[1].fields[-1] == "X-0299"
    plan_fetch(items, by_uid=True, condstore=False, qresync=False)
    # Answered, not kept.
    assert fetch._parse_fetch.cache_info().currsize == 0 and fetch._plan_fetch.cache_info().currsize == 0
    plan_fetch(parse_fetch(b"(UID FLAGS)"), by_uid=True, condstore=False, qresync=False)
    assert fetch._parse_fetch.cache_info().currsize == 1 and fetch._plan_fetch.cache_info().currsize == 1
