import re

import pytest

from gateway.config import DEFAULT_TOML, Config, ConfigError, load, loads
from gateway.uidl import UidlFormat


def test_defaults():
    config = Config()
    assert config.hostname == "localhost"
    assert config.listeners.pop3 == ("tcp:1110:interface=127.0.0.1",)
    assert config.listeners.imap == ("tcp:1143:interface=127.0.0.1",)
    assert config.listeners.lmtp == ("tcp:2424:interface=127.0.0.1",)
    assert config.pop3.uidl_format == "%08Xu%08Xv"
    assert config.pop3.lock_session is True
    assert config.pop3.retr_sets_seen is True
    assert config.pop3.idle_timeout == 600
    assert config.imap.idle_timeout == 1800
    assert config.auth.failure_delay == 2.0
    assert config.uidl == UidlFormat.parse("%08Xu%08Xv")
    assert config.uidl.format(0x6B086FFD, 1) == "000000016b086ffd"


def test_empty_file_is_defaults():
    assert loads("") == Config()


def test_default_toml_loads_to_defaults():
    assert loads(DEFAULT_TOML) == Config()


def test_default_toml_shows_every_option_commented():
    uncommented = "\n".join(
        line[2:] if line.startswith("# ") and " = " in line else line
        for line in DEFAULT_TOML.splitlines()
    )
    shown = {
        re.sub(r"\s.*", "", line)
        for line in uncommented.splitlines()
        if " = " in line and not line.startswith("#")
    }
    assert shown == {
        "hostname", "pop3", "imap", "lmtp", "uidl_format", "lock_session",
        "retr_sets_seen", "idle_timeout", "failure_delay",
    }
    # With every option uncommented it still gives exactly the defaults.
    assert loads(uncommented) == Config()


def test_every_option():
    config = loads(
        """
        hostname = "mail.example.org"
        [listeners]
        pop3 = "tcp:110"
        imap = ["tcp:143", "tcp:1430:interface=::1"]
        lmtp = []
        [pop3]
        uidl_format = "%v.%u"
        lock_session = false
        retr_sets_seen = false
        idle_timeout = 900
        [imap]
        idle_timeout = 3600
        [auth]
        failure_delay = 0
        """
    )
    assert config.hostname == "mail.example.org"
    assert config.listeners.pop3 == ("tcp:110",)
    assert config.listeners.imap == ("tcp:143", "tcp:1430:interface=::1")
    assert config.listeners.lmtp == ()
    assert config.pop3.lock_session is False
    assert config.pop3.retr_sets_seen is False
    assert config.pop3.idle_timeout == 900
    assert config.imap.idle_timeout == 3600
    assert config.auth.failure_delay == 0.0
    assert config.uidl.format(1795715069, 1) == "1795715069.1"


def test_with_listeners_overrides_only_given():
    config = loads('[listeners]\nlmtp = "unix:/run/gateway.lmtp"')
    changed = config.with_listeners(pop3=["tcp:0:interface=127.0.0.1"], imap=[])
    assert changed.listeners.pop3 == ("tcp:0:interface=127.0.0.1",)
    assert changed.listeners.imap == ()
    assert changed.listeners.lmtp == ("unix:/run/gateway.lmtp",)
    assert config.listeners.pop3 == ("tcp:1110:interface=127.0.0.1",)
    assert changed.pop3 == config.pop3


def test_load_reads_file(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_text('[pop3]\nuidl_format = "%v-%u"\n')
    assert load(path).pop3.uidl_format == "%v-%u"


def test_load_names_file_in_errors(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_text("[pop3]\nuidl_format = \"%v\"\n")
    with pytest.raises(ConfigError) as raised:
        load(path)
    assert str(raised.value) == f"{path}: pop3.uidl_format: '%v' has no %u, UIDLs would repeat"


def test_missing_file(tmp_path):
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match=r"absent\.toml: cannot read: No such file"):
        load(path)


def test_not_utf8(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_bytes(b'hostname = "\xff"\n')
    with pytest.raises(ConfigError, match=r"gateway\.toml: not UTF-8"):
        load(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hostname = ", "invalid TOML: "),
        ("hostnme = 'x'", "hostnme: unknown key (known: hostname, [listeners], [pop3]"),
        ("[smtp]\nport = 25", "smtp: unknown key"),
        ("[pop3]\nuidl = 'x'", "pop3.uidl: unknown key (known: uidl_format, lock_session"),
        ("[listeners]\npop = 'tcp:110'", "listeners.pop: unknown key"),
        ("[auth]\ndelay = 1", "auth.delay: unknown key"),
        ("[imap]\ntimeout = 1", "imap.timeout: unknown key"),
        ("pop3 = 1", "pop3: must be a table ([pop3]), not an integer (1)"),
        ("hostname = 1", "hostname: must be a string, not an integer (1)"),
        ("hostname = ''", "hostname: '' is not a host name"),
        ("hostname = 'a b'", "hostname: 'a b' is not a host name"),
        ("hostname = 'a\\r\\nb'", "is not a host name"),
        ("[listeners]\npop3 = 110", "listeners.pop3: must be an endpoint string or a list"),
        ("[listeners]\nimap = [143]", "listeners.imap[0]: endpoint must be a string, not an integer"),
        ("[listeners]\nlmtp = ['tcp:24', true]", "listeners.lmtp[1]: endpoint must be a string, not a boolean"),
        ("[listeners]\npop3 = ''", "listeners.pop3: '' is not an endpoint string"),
        ("[listeners]\npop3 = ['tcp: 110']", "listeners.pop3[0]: 'tcp: 110' is not an endpoint"),
        ("[pop3]\nuidl_format = 1", "pop3.uidl_format: must be a string, not an integer"),
        ("[pop3]\nuidl_format = '%v'", "pop3.uidl_format: '%v' has no %u, UIDLs would repeat"),
        ("[pop3]\nuidl_format = '%m'", "pop3.uidl_format: %m (MD5 of the message header) cannot"),
        ("[pop3]\nuidl_format = '%u %v'", "pop3.uidl_format: character ' ' at position 3"),
        ("[pop3]\nuidl_format = '%061u%v'", "pop3.uidl_format: '%061u%v' can produce 71 characters"),
        ("[pop3]\nlock_session = 'yes'", "pop3.lock_session: must be true or false, not a string ('yes')"),
        ("[pop3]\nretr_sets_seen = 1", "pop3.retr_sets_seen: must be true or false, not an integer"),
        ("[pop3]\nidle_timeout = '600'", "pop3.idle_timeout: must be a whole number of seconds, not a string"),
        ("[pop3]\nidle_timeout = 1.5", "pop3.idle_timeout: must be a whole number of seconds, not a float"),
        ("[pop3]\nidle_timeout = true", "pop3.idle_timeout: must be a whole number of seconds, not a boolean"),
        ("[pop3]\nidle_timeout = -1", "pop3.idle_timeout: must be positive, not -1"),
        ("[imap]\nidle_timeout = 0", "imap.idle_timeout: must be positive, not 0"),
        ("[imap]\nidle_timeout = 1979-05-27", "imap.idle_timeout: must be a whole number of seconds, not a date/time"),
        ("[imap]\nidle_timeout = [1]", "imap.idle_timeout: must be a whole number of seconds, not an array"),
        ("[auth]\nfailure_delay = -0.5", "auth.failure_delay: must be zero or more seconds, not -0.5"),
        ("[auth]\nfailure_delay = inf", "auth.failure_delay: must be zero or more seconds, not inf"),
        ("[auth]\nfailure_delay = nan", "auth.failure_delay: must be zero or more seconds, not nan"),
        ("[auth]\nfailure_delay = '2'", "auth.failure_delay: must be a number of seconds, not a string"),
        ("[auth]\nfailure_delay = {}", "auth.failure_delay: must be a number of seconds, not a table"),
    ],
)
def test_errors(text, message):
    with pytest.raises(ConfigError) as raised:
        loads(text, "gateway.toml")
    error = str(raised.value)
    assert error.startswith("gateway.toml: ")
    assert message in error
    assert "\n" not in error


def test_source_defaults_to_string_marker():
    with pytest.raises(ConfigError, match=r"^<string>: hostnme: "):
        loads("hostnme = 'x'")
