"""
The ``gateway`` command: user administration, local delivery, UIDL and config
checks.  Every failure is one line on stderr and a non-zero exit, never a
traceback.  Tools that use the store run on a reactor of their own
(``gateway.oneshot``) and open the store the config names.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path



class CommandError(Exception):
    """A failure to report as one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def _read_password(stdin, confirm: bool) -> str:
    if stdin.isatty():
        password = getpass.getpass("Password: ")
        if confirm and getpass.getpass("Again: ") != password:
            raise CommandError("passwords do not match")
    else:
        password = stdin.readline().rstrip("\r\n")
    if not password:
        raise CommandError("empty password refused")
    return password


def _users(data_dir: Path):
    from gateway.auth import UsersFile, UsersFileError
    from gateway.datadir import StartupError, prepare_data_dir

    try:
        prepare_data_dir(data_dir)
        return UsersFile(data_dir / "users")
    except StartupError as e:
        raise CommandError(str(e)) from None
    except UsersFileError as e:
        raise CommandError(str(e)) from None


def cmd_user(args, stdin, stdout) -> int:
    from gateway.auth import UsersFileError

    users = _users(args.data)
    try:
        if args.action == "list":
            for name in users.names():
                print(name, file=stdout)
        elif args.action == "add":
            if args.name in users:
                raise CommandError(f"user {args.name!r} exists already")
            users.add(args.name, _read_password(stdin, confirm=True))
        elif args.action == "passwd":
            if args.name not in users:
                raise CommandError(f"no such user {args.name!r}", os.EX_NOUSER)
            users.set_password(args.name, _read_password(stdin, confirm=True))
        elif args.action == "del":
            if args.name not in users:
                raise CommandError(f"no such user {args.name!r}", os.EX_NOUSER)
            users.remove(args.name)
            if args.purge:
                _purge_mail(args, args.name)
    except (UsersFileError, ValueError) as e:
        raise CommandError(str(e)) from None
    return 0


def _config(args):
    """The config the store tools run with (``--config``, else DATA/gateway.toml, else defaults)."""
    from gateway.config import ConfigError, load_for_tool

    try:
        return load_for_tool(args.data, args.config_file)
    except ConfigError as e:
        raise CommandError(str(e)) from None


def with_store(args, job):
    """
    ``await job(store)`` over the store the config names, on a reactor of
    its own; the store is closed (every write durable) before this returns.
    """
    from gateway import oneshot
    from gateway.store.opening import open_store

    config = _config(args)

    async def run(reactor):
        store = open_store(config, args.data, reactor)
        try:
            return await job(store)
        finally:
            await store.close()

    return oneshot.run(run)


def _purge_mail(args, name: str) -> None:
    async def purge(store):
        await store.delete_user(name)

    with_store(args, purge)


def cmd_deliver(args, stdin, stdout) -> int:
    from gateway.ops.mda import deliver_main

    return deliver_main(args.data, args.name, args.mailbox, stdin.buffer, sys.stderr, args.config_file)


def cmd_uidl(args, stdin, stdout) -> int:
    from gateway.pop3.uidl import UidlFormat, UidlFormatError

    try:
        fmt = UidlFormat.parse(args.format)
    except UidlFormatError as e:
        raise CommandError(f"--format: {e}", os.EX_USAGE) from None
    for value, label in ((args.uidvalidity, "UIDVALIDITY"), (args.uid, "UID")):
        if not 1 <= value <= 0xFFFFFFFF:
            raise CommandError(f"{label} must be between 1 and 4294967295", os.EX_USAGE)
    print(fmt.format(args.uidvalidity, args.uid), file=stdout)
    return 0


def cmd_check_config(args, stdin, stdout) -> int:
    from gateway.config import ConfigError, load

    path = args.config or args.config_file or args.data / "gateway.toml"
    try:
        config = load(path)
    except ConfigError as e:
        raise CommandError(str(e)) from None
    _check_unix_listeners(path, config)
    _check_certificates(path, config, args.data)
    print(f"{path}: ok", file=stdout)
    return 0


def _check_certificates(path: Path, config, data_dir: Path) -> None:
    """What the start would find wrong with the [tls] pairs, said the same way now, writing none."""
    from gateway.service import StartupError, check_certificates

    try:
        check_certificates(data_dir, config)
    except StartupError as e:
        raise CommandError(f"{path}: {e}") from None


def _check_unix_listeners(path: Path, config) -> None:
    """What the start would find wrong with a UNIX socket, said the same way now."""
    from gateway.net.unix import UnixListener, UnixListenerError, is_unix

    for name, endpoints in config.listeners.endpoint_lists():
        for endpoint in endpoints:
            if is_unix(endpoint):
                try:
                    UnixListener.parse(endpoint).check()
                except UnixListenerError as e:
                    raise CommandError(f"{path}: listeners.{name}: {endpoint!r}: {e}") from None


def cmd_status(args, stdin, stdout) -> int:
    from gateway.ops.status import StatusError, metrics_address, render, scrape

    try:
        samples = scrape(metrics_address(args.data))
    except StatusError as e:
        raise CommandError(str(e), os.EX_UNAVAILABLE) from None
    for line in render(samples):
        print(line, file=stdout)
    return 0


def _require_user(data_dir: Path, name: str) -> None:
    if name not in _users(data_dir):
        raise CommandError(f"no such user {name!r}", os.EX_NOUSER)


def cmd_import(args, stdin, stdout) -> int:
    from gateway.mail.maildir import NotAMaildir
    from gateway.mail.mbox import NotAnMbox
    from gateway.ops.migrate import ImportRecord, import_maildir, import_mbox, record_path
    from gateway.store.interfaces import InvalidMailboxName, StoreError, TemporaryFailure
    from gateway.store.names import check_name

    _require_user(args.data, args.name)
    # lexists: a dangling link is refused as a link, not reported missing.
    if not os.path.lexists(args.path):
        raise CommandError(f"{args.path}: no such file or directory", os.EX_NOINPUT)
    if args.format == "mbox":
        try:
            check_name(args.mailbox)
        except InvalidMailboxName as e:
            raise CommandError(f"--mailbox {args.mailbox!r}: {e}", os.EX_USAGE) from None

    async def run(store):
        # What was imported is remembered beside the store, whatever its backend.
        (args.data / "store").mkdir(mode=0o700, parents=True, exist_ok=True)
        record = ImportRecord(record_path(args.data / "store"))
        try:
            if args.format == "maildir":
                return await import_maildir(store, record, args.name, args.path, sys.stderr)
            return await import_mbox(store, record, args.name, args.path, args.mailbox, sys.stderr)
        finally:
            record.close()

    try:
        summary = with_store(args, run)
    except (NotAMaildir, NotAnMbox) as e:
        raise CommandError(str(e), os.EX_DATAERR) from None
    except TemporaryFailure as e:
        raise CommandError(f"store: {e}; run the import again to continue", os.EX_TEMPFAIL) from None
    except StoreError as e:
        raise CommandError(f"store: {type(e).__name__}: {e}") from None
    except OSError as e:
        raise CommandError(f"{e.filename or args.path}: {e.strerror}", os.EX_NOINPUT) from None
    for line in summary.lines():
        print(line, file=stdout)
    return 1 if summary.skipped else 0


def cmd_export(args, stdin, stdout) -> int:
    from gateway.ops.export import ExportTargetError, export_user

    _require_user(args.data, args.name)
    try:
        summary = with_store(args, lambda store: export_user(store, args.name, args.path))
    except ExportTargetError as e:
        raise CommandError(str(e), os.EX_CANTCREAT) from None
    except OSError as e:
        raise CommandError(f"{e.filename or args.path}: {e.strerror}", os.EX_CANTCREAT) from None
    for line in summary.lines():
        print(line, file=stdout)
    return 1 if summary.skipped else 0


def cmd_check(args, stdin, stdout) -> int:
    from gateway import oneshot
    from gateway.ops.check import check
    from gateway.store.interfaces import NoStore, StoreError, TemporaryFailure
    from gateway.store.opening import open_maintenance

    config = _config(args)

    async def run(reactor):
        return await check(open_maintenance(config, args.data, reactor), args.repair, stdout)

    try:
        return oneshot.run(run)
    except NoStore as e:
        raise CommandError(str(e), os.EX_NOINPUT) from None
    except TemporaryFailure as e:
        raise CommandError(f"store: {e}", os.EX_TEMPFAIL) from None
    except StoreError as e:
        raise CommandError(f"store: {e}") from None


def cmd_migrate(args, stdin, stdout) -> int:
    from gateway import oneshot
    from gateway.ops.storecopy import PARALLEL, copy_store
    from gateway.store.interfaces import NoStore, StoreError, TemporaryFailure
    from gateway.store.opening import open_copy_source, open_copy_target, parse_blobs

    try:
        parse_blobs(args.blobs)
    except ValueError as e:
        raise CommandError(str(e), os.EX_USAGE) from None

    async def run(reactor):
        source = open_copy_source(args.data, reactor)
        try:
            target = open_copy_target(args.to, args.blobs, reactor, PARALLEL + 1)
            try:
                return await copy_store(source, target, sys.stderr)
            finally:
                await target.close()
        finally:
            await source.close()

    try:
        summary = oneshot.run(run)
    except NoStore as e:
        raise CommandError(str(e), os.EX_NOINPUT) from None
    except ValueError as e:
        raise CommandError(str(e), os.EX_USAGE) from None
    except TemporaryFailure as e:
        raise CommandError(f"store: {e}; run the migration again to continue", os.EX_TEMPFAIL) from None
    except StoreError as e:
        raise CommandError(f"store: {e}") from None
    for line in summary.lines():
        print(line, file=stdout)
    return 1 if summary.conflicts else 0


def _uint32(text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a number: {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="POP3 and IMAP over one mail store.")
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("GATEWAY_DATA", "data")),
        help="data directory (default: $GATEWAY_DATA or ./data)",
    )
    parser.add_argument(
        "--config",
        dest="config_file",
        type=Path,
        default=None,
        help="config file the store tools read (default: DATA/gateway.toml when it exists)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    user = commands.add_parser("user", help="manage users (password read from stdin)")
    actions = user.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("add", "add a user"), ("passwd", "change a password"), ("del", "remove a user")):
        sub = actions.add_parser(action, help=text)
        sub.add_argument("name")
        if action == "del":
            sub.add_argument("--purge", action="store_true", help="also delete the user's mail")
    actions.add_parser("list", help="list users")
    user.set_defaults(run=cmd_user)

    deliver = commands.add_parser("deliver", help="deliver one message from stdin (MDA; sysexits codes)")
    deliver.add_argument("name")
    deliver.add_argument("--mailbox", default="INBOX")
    deliver.set_defaults(run=cmd_deliver)

    uidl = commands.add_parser("uidl", help="print the POP3 UIDL of a message")
    uidl.add_argument("--format", default="%08Xu%08Xv", help="Dovecot pop3_uidl_format notation")
    uidl.add_argument("uidvalidity", type=_uint32)
    uidl.add_argument("uid", type=_uint32)
    uidl.set_defaults(run=cmd_uidl)

    imports = commands.add_parser(
        "import",
        help="import a user's mail (exit 1 when messages or folders were skipped, links and special files among"
        " them; running it again adds nothing)",
    )
    formats = imports.add_subparsers(dest="format", required=True, metavar="FORMAT")
    from_maildir = formats.add_parser("maildir", help="a Maildir++ tree; Dovecot's UIDs are kept")
    from_maildir.add_argument("name")
    from_maildir.add_argument("path", type=Path, help="the Maildir root (cur/ new/ tmp/ and .Folder/)")
    from_mbox = formats.add_parser("mbox", help="one mbox file into one mailbox")
    from_mbox.add_argument("name")
    from_mbox.add_argument("path", type=Path, metavar="file")
    from_mbox.add_argument("--mailbox", default="INBOX")
    imports.set_defaults(run=cmd_import)

    export = commands.add_parser(
        "export", help="write a user's mail as a Maildir++ tree with dovecot-uidlist (same UIDs for Dovecot)"
    )
    export.add_argument("name")
    export.add_argument("path", type=Path, help="a new or empty directory")
    export.set_defaults(run=cmd_export)

    store_check = commands.add_parser(
        "check", help="check the store's index against its bodies and counters (exit 1 and one line per problem)"
    )
    store_check.add_argument("--repair", action="store_true", help="do the safe repairs and say each one")
    store_check.set_defaults(run=cmd_check)

    migrate = commands.add_parser(
        "migrate",
        help="copy this data dir's SQLite store into a PostgreSQL store, keeping every UIDVALIDITY, UID, modseq,"
        " flag, subscription and POP3 device view (running it again brings the copy up to date; exit 1 when"
        " mailboxes were not copied)",
    )
    migrate.add_argument("--to", required=True, metavar="URL", help="postgresql://... (or a libpq connection string)")
    migrate.add_argument(
        "--blobs", default=None, metavar="URL",
        help="where bodies go: s3://BUCKET[/PREFIX][?endpoint=URL&region=NAME] (credentials from"
        " AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), or postgresql (the default)",
    )
    migrate.set_defaults(run=cmd_migrate)

    status = commands.add_parser(
        "status", help="live sessions per protocol, logins and deliveries, from the running server's metrics"
    )
    status.set_defaults(run=cmd_status)

    check = commands.add_parser("check-config", help="load and validate a config file")
    check.add_argument("--config", type=Path, default=None)
    check.set_defaults(run=cmd_check_config)
    return parser


def main(argv=None, stdin=None, stdout=None) -> int:
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    args = build_parser().parse_args(argv)
    try:
        return args.run(args, stdin, stdout)
    except CommandError as e:
        print(f"gateway: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
