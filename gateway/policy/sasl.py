"""
The SASL PLAIN response (RFC 4616 2), as both protocols receive it: POP3
AUTH (RFC 5034) and IMAP AUTHENTICATE (RFC 3501 6.2.2, SASL-IR RFC 4959).

Pure: no Twisted.  Each protocol turns the errors into its own answer.
"""

from __future__ import annotations

import base64
import binascii

import attrs

# RFC 5034 4, RFC 3501 6.2.2: the client gives up the exchange.
CANCEL = b"*"


class SaslError(ValueError):
    """The response is not one we accept."""


class NotBase64(SaslError):
    """Not BASE64 (RFC 4648 4, no white space or other characters)."""


class MalformedPlain(SaslError):
    """Not ``[authzid] NUL authcid NUL passwd`` with a UTF-8 authcid."""


class AuthzidMismatch(SaslError):
    """
    An authorization identity other than the user itself: twisted.cred
    would drop it and log in as the authcid, and acting as another user is
    not something we offer.  ``user`` is the authcid, for the log.
    """

    def __init__(self, user: str):
        super().__init__(user)
        self.user = user


@attrs.frozen
class PlainResponse:
    user: str
    password: bytes = attrs.field(repr=False)


def decode_plain(encoded: bytes) -> PlainResponse:
    """
    Decode a PLAIN response.  ``=`` is the empty response (RFC 4959,
    RFC 5034 4), which PLAIN cannot use.

    RFC 4616 2: ``message = [authzid] UTF8NUL authcid UTF8NUL passwd``,
    authcid and passwd ``1*SAFE`` (not empty), all UTF-8 but the password,
    which twisted.cred and the password hashes take as bytes.
    """
    if encoded == b"=":
        encoded = b""
    try:
        message = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise NotBase64() from None
    fields = message.split(b"\0")
    if len(fields) != 3 or not fields[1] or not fields[2]:
        raise MalformedPlain()
    authzid, authcid, password = fields
    try:
        user = authcid.decode("utf-8")
        authorize = authzid.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedPlain() from None
    if authorize and authorize != user:
        raise AuthzidMismatch(user)
    return PlainResponse(user, password)

