"""
Conformance faults an independent IMAP tester found, each shown through
the real protocol class (tests/imap/test_server.py's Session): what a
client sends, what it must read back.
"""

from gateway.config import Config
from tests.imap.test_server import Session, store  # noqa: F401  (the store fixture)


def test_id_with_thirty_long_pairs_fits_the_default_line_length(store):
    # RFC 2971 3.3: up to 30 field-value pairs, values up to 1024 octets.
    fields = b" ".join(b'"x-field-%02d" "%s"' % (n, b"v" * 1024) for n in range(30))
    s = Session(store, config=Config())
    lines = s.command(b"a ID (" + fields + b")")
    assert lines[-1] == b"a OK ID completed"
    assert lines[0].startswith(b"* ID (")
    # Still bounded: past the limit the line is refused and skipped, the session goes on.
    too_long = b"b ID (" + b'"x" "' + b"v" * Config().limits.max_line_length + b'")'
    assert s.command(too_long)[-1] == b"b BAD [TOOBIG] Command line too long"
    assert s.command(b"c NOOP") == [b"c OK NOOP completed"]
