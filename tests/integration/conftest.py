"""Integration fixtures: throwaway roles and users on the real loopback servers.

PostgreSQL on the test machines trusts every local connection, so a wrong password
would be accepted. `pg_password_auth` makes password checking real for one group
role only (`relink_pwcheck`): every role a test creates is a member of it, every other
role keeps `trust`. MariaDB checks passwords already.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

PWCHECK_GROUP = "relink_pwcheck"
HBA_LINE = f"host all +{PWCHECK_GROUP} 127.0.0.1/32 scram-sha-256"
HBA_LOCK = Path("/tmp/relink-tests-pg-hba.lock")


def unavailable(message: str) -> None:
    """Skip on a developer's machine, fail under CI=true (a green CI means it ran)."""
    if IN_CI:
        pytest.fail(f"CI=true and the test setup is impossible: {message}", pytrace=False)
    pytest.skip(message)


def unique_name() -> str:
    return f"relink_t_{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class DbUser:
    name: str
    password: str = field(repr=False)


# --- PostgreSQL ---------------------------------------------------------------------


class PgAdmin:
    """Superuser helper: creates roles/schemas for one test and drops them afterwards."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.roles: list[str] = []
        self.schemas: list[str] = []

    def execute(self, statement: str | sql.Composable) -> list[tuple]:
        with self.engine.connect() as conn:
            raw = conn.connection.driver_connection
            cur = raw.execute(statement)
            return cur.fetchall() if cur.description else []

    def create_role(self, password: str | None = None) -> DbUser:
        user = DbUser(unique_name(), password or secrets.token_urlsafe(16))
        self.roles.append(user.name)
        self.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
                sql.Identifier(user.name), sql.Literal(user.password), sql.Identifier(PWCHECK_GROUP)
            )
        )
        return user

    def set_password(self, role: str, password: str) -> None:
        self.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))
        )

    def create_schema(self, reader: str) -> str:
        """A schema with a small table `items` that `reader` may read."""
        schema = unique_name()
        self.schemas.append(schema)
        s, r = sql.Identifier(schema), sql.Identifier(reader)
        for statement in (
            sql.SQL("CREATE SCHEMA {}").format(s),
            sql.SQL("CREATE TABLE {}.items (id int PRIMARY KEY, name text, price numeric)").format(
                s
            ),
            sql.SQL(
                "INSERT INTO {}.items VALUES (1, 'apple', 1.50), (2, 'pear', 2.25), (3, 'fig', 4)"
            ).format(s),
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(s, r),
            sql.SQL("GRANT SELECT ON {}.items TO {}").format(s, r),
        ):
            self.execute(statement)
        return schema

    def cleanup(self) -> None:
        for schema in self.schemas:
            self.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        for role in self.roles:
            if self.execute(
                sql.SQL("SELECT 1 FROM pg_roles WHERE rolname = {}").format(sql.Literal(role))
            ):
                self.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                self.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.fixture(scope="session")
def pg_engine(postgres_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(
        postgres_url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT"
    )
    yield engine
    engine.dispose()


def _first_hba_rule_is_ours(text: str) -> bool:
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return stripped.split() == HBA_LINE.split()
    return False


def _server_reads_our_rule_first(admin: PgAdmin) -> bool:
    """What the server parsed from the hba file on disk (pg_hba_file_rules), rule 1."""
    rules = admin.execute(
        "SELECT type, database, user_name, address, netmask, auth_method"
        " FROM pg_hba_file_rules WHERE error IS NULL ORDER BY line_number LIMIT 1"
    )
    expected = ("host", ["all"], [f"+{PWCHECK_GROUP}"], "127.0.0.1", "255.255.255.255")
    return bool(rules) and rules[0][:5] == expected and rules[0][5] == "scram-sha-256"


def _put_hba_line_on_top(hba_file: Path) -> None:
    text = hba_file.read_text()
    if _first_hba_rule_is_ours(text):
        return
    # In place (r+), so the file keeps its owner and mode (postgres, 0640).
    with hba_file.open("r+") as handle:
        handle.seek(0)
        handle.write(f"{HBA_LINE}\n{text}")
        handle.truncate()


@contextlib.contextmanager
def _hba_lock() -> Iterator[None]:
    """Test sessions may run side by side on one machine; one edits the file at a time."""
    with HBA_LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _wrong_password_refused(postgres_url: str, role: str) -> bool:
    url = sa.engine.make_url(postgres_url)
    try:
        psycopg.connect(
            host=url.host,
            port=url.port or 5432,
            dbname=url.database,
            user=role,
            password="certainly-not-the-password",
            connect_timeout=3,
        ).close()
    except psycopg.OperationalError as exc:
        return "password authentication failed" in str(exc)
    return False


@pytest.fixture(scope="session")
def pg_password_auth(postgres_url: str, pg_engine: sa.Engine) -> str:
    """Make PostgreSQL check passwords for members of `relink_pwcheck`; return the group.

    Idempotent: the group role is created if missing, and `HBA_LINE` is put at the top
    of the server's hba file only if it is not the first rule already; the rest of the
    file is left as it is. The line stays afterwards (it only concerns that group).
    """
    admin = PgAdmin(pg_engine)
    if not admin.execute(
        sql.SQL("SELECT 1 FROM pg_roles WHERE rolname = {}").format(sql.Literal(PWCHECK_GROUP))
    ):
        with contextlib.suppress(psycopg.errors.DuplicateObject):  # a parallel session won
            admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(PWCHECK_GROUP)))

    hba_file = Path(admin.execute("SHOW hba_file")[0][0])
    problem = None
    try:
        with _hba_lock():
            # Checked through the server first: a tester who may not read the file
            # still runs the tests once the line is in place.
            if not _server_reads_our_rule_first(admin):
                _put_hba_line_on_top(hba_file)
    except OSError as exc:
        problem = f"{type(exc).__name__}: {exc.strerror}"
    if problem:
        unavailable(
            f"cannot edit {hba_file} to require passwords for +{PWCHECK_GROUP} ({problem}); "
            f"run the tests as a user that may write it, or add `{HBA_LINE}` at its top"
        )
    admin.execute("SELECT pg_reload_conf()")

    # The reload is asynchronous: poll until a member's wrong password is refused.
    probe = admin.create_role()
    try:
        deadline = time.monotonic() + 5
        while not _wrong_password_refused(postgres_url, probe.name):
            if time.monotonic() > deadline:
                unavailable(
                    f"{hba_file} starts with `{HBA_LINE}` but PostgreSQL still accepts a "
                    "wrong password for that group (is the URL's host 127.0.0.1?)"
                )
            time.sleep(0.05)
    finally:
        admin.cleanup()
    return PWCHECK_GROUP


@pytest.fixture
def pg_admin(pg_engine: sa.Engine, pg_password_auth: str) -> Iterator[PgAdmin]:
    admin = PgAdmin(pg_engine)
    yield admin
    admin.cleanup()


# --- MariaDB ------------------------------------------------------------------------

# Which account a TCP login from 127.0.0.1 matches depends on the server: with
# skip_name_resolve=ON (this machine) 127.0.0.1 only matches '127.0.0.1' and '%'; with
# it OFF the address resolves to 'localhost', and an anonymous ''@'localhost' (present
# on some installs) would be chosen over 'name'@'%'. Creating the user on all three
# hosts, with the same password and grants, makes the login land on it everywhere;
# `MariaAdmin.create_user` checks that it did.
MARIADB_HOSTS = ("%", "127.0.0.1", "localhost")


class MariaAdmin:
    def __init__(self, url: str) -> None:
        self.url = sa.engine.make_url(url)
        self.engine = sa.create_engine(
            self.url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT"
        )
        self.users: list[str] = []
        self.tables: list[str] = []

    def execute(self, statement: str, **params: object) -> list[tuple]:
        with self.engine.connect() as conn:
            result = conn.execute(sa.text(statement), params)
            return [tuple(row) for row in result] if result.returns_rows else []

    def create_user(self, password: str | None = None) -> DbUser:
        user = DbUser(unique_name(), password or secrets.token_urlsafe(16))
        self.users.append(user.name)
        for host in MARIADB_HOSTS:
            self.execute(f"CREATE USER '{user.name}'@'{host}' IDENTIFIED BY :pw", pw=user.password)
            self.execute(f"GRANT ALL PRIVILEGES ON test.* TO '{user.name}'@'{host}'")
        self._check_login(user)
        return user

    def _check_login(self, user: DbUser) -> None:
        url = self.url.set(username=user.name, password=user.password)
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                current = conn.execute(sa.text("SELECT CURRENT_USER()")).scalar_one()
        finally:
            engine.dispose()
        assert current.startswith(f"{user.name}@"), f"login landed on {current}"

    def set_password(self, name: str, password: str) -> None:
        for host in MARIADB_HOSTS:
            self.execute(f"ALTER USER '{name}'@'{host}' IDENTIFIED BY :pw", pw=password)

    def create_table(self) -> str:
        table = unique_name()
        self.tables.append(table)
        self.execute(
            f"CREATE TABLE test.{table} (id INT PRIMARY KEY, name VARCHAR(20), price DECIMAL(6,2))"
        )
        self.execute(
            f"INSERT INTO test.{table} VALUES (1, 'apple', 1.50), (2, 'pear', 2.25), (3, 'fig', 4)"
        )
        return table

    def cleanup(self) -> None:
        for table in self.tables:
            self.execute(f"DROP TABLE IF EXISTS test.{table}")
        for name in self.users:
            for host in MARIADB_HOSTS:
                self.execute(f"DROP USER IF EXISTS '{name}'@'{host}'")
        self.engine.dispose()


@pytest.fixture
def maria_admin(mariadb_url: str) -> Iterator[MariaAdmin]:
    admin = MariaAdmin(mariadb_url)
    yield admin
    admin.cleanup()


@pytest.fixture
def nobody() -> DbUser:
    """Credentials for checks that never reach a server (closed port, unknown host)."""
    return DbUser("relink_nobody", "irrelevant")


# --- sockets ------------------------------------------------------------------------


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on (bound to learn a free one, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections (kernel backlog) and never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]
