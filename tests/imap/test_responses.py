"""
IMAP responses as values (gateway/imap/responses.py), and the one writer:
no IMAP module but the server's ``send`` (and ``Output``, which streams
FETCH) writes to the transport.
"""

import ast
from pathlib import Path

import pytest

import gateway.imap
from gateway.imap.responses import (
    BAD,
    BYE,
    NO,
    OK,
    Capability,
    Condition,
    Continuation,
    Data,
    Enabled,
    Exists,
    FetchModseq,
    Id,
    Listed,
    Namespace,
    Recent,
    Search,
    Status,
    Tagged,
    Vanished,
    answer,
)

PACKAGE = Path(gateway.imap.__file__).parent


@pytest.mark.parametrize(
    "response, line",
    [
        (Tagged(b"a1", OK, b"[READ-WRITE] SELECT completed"), b"a1 OK [READ-WRITE] SELECT completed"),
        (Tagged(b"a2", NO, b"[TRYCREATE] No such mailbox"), b"a2 NO [TRYCREATE] No such mailbox"),
        (Condition(BYE, b"Logging out"), b"* BYE Logging out"),
        (answer(None, BAD, b"Null command"), b"* BAD Null command"),
        (answer(b"x", BAD, b"Null command"), b"x BAD Null command"),
        (Continuation(), b"+ "),
        (Continuation(b"Ready for literal data"), b"+ Ready for literal data"),
        (Data(b"3 EXPUNGE"), b"* 3 EXPUNGE"),
        (Capability(b"IMAP4rev1 IDLE"), b"* CAPABILITY IMAP4rev1 IDLE"),
        (Enabled(()), b"* ENABLED"),
        (Enabled((b"CONDSTORE", b"QRESYNC")), b"* ENABLED CONDSTORE QRESYNC"),
        (Namespace(), b'* NAMESPACE (("" "/")) NIL NIL'),
        (Id(((b"name", b"gateway"),)), b'* ID ("name" "gateway")'),
        (Exists(12), b"* 12 EXISTS"),
        (Recent(0), b"* 0 RECENT"),
        (Search([]), b"* SEARCH"),
        (Search([2, 10, 11]), b"* SEARCH 2 10 11"),
        # RFC 7162 3.1.6
        (Search([4], modseq=917162500), b"* SEARCH 4 (MODSEQ 917162500)"),
        (Status("Drafts", ((b"MESSAGES", 2), (b"UIDNEXT", 44))), b'* STATUS "Drafts" (MESSAGES 2 UIDNEXT 44)'),
        # Mailbox names go out in modified UTF-7 (RFC 3501 5.1.3).
        (Status("Entwürfe", ((b"UNSEEN", 0),)), b'* STATUS "Entw&APw-rfe" (UNSEEN 0)'),
        (Listed(b"LIST", ("\\HasNoChildren", "\\Sent"), "Sent"), b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"'),
        # RFC 3501 6.3.8: the delimiter's answer names no mailbox.
        (Listed(b"LIST", ("\\Noselect",), None), b'* LIST (\\Noselect) "/" ""'),
        (Vanished("1:3,7"), b"* VANISHED (EARLIER) 1:3,7"),
        (FetchModseq(3, 17, 90), b"* 3 FETCH (UID 17 MODSEQ (90))"),
    ],
)
def test_encoding(response, line):
    assert response.encode() == line


def _writes(path: Path) -> list[str]:
    """Functions of a module that write to a transport or send a raw line."""
    found = []
    for function in ast.walk(ast.parse(path.read_text())):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.Attribute) and node.attr in ("write", "writeSequence", "sendLine"):
                owner = node.value
                if node.attr == "sendLine" or (isinstance(owner, ast.Attribute) and owner.attr.endswith("transport")):
                    found.append(function.name)
    return sorted(set(found))


def test_one_writer_of_responses():
    writers = {path.name: _writes(path) for path in sorted(PACKAGE.glob("*.py")) if _writes(path)}
    assert writers == {
        "output.py": ["flush"],
        "server.py": ["_write", "release"],
    }
