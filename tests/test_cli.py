"""
The command-line contract: one clear line on stderr and a non-zero exit for
every problem, never a traceback.
"""

import os
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.serverproc import LOOPBACK, GatewayProcess, gateway_command, run_gateway


def test_uidl_prints_dovecot_default_format():
    out = subprocess.run(gateway_command("uidl", "1795715069", "1"), capture_output=True, check=True)
    assert out.stdout == b"000000016b086ffd\n"


@pytest.mark.parametrize(
    "fmt, expected",
    [("%v.%u", b"1795715069.1\n"), ("%v-%u", b"1795715069-1\n"), ("%08Xv%08Xu", b"6b086ffd00000001\n")],
)
def test_uidl_compatibility_formats(fmt, expected):
    out = subprocess.run(gateway_command("uidl", "--format", fmt, "1795715069", "1"), capture_output=True, check=True)
    assert out.stdout == expected


@pytest.mark.parametrize(
    "args",
    [("--format", "%v", "1", "1"), ("0", "1"), ("1", "4294967296"), ("1", "-5"), ("1", "+5")],
)
def test_uidl_bad_input_is_one_line(args):
    out = subprocess.run(gateway_command("uidl", *args), capture_output=True)
    assert out.returncode != 0
    assert b"Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) <= 2  # argparse prints usage + error


def test_user_add_list_passwd_del(tmp_path):
    data = tmp_path / "data"
    run_gateway(data, "user", "add", "alice", input=b"secret\n")
    run_gateway(data, "user", "add", "bob", input=b"other\n")
    assert run_gateway(data, "user", "list").stdout == b"alice\nbob\n"
    assert oct((data / "users").stat().st_mode & 0o777) == "0o600"
    assert oct(data.stat().st_mode & 0o777) == "0o700"
    before = (data / "users").read_text()
    run_gateway(data, "user", "passwd", "alice", input=b"changed\n")
    assert (data / "users").read_text() != before
    run_gateway(data, "user", "del", "bob")
    assert run_gateway(data, "user", "list").stdout == b"alice\n"


@pytest.mark.parametrize(
    "args, stdin, needle",
    [
        (("user", "add", "alice"), b"again\n", b"exists"),
        (("user", "passwd", "nobody"), b"x\n", b"no such user"),
        (("user", "del", "nobody"), b"", b"no such user"),
        (("user", "add", "bad:name"), b"x\n", b"bad:name"),
        (("user", "add", "carol"), b"\n", b"empty password"),
    ],
)
def test_user_errors_are_one_line(tmp_path, args, stdin, needle):
    data = tmp_path / "data"
    run_gateway(data, "user", "add", "alice", input=b"secret\n")
    out = run_gateway(data, *args, input=stdin, check=False)
    assert out.returncode != 0
    assert needle in out.stderr
    assert b"Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_check_config(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('[pop3]\nuidl_format = "%v.%u"\n')
    assert run_gateway(tmp_path, "check-config", "--config", str(good)).returncode == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('[pop3]\nuidl_format = "%v"\n')
    out = run_gateway(tmp_path, "check-config", "--config", str(bad), check=False)
    assert out.returncode != 0 and b"uidl_format" in out.stderr and b"Traceback" not in out.stderr




@pytest.mark.parametrize(
    ("listener", "problem"),
    [
        ("unix:{d}/missing/lmtp.sock", "directory {d}/missing does not exist"),
        ("unix:{d}/good.toml", "{d}/good.toml exists and is not a socket"),
        ("unix:{d}/lmtp.sock:group=no-such-group", "group=no-such-group: no such group"),
        ("unix:lmtp.sock", "socket path 'lmtp.sock' must be absolute"),
        ("haproxy:unix:{d}/lmtp.sock", "the PROXY protocol is taken on TCP listeners only"),
    ],
)
def test_check_config_finds_what_a_unix_listener_would_fail_on(tmp_path, listener, problem):
    # The same line the server start would print, before it is started.
    (tmp_path / "good.toml").write_text("")
    config = tmp_path / "gateway.toml"
    listener = listener.format(d=tmp_path)
    config.write_text(f'[listeners]\nlmtp = ["tcp:2424", "{listener}"]\n')
    out = run_gateway(tmp_path, "check-config", "--config", str(config), check=False)
    assert out.returncode == 1, out.stdout
    assert out.stderr.decode().startswith(f"gateway: {config}: listeners.lmtp")
    assert out.stderr.decode().endswith(f"'{listener}': {problem.format(d=tmp_path)}\n")
    assert out.stderr.count(b"\n") == 1
    config.write_text(f'[listeners]\nlmtp = "unix:{tmp_path}/lmtp.sock:mode=0660"\n')
    assert run_gateway(tmp_path, "check-config", "--config", str(config)).stdout.decode() == f"{config}: ok\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run check-config as another user")
def test_check_config_finds_a_socket_directory_the_user_cannot_write():
    # Under /tmp itself: pytest's own directories are closed to other users.
    with tempfile.TemporaryDirectory(dir="/tmp") as name:
        check_as_nobody(Path(name))


def check_as_nobody(tmp_path):
    tmp_path.chmod(0o755)
    (tmp_path / "run").mkdir(mode=0o755)
    config = tmp_path / "gateway.toml"
    config.write_text(f'[listeners]\nlmtp = "unix:{tmp_path}/run/lmtp.sock"\n')
    config.chmod(0o644)
    out = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
         *gateway_command("--data", str(tmp_path / "data"), "check-config", "--config", str(config))],
        capture_output=True, timeout=60,
    )
    assert out.returncode == 1
    assert out.stderr.decode() == (
        f"gateway: {config}: listeners.lmtp: 'unix:{tmp_path}/run/lmtp.sock': "
        f"directory {tmp_path}/run is not writable by user nobody\n"
    )


def test_server_port_in_use_is_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = GatewayProcess(tmp_path / "data", pop3=f"tcp:{port}:interface=127.0.0.1")
        with pytest.raises(RuntimeError) as excinfo:
            server.start()
    message = str(excinfo.value)
    assert "in use" in message.lower() and "Traceback" not in message


def test_server_bad_config_is_one_line(tmp_path):
    config = tmp_path / "gateway.toml"
    config.write_text("[pop3]\nno_such_option = 1\n")
    server = GatewayProcess(tmp_path / "data", config=config)
    with pytest.raises(RuntimeError) as excinfo:
        server.start()
    assert "no_such_option" in str(excinfo.value) and "Traceback" not in str(excinfo.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any directory")
def test_server_unusable_data_dir_is_one_line(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o000)
    server = GatewayProcess(data)
    with pytest.raises(RuntimeError) as excinfo:
        server.start()
    assert "data dir" in str(excinfo.value) and "Traceback" not in str(excinfo.value)


def test_server_data_dir_that_is_a_file_is_one_line(tmp_path):
    data = tmp_path / "data"
    data.write_text("not a directory")
    server = GatewayProcess(data)
    with pytest.raises(RuntimeError) as excinfo:
        server.start()
    assert "data dir" in str(excinfo.value) and "Traceback" not in str(excinfo.value)


def test_server_writes_default_config_and_serves_loopback(tmp_path):
    with GatewayProcess(tmp_path / "data", lmtp=None) as server:
        assert (tmp_path / "data" / "gateway.toml").exists()
        assert server.ports["lmtp"] == []
        for address in server.ports["pop3"] + server.ports["imap"]:
            assert address.startswith("127.0.0.1:")
    assert LOOPBACK.endswith("127.0.0.1")


def test_check_config_missing_file_is_one_line(tmp_path):
    out = run_gateway(tmp_path, "check-config", "--config", str(tmp_path / "absent.toml"), check=False)
    assert out.returncode != 0
    assert b"absent.toml: cannot read" in out.stderr and b"Traceback" not in out.stderr
