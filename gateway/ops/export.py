"""
``gateway export``: a user's mailboxes as a Maildir++ tree that Dovecot (or
``gateway import maildir``) reads with the same UIDVALIDITY and UIDs, so POP3
UIDLs and IMAP client caches survive a move back.

Each folder gets a version 3 ``dovecot-uidlist`` (UIDVALIDITY, UIDNEXT, the
UID of each file), flags in the file names (``:2,``), keywords as letters
listed in ``dovecot-keywords``, and each file's mtime set to the message's
INTERNALDATE, which is where Dovecot reads it from.

The export is a copy: it writes into a new (or empty) directory and never
changes the store.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import attrs

from gateway.mail import maildir
from gateway.mail.mutf7 import BadMailboxName
from gateway.store.interfaces import MessageExpunged, NoSuchUser
from gateway.store.model import SYSTEM_FLAGS, MailboxInfo


class ExportTargetError(ValueError):
    """The target directory exists and is not empty."""


@attrs.define
class ExportSummary:
    user: str
    folders: list[str] = attrs.Factory(list)
    messages: int = 0
    bytes: int = 0
    skipped: list[str] = attrs.Factory(list)

    def lines(self) -> list[str]:
        lines = [
            f"user {self.user}: {len(self.folders)} folders, {self.messages} messages exported"
            f" ({self.bytes} bytes), {len(self.skipped)} skipped"
        ]
        lines += [f"  {folder}" for folder in self.folders]
        lines += [f"  skipped: {reason}" for reason in self.skipped]
        return lines


def _make_maildir(path: Path, subfolder: bool) -> None:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    if subfolder:
        # Maildir++: marks a folder, so a delivery agent treats it as one.
        (path / "maildirfolder").touch()


async def export_user(store, user: str, root: Path) -> ExportSummary:
    """
    Write every mailbox of ``user`` under ``root`` (created; it must not
    exist or be empty: raises L{ExportTargetError}).
    """
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ExportTargetError(f"{root}: exists and is not an empty directory")
    summary = ExportSummary(user)
    _make_maildir(root, subfolder=False)
    try:
        mailboxes = await store.list_mailboxes(user)
    except NoSuchUser:
        mailboxes = []
    for info in mailboxes:
        if info.name == "INBOX":
            path = root
        else:
            try:
                path = root / maildir.folder_dirname(info.name)
            except BadMailboxName as e:
                summary.skipped.append(f"{info.name}: cannot be a Maildir++ folder name ({e}); folder skipped")
                continue
        await _export_mailbox(store, info, path, summary)
    return summary


async def _export_mailbox(store, info: MailboxInfo, path: Path, summary: ExportSummary) -> None:
    _make_maildir(path, subfolder=info.name != "INBOX")
    records = await store.list_messages(info.id)
    keywords = sorted({flag for record in records for flag in record.flags} - SYSTEM_FLAGS)
    kept = keywords[: len(maildir.KEYWORD_LETTERS)]
    for keyword in keywords[len(kept):]:
        summary.skipped.append(f"{info.name}: keyword {keyword} (Maildir names hold 26 keywords per folder)")
    letter_of_keyword = dict(zip(kept, maildir.KEYWORD_LETTERS))
    entries = []
    for record in records:
        stamp = int(record.internaldate.timestamp())
        # Bodies are stored with CRLF, so the file size is also the
        # RFC 822 size Dovecot reads from W=.
        base = f"{stamp}.M{record.uid}P{info.id}.gateway,S={record.size},W={record.size}"
        staged = path / "tmp" / base
        try:
            body = await store.open_message(info.id, record.uid)
        except MessageExpunged:
            continue  # by a session while the export ran
        with body, open(staged, "wb") as out:
            while chunk := body.read(256 * 1024):
                out.write(chunk)
        os.utime(staged, (stamp, stamp))
        os.replace(staged, path / "cur" / (base + maildir.info_of(record.flags, letter_of_keyword)))
        entries.append((record.uid, base))
        summary.messages += 1
        summary.bytes += record.size
    if kept:
        (path / maildir.KEYWORDS).write_bytes(maildir.format_keywords(kept))
    (path / maildir.UIDLIST).write_bytes(
        maildir.format_uidlist(info.uidvalidity, info.uidnext, uuid.uuid4().hex, entries)
    )
    summary.folders.append(f"{info.name}: {len(records)} messages, UIDVALIDITY {info.uidvalidity}")
