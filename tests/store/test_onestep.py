"""
Many messages in one step of SQLite (gateway/store/sqlite/onestep.py): the
same rows as a plain query, whatever the UIDs asked for; and the SQLite
store's flag changes and expunges run a few statements, not one a message,
so that the writer thread hands the GIL to a busy reactor a few times, not
once a message.
"""

import sqlite3

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.store.encoding import record_from_row
from gateway.store.sqlite.onestep import FEW_ROWS, select_rows, uids_where
from gateway.store.sqlite.rows import RECORD_COLUMNS, SCHEMA
from tests.deferreds import result_of
from tests.store.contract import MESSAGE, deliver, inbox

uid_sets = st.sets(st.integers(min_value=1, max_value=3 * FEW_ROWS), max_size=3 * FEW_ROWS)


def index(stored: set[int]) -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.executescript(SCHEMA)
    db.executemany(
        "INSERT INTO messages (mailbox_id, uid, flags, internaldate, tzoffset, size, modseq)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        # A mailbox beside it, with the same UIDs, that no answer may mix in.
        [(box, uid, "\\Seen \\Flagged" if uid % 2 else "", 1_700_000_000 + uid, -300, 10 * uid, uid)
         for box in (1, 2) for uid in stored],
    )
    return db


@given(stored=uid_sets, asked=uid_sets)
def test_select_rows_answers_as_a_plain_query(stored, asked):
    db = index(stored)
    plain = db.execute(f"SELECT {RECORD_COLUMNS} FROM messages WHERE mailbox_id = 1 ORDER BY uid").fetchall()
    expected = [record_from_row(row) for row in plain if row[0] in asked]
    assert [record_from_row(row) for row in select_rows(db, RECORD_COLUMNS, 1, asked)] == expected


@pytest.mark.parametrize("uids", [[5], [2, 9], list(range(1, 3 * FEW_ROWS, 2))])
def test_uids_where_names_exactly_those_uids(uids):
    db = index(set(range(1, 3 * FEW_ROWS + 1)))
    where, listed = uids_where(uids)
    db.execute(f"UPDATE messages SET flags = 'x' WHERE mailbox_id = 1 AND {where}", (listed,))
    changed = [uid for (uid,) in db.execute("SELECT uid FROM messages WHERE flags = 'x' AND mailbox_id = 1")]
    assert changed == uids
    assert db.execute("SELECT count(*) FROM messages WHERE flags = 'x' AND mailbox_id = 2").fetchone() == (0,)


def statements_of(store, call):
    """
    What ``call`` returns, and the statements the write connection ran for
    it, with their values.  SQLite traces a statement again at each run of
    a trigger it fires, with the same text: those repeats are left out.
    """
    traced = []
    store._write_db.set_trace_callback(traced.append)
    try:
        outcome = result_of(call())
    finally:
        store._write_db.set_trace_callback(None)
    return outcome, [text for i, text in enumerate(traced) if i == 0 or text != traced[i - 1]]


def test_a_flag_change_on_many_messages_is_a_few_statements(store):
    box = inbox(store)
    uids = deliver(store, box, 200)
    result_of(store.store_flags(box.id, uids[::3], {"\\Flagged"}, "add"))
    changed, ran = statements_of(store, lambda: store.store_flags(box.id, uids, {"\\Seen"}, "add"))
    assert sorted(record.uid for record in changed) == uids
    # Two flag lists come out (\Seen, \Seen \Flagged): one UPDATE each.
    assert sum(statement.startswith("UPDATE messages") for statement in ran) == 2
    assert len(ran) < 20
    records = result_of(store.list_messages(box.id))
    assert all("\\Seen" in record.flags for record in records)
    assert [record.uid for record in records if "\\Flagged" in record.flags] == uids[::3]


def test_an_expunge_of_many_messages_is_a_few_statements(store):
    box = inbox(store)
    uids = deliver(store, box, 200)
    kept = uids[::10]
    going = [uid for uid in uids if uid not in kept]
    _, ran = statements_of(store, lambda: store.expunge(box.id, going))
    assert len(ran) < 20
    assert [record.uid for record in result_of(store.list_messages(box.id))] == kept
    # What an expunge records for CONDSTORE/QRESYNC sessions: every UID.
    changes = result_of(store.changes_since(box.id, 0))
    assert sorted(changes.expunged) == going
    assert result_of(store.append(box.id, MESSAGE)).uid == uids[-1] + 1
