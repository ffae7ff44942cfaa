"""The PostgreSQL and MySQL/MariaDB connectors against the real loopback servers."""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from connectors import registry
from connectors.base import AuthFailed, CheckContext, CheckResult, ConnectionSpec, FetchResult
from relink.domain.identity import Identity
from relink.domain.words import Outcome

if TYPE_CHECKING:  # fixtures come from tests/integration/conftest.py
    from tests.integration.conftest import DbUser, MariaAdmin, PgAdmin

SPECIAL = "p@ss:w/rd%!"
NOW = datetime(2025, 1, 15, 14, 0, tzinfo=UTC)


def ctx(timeout: float = 5.0) -> CheckContext:
    return CheckContext(now=NOW, timeout=timeout)


def spec(type_: str, url: str, user: DbUser, password: str | None = None, **settings: Any):
    parsed = sa.engine.make_url(url)
    values = {
        "host": parsed.host,
        "port": str(parsed.port or (5432 if type_ == "postgres" else 3306)),
        "database": parsed.database,
        "username": user.name,
    }
    values.update(settings)
    secret = user.password if password is None else password
    return ConnectionSpec(id=1, type=type_, settings=values, credentials={"password": secret})


def validate(conn: ConnectionSpec, timeout: float = 5.0) -> CheckResult:
    return asyncio.run(registry.get(conn.type).validate(conn, ctx(timeout)))


def fetch(conn: ConnectionSpec, query: str) -> FetchResult:
    return asyncio.run(registry.get(conn.type).fetch(conn, query, ctx()))


def assert_secret_absent(result: CheckResult, secret: str) -> None:
    for form in (secret, quote(secret, safe="")):
        assert form not in result.message
        assert form not in repr(result)
    assert "\n" not in result.message


# --- PostgreSQL ---------------------------------------------------------------------

pg = pytest.mark.postgres


@pg
def test_postgres_right_password_is_ok_and_tells_whose_account_user_at_host(
    pg_admin: PgAdmin,
) -> None:
    role = pg_admin.create_role()
    conn = spec("postgres", pg_admin.url, role)
    result = validate(conn)
    login = f"{role.name}@{conn.settings['host']}"
    assert result == CheckResult.ok(identity=Identity(login, login))


@pg
def test_postgres_changed_password_is_auth_failed_28P01(pg_admin: PgAdmin) -> None:
    role = pg_admin.create_role()
    pg_admin.set_password(role.name, "new")
    result = validate(spec("postgres", pg_admin.url, role))
    assert (result.outcome, result.code) == (Outcome.AUTH_FAILED, "28P01")
    assert role.name in result.message


@pg
def test_postgres_missing_database_is_auth_failed_3D000(pg_admin: PgAdmin) -> None:
    role = pg_admin.create_role()
    result = validate(spec("postgres", pg_admin.url, role, database="relink_no_such_db"))
    assert (result.outcome, result.code) == (Outcome.AUTH_FAILED, "3D000")


@pg
def test_postgres_closed_port_is_unreachable(
    postgres_url: str, closed_port: int, nobody: DbUser
) -> None:
    result = validate(spec("postgres", postgres_url, nobody, port=str(closed_port)))
    assert (result.outcome, result.code) == (Outcome.UNREACHABLE, "connection_refused")


@pg
def test_postgres_unresolvable_host_is_unreachable(postgres_url: str, nobody: DbUser) -> None:
    result = validate(spec("postgres", postgres_url, nobody, host="no-such-host.invalid"))
    assert (result.outcome, result.code) == (Outcome.UNREACHABLE, "dns")


@pg
def test_postgres_silent_server_is_unreachable_timeout(
    postgres_url: str, silent_port: int, nobody: DbUser
) -> None:
    started = time.monotonic()
    result = validate(spec("postgres", postgres_url, nobody, port=str(silent_port)), timeout=1)
    assert (result.outcome, result.code) == (Outcome.UNREACHABLE, "timeout")
    assert time.monotonic() - started < 5  # psycopg waits at least 2 s


@pg
def test_postgres_password_with_special_characters_works(pg_admin: PgAdmin) -> None:
    role = pg_admin.create_role(SPECIAL)
    assert validate(spec("postgres", pg_admin.url, role)).outcome is Outcome.OK


@pg
@pytest.mark.parametrize(
    ("case", "outcome"),
    [
        ("ok", Outcome.OK),
        ("changed_password", Outcome.AUTH_FAILED),
        ("closed_port", Outcome.UNREACHABLE),
        ("unresolvable_host", Outcome.UNREACHABLE),
    ],
)
def test_postgres_password_never_appears_in_the_message(
    case: str, outcome: Outcome, pg_admin: PgAdmin, closed_port: int
) -> None:
    secret = f"{SPECIAL}{secrets.token_hex(4)}"
    role = pg_admin.create_role(secret)
    settings = {
        "closed_port": {"port": str(closed_port)},
        "unresolvable_host": {"host": "no-such-host.invalid"},
    }.get(case, {})
    if case == "changed_password":
        pg_admin.set_password(role.name, "new")
    result = validate(spec("postgres", pg_admin.url, role, **settings))
    assert result.outcome is outcome
    assert_secret_absent(result, secret)


@pg
def test_postgres_fetch_returns_columns_and_rows(pg_admin: PgAdmin) -> None:
    role = pg_admin.create_role(SPECIAL)
    schema = pg_admin.create_schema(reader=role.name)
    # '%' and '::' reach the server as written (no bind-parameter parsing).
    query = (
        f"SELECT id, name, price::text AS price FROM {schema}.items WHERE name LIKE '%' ORDER BY id"
    )
    result = fetch(spec("postgres", pg_admin.url, role), query)
    assert result.columns == ["id", "name", "price"]
    assert result.rows == [(1, "apple", "1.50"), (2, "pear", "2.25"), (3, "fig", "4")]


@pg
def test_postgres_fetch_with_wrong_password_raises_auth_failed(pg_admin: PgAdmin) -> None:
    role = pg_admin.create_role()
    schema = pg_admin.create_schema(reader=role.name)
    with pytest.raises(AuthFailed) as caught:
        fetch(
            spec("postgres", pg_admin.url, role, password="wrong"), f"SELECT * FROM {schema}.items"
        )
    assert caught.value.code == "28P01"


# --- MariaDB ------------------------------------------------------------------------

maria = pytest.mark.mariadb


@maria
def test_mariadb_right_password_is_ok_and_tells_whose_account_user_at_host(
    maria_admin: MariaAdmin, mariadb_url: str
) -> None:
    user = maria_admin.create_user()
    conn = spec("mysql", mariadb_url, user)
    result = validate(conn)
    login = f"{user.name}@{conn.settings['host']}"  # CURRENT_USER()'s user part, not 'name@%'
    assert result == CheckResult.ok(identity=Identity(login, login))


@maria
def test_mariadb_changed_password_is_auth_failed_1045(
    maria_admin: MariaAdmin, mariadb_url: str
) -> None:
    user = maria_admin.create_user()
    maria_admin.set_password(user.name, "new")
    result = validate(spec("mysql", mariadb_url, user))
    assert (result.outcome, result.code) == (Outcome.AUTH_FAILED, "1045")


@maria
def test_mariadb_database_without_access_is_auth_failed_1044(
    maria_admin: MariaAdmin, mariadb_url: str
) -> None:
    user = maria_admin.create_user()
    result = validate(spec("mysql", mariadb_url, user, database="relink_no_such_db"))
    assert (result.outcome, result.code) == (Outcome.AUTH_FAILED, "1044")


@maria
def test_mariadb_closed_port_is_unreachable(
    mariadb_url: str, closed_port: int, nobody: DbUser
) -> None:
    result = validate(spec("mysql", mariadb_url, nobody, port=str(closed_port)))
    assert (result.outcome, result.code) == (Outcome.UNREACHABLE, "connection_refused")


@maria
def test_mariadb_unresolvable_host_is_unreachable(mariadb_url: str, nobody: DbUser) -> None:
    result = validate(spec("mysql", mariadb_url, nobody, host="no-such-host.invalid"))
    assert (result.outcome, result.code) == (Outcome.UNREACHABLE, "dns")


@maria
def test_mariadb_silent_server_is_unreachable_timeout(
    mariadb_url: str, silent_port: int, nobody: DbUser
) -> None:
    started = time.monotonic()
    result = validate(spec("mysql", mariadb_url, nobody, port=str(silent_port)), timeout=1)
    assert (result.outcome, result.code) == (Outcome.UNREACHABLE, "timeout")
    assert time.monotonic() - started < 4


@maria
def test_mariadb_password_with_special_characters_works(
    maria_admin: MariaAdmin, mariadb_url: str
) -> None:
    user = maria_admin.create_user(SPECIAL)
    assert validate(spec("mysql", mariadb_url, user)).outcome is Outcome.OK


@maria
def test_mariadb_sslmode_disabled_connects_without_tls(
    maria_admin: MariaAdmin, mariadb_url: str
) -> None:
    user = maria_admin.create_user()
    assert validate(spec("mysql", mariadb_url, user, sslmode="disabled")).outcome is Outcome.OK


@maria
@pytest.mark.parametrize(
    ("case", "outcome"),
    [
        ("ok", Outcome.OK),
        ("changed_password", Outcome.AUTH_FAILED),
        ("closed_port", Outcome.UNREACHABLE),
        ("unresolvable_host", Outcome.UNREACHABLE),
    ],
)
def test_mariadb_password_never_appears_in_the_message(
    case: str, outcome: Outcome, maria_admin: MariaAdmin, mariadb_url: str, closed_port: int
) -> None:
    secret = f"{SPECIAL}{secrets.token_hex(4)}"
    user = maria_admin.create_user(secret)
    settings = {
        "closed_port": {"port": str(closed_port)},
        "unresolvable_host": {"host": "no-such-host.invalid"},
    }.get(case, {})
    if case == "changed_password":
        maria_admin.set_password(user.name, "new")
    result = validate(spec("mysql", mariadb_url, user, **settings))
    assert result.outcome is outcome
    assert_secret_absent(result, secret)


@maria
def test_mariadb_fetch_returns_columns_and_rows(maria_admin: MariaAdmin, mariadb_url: str) -> None:
    user = maria_admin.create_user(SPECIAL)
    table = maria_admin.create_table()
    # '%' reaches the server as written (PyMySQL does no %-formatting without params).
    query = f"SELECT id, name, price FROM {table} WHERE name LIKE '%' ORDER BY id"
    result = fetch(spec("mysql", mariadb_url, user), query)
    assert result.columns == ["id", "name", "price"]
    assert result.rows == [
        (1, "apple", Decimal("1.50")),
        (2, "pear", Decimal("2.25")),
        (3, "fig", Decimal("4.00")),
    ]


@maria
def test_mariadb_fetch_with_wrong_password_raises_auth_failed(
    maria_admin: MariaAdmin, mariadb_url: str
) -> None:
    user = maria_admin.create_user()
    table = maria_admin.create_table()
    with pytest.raises(AuthFailed) as caught:
        fetch(spec("mysql", mariadb_url, user, password="wrong"), f"SELECT * FROM {table}")
    assert caught.value.code == "1045"
