"""
The argument parsers of the IMAP command tables (``<state>_<COMMAND> =
(handler, parser, ...)``, Twisted's scheme): each takes the server and the
rest of the line and gives ``(argument, rest)``, or a Deferred of it when a
literal must be read first.  A bad argument raises an error that carries
its BAD (``gateway.imap.errors``); Twisted's own parsers, which put the
client's bytes in their messages, are not used but for ``arg_line``.
"""

from __future__ import annotations

import re

from gateway.imap import resync
from gateway.imap.errors import MissingArgument, bad


def astring(server, line):
    """The server's own astring (escapes, literals, LITERAL+)."""
    return server.arg_astring(line)


def final_astring(server, line):
    return server.arg_astring(line, final=True)


def word(server, line):
    """One space-delimited token: a sequence set, UID's command."""
    token, _, rest = (line or b"").lstrip(b" ").partition(b" ")
    if not token:
        raise MissingArgument()
    return token, rest


def status_items(server, line):
    """STATUS's flat ``(item ...)`` list."""
    match = re.match(rb" *\(([A-Za-z ]*)\)", line or b"")
    if match is None:
        raise bad(b"Expected a list of status items")
    return match[1].split(), line[match.end():]


def select_parameters(server, line):
    """
    SELECT/EXAMINE's optional parameter list (RFC 4466 2.1): CONDSTORE and
    QRESYNC (RFC 7162 3.1.8, 3.2.5); any other is BAD.
    """
    try:
        return resync.parse_select_parameters(line or b""), b""
    except resync.ParameterError:
        raise bad(b"Unknown or malformed SELECT parameter") from None


def search_charset(server, line):
    """SEARCH's optional ``CHARSET name`` (RFC 3501 6.4.4)."""
    line = line or b""
    if line[:8].upper() != b"CHARSET ":
        if line.upper() == b"CHARSET":
            raise bad(b"Missing charset identifier")
        return None, line
    charset, _, rest = line[8:].partition(b" ")
    return charset, rest


def search_line(server, line):
    """The rest of SEARCH as tokens, its literals read in (``Framing.arg_searchline``)."""
    return server.arg_searchline(line)
