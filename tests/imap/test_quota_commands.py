"""
QUOTA (RFC 9208) through the real protocol class: GETQUOTA, GETQUOTAROOT,
SETQUOTA refused, and APPEND and COPY over a limit refused with
[OVERQUOTA]; MOVE and expunging stay possible.
"""

from gateway.config import AuthConfig, Config, QuotaConfig
from tests.deferreds import result_of
from tests.imap.test_server import MESSAGE, Session


def session(store, **quota):
    return Session(store, config=Config(auth=AuthConfig(failure_delay=1.0), quota=QuotaConfig(**quota))).login()


def test_getquotaroot_and_getquota_as_rfc_9208_writes_them(store):
    s = session(store, storage=512, messages=3)
    inbox = result_of(store.get_mailbox("alice", "INBOX"))
    result_of(store.append(inbox.id, MESSAGE))
    # RFC 9208 4.3.2, with our one root "".
    assert s.command(b"G0002 GETQUOTAROOT INBOX") == [
        b'* QUOTAROOT INBOX ""',
        b'* QUOTA "" (STORAGE 1 512 MESSAGE 1 3)',
        b"G0002 OK GETQUOTAROOT completed",
    ]
    assert s.command(b'G0001 GETQUOTA ""') == [b'* QUOTA "" (STORAGE 1 512 MESSAGE 1 3)', b"G0001 OK GETQUOTA completed"]
    assert s.command(b'a GETQUOTAROOT "Sent"') == [
        b'* QUOTAROOT Sent ""', b'* QUOTA "" (STORAGE 1 512 MESSAGE 1 3)', b"a OK GETQUOTAROOT completed"]
    assert s.command(b'b GETQUOTA "#user/alice"') == [b"b NO [NONEXISTENT] No such quota root"]
    assert s.command(b"c GETQUOTAROOT Nowhere")[0].startswith(b"c NO [NONEXISTENT]")
    # RFC 9208 4.3.3: the limits are the administrator's.
    assert s.command(b'd SETQUOTA "" (STORAGE 510)') == [
        b"d NO [NOPERM] Quota limits are set by the administrator"]
    assert s.command(b'e SETQUOTA "" STORAGE')[0].startswith(b"e BAD")


def test_no_limits_no_resources(store):
    s = session(store)
    assert s.command(b'a GETQUOTA ""') == [b'* QUOTA "" ()', b"a OK GETQUOTA completed"]


def test_append_and_copy_over_quota_are_refused(store):
    s = session(store, messages=2)
    append = b"a APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE
    assert s.command(append)[-1].startswith(b"a OK [APPENDUID")
    assert s.command(append)[-1].startswith(b"a OK [APPENDUID")
    assert s.command(append) == [b"a NO [OVERQUOTA] Quota exceeded"]
    s.command(b"s SELECT INBOX")
    assert s.command(b"c COPY 1 Trash") == [b"c NO [OVERQUOTA] Quota exceeded"]
    # Moving within the one root changes no usage; deleting is always possible.
    assert s.command(b"m MOVE 1 Trash")[-1] == b"m OK MOVE completed"
    assert s.command(b"e STORE 1 +FLAGS.SILENT (\\Deleted)")[-1] == b"e OK STORE completed"
    assert s.command(b"f EXPUNGE")[-1] == b"f OK EXPUNGE completed"
    # One message left (in Trash): room for one more.
    assert s.command(append)[-1].startswith(b"a OK [APPENDUID")


def test_storage_limit_counts_the_message_being_added(store):
    s = session(store, storage=1)  # 1024 octets
    big = MESSAGE + b"x" * 1000 + b"\r\n"
    assert s.command(b"a APPEND INBOX {%d+}\r\n" % len(big) + big) == [b"a NO [OVERQUOTA] Quota exceeded"]
    assert s.command(b"b APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE)[-1].startswith(b"b OK")
