"""
``gateway.privileges.hand_over_data_dir``: what a root-started server gives
to the user twistd switches to, and what it refuses to touch.  Changing
owners needs root; those tests skip otherwise.
"""

from __future__ import annotations

import os
import pwd

import pytest

from gateway.privileges import PrivilegeError, hand_over_data_dir, target_ids

NOBODY = pwd.getpwnam("nobody")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="changing file owners needs root")


def make_data_dir(root):
    """A data dir as a first start as root leaves it, plus foreign things."""
    data = root / "data"
    for directory in ("store/mail/1", "store/tmp", "run", "tls"):
        (data / directory).mkdir(parents=True, mode=0o700)
    for name in ("users", "gateway.toml", "store/index.sqlite", "store/mail/1/1", "run/ports.json", "tls/key.pem"):
        (data / name).write_text("x")
    (data / "notes.txt").write_text("the admin's, not the server's")
    (root / "secret").write_text("outside")
    (data / "store" / "link").symlink_to(root / "secret")
    return data


def owners(paths):
    return {path.name: (path.lstat().st_uid, path.lstat().st_gid) for path in paths}


def test_target_ids_default_the_group_as_twistd_does():
    assert target_ids(None, None) is None
    assert target_ids(NOBODY.pw_uid, None) == (NOBODY.pw_uid, NOBODY.pw_gid)
    assert target_ids(NOBODY.pw_uid, 4242) == (NOBODY.pw_uid, 4242)


def test_nothing_to_do_unless_root_switches_to_another_user(tmp_path):
    data = make_data_dir(tmp_path)
    before = owners(data.rglob("*"))
    assert hand_over_data_dir(data, None, None, euid=0) == []
    assert hand_over_data_dir(data, 0, 0, euid=0) == []
    assert hand_over_data_dir(data, NOBODY.pw_uid, None, euid=1000) == []
    assert owners(data.rglob("*")) == before


@needs_root
def test_root_hands_the_servers_files_to_the_user(tmp_path):
    data = make_data_dir(tmp_path)
    foreign = data / "store" / "tmp" / "someone-elses"
    foreign.write_text("x")
    os.chown(foreign, 12345, 12345)
    target = (NOBODY.pw_uid, NOBODY.pw_gid)
    changed = hand_over_data_dir(data, NOBODY.pw_uid, None, euid=0)
    ours = [data, data / "users", data / "gateway.toml", data / "store", data / "store" / "index.sqlite",
            data / "store" / "mail", data / "store" / "mail" / "1", data / "store" / "mail" / "1" / "1",
            data / "store" / "tmp", data / "run", data / "run" / "ports.json", data / "tls", data / "tls" / "key.pem"]
    assert sorted(changed) == sorted(ours)
    assert set(owners(ours).values()) == {target}
    # Not the server's: the admin's notes, another user's file, the target
    # of a symbolic link (nor the link itself).
    assert (data / "notes.txt").stat().st_uid == 0
    assert foreign.stat().st_uid == 12345
    assert (tmp_path / "secret").stat().st_uid == 0
    assert (data / "store" / "link").lstat().st_uid == 0
    # A second start changes nothing more.
    assert hand_over_data_dir(data, NOBODY.pw_uid, None, euid=0) == []


@needs_root
def test_a_data_dir_of_a_third_user_is_refused(tmp_path):
    data = make_data_dir(tmp_path)
    os.chown(data, 12345, 12345)
    with pytest.raises(PrivilegeError) as raised:
        hand_over_data_dir(data, NOBODY.pw_uid, None, euid=0)
    assert str(raised.value) == (
        f"data dir {data} belongs to uid 12345, not to root or uid {NOBODY.pw_uid} the server runs as;"
        f" chown it to uid {NOBODY.pw_uid} or pick another --data"
    )
    assert (data / "users").stat().st_uid == 0
