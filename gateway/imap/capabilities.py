"""
The CAPABILITY list (RFC 3501 7.2.1), before and after login.

Before login, what a client needs to log in (and LITERAL-: an unauthenticated
client has no business sending big literals unasked, RFC 7888 5); after it,
every extension, as Dovecot lists them.

Pure: no Twisted.
"""

from __future__ import annotations

import attrs

# Both before and after login.
BASE = (
    b"IMAP4rev1", b"IMAP4rev2", b"SASL-IR", b"ID", b"ENABLE", b"IDLE", b"NAMESPACE", b"UIDPLUS", b"MOVE",
    b"CHILDREN", b"SPECIAL-USE", b"UNSELECT", b"CONDSTORE", b"QRESYNC", b"XLIST",
)
# After login only.
EXTENSIONS = (
    b"LIST-EXTENDED", b"LIST-STATUS", b"CREATE-SPECIAL-USE", b"STATUS=SIZE",
    b"ESEARCH", b"SEARCHRES", b"SORT", b"SORT=DISPLAY", b"THREAD=ORDEREDSUBJECT", b"THREAD=REFERENCES",
    b"NOTIFY", b"BINARY", b"MULTIAPPEND", b"UTF8=ACCEPT", b"QUOTA", b"QUOTA=RES-STORAGE", b"QUOTA=RES-MESSAGE",
)
COMPRESS = b"COMPRESS=DEFLATE"


@attrs.frozen
class CapabilityState:
    """What the list depends on."""

    authenticated: bool
    appendlimit: int
    starttls: bool = False
    plaintext: bool = True
    compressed: bool = False


def capability_line(state: CapabilityState) -> bytes:
    """The capabilities, space-separated, without ``* CAPABILITY``."""
    names = list(BASE)
    if state.authenticated:
        names += EXTENSIONS
        if not state.compressed:
            # RFC 4978 3: once on, there is nothing more to ask for.
            names.append(COMPRESS)
        names += [b"LITERAL+", b"APPENDLIMIT=%d" % state.appendlimit]
        return b" ".join(names)
    names += [b"LITERAL-", b"APPENDLIMIT=%d" % state.appendlimit]
    if state.starttls:
        names.append(b"STARTTLS")
    names.append(b"AUTH=PLAIN" if state.plaintext else b"LOGINDISABLED")
    return b" ".join(names)
