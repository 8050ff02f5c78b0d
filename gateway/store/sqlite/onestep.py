"""
SQL that reads or changes many messages of a mailbox in one step of SQLite.

Python's sqlite3 lets go of the GIL around every ``sqlite3_step``: one per
row a query returns, one per parameter set of ``executemany``.  On the
writer thread, while the reactor thread is busy, each of those is a hand-over
of the GIL to the reactor and a wait for it back (a futex wake and two
context switches), so a \\Seen flag set on fifty messages, or their expunge,
waited for fifty of the reactor's turns and slowed each of them.  Here the
UIDs go in as one JSON list (``json_each``) and the rows come back as one
JSON array (``json_group_array``): a statement is one step, whatever the
number of messages.  Only columns of integers and text travel so; JSON
carries both exactly.

A few messages go the plain way: there the JSON costs more than the steps
it saves (a few microseconds a statement).
"""

from __future__ import annotations

import json

# Rows up to which a query steps through them one by one.
FEW_ROWS = 8


def uids_where(uids: list[int]) -> tuple[str, int | str]:
    """
    The condition naming ``uids`` (``"uid = ?"`` or ``"uid IN"`` a JSON
    list) and its one parameter.
    """
    if len(uids) == 1:
        return "uid = ?", uids[0]
    return "uid IN (SELECT value FROM json_each(?))", json.dumps(uids)


def select_rows(db, columns: str, mailbox_id: int, uids, source: str = "messages", steps: bool = False) -> list:
    """
    ``columns`` (``uid`` first) of the messages of ``uids`` that exist in
    ``source``, in UID order; one step however many there are, unless
    ``steps`` (columns JSON cannot carry: blobs) has them stepped through.
    """
    uids = sorted(set(uids))
    if not uids:
        return []
    # The range, not the list: the index walks it in one pass, and most
    # requests name a run of consecutive UIDs (a session's RETRs, 1:*).
    span = (mailbox_id, uids[0], uids[-1])
    where = "WHERE mailbox_id = ? AND uid BETWEEN ? AND ?"
    if steps or uids[-1] - uids[0] < FEW_ROWS:
        rows = db.execute(f"SELECT {columns} FROM {source} {where} ORDER BY uid", span).fetchall()
    else:
        (text,) = db.execute(f"SELECT json_group_array(json_array({columns})) FROM {source} {where}", span).fetchone()
        rows = json.loads(text)
        # json_group_array keeps the order rows come in, which SQLite does
        # not promise; sorting rows already in order is one pass.
        rows.sort(key=_first)
    if len(uids) == uids[-1] - uids[0] + 1:
        return rows  # every UID of the range was asked for
    wanted = set(uids)
    return [row for row in rows if row[0] in wanted]


def _first(row: list):
    return row[0]
