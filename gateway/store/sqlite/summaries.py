"""
The SQLite index's FETCH summaries: per message, what a client's header
fetch (INTERNALDATE, ENVELOPE, BODY, BODYSTRUCTURE) answers, in a table of
its own, kept by triggers in step with message_structures.

message_structures rows also hold the header and the part tree: about a
kilobyte, more than an index b-tree page keeps in place (a WITHOUT ROWID
row over a quarter of a page spills to overflow pages), so reading
ENVELOPE and BODYSTRUCTURE from there chases an overflow page per message
and costs three times the rest of the read.  These rows are small, and
INTERNALDATE is kept formatted: formatting it costs more than reading it.
"""

from __future__ import annotations

# RFC 3501 date-time, quoted, of a messages row's (internaldate, tzoffset):
# what wire.format_datetime gives for the record's INTERNALDATE.
DATE_TEXT = """CAST(
    strftime('"%d-', {m}.internaldate + {m}.tzoffset * 60, 'unixepoch')
    || substr('JanFebMarAprMayJunJulAugSepOctNovDec',
              strftime('%m', {m}.internaldate + {m}.tzoffset * 60, 'unixepoch') * 3 - 2, 3)
    || strftime('-%Y %H:%M:%S ', {m}.internaldate + {m}.tzoffset * 60, 'unixepoch')
    || printf('%s%02d%02d"', iif({m}.tzoffset < 0, '-', '+'), abs({m}.tzoffset) / 60, abs({m}.tzoffset) % 60)
    AS BLOB)"""

SUMMARY_SCHEMA = """
CREATE TABLE IF NOT EXISTS message_summaries (
    mailbox_id INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    internaldate BLOB,
    size INTEGER,
    envelope BLOB NOT NULL,
    body BLOB NOT NULL,
    bodystructure BLOB NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
) WITHOUT ROWID;
-- A summary is there while the message's structure is; INTERNALDATE and
-- the size come from its record, whichever of the two is written first.
CREATE TRIGGER IF NOT EXISTS message_summaries_insert AFTER INSERT ON message_structures BEGIN
    INSERT OR REPLACE INTO message_summaries (mailbox_id, uid, internaldate, size, envelope, body, bodystructure)
    SELECT NEW.mailbox_id, NEW.uid, {date}, m.size, NEW.envelope, NEW.body, NEW.bodystructure
    FROM (SELECT NULL) LEFT JOIN messages m ON m.mailbox_id = NEW.mailbox_id AND m.uid = NEW.uid;
END;
CREATE TRIGGER IF NOT EXISTS message_summaries_record AFTER INSERT ON messages BEGIN
    UPDATE message_summaries SET internaldate = {new_date}, size = NEW.size
    WHERE mailbox_id = NEW.mailbox_id AND uid = NEW.uid;
END;
CREATE TRIGGER IF NOT EXISTS message_summaries_delete AFTER DELETE ON message_structures BEGIN
    DELETE FROM message_summaries WHERE mailbox_id = OLD.mailbox_id AND uid = OLD.uid;
END;
""".format(date=DATE_TEXT.format(m="m"), new_date=DATE_TEXT.format(m="NEW"))

# What fetch_rows reads for each name of interfaces.FETCH_COLUMNS, from
# message_summaries s, joined with messages m for MODSEQ (which changes
# with the flags) and with message_structures h for the header.
SUMMARY_COLUMNS = {
    "size": "s.size",
    "modseq": "m.modseq",
    "internaldate": "s.internaldate",
    "envelope": "s.envelope",
    "body": "s.body",
    "bodystructure": "s.bodystructure",
    "header": "h.header",
}


# The same from a message's record and structure, for one whose summary
# is missing (a store changed behind the triggers' back): the summaries
# speed FETCH up and never decide what it answers.
UNSUMMARISED_COLUMNS = {
    "size": "m.size",
    "modseq": "m.modseq",
    "internaldate": DATE_TEXT.format(m="m"),
    "envelope": "h.envelope",
    "body": "h.body",
    "bodystructure": "h.bodystructure",
    "header": "h.header",
}
# A message not yet parsed has NULL in h's columns.
WITHOUT_SUMMARIES = "messages m LEFT JOIN message_structures h USING (mailbox_id, uid)"
# The fetch_rows names a message's structure answers, and their places in
# its columns (encoding.structure_columns).
STRUCTURE_NAMES = {"envelope": 0, "body": 1, "bodystructure": 2, "header": 3}


def summary_source(columns) -> str:
    """The tables fetch_rows reads ``columns`` from: the summaries alone for a client's header fetch."""
    source = "message_summaries s"
    if "modseq" in columns:
        source += " JOIN messages m USING (mailbox_id, uid)"
    if "header" in columns:
        source += " JOIN message_structures h USING (mailbox_id, uid)"
    return source


def add_summaries(db) -> bool:
    """
    Make the summaries of a store from before them, in the transaction that
    makes their table and triggers, so that no message is missed; whether
    there was anything to do.  Another process opening the store at once
    does it again, to the same rows.
    """
    if db.execute(
        "SELECT count(*) FROM sqlite_master WHERE name IN ('message_summaries',"
        " 'message_summaries_insert', 'message_summaries_record', 'message_summaries_delete')"
    ).fetchone()[0] == 4:
        return False
    try:
        db.executescript(f"BEGIN IMMEDIATE; {SUMMARY_SCHEMA} {_FILL} COMMIT;")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return True


_FILL = f"""
DELETE FROM message_summaries;
INSERT OR REPLACE INTO message_summaries (mailbox_id, uid, internaldate, size, envelope, body, bodystructure)
    SELECT h.mailbox_id, h.uid, {DATE_TEXT.format(m="m")}, m.size, h.envelope, h.body, h.bodystructure
    FROM message_structures h LEFT JOIN messages m USING (mailbox_id, uid);
"""
