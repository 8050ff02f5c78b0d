"""
The SQLite store's consistency check (``IStoreMaintenance``, for ``gateway
check``): its index against its files (the layout is described in
``store.py``).

Found: index rows without a body file, body files without a row, sizes that
disagree, a UIDNEXT not above every UID or below the recorded one, a
``mailbox.json`` or ``uidnext`` file missing or disagreeing with the index,
mailbox directories the index does not know, temporary files a crash
left behind, and a user's quota usage that is not what the mailboxes hold.

``--repair`` runs the store's sweep, what the server does at each start
(``SQLiteStore.sweep``), so there is one set of safe repairs: each one puts
back what the index committed and none can lose or invent a message.  The
problems it does not touch (marked here without ``repair``) are reported for
a human.

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

from gateway.durable import read_slot_file
from gateway.store.interfaces import IStoreMaintenance, NoStore
from gateway.store.model import CheckReport
from gateway.store.sqlite.maintenance import TMP_GRACE_SECONDS, body_uids
from gateway.store.sqlite.rows import usage_drift


@attrs.frozen
class Problem:
    """One inconsistency; ``repair`` says whether the sweep puts it right."""

    text: str
    repair: bool = False


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


def _read_index(index: Path) -> tuple[list[_Mailbox], dict[int, dict[int, int]], dict[int, set[int]],
                                       dict[int, list[int]], list]:
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
        expunging: dict[int, list[int]] = {}
        for mailbox_id, uid in db.execute("SELECT mailbox_id, uid FROM expunging ORDER BY mailbox_id, uid"):
            expunging.setdefault(mailbox_id, []).append(uid)
        drift = usage_drift(db)
    finally:
        db.close()
    return mailboxes, sizes, expunged, expunging, drift


def _stale_tmp_files(paths, now: float) -> list[Problem]:
    return [
        Problem(f"orphaned temporary file {path}", repair=True)
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
    mailboxes, sizes, expunged, expunging, drift = _read_index(index)
    problems = _stale_tmp_files((store_root / "tmp").glob("*"), now)
    for user, recorded, (storage, messages) in drift:
        was = "none" if recorded is None else f"{recorded[1]} messages, {recorded[0]} octets"
        problems.append(Problem(f"the quota usage of {user} is recorded as {was}; the mailboxes hold"
                                f" {messages} messages, {storage} octets", repair=True))
    problems += _stale_tmp_files(store_root.glob("*.tmp"), now)
    for mailbox in mailboxes:
        if mailbox.id in expunging:
            problems.append(Problem(
                f"{mailbox.label}: the expunge of UID {' '.join(map(str, expunging[mailbox.id]))} is under way or"
                " was interrupted (opening the store finishes it)", repair=True))
        problems += _check_mailbox(mailbox, mail / str(mailbox.id), sizes.get(mailbox.id, {}),
                                   expunged.get(mailbox.id, set()), now)
    known = {str(m.id) for m in mailboxes}
    for directory in sorted(mail.iterdir()) if mail.is_dir() else ():
        if directory.name.isdigit() and directory.name not in known:
            problems.append(Problem(f"mail/{directory.name} is a mailbox directory the index does not know"
                                    " (a deleted mailbox, or one never committed)", repair=True))
    return problems


def _recorded_uidnext(mailbox: _Mailbox, directory: Path, uid_floor: int) -> tuple[int, list[Problem]]:
    """The UIDNEXT a rebuild keeps (uidnext slot file, or an older store's uid_floor) and its problems."""
    try:
        payload = read_slot_file(directory / "uidnext")
    except FileNotFoundError:
        return uid_floor + 1, [Problem(f"{mailbox.label}: uidnext file missing, so a rebuild could give out an"
                                       " expunged UID again", repair=True)]
    if payload is None:
        return uid_floor + 1, [Problem(f"{mailbox.label}: uidnext file unreadable (no valid slot)", repair=True)]
    return max(int(payload), uid_floor + 1), []


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
    recorded, slot_problems = _recorded_uidnext(mailbox, directory, uid_floor)
    problems += slot_problems

    files = body_uids(directory)
    problems += _stale_tmp_files(directory.glob("*.tmp"), now)
    for uid in sorted(sizes.keys() - files.keys()):
        problems.append(Problem(f"{mailbox.label}: UID {uid} has no body file", repair=True))
    # UIDNEXT as the sweep raises it before it judges the files.
    uidnext = max(mailbox.uidnext, recorded, max(sizes, default=0) + 1)
    for uid in sorted(files.keys() - sizes.keys()):
        if uid in expunged:
            problems.append(Problem(f"{mailbox.label}: body file {uid} of an expunged message is left", repair=True))
        elif uid >= uidnext:
            problems.append(Problem(f"{mailbox.label}: body file {uid} has no index row and was never committed",
                                    repair=True))
        else:
            problems.append(Problem(
                f"{mailbox.label}: body file {uid} has no index row and its UID is below UIDNEXT"
                f" {mailbox.uidnext}; not repaired automatically"
            ))
    for uid in sorted(sizes.keys() & files.keys()):
        actual = files[uid].stat().st_size
        if actual != sizes[uid]:
            problems.append(Problem(f"{mailbox.label}: UID {uid} is {sizes[uid]} bytes in the index, {actual} on disk"))
    if uidnext > mailbox.uidnext:
        problems.append(Problem(f"{mailbox.label}: UIDNEXT {mailbox.uidnext} is not above UID {uidnext - 1}",
                                repair=True))
    return problems


def repair(store) -> list[str]:
    """
    Do the safe repairs through ``store`` (an L{SQLiteStore} on the same
    root): its sweep, under its write lock; one line per thing done.
    """
    return store.sweep()


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
                done = repair(store)
            finally:
                await store.close()
            problems = find_problems(self.root)
        return CheckReport(problems=tuple(p.text for p in problems), repairs=tuple(done))
