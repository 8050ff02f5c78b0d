"""The SASL PLAIN parser both protocols use (gateway/policy/sasl.py, RFC 4616 2)."""

import base64

import pytest
from hypothesis import given, strategies as st

from gateway.policy.sasl import AuthzidMismatch, MalformedPlain, NotBase64, PlainResponse, decode_plain


def plain(*fields: bytes) -> bytes:
    return base64.b64encode(b"\0".join(fields))


# RFC 4616 2: SAFE is any UTF-8 character but NUL.
names = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), min_size=1)
passwords = st.binary(min_size=1).filter(lambda password: b"\0" not in password)


@given(names, passwords, st.booleans())
def test_what_a_client_encodes_decodes_to_its_user_and_password(user, password, with_authzid):
    authzid = user.encode("utf-8") if with_authzid else b""
    assert decode_plain(plain(authzid, user.encode("utf-8"), password)) == PlainResponse(user, password)


@given(st.binary(max_size=200))
def test_any_bytes_give_a_response_or_a_sasl_error(data):
    for encoded in (data, base64.b64encode(data)):
        try:
            response = decode_plain(encoded)
        except (NotBase64, MalformedPlain, AuthzidMismatch):
            continue
        assert response.user and response.password and "\0" not in response.user


@given(names, names, passwords)
def test_acting_as_another_user_is_refused(authzid, user, password):
    if authzid == user:
        return
    with pytest.raises(AuthzidMismatch) as refused:
        decode_plain(plain(authzid.encode("utf-8"), user.encode("utf-8"), password))
    assert refused.value.user == user


@pytest.mark.parametrize(
    "response, error",
    [
        (b"=", MalformedPlain),  # the empty response (RFC 4959, RFC 5034 4)
        (b"", MalformedPlain),
        (b"not base64!", NotBase64),
        (b"AGFsaWNlAHNlY3JldA== ", NotBase64),  # no white space in BASE64 (RFC 4648 3.3)
        (b"AGFsaWNlAHNlY3JldA", NotBase64),  # padding is not optional
        (plain(b"", b"", b"secret"), MalformedPlain),  # empty user (authcid is 1*SAFE)
        (plain(b"", b"alice", b""), MalformedPlain),  # empty password (passwd is 1*SAFE)
        (plain(b"alice", b"secret"), MalformedPlain),
        (plain(b"", b"alice", b"secret", b"x"), MalformedPlain),
        (plain(b"", b"\xff\xfe", b"x"), MalformedPlain),  # not UTF-8
        (plain(b"\xff", b"alice", b"x"), MalformedPlain),
        (plain(b"bob", b"alice", b"x"), AuthzidMismatch),
    ],
)
def test_refusals(response, error):
    with pytest.raises(error):
        decode_plain(response)


def test_the_password_may_be_any_bytes_but_never_shows():
    response = decode_plain(plain(b"", b"alice", b"\xff pass word\x01"))
    assert response == PlainResponse("alice", b"\xff pass word\x01")
    assert "pass" not in repr(response)
