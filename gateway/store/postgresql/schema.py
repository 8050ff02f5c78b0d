"""
The PostgreSQL schema, as numbered migrations the gateway applies itself.

Every node runs ``migrate`` when it starts; an advisory lock held for the
migrating transaction makes the others wait, so two nodes starting at once
never apply a step twice.  A database whose schema is newer than this code
knows is refused rather than used.
"""

from __future__ import annotations

from gateway.store.interfaces import StoreError

# Names and keys compare byte for byte whatever the database's locale, as
# in the SQLite index: LIST order and blob keys must not depend on it.
MIGRATIONS: tuple[str, ...] = (
    # 1: users' mailboxes, messages with their parsed structure, the
    # expunged history QRESYNC needs, subscriptions, and content-addressed
    # bodies (rows in ``blobs``; their bytes in an object store or in
    # ``blob_chunks``).
    """
    CREATE TABLE counters (
        name text COLLATE "C" PRIMARY KEY,
        value bigint NOT NULL
    );
    INSERT INTO counters (name, value) VALUES ('uidvalidity', 0);
    CREATE TABLE mailboxes (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        owner text COLLATE "C" NOT NULL,
        name text COLLATE "C" NOT NULL,
        uidvalidity bigint NOT NULL,
        uidnext bigint NOT NULL,
        highestmodseq bigint NOT NULL,
        first_recent_uid bigint NOT NULL,
        special_use text,
        UNIQUE (owner, name)
    );
    CREATE TABLE blobs (
        key text COLLATE "C" PRIMARY KEY,
        size bigint NOT NULL,
        last_used timestamptz NOT NULL
    );
    CREATE TABLE blob_chunks (
        key text COLLATE "C" NOT NULL,
        seq integer NOT NULL,
        data bytea NOT NULL,
        PRIMARY KEY (key, seq)
    );
    CREATE TABLE messages (
        mailbox_id bigint NOT NULL REFERENCES mailboxes ON DELETE CASCADE,
        uid bigint NOT NULL,
        flags text NOT NULL,
        internaldate bigint NOT NULL,
        tzoffset integer NOT NULL,
        size bigint NOT NULL,
        modseq bigint NOT NULL,
        blob text COLLATE "C" NOT NULL REFERENCES blobs,
        envelope bytea NOT NULL,
        body bytea NOT NULL,
        bodystructure bytea NOT NULL,
        header bytea NOT NULL,
        parts text NOT NULL,
        PRIMARY KEY (mailbox_id, uid)
    );
    CREATE INDEX messages_modseq ON messages (mailbox_id, modseq);
    CREATE INDEX messages_blob ON messages (blob);
    CREATE TABLE expunged (
        mailbox_id bigint NOT NULL REFERENCES mailboxes ON DELETE CASCADE,
        uid bigint NOT NULL,
        modseq bigint NOT NULL,
        PRIMARY KEY (mailbox_id, uid)
    );
    CREATE INDEX expunged_modseq ON expunged (mailbox_id, modseq);
    CREATE TABLE subscriptions (
        owner text COLLATE "C" NOT NULL,
        name text COLLATE "C" NOT NULL,
        PRIMARY KEY (owner, name)
    );
    """,
    # 2: POP3 views per device (devices.py): a mailbox's devices, and the
    # messages each has deleted; a device's marks go with it.
    """
    CREATE TABLE pop3_devices (
        mailbox_id bigint NOT NULL REFERENCES mailboxes ON DELETE CASCADE,
        name text COLLATE "C" NOT NULL,
        last_login double precision NOT NULL,
        PRIMARY KEY (mailbox_id, name)
    );
    CREATE TABLE pop3_device_deletions (
        mailbox_id bigint NOT NULL,
        uid bigint NOT NULL,
        device text COLLATE "C" NOT NULL,
        PRIMARY KEY (mailbox_id, uid, device),
        FOREIGN KEY (mailbox_id, device) REFERENCES pop3_devices ON DELETE CASCADE
    );
    CREATE INDEX pop3_device_deletions_device ON pop3_device_deletions (mailbox_id, device);
    """,
    # 3: each mailbox counts its messages and their octets, so that a
    # user's quota usage (RFC 9208) is a sum over their mailboxes, not over
    # their messages.  Triggers keep the counts in the transaction that adds
    # or removes messages, whatever statement does it; every such writer
    # holds the mailbox's row lock already, so they add no wait.  A message
    # never changes size or mailbox once stored.
    """
    ALTER TABLE mailboxes ADD COLUMN message_count bigint NOT NULL DEFAULT 0,
                          ADD COLUMN message_octets bigint NOT NULL DEFAULT 0;
    UPDATE mailboxes AS b SET message_count = t.n, message_octets = t.octets
        FROM (SELECT mailbox_id, count(*) AS n, sum(size) AS octets FROM messages GROUP BY mailbox_id) AS t
        WHERE b.id = t.mailbox_id;
    CREATE FUNCTION gateway_count_added() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE mailboxes AS b SET message_count = b.message_count + t.n, message_octets = b.message_octets + t.octets
            FROM (SELECT mailbox_id, count(*) AS n, sum(size) AS octets FROM added GROUP BY mailbox_id) AS t
            WHERE b.id = t.mailbox_id;
        RETURN NULL;
    END $$;
    CREATE FUNCTION gateway_count_removed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE mailboxes AS b SET message_count = b.message_count - t.n, message_octets = b.message_octets - t.octets
            FROM (SELECT mailbox_id, count(*) AS n, sum(size) AS octets FROM removed GROUP BY mailbox_id) AS t
            WHERE b.id = t.mailbox_id;
        RETURN NULL;
    END $$;
    CREATE TRIGGER messages_counted_in AFTER INSERT ON messages
        REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION gateway_count_added();
    CREATE TRIGGER messages_counted_out AFTER DELETE ON messages
        REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION gateway_count_removed();
    """,
    # 4: mailboxes whose flag changes a node committed without a WAL flush
    # (flags.py), and under which start of the server.
    """
    CREATE TABLE unsynced_flags (
        node text COLLATE "C" NOT NULL,
        mailbox_id bigint NOT NULL,
        server_started timestamptz NOT NULL,
        PRIMARY KEY (node, mailbox_id)
    );
    """,
)

# pg_advisory_xact_lock key of the migration: "gateway" in ASCII.
_MIGRATION_LOCK = 0x67617465776179


class SchemaTooNew(StoreError):
    """The database was migrated by a newer gateway than this one."""


class SchemaNotCurrent(StoreError):
    """The database has no gateway schema yet, or an older one, and was not to be changed."""


def _version(transaction) -> int | None:
    """The schema version, or None for a database the gateway never set up."""
    if transaction.one("SELECT to_regclass('schema_migrations')")[0] is None:
        return None
    return transaction.one("SELECT coalesce(max(version), 0) FROM schema_migrations")[0]


def _refuse_newer(current: int) -> None:
    if current > len(MIGRATIONS):
        raise SchemaTooNew(
            f"the database schema is version {current}; this gateway knows up to {len(MIGRATIONS)}"
        )


def require_current(transaction) -> int:
    """
    Check, changing nothing, that the schema is the one this code knows
    (for tools that must not migrate, such as ``gateway check``).

    @return: the schema version.
    """
    current = _version(transaction)
    if not current:
        raise SchemaNotCurrent("the database has no gateway schema: a node creates it when it first starts")
    _refuse_newer(current)
    if current < len(MIGRATIONS):
        raise SchemaNotCurrent(
            f"the database schema is version {current}, older than this gateway's {len(MIGRATIONS)}:"
            " a node of this version migrates it when it starts; left unchanged"
        )
    return current


def migrate(transaction) -> int:
    """
    Bring the schema up to date inside ``transaction``.

    @return: the schema version afterwards.
    """
    transaction.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
    transaction.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version integer PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())"
    )
    current = _version(transaction)
    _refuse_newer(current)
    for version in range(current + 1, len(MIGRATIONS) + 1):
        transaction.execute(MIGRATIONS[version - 1])
        transaction.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
    return len(MIGRATIONS)
