"""
Maildir++ as Dovecot writes it: folders, message files, flags, keywords and
the ``dovecot-uidlist`` that holds each message's UID.

Read here for import, written here for export, so both sides agree on one
reading of the format.  Pure: no Twisted, no store.

Layout (Dovecot's default ``maildir:~/Maildir``)::

    Maildir/cur new tmp          INBOX
    Maildir/.Sent/cur new tmp    Sent
    Maildir/.Work.2026/...       Work/2026 (``.`` separates levels; each level
                                 is modified UTF-7, RFC 3501 5.1.3)
    <folder>/dovecot-uidlist     UIDVALIDITY, next UID, UID of each file
    <folder>/dovecot-keywords    which letter a-z stands for which keyword

A message file is ``<base>:2,<flags>``; the base name never changes, the
flags after ``:2,`` do.  Dovecot matches uidlist entries by the base name.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import BinaryIO

import attrs

from gateway.mail import nofollow
from gateway.mail.mutf7 import BadMailboxName, decode_mailbox, encode_mailbox
from gateway.store.model import HIERARCHY_SEPARATOR

# The Maildir flag letters (https://cr.yp.to/proto/maildir.html) and the IMAP
# flags they stand for.  P ("passed") has no IMAP system flag; it is the
# $Forwarded keyword of RFC 5788.
FLAG_LETTERS = {
    "D": "\\Draft",
    "F": "\\Flagged",
    "P": "$Forwarded",
    "R": "\\Answered",
    "S": "\\Seen",
    "T": "\\Deleted",
}
# Dovecot ignores P and keeps $Forwarded as a keyword, so export does too.
LETTER_OF_FLAG = {flag: letter for letter, flag in FLAG_LETTERS.items() if letter != "P"}
KEYWORD_LETTERS = "abcdefghijklmnopqrstuvwxyz"

UIDLIST = "dovecot-uidlist"
KEYWORDS = "dovecot-keywords"
_UID_MAX = 0xFFFFFFFF


class NotAMaildir(ValueError):
    """The path is not a Maildir (no cur/ and new/ directories)."""


class UidlistError(ValueError):
    """The uidlist header cannot be read, so none of its UIDs can be trusted."""


@attrs.frozen
class Uidlist:
    """
    A parsed ``dovecot-uidlist``: ``uids`` maps a file's base name to its UID.
    ``problems`` names every line that was skipped, and why.
    """

    uidvalidity: int
    next_uid: int
    uids: Mapping[str, int]
    problems: tuple[str, ...] = ()


@attrs.frozen
class Folder:
    """
    A mail folder: its mailbox name in the store, its directory, and the
    Maildir++ root it lies in (files are reached from there, link-free).
    """

    name: str
    path: Path
    root: Path

    @property
    def parts(self) -> tuple[str, ...]:
        """The folder's directory relative to the root: () for INBOX."""
        return self.path.relative_to(self.root).parts


@attrs.frozen
class MaildirMessage:
    """One message file, as listed (the file is read later)."""

    path: Path
    base: str
    flags: frozenset[str]
    mtime: float

    @property
    def delivery_key(self) -> tuple[int, str]:
        # Maildir names start with the delivery time in seconds
        # ("1700000000.M1P2.host"); fall back to the mtime for odd names.
        head = self.base.split(".", 1)[0]
        return (int(head) if head.isdigit() else int(self.mtime), self.base)


def base_name(filename: str) -> str:
    """The part of a message file name that never changes."""
    return filename.split(":", 1)[0]


def parse_uidlist(text: str) -> Uidlist:
    """
    Read a ``dovecot-uidlist``.  Version 3 (Dovecot 1.0.2 and later)::

        3 V1795715069 N43 G3085f01b...
        1 :1700000000.M1P2.host,S=120,W=123:2,S
        2 W567 :1700000001.M2P2.host

    Version 1: ``1 1795715069 43`` then ``UID filename`` lines.  A bad header
    raises L{UidlistError}; a bad entry line is skipped and named in
    ``problems``.
    """
    lines = text.split("\n")
    header = lines[0].split()
    if not header or header[0] not in ("1", "2", "3"):
        raise UidlistError("dovecot-uidlist: unknown version in header")
    try:
        if header[0] == "1":
            uidvalidity, next_uid = int(header[1]), int(header[2])
        else:
            fields = {field[0]: field[1:] for field in header[1:] if field}
            uidvalidity, next_uid = int(fields["V"]), int(fields["N"])
    except (IndexError, KeyError, ValueError):
        raise UidlistError("dovecot-uidlist: header lacks a valid UIDVALIDITY or next UID") from None
    if not 1 <= uidvalidity <= _UID_MAX or not 1 <= next_uid <= _UID_MAX + 1:
        raise UidlistError("dovecot-uidlist: UIDVALIDITY or next UID out of range")

    uids: dict[str, int] = {}
    problems = []
    last_uid = 0
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        if " :" in line:
            # v3: extension fields (W<size>, G<guid>, K<keywords>...) between
            # the UID and ":filename".
            head, filename = line.split(" :", 1)
            uid_text = head.split(" ", 1)[0]
        else:
            uid_text, _, filename = line.partition(" ")
        filename = filename.strip()
        if not uid_text.isascii() or not uid_text.isdigit() or not 1 <= int(uid_text) <= _UID_MAX:
            problems.append(f"dovecot-uidlist line {number}: no valid UID; line skipped")
            continue
        uid = int(uid_text)
        base = base_name(filename)
        if not base:
            problems.append(f"dovecot-uidlist line {number}: no file name; line skipped")
        elif uid <= last_uid:
            problems.append(f"dovecot-uidlist line {number}: UID {uid} not above the previous one; line skipped")
        elif base in uids:
            problems.append(f"dovecot-uidlist line {number}: {base} listed twice; line skipped")
        else:
            uids[base] = uid
            last_uid = uid
    return Uidlist(uidvalidity, next_uid, uids, tuple(problems))


def format_uidlist(uidvalidity: int, next_uid: int, guid: str, entries: Iterable[tuple[int, str]]) -> bytes:
    """A version 3 ``dovecot-uidlist`` for ``(uid, base name)`` entries."""
    lines = [f"3 V{uidvalidity} N{next_uid} G{guid}"]
    lines.extend(f"{uid} :{base}" for uid, base in entries)
    return ("\n".join(lines) + "\n").encode("utf-8")


def parse_keywords(text: str) -> tuple[dict[str, str], list[str]]:
    """
    ``dovecot-keywords`` (``0 $Label1`` per line) -> letter -> keyword, and
    the problems found.
    """
    letters = {}
    problems = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        index, _, keyword = line.partition(" ")
        keyword = keyword.strip()
        if not index.isdigit() or int(index) >= len(KEYWORD_LETTERS) or not keyword:
            problems.append(f"dovecot-keywords line {number}: not 'N keyword'; line skipped")
            continue
        letters[KEYWORD_LETTERS[int(index)]] = keyword
    return letters, problems


def format_keywords(keywords: Iterable[str]) -> bytes:
    return "".join(f"{index} {keyword}\n" for index, keyword in enumerate(keywords)).encode("utf-8")


def flags_of(filename: str, keyword_letters: Mapping[str, str]) -> frozenset[str]:
    """IMAP flags from the ``:2,`` info of a file name."""
    _, _, info = filename.partition(":")
    if not info.startswith("2,"):
        return frozenset()
    flags = set()
    for letter in info[2:]:
        if letter in FLAG_LETTERS:
            flags.add(FLAG_LETTERS[letter])
        elif letter in keyword_letters:
            flags.add(keyword_letters[letter])
    return frozenset(flags)


def info_of(flags: Iterable[str], letter_of_keyword: Mapping[str, str]) -> str:
    """The ``:2,`` info for IMAP flags (letters in ASCII order, as Maildir asks)."""
    letters = [LETTER_OF_FLAG.get(flag) or letter_of_keyword.get(flag) for flag in flags]
    return ":2," + "".join(sorted(letter for letter in letters if letter))


def folder_name(dirname: str) -> str:
    """``.Work.2026`` -> ``Work/2026``; raises L{BadMailboxName}."""
    levels = dirname[1:].split(".")
    if any(not level for level in levels):
        raise BadMailboxName("empty hierarchy level")
    return HIERARCHY_SEPARATOR.join(decode_mailbox(level.encode("ascii")) for level in levels)


def folder_dirname(name: str) -> str:
    """``Work/2026`` -> ``.Work.2026``; raises L{BadMailboxName} for a level containing ``.``."""
    levels = name.split(HIERARCHY_SEPARATOR)
    if any("." in level for level in levels):
        raise BadMailboxName("'.' is the Maildir++ hierarchy separator")
    return "." + ".".join(encode_mailbox(level).decode("ascii") for level in levels)


def _maildir_refusal(root: Path, parts: tuple[str, ...]) -> str | None:
    """Why ``root/parts...`` is not a Maildir folder to read, or None."""
    for subdir in ("cur", "new"):
        try:
            os.close(nofollow.directory_beneath(root, (*parts, subdir)))
        except FileNotFoundError:
            return "no cur/ and new/"
        except nofollow.Refused as e:
            return f"{subdir}/ is {e}"
    return None


def list_folders(root: Path) -> tuple[list[Folder], list[str]]:
    """
    The folders of a Maildir++ root, INBOX first, and the entries skipped
    (with reasons).  A folder, or its cur/ or new/, that is a symbolic link
    is skipped, never followed.  Raises L{NotAMaildir}, also when ``root``
    itself is a link.
    """
    try:
        os.close(nofollow.open_directory(root))
    except nofollow.Refused as e:
        raise NotAMaildir(f"{root}: {e}") from None
    refusal = _maildir_refusal(root, ())
    if refusal is not None:
        raise NotAMaildir(f"{root}: not a Maildir ({refusal})")
    folders = [Folder("INBOX", root, root)]
    seen = {"INBOX"}
    problems = []
    for dirname, what in sorted(nofollow.list_beneath(root, ()), key=lambda entry: entry[0]):
        if not dirname.startswith("."):
            continue
        if isinstance(what, OSError):
            problems.append(f"{dirname}: cannot read: {what.strerror}; folder skipped")
            continue
        if stat.S_ISLNK(what.st_mode):
            problems.append(f"{dirname}: {nofollow.kind(what.st_mode)}; folder skipped")
            continue
        if not stat.S_ISDIR(what.st_mode):
            continue  # .customflags, .subscriptions and the like
        refusal = _maildir_refusal(root, (dirname,))
        if refusal is not None:
            problems.append(f"{dirname}: {refusal}; folder skipped")
            continue
        try:
            name = folder_name(dirname)
        except (BadMailboxName, UnicodeEncodeError):
            problems.append(f"{dirname}: not a valid Maildir++ folder name; folder skipped")
            continue
        if name.upper() == "INBOX":
            name = "INBOX"
        if name in seen:
            problems.append(f"{dirname}: a second folder named {name}; folder skipped")
            continue
        seen.add(name)
        folders.append(Folder(name, root / dirname, root))
    return folders, problems


def list_messages(folder: Folder, keyword_letters: Mapping[str, str]) -> tuple[list[MaildirMessage], list[str]]:
    """
    The message files of a folder (new/ and cur/; tmp/ holds unfinished
    deliveries), in delivery order, and the entries skipped (with reasons):
    only regular files are messages, and a link is never followed.
    """
    found = []
    problems = []
    for subdir in ("new", "cur"):
        for filename, what in nofollow.list_beneath(folder.root, (*folder.parts, subdir)):
            if filename.startswith("."):
                continue
            if isinstance(what, OSError):
                problems.append(f"{subdir}/{filename}: cannot read: {what.strerror}; message skipped")
                continue
            if not stat.S_ISREG(what.st_mode):
                problems.append(f"{subdir}/{filename}: {nofollow.kind(what.st_mode)}; message skipped")
                continue
            flags = flags_of(filename, keyword_letters) if subdir == "cur" else frozenset()
            found.append(MaildirMessage(folder.path / subdir / filename, base_name(filename), flags, what.st_mtime))
    found.sort(key=lambda m: m.delivery_key)
    return found, problems


def open_message(folder: Folder, message: MaildirMessage) -> BinaryIO:
    """
    The message file opened for reading, refusing (L{nofollow.Refused}) a
    link anywhere from the Maildir root down and anything not a regular
    file, whatever was swapped in since it was listed.
    """
    return nofollow.open_beneath(folder.root, (*folder.parts, message.path.parent.name, message.path.name))


def read_folder_file(folder: Folder, name: str) -> str | None:
    """
    A folder's ``dovecot-uidlist`` or ``dovecot-keywords`` as text, None when
    absent; raises L{nofollow.Refused} for a link or a special file.
    """
    try:
        with nofollow.open_beneath(folder.root, (*folder.parts, name)) as f:
            return f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return None
