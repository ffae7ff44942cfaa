"""Classification of driver errors and parsing of settings, without a server."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from datetime import UTC, datetime

import psycopg
import pymysql
import pytest
import sqlalchemy as sa

from connectors import sql as sql_module
from connectors.base import AuthFailed, CheckContext, CheckError, ConnectionSpec, Unreachable
from connectors.mysql import MySQLConnector, classify_mysql_error, ssl_args
from connectors.postgres import PostgresConnector, classify_postgres_error
from connectors.sql import SqlTarget, parse_target
from relink.domain.words import Outcome

SECRET = "p@ss:w/rd%!hunter2"
LIBPQ = 'connection failed: connection to server at "10.0.0.5", port 5432 failed: '


def pg_state(sqlstate: str, message: str = "boom") -> psycopg.Error:
    return psycopg.errors.lookup(sqlstate)(message)


def pg_connect_error(text: str) -> psycopg.OperationalError:
    """What psycopg raises for a failed connection attempt: text only, no SQLSTATE."""
    return psycopg.OperationalError(text)


def wrapped(orig: Exception) -> sa.exc.DBAPIError:
    return sa.exc.OperationalError("SELECT 1", None, orig)


def my_error(errno: int, text: str, cause: BaseException | None = None) -> pymysql.MySQLError:
    exc = pymysql.err.OperationalError(errno, text)
    if cause is not None:
        exc.original_exception = cause  # what PyMySQL sets for socket errors
    return exc


def assert_is(err: CheckError, kind: type[CheckError], code: str) -> None:
    assert isinstance(err, kind), err
    assert err.code == code
    assert "\n" not in err.message


# --- PostgreSQL: SQLSTATE present ---------------------------------------------------


@pytest.mark.parametrize("sqlstate", ["28P01", "28000"])
def test_postgres_auth_sqlstates_are_auth_failed(sqlstate: str) -> None:
    assert_is(classify_postgres_error(pg_state(sqlstate)), AuthFailed, sqlstate)


@pytest.mark.parametrize("sqlstate", ["3D000", "42501"])
def test_postgres_missing_database_and_no_permission_are_auth_failed_not_outages(
    sqlstate: str,
) -> None:
    """Decision: the server answered "no" to this connection's settings.

    Waiting never fixes a missing database or a revoked CONNECT privilege; the owner
    must, and `auth_failed` is the outcome that tells them (and a reconnect closes it).
    """
    assert_is(classify_postgres_error(pg_state(sqlstate)), AuthFailed, sqlstate)


@pytest.mark.parametrize(
    ("sqlstate", "code"),
    [
        ("57P01", "57P01"),  # admin shutdown
        ("57P03", "57P03"),  # cannot connect now (starting up / shutting down)
        ("53300", "53300"),  # too many connections
        ("57014", "timeout"),  # statement timeout during fetch
        ("08006", "08006"),  # connection failure
    ],
)
def test_postgres_outage_sqlstates_are_unreachable(sqlstate: str, code: str) -> None:
    assert_is(classify_postgres_error(pg_state(sqlstate)), Unreachable, code)


def test_postgres_other_server_error_is_unreachable_error_named_by_class() -> None:
    err = classify_postgres_error(pg_state("42P01"))
    assert_is(err, Unreachable, "error")
    assert "UndefinedTable" in err.message and "42P01" in err.message


def test_postgres_classification_unwraps_sqlalchemy() -> None:
    assert_is(classify_postgres_error(wrapped(pg_state("28P01"))), AuthFailed, "28P01")


# --- PostgreSQL: failed connection attempts (libpq text, no SQLSTATE) -----------------


@pytest.mark.parametrize(
    ("text", "kind", "code"),
    [
        (LIBPQ + 'FATAL:  password authentication failed for user "bob"', AuthFailed, "28P01"),
        ("connection failed: fe_sendauth: no password supplied", AuthFailed, "28P01"),
        (LIBPQ + 'FATAL:  role "bob" does not exist', AuthFailed, "28000"),
        (
            LIBPQ + 'FATAL:  no pg_hba.conf entry for host "10.0.0.9", user "bob", database "x"',
            AuthFailed,
            "28000",
        ),
        (LIBPQ + 'FATAL:  role "bob" is not permitted to log in', AuthFailed, "28000"),
        (LIBPQ + 'FATAL:  database "sales" does not exist', AuthFailed, "3D000"),
        (LIBPQ + 'FATAL:  permission denied for database "sales"', AuthFailed, "42501"),
        (LIBPQ + "FATAL:  sorry, too many clients already", Unreachable, "53300"),
        (LIBPQ + "FATAL:  the database system is shutting down", Unreachable, "57P03"),
        (LIBPQ + "FATAL:  the database system is starting up", Unreachable, "57P03"),
        (
            LIBPQ + "FATAL:  terminating connection due to administrator command",
            Unreachable,
            "57P01",
        ),
        (
            LIBPQ + "Connection refused\n\tIs the server running on that host and accepting "
            "TCP/IP connections?",
            Unreachable,
            "connection_refused",
        ),
        (
            "failed to resolve host 'db.invalid': [Errno -2] Name or service not known",
            Unreachable,
            "dns",
        ),
        (
            'connection failed: could not translate host name "db.invalid" to address',
            Unreachable,
            "dns",
        ),
        (LIBPQ + "server does not support SSL, but SSL was required", Unreachable, "tls"),
        (
            LIBPQ + 'root certificate file "/root/.postgresql/root.crt" does not exist',
            Unreachable,
            "tls",
        ),
        (
            LIBPQ + "server closed the connection unexpectedly\n\tThis probably means ...",
            Unreachable,
            "connection_lost",
        ),
        (LIBPQ + "No route to host", Unreachable, "network"),
    ],
)
def test_postgres_connection_attempt_messages(text: str, kind: type[CheckError], code: str) -> None:
    assert_is(classify_postgres_error(pg_connect_error(text)), kind, code)


def test_postgres_connect_timeout_is_unreachable_timeout() -> None:
    exc = psycopg.errors.ConnectionTimeout("connection timeout expired")
    assert_is(classify_postgres_error(wrapped(exc)), Unreachable, "timeout")


def test_postgres_a_refused_login_wins_over_another_address_refusing_tcp() -> None:
    """localhost -> ::1 refused, 127.0.0.1 answered "wrong password": credentials."""
    text = (
        LIBPQ + 'FATAL:  password authentication failed for user "bob"\n'
        "Multiple connection attempts failed. All failures were:\n"
        "- host: 'localhost', port: '5432', hostaddr: '::1': connection failed: "
        "Connection refused\n"
        "- host: 'localhost', port: '5432', hostaddr: '127.0.0.1': connection failed: "
        'FATAL:  password authentication failed for user "bob"'
    )
    assert_is(classify_postgres_error(pg_connect_error(text)), AuthFailed, "28P01")


def test_postgres_message_quotes_the_server_not_the_dsn() -> None:
    err = classify_postgres_error(
        pg_connect_error(LIBPQ + 'FATAL:  password authentication failed for user "bob"'),
        "PostgreSQL at db:5432/sales",
    )
    assert err.message == (
        'PostgreSQL at db:5432/sales: password authentication failed for user "bob" (28P01)'
    )


@pytest.mark.parametrize(
    "exc",
    [
        psycopg.OperationalError(f"weird failure for postgresql://bob:{SECRET}@db/sales"),
        psycopg.InterfaceError(f"password={SECRET}"),
        RuntimeError(f"postgresql://bob:{SECRET}@db/sales"),
    ],
)
def test_postgres_unexpected_errors_are_unreachable_error_without_the_raw_message(
    exc: Exception,
) -> None:
    err = classify_postgres_error(wrapped(exc) if isinstance(exc, psycopg.Error) else exc)
    assert_is(err, Unreachable, "error")
    assert type(exc).__name__ in err.message
    assert "hunter2" not in err.message and "postgresql://" not in err.message


# --- MySQL / MariaDB ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("errno", "text"),
    [
        (1045, "Access denied for user 'bob'@'10.0.0.9' (using password: YES)"),
        (1698, "Access denied for user 'bob'@'10.0.0.9'"),
    ],
)
def test_mysql_access_denied_is_said_once_under_the_errno_the_server_sent(
    errno: int, text: str
) -> None:
    """MariaDB sends 1045 or 1698 for the same refusal: one explanation, its own code."""
    err = classify_mysql_error(wrapped(my_error(errno, text)), "MySQL at db:3306/sales")
    assert_is(err, AuthFailed, str(errno))
    assert err.message == (
        "MySQL at db:3306/sales: access denied for this user name and password (the server "
        f"sent {errno}; MariaDB sends 1045 or 1698 for the same refusal and does not say "
        "whether the user exists)"
    )


@pytest.mark.parametrize("errno", [1044, 1049])
def test_mysql_unknown_or_forbidden_database_is_auth_failed_not_an_outage(errno: int) -> None:
    """Decision, as for PostgreSQL 3D000/42501: the owner must fix the connection."""
    assert_is(classify_mysql_error(my_error(errno, "no")), AuthFailed, str(errno))


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (my_error(2003, "Can't connect ([Errno 111])", ConnectionRefusedError(111, "x")),
            "connection_refused"),
        (my_error(2003, "Can't connect ([Errno -2])", socket.gaierror(-2, "x")), "dns"),
        (my_error(2003, "Can't connect (timed out)", TimeoutError("timed out")), "timeout"),
        (my_error(2013, "Lost connection (timed out)", TimeoutError("timed out")), "timeout"),
        (my_error(2013, "Lost connection to MySQL server during query"), "2013"),
        (my_error(2003, "Can't connect to MySQL server"), "2003"),
        (my_error(2005, "Unknown MySQL server host"), "dns"),
        (my_error(2006, "MySQL server has gone away"), "2006"),
        (my_error(2026, "SSL is required but the server doesn't support it"), "tls"),
        (my_error(1040, "Too many connections"), "1040"),
        (my_error(1053, "Server shutdown in progress"), "1053"),
    ],
)  # fmt: skip
def test_mysql_outages_are_unreachable(exc: pymysql.MySQLError, code: str) -> None:
    assert_is(classify_mysql_error(wrapped(exc)), Unreachable, code)


def test_mysql_socket_error_found_through_context_too() -> None:
    exc = pymysql.err.OperationalError(2003, "Can't connect")
    exc.__context__ = ConnectionRefusedError(111, "Connection refused")
    assert_is(classify_mysql_error(exc), Unreachable, "connection_refused")


@pytest.mark.parametrize(
    "exc",
    [
        pymysql.err.OperationalError(2059, f"plugin failed for mysql://bob:{SECRET}@db"),
        pymysql.err.InterfaceError(0, ""),
        RuntimeError(f"mysql://bob:{SECRET}@db/sales"),
    ],
)
def test_mysql_unexpected_errors_are_unreachable_error_without_the_raw_message(
    exc: Exception,
) -> None:
    err = classify_mysql_error(exc)
    assert_is(err, Unreachable, "error")
    assert type(exc).__name__ in err.message
    assert "hunter2" not in err.message and "mysql://" not in err.message


# --- settings, URL, TLS -------------------------------------------------------------

CTX = CheckContext(now=datetime(2025, 1, 15, 14, 0, tzinfo=UTC), timeout=1)


def conn(type_: str = "postgres", **settings: object) -> ConnectionSpec:
    values: dict[str, object] = {
        "host": "db.example.com",
        "port": "5432",
        "database": "sales",
        "username": "bob",
    }
    values.update(settings)
    return ConnectionSpec(id=1, type=type_, settings=values, credentials={"password": SECRET})


@pytest.mark.parametrize(
    "settings",
    [{"port": "abc"}, {"port": "0"}, {"port": "70000"}, {"host": ""}, {"sslmode": "maybe"}],
)
@pytest.mark.parametrize("connector", [PostgresConnector(), MySQLConnector()])
def test_bad_settings_are_auth_failed_invalid_settings_without_asking_the_server(
    connector: PostgresConnector | MySQLConnector, settings: dict[str, str]
) -> None:
    result = asyncio.run(connector.validate(conn(connector.type, **settings), CTX))
    assert (result.outcome, result.code) == (Outcome.AUTH_FAILED, "invalid_settings")
    assert next(iter(settings)) in result.message


def test_port_may_be_an_int_or_missing() -> None:
    kw = {"default_port": 5432, "sslmodes": frozenset({"prefer"}), "default_sslmode": "prefer"}
    assert parse_target(conn(port=6543), **kw).port == 6543
    assert parse_target(conn(port=""), **kw).port == 5432
    assert parse_target(conn(port=" 5433 "), **kw).port == 5433


def test_url_keeps_special_characters_and_never_renders_the_password() -> None:
    connector = PostgresConnector()
    target = connector.target(conn())
    url = connector.url(target)
    assert url.password == SECRET
    assert SECRET not in str(url) and SECRET not in repr(target)
    assert url.render_as_string(hide_password=False).startswith(
        "postgresql+psycopg://bob:p%40ss%3Aw%2Frd%25%21hunter2@db.example.com:5432/sales"
    )


def test_mysql_sslmode_mapping() -> None:
    assert ssl_args("disabled") == {"ssl_disabled": True}
    assert ssl_args("preferred") == {}
    context = ssl_args("required")["ssl"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname


def test_driver_timeouts_come_from_the_context() -> None:
    my = MySQLConnector().connect_args(MySQLConnector().target(conn("mysql")), 2.5)
    assert (my["connect_timeout"], my["read_timeout"], my["write_timeout"]) == (2.5, 2.5, 2.5)
    pg = PostgresConnector().connect_args(PostgresConnector().target(conn()), 2.5)
    assert (pg["connect_timeout"], pg["sslmode"]) == (3, "prefer")


def test_a_message_that_would_echo_the_password_is_scrubbed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def echo(self: object, target: SqlTarget, where: str, *_: object) -> None:
        raise Unreachable("error", f"{where}: oops {target.password}\nsecond line")

    monkeypatch.setattr(PostgresConnector, "_blocking", echo)
    result = asyncio.run(PostgresConnector().validate(conn(), CTX))
    assert result.outcome is Outcome.UNREACHABLE
    assert SECRET not in result.message and "\n" not in result.message
    assert result.message.endswith("oops *** second line")


def test_backstop_turns_a_hung_driver_into_unreachable_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sql_module, "BACKSTOP_FACTOR", 0.1)
    monkeypatch.setattr(sql_module, "BACKSTOP_MIN_SECONDS", 0.05)
    monkeypatch.setattr(PostgresConnector, "_blocking", lambda *a: time.sleep(0.3))
    result = asyncio.run(PostgresConnector().validate(conn(), CTX))
    assert (result.outcome, result.code) == (Outcome.UNREACHABLE, "timeout")
