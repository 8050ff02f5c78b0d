"""
The header grammar (gateway.mail.fields, gateway.mail.header) against the
standard library's ``email`` package on the same input, for what both
define: field names and values, unfolding (RFC 5322 2.2.3), address lists
(RFC 5322 3.4) and encoded words (RFC 2047).  Where the two differ by
design, a test of its own shows the difference and says why: we read
headers as Dovecot does, so that a mailbox moved from Dovecot answers the
same, and so that broken mail still shows every field it has.
"""

import base64
import email.header
import email.policy
import email.utils
from email.parser import BytesHeaderParser

from hypothesis import given, settings, strategies as st

from gateway.mail.fields import decode_2047, first_fields, header_fields, header_values
from gateway.mail.header import addresses


def stdlib_fields(header: bytes):
    return BytesHeaderParser(policy=email.policy.compat32).parsebytes(header)


def unfold(text: str) -> str:
    return text.replace("\r\n", "").replace("\n", "")


# --- field names, values, unfolding --------------------------------------------

names = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,12}", fullmatch=True)
# Printable ASCII without "?" (no encoded words: those are compared below).
line_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E,
                                           blacklist_characters="?"), max_size=30)
continuation = st.tuples(st.sampled_from([" ", "\t", "  "]), line_text).map("".join)
fields = st.tuples(names, line_text, st.lists(continuation, max_size=3))


def render(generated) -> bytes:
    lines = []
    for name, first, more in generated:
        lines.append(f"{name}:{first}")
        lines.extend(more)
    return "".join(line + "\r\n" for line in lines).encode() + b"\r\n"


@settings(max_examples=400)
@given(st.lists(fields, max_size=8))
def test_names_values_and_unfolding_as_stdlib(generated):
    header = render(generated)
    parsed = stdlib_fields(header)
    for name in {name.lower() for name, _, _ in generated}:
        expected = [unfold(value).strip(" \t") for value in parsed.get_all(name)]
        assert header_values(header, name) == expected
        # The first value, as ENVELOPE and BODYSTRUCTURE read it: blanks
        # after the colon dropped, the rest (folding blanks too) as written.
        assert first_fields(header, (name,)) == {name: unfold(parsed.get_all(name)[0])}
        # FETCH BODY[HEADER.FIELDS]: each field with its continuation lines.
        wanted = header_fields(header, [name.upper()], False)
        assert stdlib_fields(wanted).get_all(name) == parsed.get_all(name)


def test_a_line_without_a_colon_does_not_end_the_header():
    # email: the header ends at the first line that is not a field (the
    # rest is body, a MissingHeaderBodySeparatorDefect).  Dovecot, and we,
    # skip the broken line: the fields after it still count, in ENVELOPE
    # and SEARCH alike.
    header = b"Subject: first\r\nnot a field\r\nFrom: a@b.example\r\n\r\n"
    assert stdlib_fields(header).get_all("from") is None
    assert header_values(header, "from") == ["a@b.example"]


def test_blanks_before_the_colon():
    # RFC 5322 3.6.8 has no blanks there; obsolete syntax (4.5) allows
    # them, Dovecot trims them, and the email package ends the header.
    header = b"Subject : spaced\r\nTo: a@b.example\r\n\r\n"
    assert stdlib_fields(header).get_all("to") is None
    assert header_values(header, "subject") == ["spaced"]
    assert first_fields(header, ("to",)) == {"to": "a@b.example"}


def test_eight_bit_values():
    # email turns raw 8-bit header text (RFC 6532) into replacement
    # characters; SEARCH reads it as UTF-8, and ENVELOPE sends it as it is.
    header = "Subject: Grüße\r\n\r\n".encode()
    assert header_values(header, "subject") == ["Grüße"]
    assert str(stdlib_fields(header)["subject"]) == "Gr\ufffd\ufffd\ufffd\ufffde"


# --- address lists ----------------------------------------------------------------

atom = st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True)
dot_atom = st.lists(atom, min_size=1, max_size=3).map(".".join)
phrase = st.lists(st.from_regex(r"[A-Za-z]{1,8}", fullmatch=True), min_size=1, max_size=3).map(" ".join)
quoted = st.from_regex(r"[A-Za-z ,.;:@<>()\[\]]{1,12}", fullmatch=True).filter(
    lambda text: text.strip() == text and "  " not in text)


@st.composite
def mailboxes(draw):
    local, domain = draw(dot_atom), draw(dot_atom)
    form = draw(st.sampled_from(["bare", "phrase", "quoted"]))
    if form == "bare":
        return f"{local}@{domain}", ("", f"{local}@{domain}")
    name = draw(phrase if form == "phrase" else quoted)
    shown = name if form == "phrase" else f'"{name}"'
    return f"{shown} <{local}@{domain}>", (name, f"{local}@{domain}")


@settings(max_examples=400)
@given(st.lists(mailboxes(), min_size=1, max_size=5))
def test_address_lists_as_stdlib(generated):
    value = ", ".join(text for text, _ in generated)
    expected = email.utils.getaddresses([value])
    assert expected == [pair for _, pair in generated]
    ours = [(name or "", f"{mailbox}@{domain}") for name, route, mailbox, domain in addresses(value)]
    assert ours == expected


def test_groups_are_kept():
    # email.utils.getaddresses drops a group's name and its end; IMAP's
    # ENVELOPE shows both (RFC 3501 7.4.2), as Dovecot does.
    value = "friends: ann@example.com, bill@example.com;, carl@example.com"
    assert email.utils.getaddresses([value]) == [
        ("", "ann@example.com"), ("", "bill@example.com"), ("", "carl@example.com")]
    assert addresses(value) == [
        (None, None, "friends", None), (None, None, "ann", "example.com"),
        (None, None, "bill", "example.com"), (None, None, None, None),
        (None, None, "carl", "example.com")]


def test_broken_addresses_are_filled_in():
    # email returns what it found; Dovecot (and ENVELOPE here) names what is
    # missing, so a client never sees an address with no domain.
    assert email.utils.getaddresses(["justaname"]) == [("", "justaname")]
    assert addresses("justaname") == [(None, None, "justaname", "MISSING_DOMAIN")]


# --- encoded words (RFC 2047) --------------------------------------------------------

# Words with single spaces inside and none around, built rather than filtered.
words = st.lists(st.text(alphabet="abcxyzéüß€Ж", min_size=1, max_size=5), min_size=1, max_size=3).map(" ".join)


def encoded_word(text: str, charset: str, encoding: str) -> str:
    data = text.encode(charset)
    if encoding == "B":
        payload = base64.b64encode(data).decode()
    else:
        payload = "".join(chr(b) if chr(b).isalnum() and b < 128 else "_" if b == 32 else "=%02X" % b
                          for b in data)
    return f"=?{charset}?{encoding}?{payload}?="


@st.composite
def encoded_values(draw):
    """
    Encoded words between plain ASCII words: 8-bit text outside encoded
    words is where the two differ (see test_eight_bit_values).
    """
    pieces = []
    for text in draw(st.lists(words, min_size=1, max_size=4)):
        if text.isascii() and draw(st.booleans()):
            pieces.append(text)
            continue
        charset = draw(st.sampled_from(["utf-8", "iso-8859-1"]))
        try:
            text.encode(charset)
        except UnicodeEncodeError:
            charset = "utf-8"
        pieces.append(encoded_word(text, charset, draw(st.sampled_from(["B", "Q"]))))
    return " ".join(pieces)


@settings(max_examples=400)
@given(encoded_values())
def test_encoded_words_as_stdlib(value):
    assert value.isascii()
    expected = str(email.header.make_header(email.header.decode_header(value)))
    assert decode_2047(value.encode()) == expected


def test_undecodable_words_stay_as_written():
    # email raises for a charset it does not know; a header must still be
    # searchable, so the word stays as it came.
    value = "=?x-no-such?q?abc?= plain"
    assert decode_2047(value.encode()) == value
