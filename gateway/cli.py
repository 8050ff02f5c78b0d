"""
The ``gateway`` command: user administration, local delivery, UIDL and config
checks.  Every failure is one line on stderr and a non-zero exit, never a
traceback.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_NOUSER = 67
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_CANTCREAT = 73
EX_TEMPFAIL = 75


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
    from gateway.service import StartupError, prepare_data_dir

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
                raise CommandError(f"no such user {args.name!r}", 67)
            users.set_password(args.name, _read_password(stdin, confirm=True))
        elif args.action == "del":
            if args.name not in users:
                raise CommandError(f"no such user {args.name!r}", 67)
            users.remove(args.name)
            if args.purge:
                _purge_mail(args.data, args.name)
    except (UsersFileError, ValueError) as e:
        raise CommandError(str(e)) from None
    return 0


def fired(d):
    """
    The result of a Deferred that has already fired: the SQLite store
    answers synchronously, and the CLI runs without a reactor.
    """
    outcome = []
    d.addBoth(outcome.append)
    if not outcome:
        raise CommandError("store did not answer synchronously", EX_SOFTWARE)
    if hasattr(outcome[0], "raiseException"):
        outcome[0].raiseException()
    return outcome[0]


def _purge_mail(data_dir: Path, name: str) -> None:
    from gateway.store.sqlite.store import SQLiteStore

    store = SQLiteStore(data_dir / "store")
    try:
        fired(store.delete_user(name))
    finally:
        store.close()


def cmd_deliver(args, stdin, stdout) -> int:
    from gateway.ops.mda import deliver_main

    return deliver_main(args.data, args.name, args.mailbox, stdin.buffer, sys.stderr)


def cmd_uidl(args, stdin, stdout) -> int:
    from gateway.pop3.uidl import UidlFormat, UidlFormatError

    try:
        fmt = UidlFormat.parse(args.format)
    except UidlFormatError as e:
        raise CommandError(f"--format: {e}", EX_USAGE) from None
    for value, label in ((args.uidvalidity, "UIDVALIDITY"), (args.uid, "UID")):
        if not 1 <= value <= 0xFFFFFFFF:
            raise CommandError(f"{label} must be between 1 and 4294967295", EX_USAGE)
    print(fmt.format(args.uidvalidity, args.uid), file=stdout)
    return 0


def cmd_check_config(args, stdin, stdout) -> int:
    from gateway.config import ConfigError, load

    path = args.config or args.data / "gateway.toml"
    try:
        config = load(path)
    except ConfigError as e:
        raise CommandError(str(e)) from None
    _check_unix_listeners(path, config)
    print(f"{path}: ok", file=stdout)
    return 0


def _check_unix_listeners(path: Path, config) -> None:
    """What the start would find wrong with a UNIX socket, said the same way now."""
    import attrs

    from gateway.net.unix import UnixListener, UnixListenerError, is_unix

    for name, endpoints in attrs.asdict(config.listeners).items():
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
        raise CommandError(str(e), EX_UNAVAILABLE) from None
    for line in render(samples):
        print(line, file=stdout)
    return 0


def _require_user(data_dir: Path, name: str) -> None:
    if name not in _users(data_dir):
        raise CommandError(f"no such user {name!r}", EX_NOUSER)


def cmd_import(args, stdin, stdout) -> int:
    from twisted.internet.defer import Deferred

    from gateway.mail.maildir import NotAMaildir
    from gateway.mail.mbox import NotAnMbox
    from gateway.ops.migrate import ImportRecord, import_maildir, import_mbox, record_path
    from gateway.store.interfaces import InvalidMailboxName, StoreError, TemporaryFailure
    from gateway.store.names import check_name
    from gateway.store.sqlite.store import SQLiteStore

    _require_user(args.data, args.name)
    # lexists: a dangling link is refused as a link, not reported missing.
    if not os.path.lexists(args.path):
        raise CommandError(f"{args.path}: no such file or directory", EX_NOINPUT)
    if args.format == "mbox":
        try:
            check_name(args.mailbox)
        except InvalidMailboxName as e:
            raise CommandError(f"--mailbox {args.mailbox!r}: {e}", EX_USAGE) from None
    store = SQLiteStore(args.data / "store")
    record = ImportRecord(record_path(store.root))
    try:
        if args.format == "maildir":
            coroutine = import_maildir(store, record, args.name, args.path, sys.stderr)
        else:
            coroutine = import_mbox(store, record, args.name, args.path, args.mailbox, sys.stderr)
        summary = fired(Deferred.fromCoroutine(coroutine))
    except (NotAMaildir, NotAnMbox) as e:
        raise CommandError(str(e), EX_DATAERR) from None
    except TemporaryFailure as e:
        raise CommandError(f"store: {e}; run the import again to continue", EX_TEMPFAIL) from None
    except StoreError as e:
        raise CommandError(f"store: {type(e).__name__}: {e}") from None
    except OSError as e:
        raise CommandError(f"{e.filename or args.path}: {e.strerror}", EX_NOINPUT) from None
    finally:
        record.close()
        store.close()
    for line in summary.lines():
        print(line, file=stdout)
    return 1 if summary.skipped else 0


def cmd_export(args, stdin, stdout) -> int:
    from twisted.internet.defer import Deferred

    from gateway.ops.export import ExportTargetError, export_user
    from gateway.store.sqlite.store import SQLiteStore

    _require_user(args.data, args.name)
    store = SQLiteStore(args.data / "store")
    try:
        summary = fired(Deferred.fromCoroutine(export_user(store, args.name, args.path)))
    except ExportTargetError as e:
        raise CommandError(str(e), EX_CANTCREAT) from None
    except OSError as e:
        raise CommandError(f"{e.filename or args.path}: {e.strerror}", EX_CANTCREAT) from None
    finally:
        store.close()
    for line in summary.lines():
        print(line, file=stdout)
    return 1 if summary.skipped else 0


def cmd_check(args, stdin, stdout) -> int:
    from gateway.ops.check import find_problems, repair
    from gateway.store.sqlite.store import SQLiteStore

    store_root = args.data / "store"
    if not store_root.is_dir():
        raise CommandError(f"{store_root}: no store here", EX_NOINPUT)
    problems = find_problems(store_root)
    if args.repair and any(problem.repair for problem in problems):
        store = SQLiteStore(store_root)
        try:
            for line in repair(store):
                print(f"repaired: {line}", file=stdout)
        finally:
            store.close()
        problems = find_problems(store_root)
    for problem in problems:
        print(problem.text, file=stdout)
    if not problems:
        print("store is consistent", file=stdout)
    return 1 if problems else 0


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
        "check", help="check the store's index against its files (exit 1 and one line per problem)"
    )
    store_check.add_argument("--repair", action="store_true", help="do the safe repairs and say each one")
    store_check.set_defaults(run=cmd_check)

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
