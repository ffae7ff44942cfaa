"""Integration fixtures: throwaway roles and users on real servers.

PostgreSQL on the test machines trusts every local connection, so a wrong password would
be accepted there: the roles a test creates live on a private cluster that checks them
(`tests/support/private_pg.py`), each a member of its group `relink_pwcheck`. MariaDB on
loopback checks passwords already.
"""

from __future__ import annotations

import secrets
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import sqlalchemy as sa
from psycopg import sql

from tests.support.private_pg import PWCHECK_GROUP, admin_engine


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
        self.url = engine.url.render_as_string(hide_password=False)  # where the roles are
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
    """A superuser engine on the loopback test server (the app databases live there)."""
    with admin_engine(postgres_url) as engine:
        yield engine


@pytest.fixture
def pg_admin(pwcheck_engine: sa.Engine) -> Iterator[PgAdmin]:
    """Roles and schemas for one test on the private, password-checking cluster; a
    connection to them names `pg_admin.url`'s host, port and database."""
    admin = PgAdmin(pwcheck_engine)
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
