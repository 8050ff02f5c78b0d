import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.pop3.uidl import DEFAULT_FORMAT, UidlFormat, UidlFormatError, format_uidl

UIDVALIDITY = 0x6B086FFD
u32 = st.integers(min_value=0, max_value=0xFFFFFFFF)


@pytest.mark.parametrize(
    ("fmt", "uid", "expected"),
    [
        # Checked against a running Dovecot 2.3.19 (DESIGN.md "POP3 UIDL").
        (DEFAULT_FORMAT, 1, "000000016b086ffd"),
        ("%08Xu%08Xv", 0xDEADBEEF, "deadbeef6b086ffd"),
        ("%v.%u", 1, "1795715069.1"),  # Cyrus
        ("%v-%u", 1234, "1795715069-1234"),  # Courier
        ("%08Xv%08Xu", 1, "6b086ffd00000001"),  # UW
        ("%{uid | hex(8)}%{uidvalidity | hex(8)}", 1, "000000016b086ffd"),
        ("%{uid|hex(8)}%{uidvalidity|hex(8)}", 1, "000000016b086ffd"),
        ("%{ uid | hex }", 255, "ff"),
        ("%{uid}.%{uidvalidity}", 7, "7.1795715069"),
        ("%08x{uid}", 10, "0000000a"),
        ("%08xu", 10, "0000000a"),
        ("%010u", 42, "0000000042"),
        ("%u%%%v", 3, "3%1795715069"),
        ("msg-%u", 9, "msg-9"),
        ("%03u", 123456, "123456"),  # zero padding never truncates
    ],
)
def test_known_answers(fmt, uid, expected):
    assert UidlFormat.parse(fmt).format(UIDVALIDITY, uid) == expected
    assert format_uidl(fmt, UIDVALIDITY, uid) == expected


def test_2_4_style_equals_default():
    old = UidlFormat.parse(DEFAULT_FORMAT)
    new = UidlFormat.parse("%{uid | hex(8)}%{uidvalidity | hex(8)}")
    for uid in (1, 2, 0xFFFF, 0xFFFFFFFF):
        assert old.format(UIDVALIDITY, uid) == new.format(UIDVALIDITY, uid)


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        ("%v", "no %u, UIDLs would repeat"),
        ("", "empty format, UIDLs would repeat"),
        ("static", "no %u"),
        ("%m", "%m (MD5 of the message header) cannot be derived"),
        ("%u%f", "%f (maildir file name) cannot be derived"),
        ("%g%u", "%g (Dovecot message GUID) cannot be derived"),
        ("%{md5}%u", "%{md5} (MD5 of the message header) cannot be derived"),
        ("%q%u", "unknown variable in '%q'"),
        ("%{user}%u", "unknown variable in '%{user}'"),
        ("%Lu", "modifier 'L' in '%Lu' is not supported"),
        ("%XXu", "modifier 'XX'"),
        ("%4u", "width without zero padding in '%4u' truncates"),
        ("%0u", "zero padding without a width"),
        ("%u%", "malformed directive '%' at position 3"),
        ("%{uid", "malformed directive '%{uid' at position 1"),
        ("%X", "malformed directive '%X'"),
        ("%{uid | lower}", "filter 'lower' in '%{uid | lower}' is not supported"),
        ("%{uid | hex | hex}", "only one filter"),
        ("%{uid | hex(0)}", "needs a positive width"),
        ("%{uid | hex(-8)}", "needs a positive width"),
        ("%{uid | hex(8}", "malformed filter"),
        ("%08X{uid | hex}", "mixes 2.3 width/modifiers with 2.4 filters"),
        ("%u %v", "character ' ' at position 3 is not allowed"),
        ("%u\t", "character '\\t' at position 3"),
        ("%u\u00e9", "character 'é' at position 3"),
        ("%u\x7f", "character '\\x7f'"),
        ("%061u%v", "can produce 71 characters, more than the 70"),
        ("%{uid | hex(71)}", "can produce 71 characters"),
        ("%0999999999999999999u", "can produce 999999999999999999 characters"),
    ],
)
def test_refused(fmt, message):
    with pytest.raises(UidlFormatError) as raised:
        UidlFormat.parse(fmt)
    assert message in str(raised.value)


def test_maximum_length_is_exact():
    # 60 + 10 decimal digits of 0xFFFFFFFF: exactly the RFC 1939 limit.
    fmt = UidlFormat.parse("%060u%v")
    assert fmt.max_length == 70
    assert len(fmt.format(0xFFFFFFFF, 0xFFFFFFFF)) == 70


def test_out_of_range_values_refused():
    fmt = UidlFormat.parse(DEFAULT_FORMAT)
    with pytest.raises(ValueError):
        fmt.format(UIDVALIDITY, 1 << 32)
    with pytest.raises(ValueError):
        fmt.format(-1, 1)


# Accepted formats built from the supported pieces.
_pieces = st.sampled_from(
    [
        "%u", "%v", "%Xu", "%Xv", "%xu", "%08Xu", "%08Xv", "%010u", "%%",
        "%{uid}", "%{uidvalidity}", "%{uid | hex}", "%{uid|hex(8)}",
        "%{uidvalidity | hex(8)}", "%012X{uid}",
    ]
)
_literals = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E).filter(
        lambda c: c != "%"
    ),
    max_size=3,
)


@st.composite
def formats(draw):
    parts = draw(st.lists(st.one_of(_pieces, _literals), max_size=4))
    uid = draw(st.sampled_from(["%u", "%Xu", "%{uid | hex(8)}"]))
    parts.insert(draw(st.integers(0, len(parts))), uid)
    return "".join(parts)


@given(formats(), u32, u32, u32)
def test_properties(fmt, uidvalidity, uid_a, uid_b):
    try:
        parsed = UidlFormat.parse(fmt)
    except UidlFormatError as error:
        # Only the length limit may refuse a format built from valid pieces.
        assert "characters, more than the 70" in str(error)
        return
    a = parsed.format(uidvalidity, uid_a)
    assert a == parsed.format(uidvalidity, uid_a)
    assert 1 <= len(a) <= min(70, parsed.max_length)
    assert all(0x21 <= ord(c) <= 0x7E for c in a)
    if uid_a != uid_b:
        assert a != parsed.format(uidvalidity, uid_b)


@given(u32, u32)
def test_default_is_sixteen_lowercase_hex_digits(uidvalidity, uid):
    uidl = format_uidl(DEFAULT_FORMAT, uidvalidity, uid)
    assert uidl == f"{uid:08x}{uidvalidity:08x}"
