"""
Tests for gateway.imap.thread: THREAD=ORDEREDSUBJECT and THREAD=REFERENCES
(RFC 5256 3) and the THREAD response (RFC 5256 4).
"""

import datetime
import re
import time

from hypothesis import given, settings, strategies as st

from gateway.imap.sort import casemap
from gateway.imap.thread import ThreadMessage, format_threads, ordered_subject, references, thread_message
from gateway.mail.subject import base_subject

UTC = datetime.timezone.utc


def msg(number, sent, subject="", message_id=None, refs=()):
    base = base_subject(subject)
    return ThreadMessage(number, float(sent), casemap(base.text), base.reply, message_id, tuple(refs))


def test_the_rfc_response_example():
    # RFC 5256 4: "* THREAD (2)(3 6 (4 23)(44 7 96))", built by REFERENCES.
    mailbox = [
        msg(2, 1, "two", "2"),
        msg(3, 2, "three", "3"),
        msg(4, 4, "Re: three", "4", ["3", "6"]),
        msg(6, 3, "Re: three", "6", ["3"]),
        msg(7, 7, "Re: three", "7", ["3", "6", "44"]),
        msg(23, 5, "Re: three", "23", ["3", "6", "4"]),
        msg(44, 6, "Re: three", "44", ["3", "6"]),
        msg(96, 8, "Re: three", "96", ["3", "6", "44", "7"]),
    ]
    assert format_threads(references(mailbox)) == b"THREAD (2)(3 6 (4 23)(44 7 96))"


def test_siblings_under_a_missing_parent():
    # RFC 5256 4: "* THREAD ((3)(5))": 3 and 5 answer a message not there.
    mailbox = [msg(3, 1, "Re: x", "3", ["gone"]), msg(5, 2, "Re: x", "5", ["gone"])]
    assert format_threads(references(mailbox)) == b"THREAD ((3)(5))"


def test_no_messages():
    # RFC 5256 3: "* THREAD" alone.
    assert format_threads(references([])) == b"THREAD"
    assert format_threads(ordered_subject([])) == b"THREAD"


def test_ordered_subject_shape():
    # As the RFC 5256 3 example: "(174 (175)(176)(178)(181)(180))" and
    # "(194 195)"; threads by their first message's date.
    mailbox = [
        msg(166, 1, "a"),
        msg(174, 3, "b"),
        msg(175, 4, "Re: b"),
        msg(176, 5, "b"),
        msg(178, 6, "Fwd: b"),
        msg(180, 8, "b"),
        msg(181, 7, "b"),
        msg(194, 9, "c"),
        msg(195, 10, "Re: c"),
        msg(167, 2, "d"),
    ]
    assert format_threads(ordered_subject(mailbox)) == \
        b"THREAD (166)(167)(174 (175)(176)(178)(181)(180))(194 195)"


def test_equal_dates_keep_mailbox_order():
    mailbox = [msg(5, 1, "z"), msg(6, 1, "y"), msg(7, 1, "x")]
    assert format_threads(references(mailbox)) == b"THREAD (5)(6)(7)"
    # ORDEREDSUBJECT: threads by their first message's date, ties as in the mailbox.
    assert format_threads(ordered_subject(mailbox)) == b"THREAD (5)(6)(7)"


def test_a_reply_by_subject_goes_under_its_original():
    # (5)(C): the current message is a reply, the one in the table is not.
    mailbox = [msg(1, 1, "Lunch", "a"), msg(2, 2, "Re: Lunch", "b")]
    assert format_threads(references(mailbox)) == b"THREAD (1 2)"


def test_two_originals_with_one_subject_share_a_dummy():
    mailbox = [msg(1, 1, "Lunch", "a"), msg(2, 2, "lunch", "b"), msg(3, 3, "Re: LUNCH", "c")]
    assert format_threads(references(mailbox)) == b"THREAD ((1)(2)(3))"


def test_empty_subjects_are_not_merged():
    mailbox = [msg(1, 1, "", "a"), msg(2, 2, "Re:", "b")]
    assert format_threads(references(mailbox)) == b"THREAD (1)(2)"


def test_a_truncated_references_line_keeps_the_earlier_link():
    # (1)(A): 2 already has its parent 1; a later message saying 3 -> 2
    # does not change it.
    mailbox = [msg(1, 1, "x", "1"), msg(2, 2, "Re: x", "2", ["1"]), msg(3, 3, "y", "3"),
               msg(4, 4, "Re: y", "4", ["3", "2"])]
    assert format_threads(references(mailbox)) == b"THREAD (1 2 4)(3)"


def test_loops_are_not_made():
    # 1 names 2 as its parent; 2 naming 1 would close a loop, so it is not linked.
    mailbox = [msg(1, 1, "a", "1", ["2"]), msg(2, 2, "b", "2", ["1"]), msg(3, 3, "c", "3", ["3"])]
    assert format_threads(references(mailbox)) == b"THREAD (2 1)(3)"


def test_duplicate_ids_belong_to_the_first_message():
    mailbox = [msg(1, 1, "a", "same"), msg(2, 2, "b", "same"), msg(3, 3, "Re: a", "3", ["same"])]
    assert format_threads(references(mailbox)) == b"THREAD (1 3)(2)"


def test_dummies_inside_a_thread_give_way_to_their_children():
    # 1 -> (missing) -> 2 and 3: the dummy's children are 1's children.
    mailbox = [msg(1, 1, "a", "1"), msg(2, 2, "Re: a", "2", ["1", "gone"]),
               msg(3, 3, "Re: a", "3", ["1", "gone"])]
    assert format_threads(references(mailbox)) == b"THREAD (1 (2)(3))"


def test_deep_threads_do_not_recurse():
    count = 20_000
    mailbox = [msg(1, 0, "deep", "m1")] + [
        msg(n, n, "Re: deep", f"m{n}", [f"m{n - 1}"]) for n in range(2, count + 1)
    ]
    started = time.monotonic()
    answer = format_threads(references(mailbox))
    assert answer == b"THREAD (" + b" ".join(b"%d" % n for n in range(1, count + 1)) + b")"
    assert format_threads(ordered_subject(mailbox)).startswith(b"THREAD (1 (2)(3)")
    assert time.monotonic() - started < 10


def test_thread_message_reads_the_stored_header():
    header = (b"Subject: Re: [list] =?utf-8?q?caf=C3=A9?=\r\n"
              b"Message-ID: <\"id\"@host>\r\n"
              b"References: <a@x>\r\n <b@x>\r\n"
              b"In-Reply-To: <c@x>\r\n"
              b"Date: 31 Dec 2000 16:01:33 -0800\r\n\r\n")
    found = thread_message(7, header, datetime.datetime(2020, 1, 1, tzinfo=UTC))
    assert found == ThreadMessage(7, datetime.datetime(2001, 1, 1, 0, 1, 33, tzinfo=UTC).timestamp(),
                                  casemap("café"), True, "id@host", ("a@x", "b@x"))
    only_reply = thread_message(8, b"In-Reply-To: junk <c@x>\r\n\r\n", datetime.datetime(2020, 1, 1, tzinfo=UTC))
    assert only_reply.references == ("c@x",)
    assert only_reply.subject == ""


_THREAD_LIST = re.compile(rb"\(([0-9 ()]*)\)")


def _numbers(answer: bytes) -> list[int]:
    return [int(n) for n in re.findall(rb"[0-9]+", answer)]


def _balanced(answer: bytes) -> bool:
    depth = 0
    for char in answer:
        depth += {40: 1, 41: -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


_IDS = st.sampled_from(["a", "b", "c", "d", "e", None])
_MESSAGES = st.lists(
    st.tuples(st.integers(0, 5), st.sampled_from(["x", "Re: x", "y", "Fwd: y", "", "[t] x"]), _IDS,
              st.lists(st.sampled_from(["a", "b", "c", "d", "e", "f"]), max_size=4)),
    max_size=12,
)


@settings(max_examples=300)
@given(_MESSAGES)
def test_every_message_appears_once(drawn):
    mailbox = [msg(number, sent, subject, message_id, refs)
               for number, (sent, subject, message_id, refs) in enumerate(drawn, 1)]
    for algorithm in (references, ordered_subject):
        answer = format_threads(algorithm(mailbox))
        assert sorted(_numbers(answer)) == list(range(1, len(mailbox) + 1))
        assert _balanced(answer)
        # No empty lists, no list of one nested list.
        assert b"()" not in answer
        assert re.search(rb"\(\(([0-9 ]+)\)\)", answer) is None


def test_threading_runs_in_bounded_steps():
    from gateway.imap.thread import STEP, thread, thread_steps

    messages = [msg(n, n, "s %d" % (n % 7), "<%d@x>" % n, ["<%d@x>" % (n // 2)] if n > 1 else [])
                for n in range(1, 5 * STEP)]
    for algorithm in ("REFERENCES", "ORDEREDSUBJECT"):
        steps = thread_steps(algorithm, messages)
        count = 0
        while True:
            try:
                next(steps)
                count += 1
            except StopIteration as done:
                roots = done.value
                break
        assert count >= 5
        assert format_threads(roots) == format_threads(thread(algorithm, messages))
