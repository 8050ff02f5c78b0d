import os
import stat
import warnings

import argon2
import bcrypt
import pytest
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import (
    IUsernameHashedPassword,
    IUsernamePassword,
    UsernamePassword,
)
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import Interface
from zope.interface.verify import verifyObject

from gateway import auth
from gateway.auth import (
    MailRealm,
    PasswordChecker,
    UserError,
    UsersFile,
    UsersFileError,
    hash_password,
    make_portal,
    verify_hash,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

# Test vectors from Ulrich Drepper's "Unix crypt using SHA-256 and SHA-512"
# specification, the algorithm behind Dovecot's SHA*-CRYPT schemes
# (`doveadm pw -s SHA512-CRYPT` prints {SHA512-CRYPT}$6$salt$hash).
SHA512_VECTOR = (
    "{SHA512-CRYPT}$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJ"
    "uesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
)
SHA256_VECTOR = "{SHA256-CRYPT}$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"
VECTOR_PASSWORD = "Hello world!"


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch):
    """Cheap argon2 parameters so the suite stays fast; yields the real hasher."""
    original = auth._hasher
    monkeypatch.setattr(
        auth, "_hasher", argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )
    auth._dummy_hash.cache_clear()
    yield original
    auth._dummy_hash.cache_clear()


def bcrypt_hash(password: bytes, prefix: bytes) -> str:
    hashed = bcrypt.hashpw(password, bcrypt.gensalt(4, prefix=b"2b" if prefix == b"2y" else prefix))
    # bcrypt cannot make $2y$ (PHP's, what Dovecot writes); it is the same algorithm.
    return "{BLF-CRYPT}$" + prefix.decode() + hashed.decode()[3:]


# -- hashes -------------------------------------------------------------------


def test_hash_password_is_argon2id_with_default_cost(cheap_argon2, monkeypatch):
    monkeypatch.setattr(auth, "_hasher", cheap_argon2)
    stored = hash_password("s3cret")
    assert stored.startswith("{ARGON2ID}$argon2id$v=19$")
    parameters = argon2.extract_parameters(stored[len("{ARGON2ID}") :])
    default = argon2.PasswordHasher()
    assert (parameters.time_cost, parameters.memory_cost, parameters.parallelism) == (
        default.time_cost,
        default.memory_cost,
        default.parallelism,
    )
    assert verify_hash(stored, "s3cret")
    assert not verify_hash(stored, "s3cret ")


def test_hashes_are_salted():
    assert hash_password("same") != hash_password("same")


def test_argon2i():
    hashed = argon2.PasswordHasher(type=argon2.Type.I, time_cost=1, memory_cost=8, parallelism=1)
    stored = "{ARGON2I}" + hashed.hash("pw")
    assert stored.startswith("{ARGON2I}$argon2i$")
    assert verify_hash(stored, "pw")
    assert verify_hash(stored, b"pw")
    assert not verify_hash(stored, "pW")


@pytest.mark.parametrize("prefix", [b"2y", b"2b", b"2a"])
def test_blf_crypt(prefix):
    stored = bcrypt_hash(b"pw", prefix)
    assert stored.startswith("{BLF-CRYPT}$" + prefix.decode() + "$04$")
    assert verify_hash(stored, "pw")
    assert not verify_hash(stored, "px")


def test_blf_crypt_reads_72_bytes_like_dovecot():
    stored = bcrypt_hash(b"a" * 72, b"2y")
    assert verify_hash(stored, "a" * 80)
    assert not verify_hash(stored, "a" * 71)


@pytest.mark.parametrize(("scheme", "salt"), [("SHA512-CRYPT", "$6$"), ("SHA256-CRYPT", "$5$")])
def test_sha_crypt_generated(scheme, salt):
    stored = "{" + scheme + "}" + crypt.crypt("pässword", crypt.mksalt(getattr(crypt, "METHOD_" + scheme[:6])))
    assert stored.startswith("{" + scheme + "}" + salt)
    assert verify_hash(stored, "pässword")
    assert verify_hash(stored, "pässword".encode())
    assert not verify_hash(stored, "password")


@pytest.mark.parametrize("stored", [SHA512_VECTOR, SHA256_VECTOR])
def test_sha_crypt_known_vectors(stored):
    assert verify_hash(stored, VECTOR_PASSWORD)
    assert not verify_hash(stored, "Hello world")


def test_sha_crypt_with_rounds():
    stored = "{SHA512-CRYPT}" + crypt.crypt("pw", "$6$rounds=5000$abcdefgh")
    assert verify_hash(stored, "pw")


def test_scheme_names_are_case_insensitive():
    assert verify_hash(SHA512_VECTOR.replace("SHA512-CRYPT", "sha512-crypt"), VECTOR_PASSWORD)


@pytest.mark.parametrize("password", [b"\xff\xfe", "Hello\0world!"])
def test_crypt_refuses_unusable_passwords(password):
    assert not verify_hash(SHA512_VECTOR, password)


@pytest.mark.parametrize(
    ("stored", "message"),
    [
        ("secret", "password field must be {SCHEME}hash"),
        ("{PLAIN}secret", "unknown password scheme {PLAIN}"),
        ("{ARGON2ID}$argon2i$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo", "malformed {ARGON2ID} hash"),
        ("{ARGON2ID}$argon2id$garbage", "malformed {ARGON2ID} hash"),
        ("{BLF-CRYPT}$2y$04$short", "malformed {BLF-CRYPT} hash"),
        ("{SHA512-CRYPT}" + SHA256_VECTOR[len("{SHA256-CRYPT}") :], "malformed {SHA512-CRYPT} hash"),
    ],
)
def test_verify_hash_refuses_malformed(stored, message):
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("$", r"\$")):
        verify_hash(stored, "x")


# -- the users file -------------------------------------------------------------


@pytest.fixture
def path(tmp_path):
    return tmp_path / "users"


def test_missing_file_has_no_users(path):
    users = UsersFile(path)
    assert users.names() == []
    assert "alice" not in users
    assert not users.verify("alice", "pw")
    assert not path.exists()


def test_add_creates_private_file(path):
    old = os.umask(0)  # the most permissive umask must not widen the mode
    try:
        users = UsersFile(path)
        users.add("alice", "pw")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    line = path.read_text()
    assert line.startswith("alice:{ARGON2ID}$argon2id$") and line.endswith("\n")
    assert line.count("\n") == 1
    assert users.verify("alice", "pw")
    assert not users.verify("alice", "px")
    assert "alice" in users


def test_names_sorted_and_membership(path):
    users = UsersFile(path)
    for name in ("carol", "Alice", "bob@example.org"):
        users.add(name, "pw")
    assert users.names() == ["Alice", "bob@example.org", "carol"]
    assert "alice" not in users  # names are case-sensitive, as in Dovecot
    assert UsersFile(path).names() == users.names()


@pytest.mark.parametrize(
    "name", ["a", "Z", "0", "_x", "-x", "alice.b@example.org", "x+tag", "a" * 64]
)
def test_good_names(path, name):
    UsersFile(path).add(name, "pw")
    assert UsersFile(path).verify(name, "pw")


@pytest.mark.parametrize(
    "name", ["", ".alice", "a b", "a:b", "ä", "a/b", "a\n", "a" * 65, "a#", "\u0131"]
)
def test_bad_names_refused(path, name):
    users = UsersFile(path)
    with pytest.raises(UserError, match="invalid user name"):
        users.add(name, "pw")
    assert not path.exists()


def test_add_existing_refused(path):
    users = UsersFile(path)
    users.add("alice", "pw")
    with pytest.raises(UserError, match="user 'alice' exists already"):
        users.add("alice", "other")
    assert users.verify("alice", "pw")


def test_empty_password_refused(path):
    users = UsersFile(path)
    with pytest.raises(UserError, match="empty password"):
        users.add("alice", "")
    users.add("alice", "pw")
    with pytest.raises(UserError, match="empty password"):
        users.set_password("alice", "")


def test_set_password_and_remove(path):
    users = UsersFile(path)
    users.add("alice", "old")
    users.add("bob", "pw")
    users.set_password("alice", "new")
    assert users.verify("alice", "new")
    assert not users.verify("alice", "old")
    users.remove("alice")
    assert users.names() == ["bob"]
    assert not users.verify("alice", "new")
    assert path.read_text().startswith("bob:")


@pytest.mark.parametrize("action", ["set_password", "remove"])
def test_unknown_user_refused(path, action):
    users = UsersFile(path)
    users.add("alice", "pw")
    before = path.read_bytes()
    with pytest.raises(UserError, match="no such user 'bob'"):
        if action == "remove":
            users.remove("bob")
        else:
            users.set_password("bob", "pw")
    assert path.read_bytes() == before


def test_verify_unknown_user_costs_a_hash_verification(path, monkeypatch):
    UsersFile(path).add("alice", "pw")
    users = UsersFile(path)
    calls = []
    real = auth.verify_hash
    monkeypatch.setattr(auth, "verify_hash", lambda *a: calls.append(a) or real(*a))
    assert not users.verify("mallory", "pw")
    assert len(calls) == 1
    assert calls[0][0].startswith("{ARGON2ID}$argon2id$")


DOVECOT_FILE = (
    "# migrated from dovecot\n"
    "\n"
    "alice:{SHA512-CRYPT}" + SHA512_VECTOR[len("{SHA512-CRYPT}") :]
    + ":1000:1000::/home/alice::userdb_quota_rule=*:storage=1G\n"
    "  # indented comment\n"
    "bob:" + "{BLF-CRYPT}$2y$04$" + "a" * 53 + "\n"
    "carol:" + SHA256_VECTOR + "::\n"
)


def test_dovecot_file_with_extra_fields(path):
    path.write_text(DOVECOT_FILE)
    users = UsersFile(path)
    assert users.names() == ["alice", "bob", "carol"]
    assert users.verify("alice", VECTOR_PASSWORD)
    assert users.verify("carol", VECTOR_PASSWORD)
    assert not users.verify("bob", VECTOR_PASSWORD)


def test_rewrite_keeps_comments_blank_lines_and_extra_fields(path):
    path.write_text(DOVECOT_FILE)
    users = UsersFile(path)
    users.set_password("alice", "new")
    users.add("dave", "pw")
    users.remove("bob")
    lines = path.read_text().splitlines()
    original = DOVECOT_FILE.splitlines()
    assert lines[:2] == original[:2]
    assert lines[2].startswith("alice:{ARGON2ID}$argon2id$")
    assert lines[2].endswith(":1000:1000::/home/alice::userdb_quota_rule=*:storage=1G")
    assert lines[3] == original[3]
    assert lines[4] == original[5]  # carol unchanged, bob gone
    assert lines[5].startswith("dave:{ARGON2ID}")
    assert len(lines) == 6
    assert users.verify("alice", "new")
    assert users.verify("carol", VECTOR_PASSWORD)


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("alice\n", ":1: expected name:{SCHEME}hash"),
        ("# ok\nalice:" + SHA512_VECTOR + "\nbob:{PLAIN}x\n", ":3: unknown password scheme {PLAIN}"),
        ("alice:secret\n", ":1: password field must be {SCHEME}hash"),
        ("\n\nalice:\n", ":3: password field must be {SCHEME}hash"),
        ("alice:{SHA512-CRYPT}$6$x$y\n", ":1: malformed {SHA512-CRYPT} hash"),
        ("alice:{ARGON2ID}$argon2id$x\n", ":1: malformed {ARGON2ID} hash"),
        (".alice:" + SHA512_VECTOR + "\n", ":1: invalid user name '.alice'"),
        ("al ice:" + SHA512_VECTOR + "\n", ":1: invalid user name 'al ice'"),
        ("a:" + SHA512_VECTOR + "\n#\na:" + SHA256_VECTOR + "\n", ":3: user 'a' appears twice"),
    ],
)
def test_bad_lines_rejected_with_line_number(path, content, error):
    path.write_text(content)
    with pytest.raises(UsersFileError) as raised:
        UsersFile(path)
    assert str(raised.value).startswith(f"{path}{error}")


def test_not_utf8_rejected_with_line_number(path):
    path.write_bytes(b"# ok\n# caf\xe9\n")
    with pytest.raises(UsersFileError, match=r"users:2: not UTF-8"):
        UsersFile(path)


def test_unreadable_file(path):
    path.mkdir()
    with pytest.raises(UsersFileError, match="cannot read"):
        UsersFile(path)


def test_rewrite_is_atomic(path):
    users = UsersFile(path)
    users.add("alice", "pw")
    before = os.stat(path).st_ino
    users.add("bob", "pw")
    # A new file renamed into place: readers see the old inode or the new one.
    assert os.stat(path).st_ino != before
    assert sorted(p.name for p in path.parent.iterdir()) == ["users", "users.lock"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_failed_write_leaves_file_untouched(path, monkeypatch):
    users = UsersFile(path)
    users.add("alice", "pw")
    before = path.read_bytes()

    def broken_fsync(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(UsersFileError, match="users: cannot write: No space left on device"):
        users.add("bob", "pw")
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["users", "users.lock"]
    assert users.names() == ["alice"]


def test_running_reader_sees_changes_without_restart(path):
    server = UsersFile(path)
    assert "alice" not in server
    UsersFile(path).add("alice", "pw")  # `gateway user add` in another process
    assert "alice" in server
    assert server.verify("alice", "pw")
    UsersFile(path).set_password("alice", "new")
    assert server.verify("alice", "new")
    UsersFile(path).remove("alice")
    assert "alice" not in server
    path.unlink()
    assert server.names() == []


def test_reload_only_when_changed(path, monkeypatch):
    UsersFile(path).add("alice", "pw")
    users = UsersFile(path)
    loads = []
    real = UsersFile.load
    monkeypatch.setattr(UsersFile, "load", lambda self: loads.append(self) or real(self))
    users.reload()
    assert users.names() == ["alice"]
    assert loads == []
    UsersFile(path).add("bob", "pw")
    users.reload()
    assert loads.count(users) == 1
    assert users.names() == ["alice", "bob"]


def test_edits_by_two_writers_both_survive(path):
    first, second = UsersFile(path), UsersFile(path)
    first.add("alice", "pw")
    second.add("bob", "pw")  # second read the file before alice existed
    assert UsersFile(path).names() == ["alice", "bob"]


def test_bad_edit_keeps_previous_users_in_running_server(path):
    server = UsersFile(path)
    server.add("alice", "pw")
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        path.write_text(path.read_text() + "bob:{PLAIN}x\n")
        assert server.verify("alice", "pw")
        assert server.names() == ["alice"]
    finally:
        globalLogPublisher.removeObserver(events.append)
    errors = [e for e in events if e.get("log_namespace") == "gateway.auth"]
    assert len(errors) == 1  # logged once, not on every login
    assert ":2: unknown password scheme {PLAIN}" in errors[0]["error"]
    with pytest.raises(UsersFileError, match=":2: unknown password scheme"):
        server.load()


# -- twisted.cred ---------------------------------------------------------------


class SynchronousThreadPool:
    """Runs "threaded" calls at once and counts them (each is a hash verification)."""

    def __init__(self):
        self.calls = 0

    def callInThreadWithCallback(self, on_result, function, *args, **kwargs):
        self.calls += 1
        try:
            result = function(*args, **kwargs)
        except BaseException:
            on_result(False, Failure())
        else:
            on_result(True, result)


class FakeReactor(Clock):
    def __init__(self):
        super().__init__()
        self.pool = SynchronousThreadPool()

    def getThreadPool(self):
        return self.pool

    def callFromThread(self, function, *args, **kwargs):
        function(*args, **kwargs)


class IMailbox(Interface):
    pass


class IAccount(Interface):
    pass


def fired(d: Deferred):
    outcome = []
    d.addBoth(outcome.append)
    assert outcome, "Deferred has not fired"
    return outcome[0]


def login_failure(d: Deferred, error_type):
    outcome = fired(d)
    assert isinstance(outcome, Failure), outcome
    assert outcome.check(error_type), outcome
    return outcome


@pytest.fixture
def reactor():
    return FakeReactor()


@pytest.fixture
def users(path):
    users = UsersFile(path)
    users.add("alice", "pw")
    users.add("bob", "pw")
    return users


@pytest.fixture
def logouts():
    return []


@pytest.fixture
def portal(users, reactor, logouts):
    def mailbox(avatar_id, mind):
        assert isinstance(avatar_id, str)
        return succeed((("mailbox", avatar_id, mind), lambda: logouts.append(avatar_id)))

    def account(avatar_id, mind):
        return (("account", avatar_id), lambda: None)  # plain values are accepted too

    realm = MailRealm({IMailbox: mailbox, IAccount: account})
    return make_portal(users, realm, reactor)


def test_verify_objects(users, reactor):
    verifyObject(ICredentialsChecker, PasswordChecker(users, reactor))
    verifyObject(IRealm, MailRealm({}))


def test_only_plain_passwords_offered(portal):
    assert portal.listCredentialsInterfaces() == [IUsernamePassword]
    assert IUsernameHashedPassword not in portal.listCredentialsInterfaces()


def test_login(portal, reactor, logouts):
    interface, avatar, logout = fired(portal.login(UsernamePassword(b"alice", b"pw"), None, IMailbox))
    assert interface is IMailbox
    assert avatar == ("mailbox", "alice", None)
    logout()
    assert logouts == ["alice"]
    assert reactor.pool.calls == 1


def test_the_realm_hands_the_protocols_mind_to_the_factory(portal):
    # What POP3 says of the session beside the user: its device.
    _, avatar, _ = fired(portal.login(UsernamePassword(b"alice", b"pw"), "phone", IMailbox))
    assert avatar == ("mailbox", "alice", "phone")


def test_realm_picks_first_interface_it_knows(portal):
    interface, avatar, _ = fired(
        portal.login(UsernamePassword(b"bob", b"pw"), None, Interface, IAccount, IMailbox)
    )
    assert interface is IAccount
    assert avatar == ("account", "bob")


def test_realm_without_factory(portal):
    login_failure(portal.login(UsernamePassword(b"bob", b"pw"), None, Interface), NotImplementedError)


def test_wrong_password(portal, reactor):
    login_failure(portal.login(UsernamePassword(b"alice", b"px"), None, IMailbox), UnauthorizedLogin)
    login_failure(portal.login(UsernamePassword(b"alice", b"px"), None, IMailbox), UnauthorizedLogin)
    assert reactor.pool.calls == 2  # failures are never cached


def test_unknown_user_costs_a_verification(portal, reactor):
    login_failure(portal.login(UsernamePassword(b"mallory", b"pw"), None, IMailbox), UnauthorizedLogin)
    assert reactor.pool.calls == 1


def test_invalid_utf8_user_name(portal, reactor):
    login_failure(portal.login(UsernamePassword(b"alice\xff", b"pw"), None, IMailbox), UnauthorizedLogin)


def test_utf8_password(path, reactor, portal):
    UsersFile(path).add("carol", "pässword")
    fired(portal.login(UsernamePassword(b"carol", "pässword".encode()), None, IMailbox))
    login_failure(
        portal.login(UsernamePassword(b"carol", "pässword".encode("latin-1")), None, IMailbox),
        UnauthorizedLogin,
    )


def test_cache_spares_second_verification(portal, reactor):
    for _ in range(3):
        fired(portal.login(UsernamePassword(b"alice", b"pw"), None, IMailbox))
        reactor.advance(20)
    assert reactor.pool.calls == 1
    # A wrong password is never answered from the cache.
    login_failure(portal.login(UsernamePassword(b"alice", b"px"), None, IMailbox), UnauthorizedLogin)
    assert reactor.pool.calls == 2


def test_cache_expires(portal, reactor):
    fired(portal.login(UsernamePassword(b"alice", b"pw"), None, IMailbox))
    reactor.advance(auth.CACHE_TTL)
    fired(portal.login(UsernamePassword(b"alice", b"pw"), None, IMailbox))
    assert reactor.pool.calls == 2


def test_cache_hit_extends_expiry(portal, reactor):
    fired(portal.login(UsernamePassword(b"alice", b"pw"), None, IMailbox))
    for _ in range(3):
        reactor.advance(auth.CACHE_TTL - 1)
        fired(portal.login(UsernamePassword(b"alice", b"pw"), None, IMailbox))
    assert reactor.pool.calls == 1
    reactor.advance(auth.CACHE_TTL)
    fired(portal.login(UsernamePassword(b"alice", b"pw"), None, IMailbox))
    assert reactor.pool.calls == 2


def test_client_polling_every_minute_is_verified_again_after_max_age(portal, reactor):
    minutes = int(auth.CACHE_MAX_AGE // 60)
    for _ in range(minutes):
        fired(portal.login(UsernamePassword(b"alice", b"pw"), None, IMailbox))
        reactor.advance(60)
    # Every poll within CACHE_MAX_AGE of the first came from the cache.
    assert reactor.pool.calls == 1
    fired(portal.login(UsernamePassword(b"alice", b"pw"), None, IMailbox))
    assert reactor.pool.calls == 2
    # The new verification starts a new period.
    reactor.advance(60)
    fired(portal.login(UsernamePassword(b"alice", b"pw"), None, IMailbox))
    assert reactor.pool.calls == 2


def test_password_change_invalidates_a_sliding_entry(portal, reactor, path):
    fired(portal.login(UsernamePassword(b"alice", b"pw"), None, IMailbox))
    reactor.advance(60)
    fired(portal.login(UsernamePassword(b"alice", b"pw"), None, IMailbox))
    UsersFile(path).set_password("alice", "new")
    login_failure(portal.login(UsernamePassword(b"alice", b"pw"), None, IMailbox), UnauthorizedLogin)
    assert reactor.pool.calls == 2


def test_cache_hit_keeps_an_entry_from_eviction(portal, reactor, path, monkeypatch):
    monkeypatch.setattr(auth, "CACHE_SIZE", 2)
    UsersFile(path).add("carol", "pw")
    for name in (b"alice", b"bob", b"alice", b"carol"):
        fired(portal.login(UsernamePassword(name, b"pw"), None, IMailbox))
    assert reactor.pool.calls == 3
    fired(portal.login(UsernamePassword(b"alice", b"pw"), None, IMailbox))
    assert reactor.pool.calls == 3
    fired(portal.login(UsernamePassword(b"bob", b"pw"), None, IMailbox))  # evicted
    assert reactor.pool.calls == 4


def test_password_change_invalidates_cache(portal, reactor, path):
    fired(portal.login(UsernamePassword(b"alice", b"pw"), None, IMailbox))
    UsersFile(path).set_password("alice", "new")
    login_failure(portal.login(UsernamePassword(b"alice", b"pw"), None, IMailbox), UnauthorizedLogin)
    fired(portal.login(UsernamePassword(b"alice", b"new"), None, IMailbox))
    assert reactor.pool.calls == 3


def test_removed_user_cannot_log_in_from_cache(portal, reactor, path):
    fired(portal.login(UsernamePassword(b"alice", b"pw"), None, IMailbox))
    UsersFile(path).remove("alice")
    login_failure(portal.login(UsernamePassword(b"alice", b"pw"), None, IMailbox), UnauthorizedLogin)


def test_cache_is_bounded(portal, reactor, path, monkeypatch):
    monkeypatch.setattr(auth, "CACHE_SIZE", 2)
    UsersFile(path).add("carol", "pw")
    for name in (b"alice", b"bob", b"carol"):
        fired(portal.login(UsernamePassword(name, b"pw"), None, IMailbox))
    assert reactor.pool.calls == 3
    fired(portal.login(UsernamePassword(b"carol", b"pw"), None, IMailbox))
    assert reactor.pool.calls == 3
    fired(portal.login(UsernamePassword(b"alice", b"pw"), None, IMailbox))  # evicted
    assert reactor.pool.calls == 4


def test_checker_avatar_id_is_str(users, reactor):
    checker = PasswordChecker(users, reactor)
    assert fired(checker.requestAvatarId(UsernamePassword(b"alice", b"pw"))) == "alice"
