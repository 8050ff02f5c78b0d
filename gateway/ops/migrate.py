"""
``gateway import``: a user's mail from a Maildir++ tree (Dovecot's, keeping
its UIDVALIDITY and UIDs so POP3 UIDLs do not change) or from an mbox file,
into the store.

Importing twice adds nothing: a message whose UID is already in the mailbox
is skipped, and every imported source (a Maildir base name, or an mbox
message's SHA-256 and occurrence) is recorded per mailbox incarnation in
``imported.sqlite`` beside the store, so sources without UIDs are
recognised too.
"""

from __future__ import annotations

import collections
import datetime
import os
import sqlite3
from pathlib import Path
from typing import TextIO

import attrs

from gateway.mail import maildir
from gateway.mail import mbox
from gateway.mail import nofollow
from gateway.store.interfaces import MailboxExists, NoSuchMailbox
from gateway.store.model import MailboxInfo


@attrs.define
class Summary:
    """What an import did, for the report at its end."""

    user: str
    folders: list[str] = attrs.Factory(list)
    messages: int = 0
    bytes: int = 0
    already: int = 0
    skipped: list[str] = attrs.Factory(list)
    warnings: list[str] = attrs.Factory(list)

    def lines(self) -> list[str]:
        lines = [
            f"user {self.user}: {len(self.folders)} folders, {self.messages} messages imported"
            f" ({self.bytes} bytes), {self.already} already imported, {len(self.skipped)} skipped"
        ]
        lines += [f"  {folder}" for folder in self.folders]
        lines += [f"  warning: {warning}" for warning in self.warnings]
        lines += [f"  skipped: {reason}" for reason in self.skipped]
        return lines


class Progress:
    """A ``\\r`` counter on a terminal; silent otherwise."""

    def __init__(self, stream: TextIO, total: int | None):
        self._stream = stream
        self._enabled = stream.isatty()
        self._total = total
        self._count = 0

    def advance(self, count: int = 1) -> None:
        self._count += count
        if self._enabled:
            total = f"/{self._total}" if self._total is not None else ""
            self._stream.write(f"\rimporting: {self._count}{total} messages")
            self._stream.flush()

    def finish(self) -> None:
        if self._enabled and self._count:
            self._stream.write("\n")
            self._stream.flush()


class ImportRecord:
    """
    The sources imported so far, keyed by user, mailbox name and UIDVALIDITY:
    a mailbox deleted and created again is a new incarnation and may take
    the same sources again.
    """

    def __init__(self, path: Path):
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS imported (user TEXT NOT NULL, mailbox TEXT NOT NULL,"
            " uidvalidity INTEGER NOT NULL, source TEXT NOT NULL, uid INTEGER NOT NULL,"
            " PRIMARY KEY (user, mailbox, uidvalidity, source)) WITHOUT ROWID"
        )

    def close(self) -> None:
        self._db.close()

    def seen(self, info: MailboxInfo, source: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM imported WHERE user = ? AND mailbox = ? AND uidvalidity = ? AND source = ?",
            (info.user, info.name, info.uidvalidity, source),
        ).fetchone()
        return row is not None

    def add(self, info: MailboxInfo, source: str, uid: int) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO imported (user, mailbox, uidvalidity, source, uid) VALUES (?, ?, ?, ?, ?)",
            (info.user, info.name, info.uidvalidity, source, uid),
        )


def record_path(store_root: Path) -> Path:
    return Path(store_root) / "imported.sqlite"


def _local_time(timestamp: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(int(timestamp)).astimezone()


async def _mailbox(store, user: str, name: str) -> MailboxInfo:
    try:
        return await store.get_mailbox(user, name)
    except NoSuchMailbox:
        return await store.create_mailbox(user, name)


@attrs.define
class _FolderPlan:
    folder: maildir.Folder
    uidlist: maildir.Uidlist | None
    messages: list[maildir.MaildirMessage]


def _read_folder_file(folder: maildir.Folder, name: str, fallback: str, summary: Summary) -> str | None:
    try:
        return maildir.read_folder_file(folder, name)
    except nofollow.Refused as e:
        summary.skipped.append(f"{folder.name}: {name}: {e}; {fallback}")
    except OSError as e:
        summary.warnings.append(f"{folder.name}: cannot read {name}: {e.strerror}; {fallback}")
    return None


def _plan(folder: maildir.Folder, summary: Summary) -> _FolderPlan:
    letters = {}
    uidlist = None
    keywords_text = _read_folder_file(folder, maildir.KEYWORDS, "keywords not read", summary)
    if keywords_text is not None:
        letters, problems = maildir.parse_keywords(keywords_text)
        summary.warnings += [f"{folder.name}: {problem}" for problem in problems]
    uidlist_text = _read_folder_file(folder, maildir.UIDLIST, "UIDs assigned in delivery order", summary)
    if uidlist_text is not None:
        try:
            uidlist = maildir.parse_uidlist(uidlist_text)
        except maildir.UidlistError as e:
            summary.warnings.append(f"{folder.name}: {e}; UIDs assigned in delivery order")
        else:
            summary.warnings += [f"{folder.name}: {problem}" for problem in uidlist.problems]
    messages, problems = maildir.list_messages(folder, letters)
    summary.skipped += [f"{folder.name}: {problem}" for problem in problems]
    return _FolderPlan(folder, uidlist, messages)


async def import_maildir(store, record: ImportRecord, user: str, root: Path, progress_stream: TextIO) -> Summary:
    """
    Import every folder of the Maildir++ tree at ``root``.  Raises
    L{maildir.NotAMaildir}; the store's L{TemporaryFailure} ends the import
    (running it again continues where it stopped).
    """
    summary = Summary(user)
    folders, problems = maildir.list_folders(root)
    summary.skipped += problems
    plans = [_plan(folder, summary) for folder in folders]
    progress = Progress(progress_stream, sum(len(plan.messages) for plan in plans))
    await store.ensure_user(user)
    try:
        for plan in plans:
            await _import_folder(store, record, user, plan, summary, progress)
    finally:
        progress.finish()
    return summary


async def _import_folder(store, record, user, plan: _FolderPlan, summary: Summary, progress: Progress) -> None:
    name = plan.folder.name
    uidlist = plan.uidlist
    if uidlist is None:
        info = await _mailbox(store, user, name)
        before = summary.messages
        for message in plan.messages:
            await _import_file(store, record, info, None, plan.folder, message, summary)
            progress.advance()
        summary.folders.append(
            f"{name}: {summary.messages - before} messages; no dovecot-uidlist, UIDs assigned in delivery order"
        )
        return

    try:
        info = await store.get_mailbox(user, name)
    except NoSuchMailbox:
        info = None
    if info is None or info.uidvalidity != uidlist.uidvalidity:
        try:
            info = await store.create_mailbox_with_uidvalidity(user, name, uidlist.uidvalidity)
        except MailboxExists:
            summary.skipped.append(
                f"{name}: holds messages under UIDVALIDITY {info.uidvalidity}, so UIDVALIDITY"
                f" {uidlist.uidvalidity} of dovecot-uidlist cannot be kept; {len(plan.messages)} messages skipped"
            )
            progress.advance(len(plan.messages))
            return
    listed = sorted(
        ((uidlist.uids[m.base], m) for m in plan.messages if m.base in uidlist.uids), key=lambda pair: pair[0]
    )
    unlisted = [m for m in plan.messages if m.base not in uidlist.uids]
    present = {r.uid for r in await store.list_messages(info.id)}
    uidnext = info.uidnext
    before = summary.messages
    for uid, message in listed:
        if uid in present or record.seen(info, _maildir_source(message)):
            summary.already += 1
        elif uid < uidnext:
            summary.skipped.append(f"{name}: {message.path.name}: UID {uid} is below UIDNEXT {uidnext} (expunged)")
        elif await _import_file(store, record, info, uid, plan.folder, message, summary):
            uidnext = uid + 1
        progress.advance()
    kept = summary.messages - before
    # Dovecot gives the next new message the uidlist's next UID even when
    # the messages above the last one were expunged.
    await store.raise_uidnext(info.id, uidlist.next_uid)
    for message in unlisted:
        await _import_file(store, record, info, None, plan.folder, message, summary)
        progress.advance()
    text = f"{name}: {summary.messages - before} messages; UIDVALIDITY {uidlist.uidvalidity} and {kept} UIDs kept"
    if unlisted:
        text += f", {len(unlisted)} files not in dovecot-uidlist got new UIDs in delivery order"
    summary.folders.append(text)


def _maildir_source(message: maildir.MaildirMessage) -> str:
    return "maildir:" + message.base


async def _import_file(store, record, info, uid, folder: maildir.Folder, message: maildir.MaildirMessage,
                       summary: Summary) -> bool:
    source = _maildir_source(message)
    if record.seen(info, source):
        summary.already += 1
        return False
    internaldate = _local_time(message.mtime)
    where = f"{message.path.parent.name}/{message.path.name}"
    try:
        with maildir.open_message(folder, message) as f:
            if uid is None:
                stored = await store.append(info.id, f, message.flags, internaldate)
            else:
                stored = await store.append_with_uid(info.id, uid, f, message.flags, internaldate)
    except nofollow.Refused as e:
        # Swapped for a link or a special file since it was listed.
        summary.skipped.append(f"{info.name}: {where}: {e}; message skipped")
        return False
    except OSError as e:
        summary.skipped.append(f"{info.name}: {where}: cannot read: {e.strerror}; message skipped")
        return False
    record.add(info, source, stored.uid)
    summary.messages += 1
    summary.bytes += stored.size
    return True


def _is_folder_data(message: mbox.MboxMessage) -> bool:
    # UW-IMAP and Dovecot keep folder state in a first pseudo-message with
    # an X-IMAP header ("DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA").
    header = message.source.split(b"\n\n", 1)[0]
    return header.startswith(b"X-IMAP:") or b"\nX-IMAP:" in header


async def import_mbox(store, record: ImportRecord, user: str, path: Path, mailbox: str,
                      progress_stream: TextIO) -> Summary:
    """
    Import the messages of the mbox file at ``path`` into ``mailbox`` (made
    when missing), in file order.  Raises L{mbox.NotAnMbox} and OSError.
    """
    summary = Summary(user)
    try:
        f = nofollow.open_file(path)
    except nofollow.Refused as e:
        raise mbox.NotAnMbox(f"{path}: {e}") from None
    with f:
        return await _import_mbox_file(store, record, user, f, mailbox, progress_stream, summary)


async def _import_mbox_file(store, record: ImportRecord, user: str, f, mailbox: str, progress_stream: TextIO,
                            summary: Summary) -> Summary:
    await store.ensure_user(user)
    info = await _mailbox(store, user, mailbox)
    fallback_date = _local_time(os.fstat(f.fileno()).st_mtime)
    occurrences: collections.Counter[str] = collections.Counter()
    progress = Progress(progress_stream, None)
    undated = 0
    try:
        for message in mbox.read_mbox(f):
            progress.advance()
            if _is_folder_data(message):
                summary.warnings.append(f"line {message.line}: folder data pseudo-message (X-IMAP) not imported")
                continue
            digest = message.digest
            occurrences[digest] += 1
            source = f"mbox:{digest}#{occurrences[digest]}"
            if record.seen(info, source):
                summary.already += 1
                continue
            if message.internaldate is None:
                undated += 1
            stored = await store.append(info.id, message.source, message.flags,
                                        message.internaldate or fallback_date)
            record.add(info, source, stored.uid)
            summary.messages += 1
            summary.bytes += stored.size
    finally:
        progress.finish()
    summary.folders.append(f"{info.name}: {summary.messages} messages; UIDs assigned in file order")
    if undated:
        summary.warnings.append(f"{undated} postmark lines without a date; INTERNALDATE is the file's mtime")
    return summary
