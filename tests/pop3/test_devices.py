"""
POP3 views per device (gateway/pop3/devices.py): ``alice#phone`` through the
real POP3 protocol on StringTransports, over a real SQLite store, with a
clock for the days a device is kept.
"""

import pytest
from hypothesis import given, strategies as st
from twisted.logger import capturedLogs, formatEvent

from gateway.pop3.devices import DeviceLogin, InvalidDevice, forget_before, split_login
from tests.deferreds import result_of
from tests.pop3.test_server import FIRST, SECOND, make_server

THIRD = b"Subject: three\r\n\r\nthird\r\n"
DAY = 86400


@pytest.fixture
def server(tmp_path):
    s = make_server(tmp_path)
    for message in (FIRST, SECOND, THIRD):
        s.deliver(message)
    yield s
    s.store.close()


def session(server, name=b"alice#phone"):
    s = server.connect()
    s.login(name)
    return s


def quit(s):
    """QUIT, and the connection closes as the server asked: the device's lock goes."""
    reply = s.ask(b"QUIT")
    s.protocol.connectionLost(None)
    return reply


def uidl(s):
    return s.ask(b"UIDL")


def listed(s):
    return [line.split()[1] for line in uidl(s).split(b"\r\n")[1:-2]]


# The login name


@pytest.mark.parametrize(
    ("name", "login"),
    [
        (b"alice#phone", DeviceLogin(b"alice", "phone")),
        (b"alice#Desktop-2.home_pc", DeviceLogin(b"alice", "Desktop-2.home_pc")),
        (b"alice@example.org#phone", DeviceLogin(b"alice@example.org", "phone")),
        (b"alice", DeviceLogin(b"alice")),
    ],
)
def test_a_login_names_the_account_and_perhaps_a_device(name, login):
    assert split_login(name, device_views=True) == login


@pytest.mark.parametrize("name", [b"alice#", b"#phone", b"alice#ph one", b"alice#a#b", b"alice#" + b"x" * 65,
                                  b"alice#t\xc3\xa9l"])
def test_a_device_name_we_do_not_take(name):
    with pytest.raises(InvalidDevice):
        split_login(name, device_views=True)


def test_without_device_views_the_name_is_as_given():
    assert split_login(b"alice#phone", device_views=False) == DeviceLogin(b"alice#phone")


@given(st.binary(max_size=80))
def test_the_account_is_what_precedes_the_first_hash(name):
    try:
        login = split_login(name, device_views=True)
    except InvalidDevice:
        return
    if login.device is None:
        assert login.user == name and b"#" not in name
    else:
        assert login.user + b"#" + login.device.encode() == name


def test_forget_before_counts_days():
    assert forget_before(100 * DAY, 90) == 10 * DAY


# Views


def test_each_device_gets_every_message_once(server):
    # Both devices are set up (their first login) before mail is deleted.
    quit(session(server, b"alice#desktop"))
    phone = session(server)
    everything = uidl(phone)
    assert phone.ask(b"DELE 1") == b"+OK Message 1 deleted\r\n"
    assert phone.ask(b"DELE 2") == b"+OK Message 2 deleted\r\n"
    assert quit(phone) == b"+OK Bye, 2 messages deleted\r\n"
    # Gone from the phone's view, still in the maildrop.
    assert server.uids() == [1, 2, 3]
    desktop = session(server, b"alice#desktop")
    assert uidl(desktop) == everything
    assert b"line 1" in desktop.ask(b"RETR 1")
    desktop.ask(b"DELE 1")
    quit(desktop)
    # Both devices deleted 1: it leaves the maildrop; 2 waits for the desktop.
    assert server.uids() == [2, 3]
    phone = session(server)
    assert phone.ask(b"STAT") == b"+OK %d %d\r\n" % (1, len(THIRD))
    assert listed(phone) == [everything.split(b"\r\n")[3].split()[1]]


def test_uidls_are_the_maildrops_in_every_view(server):
    plain = session(server, b"alice")
    expected = uidl(plain)
    quit(plain)
    assert expected.split(b"\r\n")[1] == b"1 " + server.config.uidl.format(server.inbox().uidvalidity, 1).encode()
    for name in (b"alice#phone", b"alice#desktop"):
        s = session(server, name)
        assert uidl(s) == expected
        quit(s)


def test_rset_undoes_the_devices_deletions(server):
    phone = session(server)
    phone.ask(b"DELE 1")
    assert phone.ask(b"RSET").startswith(b"+OK Maildrop has 3 messages")
    assert quit(phone) == b"+OK Bye, 0 messages deleted\r\n"
    assert len(listed(session(server))) == 3


def test_a_dropped_connection_deletes_nothing(server):
    phone = session(server)
    phone.ask(b"DELE 1")
    phone.drop()
    assert len(listed(session(server))) == 3


def test_one_session_per_device_not_per_user(server):
    phone = session(server)
    desktop = session(server, b"alice#desktop")
    plain = session(server, b"alice")
    assert listed(desktop) == listed(phone) == listed(plain)
    again = server.connect()
    again.read()
    reply = again.ask(b"USER alice#phone") + again.ask(b"PASS secret")
    assert reply == b"+OK Send PASS\r\n-ERR [IN-USE] Maildrop is locked by another session\r\n"
    quit(phone)
    session(server)


def test_the_plain_login_deletes_for_every_device(server):
    phone = session(server)
    quit(phone)
    plain = session(server, b"alice")
    plain.ask(b"DELE 3")
    quit(plain)
    assert server.uids() == [1, 2]
    assert len(listed(session(server))) == 2


def test_a_device_logging_in_later_sees_what_is_left(server):
    phone = session(server)
    phone.ask(b"DELE 1")
    quit(phone)
    # The phone was the only device: 1 is gone for good.
    assert server.uids() == [2, 3]
    desktop = session(server, b"alice#desktop")
    assert desktop.ask(b"STAT").startswith(b"+OK 2 ")
    desktop.ask(b"DELE 1")
    quit(desktop)
    # 2 now waits for the phone too.
    assert server.uids() == [2, 3]
    phone = session(server)
    assert phone.ask(b"STAT").startswith(b"+OK 2 ")
    phone.ask(b"DELE 1")
    quit(phone)
    assert server.uids() == [3]


def test_a_password_guesser_gains_nothing_from_device_names(tmp_path):
    from gateway.config import LimitsConfig

    server = make_server(tmp_path, limits=LimitsConfig(failed_logins_per_ip=2))
    server.deliver(FIRST)
    for n in range(2):
        s = server.connect()
        s.read()
        s.send(b"USER alice#guess%d\r\nPASS wrong\r\n" % n)
        server.clock.advance(30)
        assert s.read().endswith(b"-ERR [AUTH] Authentication failed\r\n")
    s = server.connect()
    s.read()
    s.send(b"USER alice#phone\r\nPASS secret\r\n")
    server.clock.advance(30)
    assert s.read().endswith(b"-ERR [SYS/TEMP] Too many failed logins, try again later\r\n")
    server.store.close()


def test_a_bad_device_name_is_refused_unchecked(server):
    s = server.connect()
    s.read()
    with capturedLogs() as events:
        reply = s.ask(b"USER alice#ph/one") + s.ask(b"PASS secret")
    assert reply == b"+OK Send PASS\r\n-ERR [AUTH] Invalid device name (letters, digits, '.', '-', '_')\r\n"
    assert "login failed: protocol=pop3 user=alice#ph/one ip=127.0.0.1 reason=bad-device" in [
        formatEvent(e) for e in events]
    s.login(b"alice#phone")


def test_without_device_views_a_device_name_is_an_unknown_user(tmp_path):
    server = make_server(tmp_path, device_views=False)
    s = server.connect()
    s.read()
    s.send(b"USER alice#phone\r\nPASS secret\r\n")
    server.clock.advance(30)
    assert s.read().endswith(b"-ERR [AUTH] Authentication failed\r\n")
    server.store.close()


def test_auth_plain_names_a_device_too(server):
    import base64

    s = server.connect()
    s.read()
    reply = s.ask(b"AUTH PLAIN " + base64.b64encode(b"\0alice#phone\0secret"))
    assert reply.startswith(b"+OK Maildrop has 3 messages")
    s.ask(b"DELE 2")
    quit(s)
    assert len(listed(session(server))) == 2


def test_devices_are_bounded(tmp_path):
    server = make_server(tmp_path, max_devices=2)
    server.deliver(FIRST)
    for name in (b"alice#one", b"alice#two"):
        quit(session(server, name))
    s = server.connect()
    s.read()
    with capturedLogs() as events:
        reply = s.ask(b"USER alice#three") + s.ask(b"PASS secret")
    assert reply == b"+OK Send PASS\r\n-ERR [SYS/PERM] Too many devices for this user\r\n"
    assert any("reason=too-many-devices" in formatEvent(e) for e in events)
    # The plain login and the known devices go on.
    quit(session(server, b"alice#two"))
    quit(session(server, b"alice"))
    server.store.close()


def test_a_device_unused_long_enough_is_forgotten(tmp_path):
    server = make_server(tmp_path, max_devices=2, forget_devices_after=30)
    for message in (FIRST, SECOND):
        server.deliver(message)
    quit(session(server, b"alice#old-phone"))
    desktop = session(server, b"alice#desktop")
    desktop.ask(b"DELE 1")
    quit(desktop)
    # The old phone has not deleted 1: it stays.
    assert server.uids() == [1, 2]
    full = server.connect()
    full.read()
    assert full.ask(b"USER alice#tablet") + full.ask(b"PASS secret") == (
        b"+OK Send PASS\r\n-ERR [SYS/PERM] Too many devices for this user\r\n")
    server.clock.advance(29 * DAY)
    quit(session(server, b"alice#desktop"))
    server.clock.advance(2 * DAY)
    # The phone is not seen for 31 days: at the desktop's next login it is
    # forgotten, and holds nothing back any more.
    desktop = session(server, b"alice#desktop")
    assert desktop.ask(b"STAT").startswith(b"+OK 1 ")
    desktop.ask(b"DELE 1")
    quit(desktop)
    assert server.uids() == []
    # Its place is free.
    quit(session(server, b"alice#tablet"))
    server.store.close()


@pytest.mark.parametrize("policy", ["hide", "trash"])
def test_what_every_device_deleted_goes_as_the_delete_policy_says(tmp_path, policy):
    server = make_server(tmp_path, delete_policy=policy)
    server.deliver(FIRST)
    for name in (b"alice#phone", b"alice#desktop"):
        quit(session(server, name))
    for name in (b"alice#phone", b"alice#desktop"):
        s = session(server, name)
        s.ask(b"DELE 1")
        quit(s)
    if policy == "hide":
        (record,) = result_of(server.store.list_messages(server.inbox().id))
        assert server.config.pop3.hidden_flag in record.flags
    else:
        assert server.uids() == []
    # Gone from every view, and from the plain one.
    for name in (b"alice#phone", b"alice#laptop", b"alice"):
        assert session(server, name).ask(b"STAT") == b"+OK 0 0\r\n"
    server.store.close()


def test_device_delete_never_leaves_the_maildrop_to_imap_and_the_plain_login(tmp_path):
    server = make_server(tmp_path, device_delete="never")
    server.deliver(FIRST)
    for name in (b"alice#phone", b"alice#desktop"):
        s = session(server, name)
        s.ask(b"DELE 1")
        quit(s)
    assert server.uids() == [1]
    assert session(server, b"alice#phone").ask(b"STAT") == b"+OK 0 0\r\n"
    plain = session(server, b"alice")
    assert plain.ask(b"STAT").startswith(b"+OK 1 ")
    server.store.close()
