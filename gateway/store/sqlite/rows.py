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
-- A message's record: small rows, many to a page, so that a flag change
-- rewrites a few bytes of one page, not the message's structure.
CREATE TABLE IF NOT EXISTS messages (
    mailbox_id INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    flags TEXT NOT NULL,
    internaldate INTEGER NOT NULL,
    tzoffset INTEGER NOT NULL,
    size INTEGER NOT NULL,
    modseq INTEGER NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_modseq ON messages (mailbox_id, modseq);
-- What a message's body parses to (ENVELOPE, BODYSTRUCTURE, the header, the
-- part tree), at delivery, or when a reader first asks (structures.py):
-- written once, read by FETCH and SEARCH, never changed.
CREATE TABLE IF NOT EXISTS message_structures (
    mailbox_id INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    envelope BLOB NOT NULL,
    body BLOB NOT NULL,
    bodystructure BLOB NOT NULL,
    header BLOB NOT NULL,
    parts TEXT NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
) WITHOUT ROWID;
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

# Each user's usage for QUOTA (RFC 9208: STORAGE, MESSAGE), kept by triggers
# in the very statement that adds or removes a message, whichever path
# (delivery, APPEND, COPY, MOVE, expunge, mailbox deletion, rebuild).  A
# store from before them is counted once, in the transaction that makes
# them, so no message is counted twice or missed.
QUOTA_SCHEMA = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS quota_usage (
    user TEXT PRIMARY KEY,
    storage INTEGER NOT NULL,
    messages INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS quota_usage_insert AFTER INSERT ON messages BEGIN
    INSERT INTO quota_usage (user, storage, messages)
    SELECT user, NEW.size, 1 FROM mailboxes WHERE id = NEW.mailbox_id
    ON CONFLICT (user) DO UPDATE SET storage = storage + excluded.storage, messages = messages + 1;
END;
CREATE TRIGGER IF NOT EXISTS quota_usage_delete AFTER DELETE ON messages BEGIN
    INSERT INTO quota_usage (user, storage, messages)
    SELECT user, -OLD.size, -1 FROM mailboxes WHERE id = OLD.mailbox_id
    ON CONFLICT (user) DO UPDATE SET storage = storage + excluded.storage, messages = messages - 1;
END;
INSERT OR IGNORE INTO quota_usage (user, storage, messages)
    SELECT b.user, COALESCE(SUM(m.size), 0), COUNT(m.uid)
    FROM mailboxes b LEFT JOIN messages m ON m.mailbox_id = b.id
    WHERE b.user NOT IN (SELECT user FROM quota_usage)
    GROUP BY b.user;
COMMIT;
"""

# A version of each user's list of mailboxes, moved by every CREATE, DELETE
# and RENAME whoever commits it, so that another process notices (IMAP
# NOTIFY MailboxName).
MAILBOX_LIST_SCHEMA = """
CREATE TABLE IF NOT EXISTS mailbox_lists (
    user TEXT PRIMARY KEY,
    version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS mailbox_lists_insert AFTER INSERT ON mailboxes BEGIN
    INSERT INTO mailbox_lists (user, version) VALUES (NEW.user, 1)
    ON CONFLICT (user) DO UPDATE SET version = version + 1;
END;
CREATE TRIGGER IF NOT EXISTS mailbox_lists_delete AFTER DELETE ON mailboxes BEGIN
    INSERT INTO mailbox_lists (user, version) VALUES (OLD.user, 1)
    ON CONFLICT (user) DO UPDATE SET version = version + 1;
END;
CREATE TRIGGER IF NOT EXISTS mailbox_lists_rename AFTER UPDATE OF name ON mailboxes BEGIN
    INSERT INTO mailbox_lists (user, version) VALUES (NEW.user, 1)
    ON CONFLICT (user) DO UPDATE SET version = version + 1;
END;
"""

# What each user's mailboxes hold, counted afresh ("gateway check").
COUNTED_USAGE = """
SELECT b.user, COALESCE(SUM(m.size), 0), COUNT(m.uid)
FROM mailboxes b LEFT JOIN messages m ON m.mailbox_id = b.id GROUP BY b.user
"""


def usage_drift(db) -> list[tuple[str, tuple[int, int] | None, tuple[int, int]]]:
    """Users whose recorded usage is not what their mailboxes hold: (user, recorded, counted)."""
    counted = {user: (storage, messages) for user, storage, messages in db.execute(COUNTED_USAGE)}
    recorded = {user: (storage, messages)
                for user, storage, messages in db.execute("SELECT user, storage, messages FROM quota_usage")}
    return [
        (user, recorded.get(user), counted.get(user, (0, 0)))
        for user in sorted(set(counted) | set(recorded))
        if recorded.get(user, (0, 0)) != counted.get(user, (0, 0))
    ]


RECORD_COLUMNS = "uid, flags, internaldate, tzoffset, size, modseq"
STRUCTURE_COLUMNS = "envelope, body, bodystructure, header, parts"
# A message's record and structure, for _select_uids: NULL in the
# structure's columns for a message not yet parsed.
WITH_STRUCTURES = "messages LEFT JOIN message_structures USING (mailbox_id, uid)"


def split_structures(db) -> bool:
    """
    Move the structures of a store made when they shared the messages
    table (whose every flag change rewrote them) into message_structures,
    in one transaction; whether there was anything to do.  Another process
    opening the store at once finds it done.
    """
    def combined() -> bool:
        return any(row[1] == "envelope" for row in db.execute("PRAGMA table_info(messages)"))

    if not combined():
        return False
    db.execute("BEGIN IMMEDIATE")
    try:
        if not combined():
            db.execute("ROLLBACK")
            return False
        db.execute(
            "INSERT OR REPLACE INTO message_structures (mailbox_id, uid, envelope, body, bodystructure, header, parts)"
            " SELECT mailbox_id, uid, envelope, body, bodystructure, header, parts FROM messages"
        )
        db.execute("DROP INDEX IF EXISTS messages_records")
        db.execute(
            "CREATE TABLE messages_split (mailbox_id INTEGER NOT NULL, uid INTEGER NOT NULL, flags TEXT NOT NULL,"
            " internaldate INTEGER NOT NULL, tzoffset INTEGER NOT NULL, size INTEGER NOT NULL,"
            " modseq INTEGER NOT NULL, PRIMARY KEY (mailbox_id, uid)) WITHOUT ROWID"
        )
        db.execute(
            "INSERT INTO messages_split SELECT mailbox_id, uid, flags, internaldate, tzoffset, size, modseq FROM messages"
        )
        db.execute("DROP TABLE messages")
        db.execute("ALTER TABLE messages_split RENAME TO messages")
        db.execute("CREATE INDEX messages_modseq ON messages (mailbox_id, modseq)")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return True
