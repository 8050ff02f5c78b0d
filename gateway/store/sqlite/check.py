"""
The SQLite store's consistency check (``IStoreMaintenance``, for ``gateway
check``): its index against its files (the layout is described in
``store.py``).

Found: index rows without a body file, body files without a row, sizes that
disagree, a UIDNEXT not above every UID, a ``mailbox.json`` missing or
disagreeing with the index, mailbox directories the index does not know, and
temporary files a crash left behind.

``--repair`` does only what cannot lose or invent mail, each step through
the store so live sessions hear of it: remove old temporary files, raise
UIDNEXT, index a body file whose UID was never handed out (a crash between
the file's rename and the index commit), remove a body file whose UID the
index records as expunged (a crash before the unlink), and expunge rows
whose body file is gone.  Everything else is reported for a human.

Reading is done on a read-only connection to the index, so a check never
changes the store.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import attrs
from twisted.internet import defer
from zope.interface import implementer

from gateway.store.interfaces import IStoreMaintenance, NoStore
from gateway.store.model import CheckReport


# A temporary file younger than this may belong to a delivery in progress.
TMP_GRACE_SECONDS = 3600


@attrs.frozen
class Problem:
    """One inconsistency; ``repair`` names what ``--repair`` may do about it."""

    text: str
    repair: str | None = None
    mailbox_id: int | None = None
    uid: int | None = None
    path: Path | None = None
    uidnext: int | None = None


@attrs.frozen
class _Mailbox:
    id: int
    user: str
    name: str
    uidvalidity: int
    uidnext: int
    special_use: str | None

    @property
    def label(self) -> str:
        return f"{self.user}/{self.name} (mail/{self.id})"


def _read_index(index: Path) -> tuple[list[_Mailbox], dict[int, dict[int, int]], dict[int, set[int]]]:
    db = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
    try:
        mailboxes = [
            _Mailbox(*row)
            for row in db.execute("SELECT id, user, name, uidvalidity, uidnext, special_use FROM mailboxes ORDER BY id")
        ]
        sizes: dict[int, dict[int, int]] = {m.id: {} for m in mailboxes}
        for mailbox_id, uid, size in db.execute("SELECT mailbox_id, uid, size FROM messages"):
            sizes.setdefault(mailbox_id, {})[uid] = size
        expunged: dict[int, set[int]] = {}
        for mailbox_id, uid in db.execute("SELECT mailbox_id, uid FROM expunged"):
            expunged.setdefault(mailbox_id, set()).add(uid)
    finally:
        db.close()
    return mailboxes, sizes, expunged


def _stale_tmp_files(paths, now: float) -> list[Problem]:
    return [
        Problem(f"orphaned temporary file {path}", "remove_tmp", path=path)
        for path in sorted(paths)
        if path.is_file() and now - path.stat().st_mtime > TMP_GRACE_SECONDS
    ]


def find_problems(store_root: Path, now: float | None = None) -> list[Problem]:
    """Every inconsistency of the store at ``store_root``."""
    now = time.time() if now is None else now
    store_root = Path(store_root)
    mail = store_root / "mail"
    index = store_root / "index.sqlite"
    if not index.exists():
        return [Problem(f"{index} is missing; the server rebuilds it from the files when it starts")]
    mailboxes, sizes, expunged = _read_index(index)
    problems = _stale_tmp_files((store_root / "tmp").glob("*"), now)
    problems += _stale_tmp_files(store_root.glob("*.tmp"), now)
    for mailbox in mailboxes:
        problems += _check_mailbox(mailbox, mail / str(mailbox.id), sizes.get(mailbox.id, {}),
                                   expunged.get(mailbox.id, set()), now)
    known = {str(m.id) for m in mailboxes}
    for directory in sorted(mail.iterdir()) if mail.is_dir() else ():
        if directory.name.isdigit() and directory.name not in known and (directory / "mailbox.json").exists():
            problems.append(Problem(f"mail/{directory.name} has a mailbox.json but no index row"))
    return problems


def _check_mailbox(mailbox: _Mailbox, directory: Path, sizes: dict[int, int], expunged: set[int],
                   now: float) -> list[Problem]:
    if not directory.is_dir():
        return [Problem(f"{mailbox.label}: directory missing")]
    problems = []
    meta_path = directory / "mailbox.json"
    uid_floor = 0
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        problems.append(Problem(f"{mailbox.label}: mailbox.json missing"))
    except (OSError, ValueError) as e:
        problems.append(Problem(f"{mailbox.label}: mailbox.json unreadable: {e}"))
    else:
        for field in ("user", "name", "uidvalidity", "special_use"):
            if meta.get(field) != getattr(mailbox, field):
                problems.append(Problem(
                    f"{mailbox.label}: mailbox.json has {field} {meta.get(field)!r}, the index"
                    f" {getattr(mailbox, field)!r}"
                ))
        uid_floor = meta.get("uid_floor", 0)

    files = {}
    for path in directory.iterdir():
        if path.name.isdigit():
            files[int(path.name)] = path
    problems += _stale_tmp_files(directory.glob("*.tmp"), now)
    for uid in sorted(sizes.keys() - files.keys()):
        problems.append(Problem(f"{mailbox.label}: UID {uid} has no body file", "drop_row", mailbox.id, uid))
    for uid in sorted(files.keys() - sizes.keys()):
        if uid in expunged:
            problems.append(Problem(f"{mailbox.label}: body file {uid} of an expunged message is left",
                                    "remove_expunged", mailbox.id, uid, files[uid]))
        elif uid >= mailbox.uidnext:
            problems.append(Problem(f"{mailbox.label}: body file {uid} has no index row and was never committed",
                                    "discard_uncommitted", mailbox.id, uid, files[uid]))
        else:
            problems.append(Problem(
                f"{mailbox.label}: body file {uid} has no index row and its UID is below UIDNEXT"
                f" {mailbox.uidnext}; not repaired automatically"
            ))
    for uid in sorted(sizes.keys() & files.keys()):
        actual = files[uid].stat().st_size
        if actual != sizes[uid]:
            problems.append(Problem(f"{mailbox.label}: UID {uid} is {sizes[uid]} bytes in the index, {actual} on disk"))
    # Body files at or above UIDNEXT were never committed: discarded, not counted.
    highest = max([uid_floor, *sizes])
    if highest >= mailbox.uidnext:
        problems.append(Problem(f"{mailbox.label}: UIDNEXT {mailbox.uidnext} is not above UID {highest}",
                                "raise_uidnext", mailbox.id, uidnext=highest + 1))
    return problems


async def repair(store, problems: list[Problem]) -> list[str]:
    """
    Do the safe repairs among ``problems`` through ``store`` (an
    L{SQLiteStore} on the same root); returns one line per thing done.
    """
    done = []
    order = ("remove_tmp", "remove_expunged", "discard_uncommitted", "drop_row", "raise_uidnext")
    for kind in order:
        for problem in (p for p in problems if p.repair == kind):
            done.append(await _repair_one(store, problem))
    return done


async def _repair_one(store, problem: Problem) -> str:
    if problem.repair in ("remove_tmp", "remove_expunged"):
        problem.path.unlink(missing_ok=True)
        return f"removed {problem.path}"
    if problem.repair == "discard_uncommitted":
        # Never index it: an append that crashed before its commit was not
        # acknowledged (the sender delivers again), and a copy or move that
        # did still has the message at its source.
        if await store.discard_uncommitted(problem.mailbox_id, problem.uid):
            return f"removed {problem.path}, a body no commit ever took (crash before the index commit)"
        return f"left {problem.path}: a delivery committed it meanwhile"
    if problem.repair == "drop_row":
        await store.expunge(problem.mailbox_id, [problem.uid])
        return f"expunged UID {problem.uid} of mail/{problem.mailbox_id}, whose body file is gone"
    uidnext = await store.raise_uidnext(problem.mailbox_id, problem.uidnext)
    return f"raised UIDNEXT of mail/{problem.mailbox_id} to {uidnext}"


@implementer(IStoreMaintenance)
class SQLiteMaintenance:
    """
    ``IStoreMaintenance`` of the SQLite store at ``root``.  ``open_store``
    opens that store, for the repairs only: opening may change it (a missing
    index is rebuilt), and a check alone never does.
    """

    def __init__(self, root: Path, open_store):
        self.root = Path(root)
        self._open_store = open_store

    def check(self, repair=False):
        return defer.Deferred.fromCoroutine(self._check(repair))

    async def _check(self, repairing: bool) -> CheckReport:
        if not self.root.is_dir():
            raise NoStore(f"{self.root}: no store here")
        problems = find_problems(self.root)
        done: list[str] = []
        if repairing and any(problem.repair for problem in problems):
            store = self._open_store()
            try:
                done = await repair(store, problems)
            finally:
                await store.close()
            problems = find_problems(self.root)
        return CheckReport(problems=tuple(p.text for p in problems), repairs=tuple(done))
