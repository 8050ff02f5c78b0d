"""
gateway.store.encoding: part trees to and from an index row (both backends),
and the memo of parsed trees, which keeps ordinary ones and never the trees
of hostile mail.
"""

import json

from gateway.mail.message import parse_bytes
from gateway.store import encoding


def stored(message: bytes) -> str:
    return json.dumps(encoding.part_to_json(parse_bytes(message).root))


def test_part_trees_come_back_whole():
    message = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n"
               b"--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: in\r\n\r\ntwo\r\n--b--\r\n")
    assert encoding.part_from_json(json.loads(stored(message))) == parse_bytes(message).root


def test_only_ordinary_trees_are_kept():
    ordinary = stored(b"Subject: x\r\n\r\nbody\r\n")
    # A million parts: ten thousand kept by the parser, half a megabyte of JSON.
    hostile = stored(b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"--b\r\n\r\n" * 1_000_000)
    assert len(hostile) > 300_000
    first = encoding.structure_from_row(b"", b"", b"", b"", ordinary).root
    assert encoding.structure_from_row(b"", b"", b"", b"", ordinary).root is first
    big = encoding.structure_from_row(b"", b"", b"", b"", hostile).root
    assert len(big.children) == 9999
    assert hostile not in encoding._part_trees and ordinary in encoding._part_trees
