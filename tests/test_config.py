import re

import pytest

from gateway.config import (
    DEFAULT_TOML,
    Config,
    ConfigError,
    LimitsConfig,
    ListenerConfig,
    LmtpConfig,
    StoreConfig,
    TlsConfig,
    command_line_listeners,
    load,
    load_for_tool,
    loads,
)
from gateway.pop3.uidl import UidlFormat


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
    assert config.pop3.delete_policy == "expunge"
    assert config.pop3.hidden_flag == "$POP3Deleted"
    assert config.imap.idle_timeout == 1800
    assert config.lmtp.max_message_size == 50 * 1024 * 1024
    assert config.lmtp.max_recipients == 100
    assert config.auth.failure_delay == 2.0
    assert config.listeners.pop3s == ()
    assert config.listeners.imaps == ()
    assert config.listeners.metrics == ()
    assert config.tls.certificate == "tls/cert.pem"
    assert config.tls.key == "tls/key.pem"
    assert config.limits.max_connections == 1000
    assert config.limits.max_connections_per_ip == 50
    assert config.limits.max_connections_per_user == 20
    assert config.limits.max_line_length == 65536
    assert (config.quota.storage, config.quota.messages, config.quota.full_tempfail) == (0, 0, False)
    assert config.limits.max_literal_size == 50 * 1024 * 1024
    assert config.limits.max_nesting == 32
    assert config.limits.max_bad_commands == 20
    assert config.limits.prelogin_timeout == 60
    assert config.limits.failed_logins_per_ip == 10
    assert config.limits.failed_login_window == 300
    assert config.limits.password_checks_per_ip == 4
    assert config.limits.lockout_exempt_networks == ()
    assert config.limits.ipv6_prefix == 64
    assert config.proxy.trusted == ("127.0.0.1/32", "::1/128")
    assert config.proxy.login_trusted_networks == ()
    assert config.uidl == UidlFormat.parse("%08Xu%08Xv")
    assert config.uidl.format(0x6B086FFD, 1) == "000000016b086ffd"


def test_empty_file_is_defaults():
    assert loads("") == Config()


def test_default_toml_loads_to_defaults():
    assert loads(DEFAULT_TOML) == Config()


def test_default_toml_shows_every_option_commented():
    # An option is "# name = value"; indented lines are examples (the
    # entries of [networks], the options of a [listeners.NAME] table).
    option_line = re.compile(r"# (\w+) = ")
    uncommented = "\n".join(
        line[2:] if option_line.match(line) else line
        for line in DEFAULT_TOML.splitlines()
    )
    shown = {option_line.match(line)[1] for line in DEFAULT_TOML.splitlines() if option_line.match(line)}
    assert shown == {
        "hostname", "pop3", "imap", "lmtp", "uidl_format", "lock_session",
        "retr_sets_seen", "idle_timeout", "delete_policy", "hidden_flag", "delete_policy_users", "failure_delay", "plaintext_without_tls", "pop3s", "imaps",
        "device_views", "device_delete", "max_devices", "forget_devices_after",
        "metrics", "networks",
        "certificate", "key", "rsa_certificate", "rsa_key", "max_connections", "max_connections_per_ip",
        "max_connections_per_user", "max_line_length", "max_literal_size",
        "max_nesting", "max_bad_commands", "prelogin_timeout",
        "failed_logins_per_ip", "failed_login_window", "password_checks_per_ip",
        "lockout_exempt_networks", "ipv6_prefix", "per_ip_exempt_networks", "trusted", "login_trusted_networks",
        "max_message_size", "max_recipients", "save_to_detail_mailbox", "backend", "flag_durability",
        "parse", "dsn", "pool_size", "connect_timeout", "kind", "bucket", "endpoint", "region", "access_key", "secret_key",
        "prefix", "cache_size", "fetch_cache_size",
        "storage", "messages", "full_tempfail", "workers",
    }
    examples = {re.match(r"#   (\w+) = ", line)[1] for line in DEFAULT_TOML.splitlines() if re.match(r"#   \w+ = ", line)}
    assert examples == {"lan", "scanners", "protocol", "endpoints", "tls_min_version", "networks"}
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
        metrics = "tcp:9154:interface=127.0.0.1"
        [pop3]
        uidl_format = "%v.%u"
        lock_session = false
        retr_sets_seen = false
        idle_timeout = 900
        delete_policy = "hide"
        hidden_flag = "$Hidden"
        [imap]
        idle_timeout = 3600
        [lmtp]
        max_message_size = 1048576
        max_recipients = 500
        [auth]
        failure_delay = 0
        [tls]
        certificate = "/etc/ssl/mail.pem"
        key = "private/mail.key"
        [limits]
        max_connections = 5000
        max_connections_per_ip = 5
        max_connections_per_user = 3
        max_line_length = 65536
        max_literal_size = 1048576
        max_nesting = 8
        max_bad_commands = 3
        prelogin_timeout = 20
        failed_logins_per_ip = 4
        failed_login_window = 600
        password_checks_per_ip = 2
        lockout_exempt_networks = ["192.0.2.0/24"]
        ipv6_prefix = 56
        [proxy]
        trusted = ["10.0.0.0/8", "2001:db8::/32"]
        login_trusted_networks = ["10.0.0.5/32"]
        [store]
        backend = "sqlite"
        flag_durability = "immediate"
        parse = "first-fetch"
        """
    )
    assert config.hostname == "mail.example.org"
    assert config.listeners.pop3 == ("tcp:110",)
    assert config.listeners.imap == ("tcp:143", "tcp:1430:interface=::1")
    assert config.listeners.lmtp == ()
    assert config.listeners.metrics == ("tcp:9154:interface=127.0.0.1",)
    assert config.pop3.lock_session is False
    assert config.pop3.retr_sets_seen is False
    assert config.pop3.idle_timeout == 900
    assert config.pop3.delete_policy == "hide"
    assert config.pop3.hidden_flag == "$Hidden"
    assert config.imap.idle_timeout == 3600
    assert config.lmtp == LmtpConfig(1048576, 500)
    assert config.auth.failure_delay == 0.0
    assert config.uidl.format(1795715069, 1) == "1795715069.1"
    assert config.tls == TlsConfig("/etc/ssl/mail.pem", "private/mail.key")
    assert config.limits == LimitsConfig(5000, 5, 3, 65536, 1048576, 8, 3, 20, 4, 600, 2, ("192.0.2.0/24",), 56)
    assert config.proxy.trusted == ("10.0.0.0/8", "2001:db8::/32")
    assert config.proxy.login_trusted_networks == ("10.0.0.5/32",)
    assert config.store == StoreConfig("sqlite", "immediate", "first-fetch")


@pytest.mark.parametrize("storage, kilobytes", [(0, 0), (1024, 1024), ('"500M"', 500 * 1024), ('"2G"', 2 << 20),
                                                ('"1024K"', 1024), ('"2048B"', 2)])
def test_quota_storage_in_kilobytes_or_with_a_unit(storage, kilobytes):
    config = loads(f"[quota]\nstorage = {storage}\nmessages = 5000\nfull_tempfail = true")
    assert (config.quota.storage, config.quota.messages, config.quota.full_tempfail) == (kilobytes, 5000, True)


@pytest.mark.parametrize("text, message", [
    ('[quota]\nstorage = "lots"', "quota.storage: 'lots' is not a size"),
    ("[quota]\nstorage = -1", "quota.storage: must be at least 0, not -1"),
    ("[quota]\nmessages = 1.5", "quota.messages: must be a number of messages, not a float"),
])
def test_quota_errors(text, message):
    with pytest.raises(ConfigError) as raised:
        loads(text, "gateway.toml")
    assert message in str(raised.value)


def test_a_bare_address_is_a_network_of_one():
    config = loads("[limits]\nlockout_exempt_networks = ['192.0.2.7', '2001:db8::7']\n"
                   "[proxy]\nlogin_trusted_networks = ['10.0.0.5']")
    assert config.limits.lockout_exempt_networks == ("192.0.2.7", "2001:db8::7")
    assert config.proxy.login_trusted_networks == ("10.0.0.5",)


def test_implicit_tls_listeners():
    config = loads('[listeners]\npop3s = "tcp:995"\nimaps = ["tcp:993", "haproxy:tcp:10993"]')
    assert config.listeners.pop3s == ("tcp:995",)
    assert config.listeners.imaps == ("tcp:993", "haproxy:tcp:10993")
    changed = config.with_listeners(pop3s=[], imaps=["tcp:0:interface=127.0.0.1"])
    assert changed.listeners.pop3s == ()
    assert changed.listeners.imaps == ("tcp:0:interface=127.0.0.1",)
    assert changed.listeners.pop3 == config.listeners.pop3


def test_with_listeners_overrides_only_given():
    config = loads('[listeners]\nlmtp = "unix:/run/gateway.lmtp.server"')
    changed = config.with_listeners(pop3=["tcp:0:interface=127.0.0.1"], imap=[])
    assert changed.listeners.pop3 == ("tcp:0:interface=127.0.0.1",)
    assert changed.listeners.imap == ()
    assert changed.listeners.lmtp == ("unix:/run/gateway.lmtp.server",)
    assert config.listeners.pop3 == ("tcp:1110:interface=127.0.0.1",)
    assert changed.pop3 == config.pop3


def test_unix_socket_listeners_and_detail_mailboxes():
    config = loads(
        '[listeners]\nlmtp = "unix:/run/gateway/lmtp.sock:mode=0660:group=postfix"\n'
        'imap = ["tcp:143", "unix:/run/gateway/imap.sock"]\nmetrics = "unix:/run/gateway/metrics.sock"\n'
        "[lmtp]\nsave_to_detail_mailbox = true\n"
    )
    assert config.listeners.lmtp == ("unix:/run/gateway/lmtp.sock:mode=0660:group=postfix",)
    assert config.listeners.imap == ("tcp:143", "unix:/run/gateway/imap.sock")
    assert config.lmtp.save_to_detail_mailbox is True
    assert loads("").lmtp.save_to_detail_mailbox is False


def test_command_line_listeners_are_checked_as_the_file_is():
    assert command_line_listeners({"lmtp": ["unix:/run/l.sock"], "pop3": []}) == {
        "lmtp": ("unix:/run/l.sock",), "pop3": (),
    }
    with pytest.raises(ConfigError, match=r"^command line: --lmtp: 'unix:l.sock': socket path 'l.sock' must be "):
        command_line_listeners({"lmtp": ["unix:l.sock"]})
    with pytest.raises(ConfigError, match=r"^command line: --metrics: 'haproxy:tcp:9154': the metrics listener"):
        command_line_listeners({"metrics": ["haproxy:tcp:9154"]})


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
        ("hostnme = 'x'", "hostnme: unknown key (known: hostname, [networks], [listeners], [server], [pop3]"),
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
        ("[pop3]\ndelete_policy = 'delete'", "pop3.delete_policy: must be one of 'expunge', 'trash', 'hide', not a string"),
        ("[pop3]\ndelete_policy = true", "pop3.delete_policy: must be one of 'expunge', 'trash', 'hide', not a boolean"),
        ("[pop3]\nhidden_flag = '\\Deleted'", "pop3.hidden_flag: '\\\\Deleted' is not an IMAP keyword"),
        ("[pop3]\nhidden_flag = 'two words'", "pop3.hidden_flag: 'two words' is not an IMAP keyword"),
        ("[pop3]\nhidden_flag = ''", "pop3.hidden_flag: '' is not an IMAP keyword"),
        ("[pop3]\nhidden_flag = 'a]'", "pop3.hidden_flag: 'a]' is not an IMAP keyword"),
        ("[pop3]\nhidden_flag = 1", "pop3.hidden_flag: must be a string, not an integer"),
        ("[imap]\nidle_timeout = 0", "imap.idle_timeout: must be positive, not 0"),
        ("[imap]\nidle_timeout = 1979-05-27", "imap.idle_timeout: must be a whole number of seconds, not a date/time"),
        ("[imap]\nidle_timeout = [1]", "imap.idle_timeout: must be a whole number of seconds, not an array"),
        ("[imap]\nfetch_cache_size = -1", "imap.fetch_cache_size: must be"),
        ("[imap]\nfetch_cache_size = '48M'", "imap.fetch_cache_size: must be a whole number of megabytes, not a string"),
        ("[auth]\nfailure_delay = -0.5", "auth.failure_delay: must be zero or more seconds, not -0.5"),
        ("[auth]\nfailure_delay = inf", "auth.failure_delay: must be zero or more seconds, not inf"),
        ("[auth]\nfailure_delay = nan", "auth.failure_delay: must be zero or more seconds, not nan"),
        ("[auth]\nfailure_delay = '2'", "auth.failure_delay: must be a number of seconds, not a string"),
        ("[auth]\nfailure_delay = {}", "auth.failure_delay: must be a number of seconds, not a table"),
        ("[listeners]\npop3s = 'ssl:995:privateKey=k.pem'", "listeners.pop3s: 'ssl:995:privateKey=k.pem': use a tcp:"),
        ("[listeners]\nimap = ['haproxy:SSL:993']", "listeners.imap[0]: 'haproxy:SSL:993': use a tcp: endpoint"),
        ("[listeners]\nmetrics = 9154", "listeners.metrics: must be an endpoint string or a list"),
        ("[listeners]\nmetrics = ['haproxy:tcp:9154']", "listeners.metrics[0]: 'haproxy:tcp:9154': the metrics listener"),
        ("[listeners]\nmetrics = 'ssl:9154'", "listeners.metrics: 'ssl:9154': use a tcp:"),
        ("[listeners]\nimaps = [993]", "listeners.imaps[0]: endpoint must be a string, not an integer"),
        ("[listeners]\nlmtp = 'haproxy:unix:/run/l.sock'",
         "listeners.lmtp: 'haproxy:unix:/run/l.sock': the PROXY protocol is taken on TCP listeners only"),
        ("[listeners]\nlmtp = ['tcp:24', 'unix:l.sock']",
         "listeners.lmtp[1]: 'unix:l.sock': socket path 'l.sock' must be absolute"),
        ("[listeners]\nimap = 'unix:/run/i.sock:mode=0x'", "listeners.imap: 'unix:/run/i.sock:mode=0x': mode=0x: give"),
        ("[listeners]\npop3 = 'unix:/run/p.sock:lockfile=0'", "lockfile= is not used: a stale socket is replaced"),
        ("[listeners]\nmetrics = 'unix:/run/m.sock:perms=1'", "unknown option perms= (known: mode, user, group"),
        ("[lmtp]\nsave_to_detail_mailbox = 'yes'", "lmtp.save_to_detail_mailbox: must be true or false, not a string"),
        ("hostname = '" + "a" * 254 + "'", "hostname: a host name has at most 253 characters, not 254"),
        ("[tls]\ncert = 'x'", "tls.cert: unknown key (known: certificate, key, rsa_certificate, rsa_key)"),
        ("[tls]\ncertificate = ''", "tls.certificate: '' is not a file path"),
        ("[tls]\nkey = 1", "tls.key: must be a file path string, not an integer"),
        ('[tls]\nkey = "a\\u0000b"', "tls.key: 'a\\x00b' is not a file path"),
        ("[lmtp]\nmax_message_size = 0", "lmtp.max_message_size: must be positive, not 0"),
        ("[lmtp]\nmax_message_size = '50M'", "lmtp.max_message_size: must be a whole number, not a string"),
        ("[lmtp]\nmax_recipients = 99", "lmtp.max_recipients: must be at least 100, not 99"),
        ("[lmtp]\nmax_rcpt = 1", "lmtp.max_rcpt: unknown key (known: max_message_size, max_recipients, save_to_detail_mailbox)"),
        ("[limits]\nmax_connections = 0", "limits.max_connections: must be positive, not 0"),
        ("[limits]\nmax_connections_per_ip = -1", "limits.max_connections_per_ip: must be positive, not -1"),
        ("[limits]\nmax_literal_size = 1.5", "limits.max_literal_size: must be a whole number, not a float"),
        ("[limits]\nmax_nesting = true", "limits.max_nesting: must be a whole number, not a boolean"),
        ("[limits]\nmax_line_length = 200", "limits.max_line_length: must be from 1000 to 16777216, not 200"),
        ("[limits]\nprelogin_timeout = 0", "limits.prelogin_timeout: must be positive, not 0"),
        ("[limits]\nmax_conns = 1", "limits.max_conns: unknown key (known: max_connections, "),
        ("[proxy]\ntrusted = '10.0.0.0/8'", "proxy.trusted: must be a list of networks"),
        ("[proxy]\ntrusted = ['10.0.0.1/8']", "proxy.trusted[0]: '10.0.0.1/8' is not a network: 10.0.0.1/8 has host bits set"),
        ("[proxy]\ntrusted = ['example.org']", "proxy.trusted[0]: 'example.org' is not a network"),
        ("[proxy]\ntrusted = [8]", "proxy.trusted[0]: network must be a string, not an integer"),
        ("[limits]\nipv6_prefix = 16", "limits.ipv6_prefix: must be from 32 to 128, not 16"),
        ("[limits]\nipv6_prefix = 129", "limits.ipv6_prefix: must be from 32 to 128, not 129"),
        ("[limits]\nipv6_prefix = '64'", "limits.ipv6_prefix: must be a prefix length (64), not a string"),
        ("[limits]\nipv6_prefix = true", "limits.ipv6_prefix: must be a prefix length (64), not a boolean"),
        ("[limits]\npassword_checks_per_ip = 0", "limits.password_checks_per_ip: must be positive, not 0"),
        ("[limits]\nlockout_exempt_networks = ['office']",
         "limits.lockout_exempt_networks[0]: unknown network 'office' (known: local)"),
        ("[limits]\nlockout_exempt_networks = ['office.example']", "limits.lockout_exempt_networks[0]: 'office.example' is not a network"),
        ("[limits]\nlockout_exempt_networks = '10.0.0.0/8'", "limits.lockout_exempt_networks: must be a list of networks"),
        ("[proxy]\nlogin_trusted_networks = ['10.0.0.5/24']", "proxy.login_trusted_networks[0]: '10.0.0.5/24' is not a network"),
        ("[auth]\nplaintext_without_tls = ['lan']", "auth.plaintext_without_tls[0]: unknown network 'lan' (known: local)"),
        ("[networks]\nlan = ['10.0.0.0/8']\n[pop3]\nnetworks = ['lan', 'wan']",
         "pop3.networks[1]: unknown network 'wan' (known: lan, local)"),
        ("[imap]\nnetworks = 'lan'", "imap.networks: must be a list of networks"),
        ("[limits]\nper_ip_exempt_networks = ['office']", "limits.per_ip_exempt_networks[0]: unknown network 'office'"),
        ("[proxy]\ntrusted = ['balancers']", "proxy.trusted[0]: unknown network 'balancers' (known: local)"),
        ("[networks]\nlan = ['192.168.0.0/33']", "networks.lan[0]: '192.168.0.0/33' is not a network"),
        ("[networks]\nlan = ['192.168.1.0/16']", "networks.lan[0]: '192.168.1.0/16' is not a network: 192.168.1.0/16 has host bits set"),
        ("[networks]\nlan = ['office']", "networks.lan[0]: 'office' is not a network"),
        ("[networks]\nlan = '10.0.0.0/8'", "networks.lan: must be a list of networks"),
        ("networks = 1", "networks: must be a table of name = networks, not an integer"),
        ("[networks]\nlocal = ['10.0.0.0/8']", "networks: 'local' is built in (loopback addresses and UNIX sockets)"),
        ("[networks]\n'2nd' = ['10.0.0.0/8']", "networks: '2nd' is not a network name"),
        ("[auth]\nplaintext_without_tls = 'yes'", "auth.plaintext_without_tls: must be true, false or a list of networks, not a string"),
        ("[auth]\nplaintext_without_tls = ['10.0.0.1/8']", "auth.plaintext_without_tls[0]: '10.0.0.1/8' is not a network"),
        ("[listeners.legacy]\nprotocol = 'pop3s'", "listeners.legacy: endpoints is missing"),
        ("[listeners.legacy]\nendpoints = 'tcp:995'", "listeners.legacy: protocol is missing (one of 'pop3', 'imap', 'pop3s', 'imaps')"),
        ("[listeners.legacy]\nprotocol = 'lmtp'\nendpoints = 'tcp:24'",
         "listeners.legacy.protocol: must be one of 'pop3', 'imap', 'pop3s', 'imaps', not a string ('lmtp')"),
        ("[listeners.legacy]\nprotocol = 'pop3s'\nendpoints = 'tcp:995'\ntls_min_version = 1.0",
         "listeners.legacy.tls_min_version: must be one of '1.0', '1.1', '1.2', '1.3', not a float (1.0)"),
        ("[listeners.legacy]\nprotocol = 'pop3s'\nendpoints = 'tcp:995'\ntls_min_version = 'SSLv3'",
         "listeners.legacy.tls_min_version: must be one of '1.0', '1.1', '1.2', '1.3', not a string ('SSLv3')"),
        ("[listeners.legacy]\nprotocol = 'pop3s'\nendpoints = 'ssl:995'", "listeners.legacy.endpoints: 'ssl:995': use a tcp:"),
        ("[listeners.legacy]\nprotocol = 'pop3s'\nendpoints = 'tcp:995'\nnetworks = ['lan']",
         "listeners.legacy.networks[0]: unknown network 'lan' (known: local)"),
        ("[listeners.legacy]\nprotocol = 'pop3s'\nendpoints = 'tcp:995'\nport = 995",
         "listeners.legacy.port: unknown key (known: protocol, endpoints, tls_min_version, networks)"),
        ("[listeners.'old pop']\nprotocol = 'pop3s'\nendpoints = 'tcp:995'",
         "listeners.old pop: a name is letters, digits, '-' and '_', at most 64"),
        ("[listeners]\nlegacy = 'tcp:995'", "listeners.legacy: unknown key (known: pop3, imap, lmtp, pop3s, imaps, metrics, [listeners.NAME])"),
        ("[tls]\nrsa_certificate = ''", "tls: rsa_certificate and rsa_key are a pair: give both, or both \"\""),
        ("[tls]\nrsa_key = 1", "tls.rsa_key: must be a file path string, not an integer"),
        ("[store]\nbackend = 'maildir'", "store.backend: must be one of 'sqlite', 'postgresql', not a string ('maildir')"),
        ("[store]\nflag_durability = 'lazy'", "store.flag_durability: must be one of 'batched', 'immediate', not a string"),
        ("[store]\nflag_durability = true", "store.flag_durability: must be one of 'batched', 'immediate', not a boolean"),
        ("[store]\nparse = 'never'", "store.parse: must be one of 'delivery', 'first-fetch', not a string ('never')"),
        ("[store.blobs]\nkind = 'ftp'", "store.blobs.kind: must be one of 's3', 'postgresql', not a string ('ftp')"),
        ("[store]\npool_size = 0", "store.pool_size: must be from 1 to 1000, not 0"),
        ("[store]\npath = '/srv'", "store.path: unknown key (known: backend, flag_durability, parse, dsn, pool_size, connect_timeout, [blobs])"),
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


def test_plaintext_without_tls_defaults_off_and_reads_a_boolean():
    assert Config().auth.plaintext_without_tls is False
    assert loads("[auth]\nplaintext_without_tls = true\n").auth.plaintext_without_tls is True
    with pytest.raises(ConfigError, match="plaintext_without_tls"):
        loads('[auth]\nplaintext_without_tls = "yes"\n')


def test_delete_policy_per_user():
    config = loads('[pop3]\ndelete_policy = "trash"\ndelete_policy_users = { alice = "hide", bob = "expunge" }\n')
    assert config.pop3.delete_policy_for("alice") == "hide"
    assert config.pop3.delete_policy_for("bob") == "expunge"
    assert config.pop3.delete_policy_for("carol") == "trash"
    with pytest.raises(ConfigError, match=r"pop3\.delete_policy_users\.alice"):
        loads('[pop3]\ndelete_policy_users = { alice = "shred" }\n')
    with pytest.raises(ConfigError, match="delete_policy_users"):
        loads('[pop3]\ndelete_policy_users = "hide"\n')


def test_networks_by_name_everywhere_a_list_of_networks_is_asked():
    config = loads(
        """
        [networks]
        lan = ["192.168.0.0/16", "fd00::/8"]
        scanners = ["192.168.50.0/24"]
        balancers = ["10.0.0.2"]
        [auth]
        plaintext_without_tls = ["local", "scanners"]
        [pop3]
        networks = ["lan"]
        [imap]
        networks = ["lan", "203.0.113.0/24"]
        [limits]
        lockout_exempt_networks = ["lan"]
        per_ip_exempt_networks = ["lan"]
        [proxy]
        trusted = ["balancers", "127.0.0.1/32"]
        login_trusted_networks = ["balancers"]
        """
    )
    assert config.networks == (("balancers", ("10.0.0.2",)), ("lan", ("192.168.0.0/16", "fd00::/8")),
                                ("scanners", ("192.168.50.0/24",)))
    plaintext = config.plaintext_networks
    assert "192.168.50.9" in plaintext and "127.0.0.1" in plaintext and "local" in plaintext
    assert "192.168.51.9" not in plaintext
    assert "fd00::1" in config.resolve(config.pop3.networks) and "203.0.113.5" not in config.resolve(config.pop3.networks)
    assert "203.0.113.5" in config.resolve(config.imap.networks)
    assert "10.0.0.2" in config.resolve(config.proxy.trusted) and "127.0.0.1" in config.resolve(config.proxy.trusted)
    # Resolved once per list, as the protocols ask at each connection.
    assert config.resolve(config.pop3.networks) is config.resolve(config.pop3.networks)


def test_old_configs_keep_loading():
    config = loads('[auth]\nplaintext_without_tls = true\n[limits]\nlockout_exempt_networks = ["192.0.2.0/24"]\n')
    assert "198.51.100.1" in config.plaintext_networks and "local" in config.plaintext_networks
    assert "192.0.2.9" in config.resolve(config.limits.lockout_exempt_networks)
    default = Config().plaintext_networks
    assert "127.0.0.1" in default and "::1" in default and "local" in default and "192.0.2.1" not in default


def test_listeners_of_their_own():
    config = loads(
        """
        [networks]
        lan = ["192.168.0.0/16"]
        [listeners.legacy]
        protocol = "pop3s"
        endpoints = ["tcp:995:interface=192.168.1.10", 'tcp6:995:interface=fd00\\:\\:10']
        tls_min_version = "1.0"
        networks = ["lan"]
        [listeners.scanner-pop3]
        protocol = "pop3"
        endpoints = "tcp:110:interface=192.168.50.1"
        """
    )
    (legacy_name, legacy), (scanner_name, scanner) = config.listeners.named
    assert (legacy_name, scanner_name) == ("legacy", "scanner-pop3")
    assert legacy == ListenerConfig("pop3s", ("tcp:995:interface=192.168.1.10", "tcp6:995:interface=fd00\\:\\:10"),
                                    "1.0", ("lan",))
    assert legacy.legacy_tls and not scanner.legacy_tls
    assert scanner.tls_min_version == "1.2" and scanner.networks == ()
    assert dict(config.listeners.endpoint_lists())["legacy.endpoints"] == legacy.endpoints
    # The built-in lists stay as they were.
    assert config.listeners.pop3s == () and config.listeners.pop3 == ("tcp:1110:interface=127.0.0.1",)


def test_a_second_tls_pair():
    assert Config().tls.rsa_certificate == "tls/rsa-cert.pem" and Config().tls.rsa_key == "tls/rsa-key.pem"
    config = loads('[tls]\nrsa_certificate = "/etc/ssl/rsa.pem"\nrsa_key = "/etc/ssl/private/rsa.key"\n')
    assert (config.tls.rsa_certificate, config.tls.rsa_key) == ("/etc/ssl/rsa.pem", "/etc/ssl/private/rsa.key")
    assert loads('[tls]\nrsa_certificate = ""\nrsa_key = ""\n').tls.rsa_certificate == ""


def test_store_defaults_to_sqlite_with_batched_flags():
    assert Config().store == StoreConfig("sqlite", "batched")


def test_a_tool_reads_the_given_file_else_the_data_dirs_else_the_defaults(tmp_path):
    assert load_for_tool(tmp_path) == Config()
    assert not (tmp_path / "gateway.toml").exists()
    (tmp_path / "gateway.toml").write_text("[store]\nflag_durability = 'immediate'\n")
    assert load_for_tool(tmp_path).store.flag_durability == "immediate"
    other = tmp_path / "other.toml"
    other.write_text("hostname = 'mx.example.org'\n")
    assert load_for_tool(tmp_path, other).hostname == "mx.example.org"
    with pytest.raises(ConfigError, match="cannot read"):
        load_for_tool(tmp_path, tmp_path / "absent.toml")


def test_workers_default_to_one_process():
    assert loads("").server.workers == 1
    assert loads("[server]\nworkers = 4").server.workers == 4


def test_workers_auto_is_one_per_core_this_process_may_use(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 2, 5})
    assert loads('[server]\nworkers = "auto"').server.workers == 3
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(200)))
    assert loads('[server]\nworkers = "auto"').server.workers == 64
    # Where affinity is unknown: the machine's cores, or one process.
    monkeypatch.delattr("os.sched_getaffinity")
    monkeypatch.setattr("os.cpu_count", lambda: None)
    assert loads('[server]\nworkers = "auto"').server.workers == 1


@pytest.mark.parametrize(
    "value, problem",
    [
        ("0", "server.workers: must be from 1 to 64 (or \"auto\"), not 0"),
        ("65", "server.workers: must be from 1 to 64 (or \"auto\"), not 65"),
        ("2.5", "server.workers: must be a whole number or \"auto\", not a float (2.5)"),
        ("true", "server.workers: must be a whole number or \"auto\", not a boolean (true)"),
        ('"all"', "server.workers: must be a whole number or \"auto\", not a string ('all')"),
    ],
)
def test_workers_refused_in_one_line(value, problem):
    with pytest.raises(ConfigError) as raised:
        loads(f"[server]\nworkers = {value}", "gw.toml")
    assert str(raised.value) == f"gw.toml: {problem}"
    assert "\n" not in str(raised.value)


def test_workers_change_needs_a_restart():
    from gateway.reload import plan_reload

    plan = plan_reload(loads(""), loads("[server]\nworkers = 2"))
    assert plan.needs_restart == ("server.workers",)
    assert plan.config.server.workers == 1

