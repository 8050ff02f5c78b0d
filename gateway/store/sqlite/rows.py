"""
The SQLite index's schema and the columns the store reads; how records,
flag lists and part trees sit in those columns is store/encoding.py, shared
with the other backend.
"""

from __future__ import annotations

SCHEMA = """
CREATE TABLE IF NOT EXISTS mailboxes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL,
    name TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    uidnext INTEGER NOT NULL,
    highestmodseq INTEGER NOT NULL,
    first_recent_uid INTEGER NOT NULL,
    special_use TEXT,
    UNIQUE (user, name)
);
CREATE TABLE IF NOT EXISTS messages (
    mailbox_id INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    flags TEXT NOT NULL,
    internaldate INTEGER NOT NULL,
    tzoffset INTEGER NOT NULL,
    size INTEGER NOT NULL,
    modseq INTEGER NOT NULL,
    envelope BLOB NOT NULL,
    body BLOB NOT NULL,
    bodystructure BLOB NOT NULL,
    header BLOB NOT NULL,
    parts TEXT NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_modseq ON messages (mailbox_id, modseq);
-- Covers the record columns: SELECT, SEARCH and a POP3 login read these for a
-- whole mailbox, and rows carry ENVELOPE, BODYSTRUCTURE and the header too.
CREATE INDEX IF NOT EXISTS messages_records ON messages (mailbox_id, uid, flags, internaldate, tzoffset, size, modseq);
CREATE TABLE IF NOT EXISTS expunged (
    mailbox_id INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    modseq INTEGER NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS expunged_modseq ON expunged (mailbox_id, modseq);
-- An expunge under way: committed before its bodies are unlinked, cleared by
-- the commit that drops the rows; what a crash leaves here is finished when
-- the store is next opened, so an expunge is all or nothing.
CREATE TABLE IF NOT EXISTS expunging (
    mailbox_id INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subscriptions (
    user TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (user, name)
) WITHOUT ROWID;
-- POP3 views per device (devices.py): the devices of a mailbox, and the
-- messages each has deleted.
CREATE TABLE IF NOT EXISTS pop3_devices (
    mailbox_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    last_login REAL NOT NULL,
    PRIMARY KEY (mailbox_id, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pop3_device_deletions (
    mailbox_id INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    device TEXT NOT NULL,
    PRIMARY KEY (mailbox_id, uid, device)
) WITHOUT ROWID;
"""

RECORD_COLUMNS = "uid, flags, internaldate, tzoffset, size, modseq"
STRUCTURE_COLUMNS = "envelope, body, bodystructure, header, parts"
