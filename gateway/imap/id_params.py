"""
The argument of the IMAP ID command (RFC 2971 3.3): a parenthesised list
of field-value pairs, or NIL.

Pure: no Twisted.
"""

from __future__ import annotations

import re

# RFC 3501 9 quoted string; ID fields are strings, values nstrings.
_TOKEN = rb'"(?:[^"\\\r\n]|\\["\\])*"|(?i:NIL)'
_LIST = re.compile(rb"\(\s*(?:(?:" + _TOKEN + rb")(?:\s+(?:" + _TOKEN + rb"))*)?\s*\)")
_TOKENS = re.compile(_TOKEN)
_ESCAPE = re.compile(rb'\\(["\\])')


class IdSyntaxError(ValueError):
    """Not ``NIL`` nor a list of string-nstring pairs."""


def parse_id_params(argument: bytes) -> dict[str, str | None]:
    """
    The fields the client sent, names in lower case (RFC 2971 3.3: field
    names are not case-sensitive), a NIL value as None, the first of a
    repeated field kept.  Literals are not taken: no client sends them here.
    """
    argument = argument.strip()
    if argument.upper() == b"NIL":
        return {}
    if not _LIST.fullmatch(argument):
        raise IdSyntaxError()
    tokens = [None if token.upper() == b"NIL" else _ESCAPE.sub(rb"\1", token[1:-1])
              for token in _TOKENS.findall(argument)]
    if len(tokens) % 2:
        raise IdSyntaxError()
    fields: dict[str, str | None] = {}
    for name, value in zip(tokens[::2], tokens[1::2]):
        if name is None:
            raise IdSyntaxError()
        fields.setdefault(
            name.decode("utf-8", "replace").lower(), None if value is None else value.decode("utf-8", "replace")
        )
    return fields
