"""
The ``gateway deliver`` MDA: one message from standard input into one user's
mailbox, answering with the sysexits codes an MTA understands (Postfix
``mailbox_command``, Exim ``pipe`` transport, procmail).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from gateway import oneshot
from gateway.auth import UsersFile
from gateway.config import load_for_tool
from gateway.lmtp.delivery import deliver
from gateway.store.interfaces import TemporaryFailure
from gateway.store.opening import open_store


# Messages up to this size stay in memory while spooling; bigger ones go to a
# temporary file, so memory stays flat whatever the message size.
_SPOOL_IN_MEMORY = 1024 * 1024
_CHUNK = 256 * 1024
# An mbox postmark ("From sender date") is one short line; anything longer
# than this is not one and is kept as message data.
_POSTMARK_MAX = 8192


def spool_stdin(stdin_binary):
    """
    Copy the message from ``stdin_binary`` to a rewound temporary file.

    A leading mbox postmark line (``From sender date``), which procmail-style
    and Exim ``pipe`` transports put before the message, is dropped: it is an
    envelope line, not part of the RFC 5322 message.  Line endings are left as
    they are (LF or CRLF); the store normalises them to CRLF.
    """
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)
    first = stdin_binary.readline(_POSTMARK_MAX)
    if first.startswith(b"From ") and first.endswith(b"\n"):
        first = b""
    spool.write(first)
    shutil.copyfileobj(stdin_binary, spool, _CHUNK)
    spool.seek(0)
    return spool


class _Unopened(Exception):
    """The store could not be opened (its cause says why)."""


async def _deliver(reactor, config, data_dir: Path, user: str, spool, mailbox: str):
    try:
        store = open_store(config, data_dir, reactor)
    except Exception as e:
        raise _Unopened() from e
    try:
        return await deliver(store, user, spool, mailbox)
    finally:
        # Closing waits for the writer: the message is durable before exit 0.
        await store.close()


def deliver_main(data_dir, user: str, mailbox: str, stdin_binary, stderr, config_path=None) -> int:
    """
    The ``gateway --data DIR [--config FILE] deliver USER [--mailbox BOX]`` MDA.

    Reads one message from ``stdin_binary`` and stores it for ``user``, in
    the store the config names (``config_path``, else DATA/gateway.toml
    when it exists).
    Returns a sysexits code and writes at most one line to ``stderr``:
    0 delivered, 64 bad arguments, 65 empty message, 67 not a user of the
    users file, 75 temporary failure (the MTA keeps the message and retries).
    Every unexpected error is a temporary failure too: an MDA must never make
    the MTA drop a message it could deliver later.
    """

    def fail(code: int, text: str) -> int:
        stderr.write(f"gateway deliver: {text}\n")
        stderr.flush()
        return code

    if not user or not mailbox:
        return fail(os.EX_USAGE, "usage: gateway --data DIR deliver USER [--mailbox MAILBOX]")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        # A wrong path in the MTA's config must not bounce mail as "no such
        # user": keep it queued until the path is fixed.
        return fail(os.EX_TEMPFAIL, f"data dir {data_dir} does not exist")
    try:
        known = user in UsersFile(data_dir / "users")
    except Exception as e:
        # UsersFileError names the file and line itself.
        return fail(os.EX_TEMPFAIL, f"users file: {_describe(e)}")
    if not known:
        return fail(os.EX_NOUSER, f"unknown user {user!r}")
    try:
        config = load_for_tool(data_dir, config_path)
    except Exception as e:
        # ConfigError names the file and key itself.
        return fail(os.EX_TEMPFAIL, f"config: {_describe(e)}")

    try:
        spool = spool_stdin(stdin_binary)
    except OSError as e:
        return fail(os.EX_TEMPFAIL, f"cannot read the message: {_describe(e)}")
    with spool:
        spool.seek(0, os.SEEK_END)
        if spool.tell() == 0:
            return fail(os.EX_DATAERR, "empty message on standard input")
        spool.seek(0)
        try:
            oneshot.run(_deliver, config, data_dir, user, spool, mailbox)
        except _Unopened as e:
            return fail(os.EX_TEMPFAIL, f"cannot open the store: {_describe(e.__cause__)}")
        except TemporaryFailure as e:
            return fail(os.EX_TEMPFAIL, f"temporary failure: {e}")
        except Exception as e:
            return fail(os.EX_TEMPFAIL, f"temporary failure: {_describe(e)}")
    return os.EX_OK


def _describe(error: Exception) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__
