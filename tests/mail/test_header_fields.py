"""
FETCH BODY[HEADER.FIELDS (...)] and HEADER.FIELDS.NOT (RFC 3501 6.4.5), and
the first values ENVELOPE and BODYSTRUCTURE read (first_fields), against a
line-by-line reference written to be obviously right, over generated
headers: folded fields, mixed-case names, LF-only lines, a header with no
blank line, duplicate fields, names that begin other names (To, To-Foo),
blanks before the colon, lines that are no field, 8-bit bytes, and field
lines after the blank line that must not count.
"""

from hypothesis import given, settings, strategies as st

from gateway.mail.fields import first_fields, header_fields

# --- the reference ------------------------------------------------------------


def lines_of(header: bytes) -> list[bytes]:
    """The lines of ``header`` with their line breaks; the last may have none."""
    pieces = header.split(b"\n")
    return [piece + b"\n" for piece in pieces[:-1]] + ([pieces[-1]] if pieces[-1] else [])


def reference_fields(header: bytes) -> list[bytes]:
    """Each field of the header with its continuation lines (RFC 5322
    2.2.3: a line that begins with a blank continues the one before), up
    to the blank line; a line with no field before it stands alone."""
    fields = []
    for line in lines_of(header):
        if line in (b"\n", b"\r\n"):
            break
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def lowered(name: str) -> bytes:
    return name.lower().encode("latin-1", "replace").lower()


def named(field: bytes, name: bytes) -> bytes | None:
    """The rest of ``field`` after its colon if it is named ``name`` (any
    case, blanks allowed before the colon), else None."""
    if not field.lower().startswith(name):
        return None
    rest = field[len(name):].lstrip(b" \t")
    return rest[1:] if rest[:1] == b":" else None


def reference_header_fields(header: bytes, names: list[str], exclude: bool) -> bytes:
    wanted = [lowered(name) for name in names]
    chosen = [field for field in reference_fields(header)
              if any(named(field, name) is not None for name in wanted) != exclude]
    return b"".join(chosen) + b"\r\n"


def reference_first_fields(header: bytes, names: tuple[str, ...], folded) -> dict[str, str]:
    found = {}
    for field in reference_fields(header):
        for name in names:
            value = named(field, lowered(name))
            if value is not None:
                break
        if value is None or name in found:
            continue
        value = value.lstrip(b" \t")
        value = value.rstrip(b"\r\n") if name in folded else value.replace(b"\r\n", b"").replace(b"\n", b"")
        found[name] = value.decode("latin-1")
    return found


# --- generated headers ------------------------------------------------------------

# Names that begin others, that hold odd characters (RFC 3501 allows any
# astring; RFC 5322 field names are printable ASCII but stored mail is
# not always), 8-bit ones, and one that latin-1 has no letter for ("?").
NAMES = ["To", "To-Foo", "T", "Subject", "From", "Priority", "X-Priority", "Message-ID",
         "Content-Type", "a:b", "x y", "To ", "to\r", "É", "é", "?", "Ж", "Re.f+s*"]
EIGHT_BIT = ["\xc9", "\xe9", "\xff"]


@st.composite
def spelled(draw, names=NAMES + EIGHT_BIT):
    """A name from ``names`` with each ASCII letter in either case."""
    name = draw(st.sampled_from(names))
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return "".join(c.swapcase() if flip and c.isascii() else c for c, flip in zip(name, flips))


text = st.binary(max_size=12).map(lambda raw: raw.replace(b"\r", b"").replace(b"\n", b""))
blanks = st.sampled_from([b"", b"", b" ", b"\t", b"  "])


@st.composite
def header_line(draw):
    kind = draw(st.sampled_from(["field", "field", "field", "continuation", "junk"]))
    if kind == "field":
        name = draw(spelled()).encode("latin-1", "replace")
        return name + draw(blanks) + b":" + draw(blanks) + draw(text)
    if kind == "continuation":
        return draw(st.sampled_from([b" ", b"\t", b"  "])) + draw(text)
    return draw(st.sampled_from([b"not a field", b"To", b"x-y z", b""])) + draw(text).replace(b":", b"")


@st.composite
def headers(draw):
    """Lines ending in CRLF or LF; then a blank line and more field lines
    (the body, which must not count), or no blank line at all, and perhaps
    no line break at the very end."""
    lines = draw(st.lists(header_line(), max_size=10))
    ends = draw(st.lists(st.sampled_from([b"\r\n", b"\r\n", b"\n"]), min_size=len(lines), max_size=len(lines)))
    header = b"".join(line + end for line, end in zip(lines, ends))
    if header and draw(st.booleans()):
        header = header.rstrip(b"\r\n")
    elif draw(st.booleans()):
        header += draw(st.sampled_from([b"\r\n", b"\n"]))
        header += b"".join(line + b"\r\n" for line in draw(st.lists(header_line(), max_size=3)))
    return header


requested = st.lists(spelled(), max_size=6)


@settings(max_examples=500)
@given(headers(), requested, st.booleans())
def test_header_fields_as_the_reference(header, names, exclude):
    assert header_fields(header, names, exclude) == reference_header_fields(header, names, exclude)


@settings(max_examples=300)
@given(headers(), st.lists(spelled(), min_size=1, max_size=5).map(lambda names: tuple(
    dict.fromkeys(name.lower() for name in names))), st.data())
def test_first_fields_as_the_reference(header, names, data):
    folded = data.draw(st.sets(st.sampled_from(names)))
    expected = reference_first_fields(header, names, folded) if len(header) > 2 else {}
    assert first_fields(header, names, folded) == expected


# --- examples a user would see ---------------------------------------------------

HEADER = (b"Received: from a\r\n\tby b\r\n"
          b"to: Ann <a@example.org>\r\n"
          b"To-Foo: not To\r\n"
          b"Subject: two\r\n lines\r\n"
          b"TO : again\r\n"
          b"\r\n"
          b"To: in the body\r\n")


def test_names_are_exact_and_any_case():
    assert header_fields(HEADER, ["To"], False) == b"to: Ann <a@example.org>\r\nTO : again\r\n\r\n"
    assert header_fields(HEADER, ["to-foo", "SUBJECT"], False) == (
        b"To-Foo: not To\r\nSubject: two\r\n lines\r\n\r\n")


def test_not_keeps_everything_else_up_to_the_blank_line():
    assert header_fields(HEADER, ["TO", "Received"], True) == (
        b"To-Foo: not To\r\nSubject: two\r\n lines\r\n\r\n")


def test_lf_lines_stay_lf():
    header = b"From: a\nSubject: b\n c\n\nFrom: body\n"
    assert header_fields(header, ["subject"], False) == b"Subject: b\n c\n\r\n"
    assert header_fields(header, ["subject"], True) == b"From: a\n\r\n"


def test_a_header_without_a_blank_line_or_a_last_line_break():
    assert header_fields(b"To: a\r\nSubject: b", ["subject"], False) == b"Subject: b\r\n"
    assert header_fields(b"To: a\r\nSubject: b", ["subject"], True) == b"To: a\r\n\r\n"


def test_empty_header_and_no_names():
    assert header_fields(b"", ["To"], False) == b"\r\n"
    assert header_fields(b"\r\n", ["To"], True) == b"\r\n"
    assert header_fields(HEADER, [], False) == b"\r\n"
    assert header_fields(HEADER, [], True) == HEADER[:HEADER.index(b"\r\n\r\n") + 2] + b"\r\n"


def test_the_same_names_again_give_the_same_answer():
    # The compiled name set is kept per FETCH; a set asked for in another
    # case, order or with repeats is still matched by what it names.
    first = header_fields(HEADER, ("Subject", "To"), False)
    assert header_fields(HEADER, ("subject", "TO", "to"), False) == first
    assert header_fields(HEADER, ["To", "Subject"], False) == first
