"""
LMTP refusals carry their whole reply (gateway/lmtp/replies.py), and the
session writes none by hand.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from gateway.lmtp import replies

HOST = b"mx.example.test"


def every_refusal():
    """One instance of every refusal class, with sample arguments where it names something."""
    samples = {int: 64, bytes: b"alice@example.org"}
    found = []
    for name, cls in vars(replies).items():
        if not (inspect.isclass(cls) and issubclass(cls, replies.LmtpError)):
            continue
        if cls in (replies.LmtpError, replies.BadCommand, replies.Closing):
            continue
        if issubclass(cls, replies.Closing):
            found.append(pytest.param(cls(HOST), id=name))
        elif "__init__" in vars(cls):
            parameter = list(inspect.signature(cls).parameters.values())[0]
            argument = samples[bytes] if "bytes" in str(parameter.annotation) else samples[int]
            found.append(pytest.param(cls(argument), id=name))
        else:
            found.append(pytest.param(cls(), id=name))
    return found


@pytest.mark.parametrize("error", every_refusal())
def test_every_refusal_is_a_well_formed_reply(error):
    line = b"%d %s" % (error.code, error.reply())
    # RFC 5321 4.2: code, space, text; RFC 3463 2: the enhanced code's class
    # is the reply's (4 transient, 5 permanent).
    assert re.fullmatch(rb"[45][0-9]{2} [45]\.[0-9]{1,3}\.[0-9]{1,3} [\x20-\x7e]+", line), line
    assert str(error.code)[0].encode() == error.status[:1]
    assert len(line) <= 510
    if isinstance(error, replies.BadCommand):
        assert error.code // 100 == 5 and not error.closes
    if isinstance(error, replies.Closing):
        assert error.code == 421 and error.closes and error.reply().split(b" ")[1] == HOST


def test_a_reply_after_data_names_its_recipient():
    assert replies.MailSystemFull().reply(b"alice@example.org") == (
        b"4.3.1 <alice@example.org> Mail system full, try again later"
    )
    assert replies.UnsupportedParameter(b"XFOO").reply() == b"5.5.4 Unsupported parameter XFOO"
    assert replies.UnsupportedParameter().reply() == b"5.5.4 Unsupported parameter"
    # 8-bit local parts are not echoed.
    assert replies.NoSuchUser("\u00e9l\u00e8ve@example.org".encode()).reply() == b"5.1.1 User doesn't exist"


def test_the_session_writes_no_refusal_by_hand():
    source = (Path(replies.__file__).parent / "server.py").read_text()
    by_hand = re.findall(r"sendCode\(\s*[45][0-9]{2}", source)
    assert by_hand == [], "refusals are gateway.lmtp.replies classes written by _refuse"
    assert not re.search(r"\b_bad_command\(", source)
