"""
Login: the users file, password hashes, and the twisted.cred pieces.

The users file is readable as a Dovecot passwd-file: one
``name:{SCHEME}hash[:extra fields]`` line per user, ``#`` comments and blank
lines allowed.  Extra fields are kept when the file is rewritten, so a file
migrated from Dovecot keeps working in both directions; of them, only the
quota rules (``userdb_quota_rule=*:storage=1G``) are read.

Hash verification (argon2 costs tens of milliseconds) runs in the reactor's
thread pool; everything touching the users table runs in the reactor thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import hmac
import os
import re
import secrets
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import argon2
import attrs
import bcrypt
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer
from zope.interface.interface import InterfaceClass

from gateway.policy.quota import QuotaRuleError, extra_field_limits

try:
    import crypt_r as _crypt  # Python 3.13+, where the stdlib crypt is gone
except ImportError:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt as _crypt

log = Logger()

_hasher = argon2.PasswordHasher()

_NAME = re.compile(r"[A-Za-z0-9_@+-][A-Za-z0-9._@+-]{0,63}", re.ASCII)
_STORED = re.compile(r"\{(?P<scheme>[A-Za-z0-9.-]+)\}(?P<hash>.*)", re.ASCII | re.DOTALL)
_BCRYPT = re.compile(r"\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}", re.ASCII)
_SHA_CRYPT = {
    "5": re.compile(r"\$5\$(rounds=[0-9]+\$)?[^$:\s]{0,16}\$[./A-Za-z0-9]{43}", re.ASCII),
    "6": re.compile(r"\$6\$(rounds=[0-9]+\$)?[^$:\s]{0,16}\$[./A-Za-z0-9]{86}", re.ASCII),
}

# bcrypt reads at most 72 bytes (Dovecot's crypt_blowfish ignores the rest;
# the bcrypt package refuses longer input instead).
_BCRYPT_MAX_PASSWORD = 72

# A verified login is remembered CACHE_TTL seconds after its last use, so a
# client polling every minute or two keeps hitting the cache, but never more
# than CACHE_MAX_AGE after the password was last checked in full.
CACHE_TTL = 150.0
CACHE_MAX_AGE = 900.0
CACHE_SIZE = 1024


class UsersFileError(Exception):
    """The users file cannot be read or written; str() names file and line."""


class UserError(ValueError):
    """A user administration request was refused (bad name, exists...)."""


# -- password hashes ----------------------------------------------------------


def _argon2_scheme(prefix: str) -> tuple[Callable[[str], bool], Callable[[str, bytes], bool]]:
    def well_formed(hashed: str) -> bool:
        if not hashed.startswith(prefix):
            return False
        try:
            argon2.extract_parameters(hashed)
        except argon2.exceptions.InvalidHashError:
            return False
        return True

    def verify(hashed: str, password: bytes) -> bool:
        try:
            return _hasher.verify(hashed, password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False

    return well_formed, verify


def _verify_bcrypt(hashed: str, password: bytes) -> bool:
    try:
        return bcrypt.checkpw(password[:_BCRYPT_MAX_PASSWORD], hashed.encode("ascii"))
    except ValueError:
        return False


def _sha_crypt_scheme(variant: str) -> tuple[Callable[[str], bool], Callable[[str, bytes], bool]]:
    def well_formed(hashed: str) -> bool:
        return _SHA_CRYPT[variant].fullmatch(hashed) is not None

    def verify(hashed: str, password: bytes) -> bool:
        try:
            computed = _crypt.crypt(password.decode("utf-8"), hashed)
        except (UnicodeDecodeError, ValueError, OSError):
            return False
        return computed is not None and hmac.compare_digest(computed, hashed)

    return well_formed, verify


# Scheme name (upper case; Dovecot matches them case-insensitively) ->
# (is the stored hash well formed, does the password match).
_SCHEMES: dict[str, tuple[Callable[[str], bool], Callable[[str, bytes], bool]]] = {
    "ARGON2ID": _argon2_scheme("$argon2id$"),
    "ARGON2I": _argon2_scheme("$argon2i$"),
    "BLF-CRYPT": (lambda hashed: _BCRYPT.fullmatch(hashed) is not None, _verify_bcrypt),
    "SHA512-CRYPT": _sha_crypt_scheme("6"),
    "SHA256-CRYPT": _sha_crypt_scheme("5"),
}


def _check_stored(stored: str) -> str | None:
    """Why ``stored`` is not a usable ``{SCHEME}hash``, or None if it is."""
    match = _STORED.fullmatch(stored)
    if match is None:
        return "password field must be {SCHEME}hash"
    scheme = match.group("scheme").upper()
    if scheme not in _SCHEMES:
        known = ", ".join("{%s}" % name for name in _SCHEMES)
        return f"unknown password scheme {{{match.group('scheme')}}} (known: {known})"
    if not _SCHEMES[scheme][0](match.group("hash")):
        return f"malformed {{{scheme}}} hash"
    return None


def hash_password(password: str) -> str:
    """A new ``{ARGON2ID}$argon2id$...`` hash (argon2-cffi default cost)."""
    return "{ARGON2ID}" + _hasher.hash(password)


def verify_hash(stored: str, password: str | bytes) -> bool:
    """Whether ``password`` matches ``stored`` (``{SCHEME}hash``).

    Raises ValueError when ``stored`` itself is not a usable hash.
    """
    problem = _check_stored(stored)
    if problem is not None:
        raise ValueError(problem)
    match = _STORED.fullmatch(stored)
    if isinstance(password, str):
        password = password.encode("utf-8")
    return _SCHEMES[match.group("scheme").upper()][1](match.group("hash"), password)


@functools.cache
def _dummy_hash() -> str:
    """A hash nobody knows the password of, verified for unknown users."""
    return hash_password(secrets.token_urlsafe(24))


def _verify_or_dummy(stored: str | None, password: str | bytes) -> bool:
    """verify_hash, spending the same work when the user does not exist."""
    if stored is None:
        verify_hash(_dummy_hash(), password)
        return False
    return verify_hash(stored, password)


def check_user_name(name: str) -> None:
    """Raise UserError unless ``name`` is 1-64 of [A-Za-z0-9._@+-], no leading dot."""
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise UserError(
            f"invalid user name {name!r}: use 1 to 64 characters of A-Z a-z 0-9 . _ @ + -, "
            "not starting with '.'"
        )


# -- the users file -----------------------------------------------------------


@attrs.frozen
class _Entry:
    name: str
    password: str  # "{SCHEME}hash" exactly as written
    rest: str  # ":uid:gid:..." after the password field, "" if none
    # What the quota rules among the extra fields set (gateway.policy.quota).
    quota: dict | None = attrs.field(default=None, eq=False)

    def line(self) -> str:
        return f"{self.name}:{self.password}{self.rest}"


def _parse(path: Path, text: str) -> list[str | _Entry]:
    lines: list[str | _Entry] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            lines.append(line)
            continue
        name, colon, remainder = line.partition(":")
        if not colon:
            raise UsersFileError(f"{path}:{number}: expected name:{{SCHEME}}hash")
        if _NAME.fullmatch(name) is None:
            raise UsersFileError(f"{path}:{number}: invalid user name {name!r}")
        if name in seen:
            raise UsersFileError(f"{path}:{number}: user {name!r} appears twice")
        password, _, _ = remainder.partition(":")
        problem = _check_stored(password)
        if problem is not None:
            raise UsersFileError(f"{path}:{number}: {problem}")
        seen.add(name)
        rest = remainder[len(password) :]
        # Dovecot's passwd-file: :uid:gid:gecos:home:shell:extra fields.
        fields = rest[1:].split(":", 5)
        try:
            quota = extra_field_limits(fields[5]) if len(fields) == 6 else None
        except QuotaRuleError as error:
            raise UsersFileError(f"{path}:{number}: {error}") from None
        lines.append(_Entry(name, password, rest, quota))
    return lines


class UsersFile:
    """The users file at ``path``, re-read whenever it changes on disk.

    A missing file means no users; ``add`` creates it (mode 0600).  Changes
    are written atomically under an exclusive lock on ``path.lock``, so two
    ``gateway user`` commands cannot lose each other's edits and a running
    server sees either the old or the new file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lines: list[str | _Entry] = []
        self._users: dict[str, _Entry] = {}
        self._stamp: tuple[int, int, int] | None = None
        self.load()

    def load(self) -> None:
        """Read the file now; UsersFileError if it is unreadable or malformed."""
        try:
            with open(self.path, "rb") as users_file:
                status = os.fstat(users_file.fileno())
                data = users_file.read()
        except FileNotFoundError:
            stamp, lines = None, []
        except OSError as error:
            raise UsersFileError(f"{self.path}: cannot read: {error.strerror or error}") from None
        else:
            stamp = (status.st_ino, status.st_mtime_ns, status.st_size)
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as error:
                number = data.count(b"\n", 0, error.start) + 1
                raise UsersFileError(f"{self.path}:{number}: not UTF-8") from None
            lines = _parse(self.path, text)
        self._lines = lines
        self._users = {line.name: line for line in lines if isinstance(line, _Entry)}
        self._stamp = stamp

    def reload(self) -> None:
        """Read the file again if it changed on disk (a cheap stat otherwise)."""
        if self._current_stamp() != self._stamp:
            self.load()

    def _current_stamp(self) -> tuple[int, int, int] | None:
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise UsersFileError(f"{self.path}: cannot stat: {error.strerror or error}") from None
        return (status.st_ino, status.st_mtime_ns, status.st_size)

    def _fresh(self) -> dict[str, _Entry]:
        """The users table, reloaded if the file changed.

        A running server must not lose every login to a typo an admin is
        about to fix, so a bad file is logged and the last good table kept.
        """
        try:
            stamp = self._current_stamp()
            if stamp != self._stamp:
                # Remember the bad version too, to log it once, not per login.
                self._stamp = stamp
                self.load()
        except UsersFileError as error:
            log.error("Keeping the previous users: {error}", error=str(error))
        return self._users

    def __contains__(self, name: object) -> bool:
        return name in self._fresh()

    def names(self) -> list[str]:
        return sorted(self._fresh())

    def stored_hash(self, name: str) -> str | None:
        """The ``{SCHEME}hash`` of ``name``, None for an unknown user."""
        entry = self._fresh().get(name)
        return None if entry is None else entry.password

    def quota_limits(self, name: str) -> dict | None:
        """What ``name``'s quota rules in the extra fields set, None where there are none."""
        entry = self._fresh().get(name)
        return None if entry is None else entry.quota

    def verify(self, name: str, password: str | bytes) -> bool:
        """Whether ``password`` is ``name``'s; unknown users cost the same work."""
        return _verify_or_dummy(self.stored_hash(name), password)

    def add(self, name: str, password: str) -> None:
        check_user_name(name)
        stored = hash_password(_checked_password(password))
        with self._editing() as lines:
            if name in self._users:
                raise UserError(f"user {name!r} exists already")
            lines.append(_Entry(name, stored, ""))

    def set_password(self, name: str, password: str) -> None:
        stored = hash_password(_checked_password(password))
        with self._editing() as lines:
            index = lines.index(self._entry(name))
            lines[index] = attrs.evolve(lines[index], password=stored)

    def remove(self, name: str) -> None:
        with self._editing() as lines:
            lines.remove(self._entry(name))

    def _entry(self, name: str) -> _Entry:
        try:
            return self._users[name]
        except KeyError:
            raise UserError(f"no such user {name!r}") from None

    @contextlib.contextmanager
    def _editing(self) -> Iterator[list[str | _Entry]]:
        """Lock, re-read, let the caller edit the lines, write them back."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            lock = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as error:
            raise UsersFileError(f"{lock_path}: cannot open: {error.strerror or error}") from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.load()
            lines = list(self._lines)
            yield lines
            self._write(lines)
            self.load()
        finally:
            os.close(lock)

    def _write(self, lines: list[str | _Entry]) -> None:
        text = "".join((line.line() if isinstance(line, _Entry) else line) + "\n" for line in lines)
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        try:
            # Only a crashed writer leaves this behind; we hold the lock.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            descriptor = os.open(
                temporary,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
            )
            try:
                os.fchmod(descriptor, 0o600)  # whatever the umask
                with open(descriptor, "wb", closefd=False) as users_file:
                    users_file.write(text.encode("utf-8"))
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            os.replace(temporary, self.path)
            directory = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as error:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise UsersFileError(f"{self.path}: cannot write: {error.strerror or error}") from None


def _checked_password(password: str) -> str:
    if not isinstance(password, str) or not password:
        raise UserError("empty password refused")
    return password


# -- twisted.cred ---------------------------------------------------------------


@implementer(ICredentialsChecker)
class PasswordChecker:
    """Checks IUsernamePassword against a UsersFile; the avatar id is the name.

    Successful verifications are remembered so that a client polling every
    minute does not pay argon2 each time: each hit keeps the entry CACHE_TTL
    seconds longer, up to CACHE_MAX_AGE after the full verification.  The
    cache key is a keyed hash of (name, password, stored hash): the password
    is never kept, and a password change misses the cache.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, users: UsersFile, reactor: Any) -> None:
        self._users = users
        self._reactor = reactor
        self._cache_key = secrets.token_bytes(32)
        # key -> (expires, verified): when the entry lapses unless used
        # again, and when the password was last verified in full.
        self._verified: OrderedDict[bytes, tuple[float, float]] = OrderedDict()

    def requestAvatarId(self, credentials: IUsernamePassword) -> Deferred[str]:
        return Deferred.fromCoroutine(self._check(credentials))

    async def _check(self, credentials: IUsernamePassword) -> str:
        username, password = credentials.username, credentials.password
        try:
            name = username.decode("utf-8") if isinstance(username, bytes) else username
        except UnicodeDecodeError:
            raise UnauthorizedLogin() from None
        stored = self._users.stored_hash(name)
        key = self._key(name, password, stored)
        if stored is not None and self._remembered(key):
            return name
        matched = await deferToThreadPool(
            self._reactor, self._reactor.getThreadPool(), _verify_or_dummy, stored, password
        )
        if not matched:
            raise UnauthorizedLogin()
        self._remember(key)
        return name

    def _key(self, name: str, password: str | bytes, stored: str | None) -> bytes:
        digest = hashlib.blake2b(key=self._cache_key, digest_size=32)
        if isinstance(password, str):
            password = password.encode("utf-8")
        # Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        for part in (name.encode("utf-8"), password, (stored or "").encode("utf-8")):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
        return digest.digest()

    def _remembered(self, key: bytes) -> bool:
        entry = self._verified.get(key)
        if entry is None:
            return False
        expires, verified = entry
        now = self._reactor.seconds()
        if expires <= now:
            del self._verified[key]
            return False
        # Sliding: a hit keeps the entry, within the absolute bound.
        self._verified[key] = (min(now + CACHE_TTL, verified + CACHE_MAX_AGE), verified)
        self._verified.move_to_end(key)
        return True

    def _remember(self, key: bytes) -> None:
        now = self._reactor.seconds()
        self._verified.pop(key, None)
        self._verified[key] = (now + min(CACHE_TTL, CACHE_MAX_AGE), now)
        while len(self._verified) > CACHE_SIZE:
            self._verified.popitem(last=False)


# (avatar id, the protocol's mind) -> (avatar, logout).
AvatarFactory = Callable[[str, object], "Deferred[tuple[Any, Callable[[], None]]]"]


@implementer(IRealm)
class MailRealm:
    """Hands out avatars made by one factory per protocol interface.

    The protocol modules register their factories (in service.py), so this
    module knows nothing of POP3 or IMAP.
    """

    def __init__(self, avatar_factories: Mapping[InterfaceClass, AvatarFactory]) -> None:
        self._factories = dict(avatar_factories)

    def requestAvatar(
        self, avatarId: str, mind: object, *interfaces: InterfaceClass
    ) -> Deferred[tuple[InterfaceClass, Any, Callable[[], None]]]:
        for interface in interfaces:
            factory = self._factories.get(interface)
            if factory is not None:
                return Deferred.fromCoroutine(self._avatar(interface, factory, avatarId, mind))
        raise NotImplementedError(f"no avatar for any of {interfaces!r}")

    async def _avatar(
        self, interface: InterfaceClass, factory: AvatarFactory, avatar_id: str, mind: object
    ) -> tuple[InterfaceClass, Any, Callable[[], None]]:
        avatar, logout = await maybeDeferred(factory, avatar_id, mind)
        return interface, avatar, logout


def make_portal(users: UsersFile, realm: IRealm, reactor: Any) -> Portal:
    return Portal(realm, [PasswordChecker(users, reactor)])
