"""
Conformance faults an independent IMAP tester found, each shown through
the real protocol class (tests/imap/test_server.py's Session): what a
client sends, what it must read back.
"""

import pytest

from gateway.config import Config
from tests.deferreds import result_of
from tests.imap.test_hostile import config
from tests.imap.test_server import MESSAGE, Session


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


def test_the_line_limit_counts_the_line_without_its_literals(store):
    # Dovecot's imap_max_line_length: literals are not part of the line.
    # 30 strings of 1024 octets as literals, 30 KB, on a 2000-octet limit.
    s = Session(store, config=config(max_line_length=2000)).login()
    assert s.command(b"s SELECT INBOX")[-1].startswith(b"s OK")
    line = b"a SEARCH" + b"".join(b" SUBJECT {1024+}\r\n" + b"v" * 1024 for _ in range(30))
    assert s.command(line) == [b"* SEARCH", b"a OK SEARCH completed"]
    # Each piece of the line between literals is still bounded.
    assert s.command(b"b SEARCH SUBJECT {3+}\r\nabc SUBJECT " + b"v" * 2000) == [
        b"b BAD [TOOBIG] Command line too long"]
    assert s.command(b"c NOOP") == [b"c OK NOOP completed"]


def _inbox(store, *flag_sets):
    result_of(store.ensure_user("alice"))
    inbox = result_of(store.get_mailbox("alice", "INBOX"))
    for flags in flag_sets:
        result_of(store.append(inbox.id, MESSAGE, flags=flags))
    return inbox


def _selected(store, line=b"s SELECT INBOX"):
    session = Session(store).login()
    assert session.command(line)[-1].startswith(b"s OK")
    return session


def _announced_before_use(lines):
    """RFC 3501 7.2.6: no keyword in a FETCH before a FLAGS naming it."""
    announced = set()
    for line in lines:
        if line.startswith(b"* FLAGS "):
            announced = set(line[9:-1].split())
        elif b" FETCH (" in line and b"FLAGS (" in line:
            shown = line.split(b"FLAGS (", 1)[1].split(b")", 1)[0].split()
            assert {flag for flag in shown if not flag.startswith(b"\\")} <= announced, line


@pytest.mark.parametrize("fetch", [
    b"f FETCH 1 FAST", b"f FETCH 1 (FLAGS INTERNALDATE MODSEQ)", b"f UID FETCH 1:* (FLAGS)",
    b"f FETCH 1 (UID FLAGS BODY.PEEK[HEADER])", b"f UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1)",
])
def test_a_keyword_set_elsewhere_is_announced_before_our_fetch_shows_it(store, fetch):
    _inbox(store, set())
    one = _selected(store, b"s SELECT INBOX (CONDSTORE)")
    two = _selected(store)
    assert two.command(b"a STORE 1 +FLAGS.SILENT ($Label4)")[-1] == b"a OK STORE completed"
    lines = one.command(fetch)
    assert lines[-1] == b"f OK FETCH completed"
    assert any(b"$Label4" in line for line in lines if b"FETCH (" in line)
    _announced_before_use(lines)


def test_a_keyword_set_elsewhere_is_announced_before_our_store_answers(store):
    _inbox(store, set(), set())
    one = _selected(store, b"s SELECT INBOX (CONDSTORE)")
    two = _selected(store)
    two.command(b"a STORE 2 +FLAGS.SILENT ($Label4)")
    # Our STORE's answer shows message 2 only after the store told us of it.
    lines = one.command(b"b STORE 1:2 +FLAGS (\\Seen)")
    assert lines[-1] == b"b OK STORE completed"
    assert any(b"$Label4" in line for line in lines if b"FETCH (" in line)
    _announced_before_use(lines)


def test_each_fetch_item_once_with_a_flag_update_owed(store):
    _inbox(store, set(), set())
    one = _selected(store, b"s SELECT INBOX (CONDSTORE)")
    two = _selected(store)
    two.command(b"a STORE 2 +FLAGS.SILENT (\\Flagged)")
    lines = one.command(b"f FETCH 2 (FLAGS UID INTERNALDATE FLAGS MODSEQ)")
    fetches = [line for line in lines if line.startswith(b"* ")]
    # RFC 3501 7.4.2: one FLAGS in the answer, the update merged into it.
    assert len(fetches) == 1 and fetches[0].count(b"FLAGS") == 1, lines
    assert b"\\Flagged" in fetches[0]


def test_examine_reports_recent_without_claiming_it(store):
    # RFC 3501 6.3.2: EXAMINE's RECENT as SELECT's; \Recent stays for a later SELECT.
    _inbox(store, set(), set())
    examined = Session(store).login().command(b"e EXAMINE INBOX")
    assert b"* 2 RECENT" in examined
    s = Session(store).login()
    assert b"* 2 RECENT" in s.command(b"s SELECT INBOX")
    assert s.command(b"f FETCH 1 FLAGS") == [b"* 1 FETCH (FLAGS (\\Recent))", b"f OK FETCH completed"]


def test_append_into_the_selected_mailbox_claims_its_recent_in_its_own_write(store, monkeypatch):
    # RFC 3501 2.3.2: the appending session reports the message \Recent,
    # and no other session sees it so; the claim rides on the APPEND's
    # write, not one more after it.
    s = Session(store).login()
    s.command(b"s SELECT INBOX")
    writes = []
    submit = store._writer.submit_together
    monkeypatch.setattr(store._writer, "submit_together", lambda runs: writes.append(1) or submit(runs))
    lines = s.send(b"a APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE + b"\r\n").split(b"\r\n")[:-1]
    assert lines[:2] == [b"* 1 EXISTS", b"* 1 RECENT"] and lines[-1].startswith(b"a OK [APPENDUID ")
    assert len(writes) == 1
    assert s.command(b"f FETCH 1 FLAGS") == [b"* 1 FETCH (FLAGS (\\Recent))", b"f OK FETCH completed"]
    assert b"* 0 RECENT" in Session(store).login().command(b"t SELECT INBOX")


def test_append_into_a_mailbox_examined_leaves_its_recent_to_a_select(store):
    s = Session(store).login()
    s.command(b"e EXAMINE INBOX")
    s.send(b"a APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE + b"\r\n")
    assert b"* 1 RECENT" in Session(store).login().command(b"t SELECT INBOX")


def test_examine_shows_recent_flags(store):
    _inbox(store, set())
    s = Session(store).login()
    assert b"* 1 RECENT" in s.command(b"e EXAMINE INBOX")
    assert s.command(b"f FETCH 1 FLAGS") == [b"* 1 FETCH (FLAGS (\\Recent))", b"f OK FETCH completed"]
    assert s.command(b"g SEARCH RECENT") == [b"* SEARCH 1", b"g OK SEARCH completed"]


def test_lsub_lists_a_noselect_parent_of_a_subscribed_child(store):
    # RFC 3501 6.3.9: "foo" for a subscribed "foo/bar" and the pattern "%".
    s = Session(store).login()
    assert s.command(b"a CREATE parent/child/grandchild")[-1] == b"a OK CREATE completed"
    assert s.command(b"b SUBSCRIBE parent/child/grandchild")[-1] == b"b OK SUBSCRIBE completed"
    assert s.command(b'c LSUB "" parent/%') == [
        b'* LSUB (\\Noselect) "/" "parent/child"', b"c OK LSUB completed"]
    assert b'* LSUB (\\Noselect) "/" "parent"' in s.command(b'd LSUB "" %')
    assert s.command(b'e LSUB "" parent/*') == [b'* LSUB () "/" "parent/child/grandchild"', b"e OK LSUB completed"]


def test_search_from_matches_the_parsed_address(store):
    # RFC 5322 3.4.1: comments and folding white space inside an addr-spec.
    inbox = _inbox(store)
    result_of(store.append(inbox.id, b"From: <user-from (comment)@ (comment) domain.org>\r\n"
                                     b"To: Someone <user-to@domain.org>\r\nSubject: x\r\n\r\nbody\r\n"))
    s = _selected(store)
    assert s.command(b"a SEARCH FROM user-from@domain.org") == [b"* SEARCH 1", b"a OK SEARCH completed"]
    assert s.command(b"b SEARCH FROM comment") == [b"* SEARCH 1", b"b OK SEARCH completed"]
    assert s.command(b"c SEARCH TO user-to@domain.org") == [b"* SEARCH 1", b"c OK SEARCH completed"]
    assert s.command(b"d SEARCH FROM nobody@domain.org") == [b"* SEARCH", b"d OK SEARCH completed"]


@pytest.mark.parametrize("name", [b"&", b"&Jjo", b"&AGE-", b'"a\\x01b"'.replace(b"\\x01", b"\x01")])
def test_a_name_that_is_not_modified_utf7(store, name):
    s = Session(store).login()
    # Dovecot: NO for a name that cannot exist, not BAD; a LIST pattern
    # that cannot match answers OK with no match.
    assert s.command(b"a SELECT " + name) == [b"a NO Mailbox name is not modified UTF-7"]
    assert s.command(b"b EXAMINE " + name) == [b"b NO Mailbox name is not modified UTF-7"]
    assert s.command(b"c STATUS " + name + b" (MESSAGES)") == [b"c NO Mailbox name is not modified UTF-7"]
    assert s.command(b'd LIST "" ' + name) == [b"d OK LIST completed"]
    pattern = name[:-1] + b'*"' if name.startswith(b'"') else name + b"*"
    assert s.command(b'e LIST "" ' + pattern) == [b"e OK LIST completed"]
    assert s.command(b'f LSUB "" ' + name) == [b"f OK LSUB completed"]
