"""Lines that start with a dot, found fast (gateway/net/dotlines.py): POP3's stuffing and LMTP's end of DATA."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.net.dotlines import find_dot_line

dotty = st.lists(st.sampled_from([b".", b"x", b"\r\n", b"\n", b"a."]), max_size=120).map(b"".join)


@given(dotty, st.integers(0, 50))
def test_find_dot_line_is_find(data, start):
    assert find_dot_line(data, start) == data.find(b"\n.", start)


@pytest.mark.parametrize("dots", [0, 1, 31, 32, 33, 200])
def test_find_dot_line_past_many_dots(dots):
    # Past a few dots that start no line the search changes method; the
    # answer must not.
    prose = b"a." * dots + b"\r\n"
    assert find_dot_line(prose + b".\r\n") == len(prose) - 1
    assert find_dot_line(prose + b"x.\r\n") == -1


def test_a_dot_at_the_start_is_no_line_start():
    # What precedes the data is the caller's to know (DotStuffer keeps it).
    assert find_dot_line(b".first\r\n") == -1
    assert find_dot_line(b"\n.", 0) == 0
    assert find_dot_line(b"\n.\n.", 1) == 2
