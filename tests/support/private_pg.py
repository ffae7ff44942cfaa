"""A private PostgreSQL cluster for the tests that need real password checks.

The loopback test server trusts every local connection, so a wrong password would be
accepted there. `PrivatePostgres` runs a throwaway cluster of its own instead: `initdb`
and `pg_ctl` into a directory under the system temp directory, listening on a free
loopback port, with its own hba file. Members of the group role `relink_pwcheck` and the
cluster's superuser (a random password) are checked with scram-sha-256; any other name
is trusted, so a login as a role that does not exist fails as it does on the loopback
server ("role ... does not exist"). When the tests run as root, the cluster runs as the
`postgres` OS user (initdb refuses root). Nothing outside that directory is touched, and
`stop` removes it.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PWCHECK_GROUP = "relink_pwcheck"
DATABASE = "test"
SUPERUSER = "postgres"
START_TIMEOUT = 120  # seconds: a loaded 2-core machine is slow to start a cluster
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",  # a throwaway cluster: nothing needs to survive a crash
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "16MB",
    "max_connections": "60",
}


class PostgresUnavailable(RuntimeError):
    """The private cluster cannot be started here (no binaries, no postgres user...)."""


def find_bindir() -> Path:
    """Where `initdb` and `pg_ctl` are: RELINK_TEST_PG_BINDIR, `pg_config`, Debian's path."""
    candidates = [os.environ.get("RELINK_TEST_PG_BINDIR", "")]
    if pg_config := shutil.which("pg_config"):
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
            candidates.append(out.stdout.strip())
        except OSError:
            pass
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    if initdb := shutil.which("initdb"):
        candidates.append(str(Path(initdb).resolve().parent))
    for folder in filter(None, candidates):
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    raise PostgresUnavailable(
        "no initdb/pg_ctl found (install PostgreSQL's server package, or set RELINK_TEST_PG_BINDIR)"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivatePostgres:
    """One throwaway cluster: `start()` it, use `url` (the superuser's), `stop()` it."""

    def __init__(self, bindir: Path | None = None) -> None:
        self.bindir = bindir or find_bindir()
        self.as_root = os.geteuid() == 0
        self.password = secrets.token_urlsafe(18)
        self.folder: Path | None = None
        self.port = 0
        self.running = False

    @property
    def data(self) -> Path:
        assert self.folder is not None
        return self.folder / "data"

    @property
    def url(self) -> str:
        return sa.engine.URL.create(
            "postgresql+psycopg",
            username=SUPERUSER,
            password=self.password,
            host="127.0.0.1",
            port=self.port,
            database=DATABASE,
        ).render_as_string(hide_password=False)

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:  # initdb and postgres refuse to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.folder)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise PostgresUnavailable(f"{args[0]} failed: {' | '.join(tail)}")

    def start(self) -> PrivatePostgres:
        self.folder = Path(tempfile.mkdtemp(prefix="relink-pg-"))
        pwfile = self.folder / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.as_root:
            try:
                shutil.chown(self.folder, "postgres", "postgres")
                shutil.chown(pwfile, "postgres", "postgres")
            except (LookupError, OSError) as exc:
                message = f"no `postgres` OS user to run the cluster as ({exc})"
                raise PostgresUnavailable(message) from None
        self._run(
            "initdb",
            "--pgdata",
            str(self.data),
            "--username",
            SUPERUSER,
            "--pwfile",
            str(pwfile),
            "--auth",
            "scram-sha-256",
            "--encoding",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        pwfile.unlink()
        self._write_hba()
        for _ in range(3):  # a free port may be taken between choosing and binding it
            self.port = free_port()
            options = {**SETTINGS, "port": str(self.port)}
            options["unix_socket_directories"] = str(self.folder)
            flags = " ".join(f"-c {k}={v}" for k, v in options.items())
            try:
                self._run(
                    "pg_ctl",
                    "--pgdata",
                    str(self.data),
                    "--log",
                    str(self.folder / "server.log"),
                    "--wait",
                    f"--timeout={START_TIMEOUT}",
                    "-o",
                    flags,
                    "start",
                )
            except PostgresUnavailable:
                continue
            self.running = True
            break
        else:
            log = (self.folder / "server.log").read_text(errors="replace")[-600:]
            self.stop()
            raise PostgresUnavailable(f"the private cluster did not start: {log}")
        self._prepare()
        return self

    def _write_hba(self) -> None:
        hba = self.data / "pg_hba.conf"
        hba.write_text(
            "# relink tests' private cluster (tests/support/private_pg.py)\n"
            "local all all trust\n"  # the socket is in a folder only its OS user may enter
            f"host all {SUPERUSER} 127.0.0.1/32 scram-sha-256\n"
            f"host all +{PWCHECK_GROUP} 127.0.0.1/32 scram-sha-256\n"
            "host all all 127.0.0.1/32 trust\n"  # only names that are no role reach this
        )

    def _prepare(self) -> None:
        with psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=SUPERUSER,
            password=self.password,
            dbname="postgres",
            autocommit=True,
        ) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")
            conn.execute(f"CREATE ROLE {PWCHECK_GROUP} NOLOGIN")

    def wrong_password_refused(self, role: str) -> bool:
        try:
            psycopg.connect(
                host="127.0.0.1",
                port=self.port,
                dbname=DATABASE,
                user=role,
                password="certainly-not-the-password",
                connect_timeout=3,
            ).close()
        except psycopg.OperationalError as exc:
            return "password authentication failed" in str(exc)
        return False

    def stop(self) -> None:
        """Stop the server (fast: its sessions are ended) and remove its folder."""
        if self.folder is None:
            return
        if self.running:
            try:
                self._run("pg_ctl", "--pgdata", str(self.data), "--mode", "fast", "stop")
            except PostgresUnavailable:
                self._run("pg_ctl", "--pgdata", str(self.data), "--mode", "immediate", "stop")
            self.running = False
        deadline = time.monotonic() + 10
        while (self.data / "postmaster.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None


# --- fixtures (a pytest plugin: tests/conftest.py lists this module) ---------------------


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    """The cluster, started on first use and stopped at the end of the session (with
    pytest-xdist, one per worker)."""
    try:
        cluster = PrivatePostgres().start()
    except PostgresUnavailable as exc:
        message = f"the password-checking PostgreSQL cannot start: {exc}"
        if IN_CI:
            pytest.fail(f"CI=true and the test setup is impossible: {message}", pytrace=False)
        pytest.skip(message)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def pwcheck_postgres_url(private_postgres: PrivatePostgres) -> str:
    """The superuser URL of the private cluster; its `relink_pwcheck` members' passwords
    are checked (`PgAdmin.create_role` makes such members)."""
    return private_postgres.url


@contextmanager
def admin_engine(url: str) -> Iterator[sa.Engine]:
    """A superuser engine, each statement committed on its own, no pooled connections."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def pwcheck_engine(pwcheck_postgres_url: str) -> Iterator[sa.Engine]:
    with admin_engine(pwcheck_postgres_url) as engine:
        yield engine
