"""
The pure POP3 session logic: argument parsing, the snapshot, dot-stuffing and
TOP, with hypothesis where the input is open.
"""

import base64
import re

import pytest
from hypothesis import given, strategies as st

from gateway.policy.sasl import PlainResponse
from gateway.pop3.session import (
    CAPABILITIES,
    AuthenticationFailed,
    BadCommand,
    DotStuffer,
    InvalidArgument,
    InvalidSyntax,
    LineTooLong,
    LoginsBlocked,
    MaildropLocked,
    MessageDeleted,
    MessageExpunged,
    NoSuchMessage,
    PlaintextDisallowed,
    TooManySessions,
    UnknownCommand,
    WrongState,
    capabilities,
    sasl_mechanisms,
    Snapshot,
    SnapshotEntry,
    TopFilter,
    parse_line_count,
    parse_message_number,
    parse_sasl_plain,
)


@pytest.mark.parametrize("text", [b"1", b"7", b"42", b"0042", b"9999999999"])
def test_message_number_accepts_decimal_digits(text):
    assert parse_message_number(text) == int(text)


@pytest.mark.parametrize(
    "text",
    [b"0", b"", b"+1", b"-1", b"1_0", b" 1", b"1 ", b"1\n", b"0x1", b"\xd9\xa1", b"99999999999999999999", b"one"],
)
def test_message_number_refuses_everything_else(text):
    with pytest.raises(InvalidArgument) as caught:
        parse_message_number(text)
    assert caught.value.text == b"Invalid message number"


@given(st.binary(max_size=12))
def test_message_number_is_digits_or_refused(text):
    try:
        number = parse_message_number(text)
    except InvalidArgument:
        assert not re.fullmatch(rb"0*[1-9][0-9]*", text) or len(text) > 10
    else:
        assert re.fullmatch(rb"[0-9]+", text) and number == int(text) > 0


def test_line_count_allows_zero_but_not_signs():
    assert parse_line_count(b"0") == 0
    assert parse_line_count(b"12") == 12
    for text in (b"-1", b"+2", b"", b"1.5"):
        with pytest.raises(InvalidArgument):
            parse_line_count(text)


def plain(*fields):
    return base64.b64encode(b"\0".join(fields))


def test_sasl_plain_gives_user_and_password():
    assert parse_sasl_plain(plain(b"", b"alice", b"pass word")) == PlainResponse("alice", b"pass word")
    assert parse_sasl_plain(plain(b"alice", b"alice", b"x")) == PlainResponse("alice", b"x")


@pytest.mark.parametrize(
    "response",
    [
        plain(b"bob", b"alice", b"x"),  # acting as another user
        plain(b"", b"", b"x"),
        plain(b"alice", b"x"),
        b"=",
        b"not base64!",
        base64.b64encode(b"\0\xff\xfe\0x"),
    ],
)
def test_sasl_plain_refuses(response):
    with pytest.raises(InvalidArgument):
        parse_sasl_plain(response)


def snapshot(*sizes):
    return Snapshot(
        tuple(SnapshotEntry(uid=10 + i, size=size, uidl=b"u%d" % i, seen=False) for i, size in enumerate(sizes))
    )


def test_snapshot_deleted_messages_leave_stat_and_listing_until_reset():
    view = snapshot(100, 200, 300)
    view.delete(2)
    assert view.stat() == (2, 400)
    assert [n for n, _ in view.listing()] == [1, 3]
    assert view.deleted_uids() == [11]
    with pytest.raises(MessageDeleted) as caught:
        view.visible(2)
    assert caught.value.text == b"Message 2 already deleted"
    with pytest.raises(MessageDeleted):
        view.delete(2)
    view.reset()
    assert view.stat() == (3, 600)


def test_snapshot_numbers_out_of_range():
    view = snapshot(1, 2)
    for number in (0, 3, -1):
        with pytest.raises(NoSuchMessage) as caught:
            view.visible(number)
        assert caught.value.text == b"No such message, only 2 messages in maildrop"


def test_snapshot_expunged_message_stays_listed_but_unreadable():
    view = snapshot(5, 6)
    view.mark_expunged(1)
    assert view.visible(1).size == 5
    assert view.stat() == (2, 11)
    with pytest.raises(MessageExpunged) as caught:
        view.readable(1)
    assert caught.value.text == b"Message 1 was expunged by another session"
    with pytest.raises(MessageExpunged):
        view.delete(1)


def chunked(data, cuts):
    positions = sorted({c % (len(data) + 1) for c in cuts}) if data else []
    pieces, start = [], 0
    for position in positions:
        pieces.append(data[start:position])
        start = position
    pieces.append(data[start:])
    return pieces


def unstuff(wire):
    assert wire.endswith(b"\r\n.\r\n") or wire == b".\r\n"
    # What a client does (RFC 1939 3): drop the terminator, then one
    # leading "." of each line.
    lines = wire[:-3].split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


def stuff_whole(message):
    lines = message.split(b"\r\n")
    body = b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)
    return body + (b".\r\n" if message.endswith(b"\r\n") or not message else b"\r\n.\r\n")


crlf_text = st.lists(st.sampled_from([b".", b"a", b"\r\n", b"..", b" "]), max_size=40).map(b"".join)


@given(crlf_text, st.lists(st.integers(min_value=0, max_value=200), max_size=8))
def test_dot_stuffing_does_not_depend_on_chunking(message, cuts):
    stuffer = DotStuffer()
    wire = b"".join(stuffer.transform(piece) for piece in chunked(message, cuts)) + stuffer.terminator()
    assert wire == stuff_whole(message)
    if message.endswith(b"\r\n"):
        assert unstuff(wire) == message


def test_dot_at_message_start_and_chunk_start_is_stuffed():
    # Twisted's POP3.transformChunk only stuffs after a CRLF inside one chunk.
    stuffer = DotStuffer()
    wire = stuffer.transform(b".first\r\n") + stuffer.transform(b".second\r\nx") + stuffer.terminator()
    assert wire == b"..first\r\n..second\r\nx\r\n.\r\n"


@pytest.mark.parametrize("dots", [0, 1, 31, 32, 33, 200])
def test_dot_line_found_after_many_dots(dots):
    # Past _DOT_PROBES dots in the chunk the search changes method; the
    # answer must not.
    prose = b"a." * dots + b"\r\n"
    assert DotStuffer().transform(prose + b".x\r\n") == prose + b"..x\r\n"
    assert DotStuffer().transform(prose + b"x.\r\n") == prose + b"x.\r\n"


dotty_text = st.lists(st.sampled_from([b".", b"a.", b"\r\n", b"\r\n."]), max_size=200).map(b"".join)


@given(dotty_text)
def test_dot_stuffing_of_text_with_many_dots(message):
    stuffer = DotStuffer()
    assert stuffer.transform(message) + stuffer.terminator() == stuff_whole(message)


message_text = st.lists(st.sampled_from([b"H: v", b"\r\n", b"x", b"\r", b"\n", b"."]), max_size=40).map(b"".join)


@given(message_text, st.integers(min_value=0, max_value=5), st.lists(st.integers(0, 200), max_size=8))
def test_top_does_not_depend_on_chunking(message, lines, cuts):
    whole = TopFilter(lines)
    expected = whole.transform(message)
    top = TopFilter(lines)
    assert b"".join(top.transform(piece) for piece in chunked(message, cuts)) == expected


@given(
    st.lists(st.sampled_from([b"H: v", b"X-Y: z"]), min_size=0, max_size=3),
    st.lists(st.sampled_from([b"", b"body", b".dot"]), max_size=6),
    st.integers(min_value=0, max_value=8),
)
def test_top_gives_header_blank_line_and_n_body_lines(header_lines, body_lines, lines):
    message = b"".join(h + b"\r\n" for h in header_lines) + b"\r\n" + b"".join(b + b"\r\n" for b in body_lines)
    top = TopFilter(lines)
    out = top.transform(message)
    expected = b"".join(h + b"\r\n" for h in header_lines) + b"\r\n" + b"".join(b + b"\r\n" for b in body_lines[:lines])
    assert out == expected
    assert top.done == (lines <= len(body_lines))


def top_by_lines(message: bytes, lines: int) -> bytes:
    """RFC 1939 TOP by its definition: the lines up to the first empty one, it, then ``lines`` more."""
    kept = message.splitlines(keepends=True)
    for index, line in enumerate(kept):
        if line in (b"\n", b"\r\n"):
            return b"".join(kept[: index + 1 + lines])
    return message


@given(message_text, st.integers(min_value=0, max_value=5), st.lists(st.integers(0, 200), max_size=8))
def test_top_is_the_header_the_blank_line_and_n_lines_whatever_the_chunks(message, lines, cuts):
    # splitlines would also break at a lone CR: the sampled text has CRs
    # only before LFs or at line starts, where both definitions agree.
    message = message.replace(b"\r", b"\r\n").replace(b"\r\n\n", b"\r\n")
    top = TopFilter(lines)
    assert b"".join(top.transform(piece) for piece in chunked(message, cuts)) == top_by_lines(message, lines)


def test_top_of_a_big_line_count_passes_the_body_whole():
    # fetchmail with "keep" downloads each message by TOP n 99999999.
    body = b"".join(b"line %d\r\n" % i for i in range(10_000))
    top = TopFilter(99_999_999)
    assert top.transform(b"Subject: x\r\n\r\n" + body[:50_000]) + top.transform(body[50_000:]) == (
        b"Subject: x\r\n\r\n" + body
    )
    assert not top.done


def test_top_without_blank_line_is_all_header():
    top = TopFilter(0)
    assert top.transform(b"Subject: x\r\nFrom: y\r\n") == b"Subject: x\r\nFrom: y\r\n"
    assert not top.done


def test_capabilities_follow_tls_and_the_plaintext_rule():
    assert capabilities(stls=False, plaintext=True) == list(CAPABILITIES)
    assert capabilities(stls=True, plaintext=True) == [b"STLS", *CAPABILITIES]
    # RFC 2595 4 and DESIGN.md: no USER, no PLAIN where passwords would be sent in clear.
    listed = capabilities(stls=True, plaintext=False)
    assert listed[0] == b"STLS" and b"USER" not in listed and b"SASL PLAIN" not in listed
    assert b"UIDL" in listed and b"RESP-CODES" in listed
    assert sasl_mechanisms(True) == [b"PLAIN"] and sasl_mechanisms(False) == []


def test_bad_commands_are_the_errors_that_count():
    counted = (UnknownCommand(), WrongState(), InvalidSyntax(), LineTooLong(), InvalidArgument("message number"))
    assert all(isinstance(error, BadCommand) for error in counted)
    not_counted = (NoSuchMessage(3, 2), MessageDeleted(1), MessageExpunged(1), AuthenticationFailed(),
                   PlaintextDisallowed(), LoginsBlocked(), TooManySessions(), MaildropLocked())
    assert not any(isinstance(error, BadCommand) for error in not_counted)
    # Every error answers with a fixed, single-line text.
    for error in counted + not_counted:
        assert error.text and b"\r" not in error.text and b"\n" not in error.text
