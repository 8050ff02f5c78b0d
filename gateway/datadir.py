"""
The data directory: made and checked before anything else uses it.

Apart from the server so that the CLI (``gateway user add`` on every
provisioning run) starts without importing the whole server.
"""

from __future__ import annotations

import os
from pathlib import Path


class StartupError(Exception):
    """A problem that stops the server from starting; its text is one line."""


def prepare_data_dir(data_dir: Path) -> None:
    """
    Create the data dir (0700) and the users file (0600) if missing, and
    check that it is usable, with one clear line when it is not.
    """
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        users = data_dir / "users"
        if not users.exists():
            fd = os.open(users, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
    except OSError as e:
        raise StartupError(f"data dir {data_dir}: {e.strerror}") from e
    if not os.access(data_dir, os.R_OK | os.W_OK | os.X_OK):
        raise StartupError(f"data dir {data_dir}: not readable and writable by this user")
