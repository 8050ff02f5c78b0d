"""
Running as an unprivileged user after binding privileged ports as root.

``twistd --uid U --gid G gateway ...`` starts as root, builds the service
(binding 110/143/993/995, creating the data dir, the users file, the store,
the generated certificate and the ports file, all owned by root) and only
then switches to U:G.  From then on the server must still write its store
and read its users file, so before the switch the files the server owns are
handed to U:G: ``hand_over_data_dir``, called at the end of
``makeService``.  Nothing else is touched: files in the data dir that the
server did not create keep their owner, symbolic links are never followed,
and a data dir that belongs to a third user is refused with one line rather
than taken over (a wrong ``--data`` must not give someone's files to the
mail server).

Pure: no Twisted import.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from pathlib import Path

# What the server creates under the data dir; trees are handed over whole.
OWNED_FILES = ("users", "gateway.toml")
OWNED_TREES = ("store", "run", "tls")


class PrivilegeError(Exception):
    """The data dir cannot be handed to the user the server runs as; one line."""


def target_ids(uid: int | None, gid: int | None) -> tuple[int, int] | None:
    """
    The (uid, gid) twistd switches to, as twistd decides it: ``--gid``
    defaults to the primary group of ``--uid``.  None when it switches to
    nobody else.
    """
    if uid is None:
        return None
    if gid is None:
        gid = pwd.getpwuid(uid).pw_gid
    return uid, gid


def _owned_paths(data_dir: Path) -> Iterator[Path]:
    yield data_dir
    for name in OWNED_FILES:
        path = data_dir / name
        if path.is_file() and not path.is_symlink():
            yield path
    for name in OWNED_TREES:
        top = data_dir / name
        if not top.is_dir() or top.is_symlink():
            continue
        yield top
        for directory, subdirectories, files in os.walk(top):
            for entry in subdirectories + files:
                yield Path(directory) / entry


def hand_over_data_dir(data_dir: Path, uid: int | None, gid: int | None, euid: int | None = None) -> list[Path]:
    """
    Give the server's files under ``data_dir`` to the user twistd is about to
    switch to (``--uid``/``--gid``), when running as root.  Returns the paths
    whose owner changed; raises L{PrivilegeError} when the data dir belongs
    to someone other than root or that user.
    """
    euid = os.geteuid() if euid is None else euid
    target = target_ids(uid, gid)
    if euid != 0 or target is None or target[0] == 0:
        return []
    uid, gid = target
    data_dir = Path(data_dir)
    owner = data_dir.lstat().st_uid
    if owner not in (0, uid):
        raise PrivilegeError(
            f"data dir {data_dir} belongs to uid {owner}, not to root or uid {uid} the server runs as;"
            f" chown it to uid {uid} or pick another --data"
        )
    changed = []
    for path in _owned_paths(data_dir):
        status = path.lstat()
        if path.is_symlink() or (status.st_uid, status.st_gid) == (uid, gid):
            continue
        if status.st_uid not in (0, uid):
            continue  # someone else's file: not ours to give away
        os.chown(path, uid, gid, follow_symlinks=False)
        changed.append(path)
    return changed
