"""
``gateway export``: a user's mailboxes as a Maildir++ tree that Dovecot (or
``gateway import maildir``) reads with the same UIDVALIDITY and UIDs, so POP3
UIDLs and IMAP client caches survive a move back.

Each folder gets a version 3 ``dovecot-uidlist`` (UIDVALIDITY, UIDNEXT, the
UID of each file), flags in the file names (``:2,``), keywords as letters
listed in ``dovecot-keywords``, and each file's mtime set to the message's
INTERNALDATE, which is where Dovecot reads it from.

The export is a copy: it writes into a new (or empty) directory and never
changes the store.  It never writes through a link: the target may not be
one, and every directory and file in it is created afresh, by descriptor.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import attrs

from gateway.mail import maildir
from gateway.mail import nofollow
from gateway.mail.mutf7 import BadMailboxName
from gateway.store.interfaces import MessageExpunged, NoSuchUser
from gateway.store.model import SYSTEM_FLAGS, MailboxInfo


class ExportTargetError(ValueError):
    """The target exists and is not an empty directory, or is a link."""


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


# Every name is created by us, relative to a directory we opened, refusing
# what exists already (O_EXCL) and never following a link (O_NOFOLLOW): a
# link or file planted in the target, even after it was found empty, makes
# the export fail rather than write through it.
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _create_file(name: str, dir_fd: int):
    return os.fdopen(os.open(name, _CREATE, 0o600, dir_fd=dir_fd), "wb")


def _make_directory(name: str, dir_fd: int) -> int:
    os.mkdir(name, 0o700, dir_fd=dir_fd)
    return nofollow.open_directory(name, dir_fd)


def _open_target(root: Path) -> int:
    """
    The export's root directory, made when absent (with its parents, which
    are the caller's to trust); an existing one must be an empty directory
    and not a link.
    """
    root.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.mkdir(root, 0o700)
    except FileExistsError:
        pass
    try:
        fd = nofollow.open_directory(root)
    except nofollow.Refused as e:
        raise ExportTargetError(f"{root}: {e}; not written through") from None
    if os.listdir(fd):
        os.close(fd)
        raise ExportTargetError(f"{root}: exists and is not an empty directory")
    return fd


@attrs.define
class _Maildir:
    """A Maildir folder being written: descriptors of it and its tmp/ and cur/."""

    folder: int
    tmp: int
    cur: int

    def close(self) -> None:
        for fd in (self.cur, self.tmp, self.folder):
            os.close(fd)


def _make_maildir(root_fd: int, dirname: str | None) -> _Maildir:
    folder = os.dup(root_fd) if dirname is None else _make_directory(dirname, root_fd)
    try:
        tmp = _make_directory("tmp", folder)
        os.close(_make_directory("new", folder))
        cur = _make_directory("cur", folder)
        if dirname is not None:
            # Maildir++: marks a folder, so a delivery agent treats it as one.
            _create_file("maildirfolder", folder).close()
    except BaseException:
        os.close(folder)
        raise
    return _Maildir(folder, tmp, cur)


async def export_user(store, user: str, root: Path) -> ExportSummary:
    """
    Write every mailbox of ``user`` under ``root`` (created; it must not
    exist or be an empty directory, not a link: raises L{ExportTargetError}).
    """
    root = Path(root)
    root_fd = _open_target(root)
    try:
        summary = ExportSummary(user)
        try:
            mailboxes = await store.list_mailboxes(user)
        except NoSuchUser:
            mailboxes = []
        if not any(info.name == "INBOX" for info in mailboxes):
            _make_maildir(root_fd, None).close()
        for info in mailboxes:
            dirname = None
            if info.name != "INBOX":
                try:
                    dirname = maildir.folder_dirname(info.name)
                except BadMailboxName as e:
                    summary.skipped.append(f"{info.name}: cannot be a Maildir++ folder name ({e}); folder skipped")
                    continue
            target = _make_maildir(root_fd, dirname)
            try:
                await _export_mailbox(store, info, target, summary)
            finally:
                target.close()
    except FileExistsError as e:
        raise ExportTargetError(f"{root}: {e.filename} appeared in it during the export; not written through") from None
    finally:
        os.close(root_fd)
    return summary


async def _export_mailbox(store, info: MailboxInfo, target: _Maildir, summary: ExportSummary) -> None:
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
        try:
            body = await store.open_message(info.id, record.uid)
        except MessageExpunged:
            continue  # by a session while the export ran
        with body, _create_file(base, target.tmp) as out:
            while chunk := body.read(256 * 1024):
                out.write(chunk)
            out.flush()
            os.utime(out.fileno(), (stamp, stamp))
        os.rename(base, base + maildir.info_of(record.flags, letter_of_keyword),
                  src_dir_fd=target.tmp, dst_dir_fd=target.cur)
        entries.append((record.uid, base))
        summary.messages += 1
        summary.bytes += record.size
    if kept:
        with _create_file(maildir.KEYWORDS, target.folder) as out:
            out.write(maildir.format_keywords(kept))
    with _create_file(maildir.UIDLIST, target.folder) as out:
        out.write(maildir.format_uidlist(info.uidvalidity, info.uidnext, uuid.uuid4().hex, entries))
    summary.folders.append(f"{info.name}: {len(records)} messages, UIDVALIDITY {info.uidvalidity}")
