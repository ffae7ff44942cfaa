"""PostgreSQL through SQLAlchemy + psycopg: the connector, and `classify_postgres_error`
(pure), which judges the SQLSTATE the server sent by its row of `connectors.outcomes`
and reports it as the code; a failed connection attempt carries no SQLSTATE, so its
English message is matched to the SQLSTATE (or network failure) it means. What it
cannot classify is `Unreachable("error")`. The table: docs/connectors.md."""

from __future__ import annotations

import re
from typing import Any

import psycopg
from sqlalchemy.engine import Connection
from sqlalchemy.sql import text

from connectors.base import CheckError, Field, Unreachable, one_line
from connectors.network import (
    NetworkFailure,
    classify_network_error,
    network_error,
    tls_error,
)
from connectors.outcomes import POSTGRES_SQLSTATES, UNEXPECTED, postgres_sqlstate
from connectors.registry import register
from connectors.sql import (
    SqlConnector,
    SqlTarget,
    unexpected,
    unwrap,
    whole_seconds,
)
from relink.domain.words import AuthKind

DATABASE_FIELDS = (
    Field("host", "Host", help="Server name or address", reconnect=True),
    Field("port", "Port", default="5432", help="TCP port", reconnect=True),
    Field("database", "Database", help="Database name", reconnect=True),
    Field(
        "username",
        "Username",
        help="A role that may connect and read the tables",
        reconnect=True,
    ),
    Field("password", "Password", secret=True, help="The role's password", reconnect=True),
    Field(
        "sslmode",
        "SSL mode",
        required=False,
        default="prefer",
        help="disable, prefer, require, verify-ca or verify-full",
    ),
)

SSLMODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})

# Connection-attempt messages (no SQLSTATE available) -> the SQLSTATE (or network failure)
# the server meant, most specific first. Login refusals are tried before outages: if one
# attempt of several (::1, 127.0.0.1) reached the server and was refused a login, that
# is the answer.
_PATTERNS: tuple[tuple[re.Pattern[str], str | NetworkFailure], ...] = tuple(
    (re.compile(p), code)
    for p, code in (
        (r"password authentication failed", "28P01"),
        (r"no password supplied", "28P01"),
        (r"no pg_hba\.conf entry", "28000"),
        (r"pg_hba\.conf rejects connection", "28000"),
        (r'role ".*" does not exist', "28000"),
        (r"is not permitted to log in", "28000"),
        (r"authentication failed for user", "28000"),  # ident, peer, ldap, cert ...
        (r'database ".*" does not exist', "3D000"),
        (r"permission denied for database", "42501"),
        (r"too many clients|too many connections|connection slots are reserved", "53300"),
        (r"terminating connection due to administrator command", "57P01"),
        (r"the database system is (shutting down|starting up|in recovery mode|not .*accepting)"
         r"|not yet accepting connections", "57P03"),
        (r"timeout expired|timed out", NetworkFailure.TIMEOUT),
        (r"failed to resolve host|could not translate host name|name or service not known"
         r"|nodename nor servname|name resolution", NetworkFailure.DNS),
        (r"connection refused", NetworkFailure.CONNECTION_REFUSED),
        (r"\bssl\b|certificate|\btls\b", NetworkFailure.TLS),
        (r"server closed the connection|connection reset|broken pipe|eof detected"
         r"|connection is (bad|lost)", NetworkFailure.CONNECTION_LOST),
        (r"no route to host|network is unreachable|host is unreachable", NetworkFailure.NETWORK),
    )
)  # fmt: skip

_SERVER_MESSAGE = re.compile(r"\b(?:FATAL|ERROR|PANIC):\s+(.+)")
_LIBPQ_REASON = re.compile(r".*failed:\s+(.+)")


def _server_text(message: str) -> str | None:
    """The server's own words from a libpq message ("FATAL:  password ...")."""
    for line in message.splitlines():
        found = _SERVER_MESSAGE.search(line)
        if found:
            return one_line(found.group(1), 200)
    return None


def _with_detail(where: str, meaning: str, code: str, detail: str | None) -> str:
    return f"{where}: {detail or meaning} ({code})"


def classify_postgres_error(exc: BaseException, where: str = "PostgreSQL") -> CheckError:
    """Pure: a psycopg (or SQLAlchemy-wrapped) exception -> its `CheckError`.

    `where` names the server in the message ("PostgreSQL at db:5432/sales"); the
    message never quotes the DSN, and quotes only the server's own error text.
    """
    if isinstance(exc, CheckError):
        return exc
    orig = unwrap(exc)
    if not isinstance(orig, psycopg.Error):
        return classify_network_error(orig, where) or unexpected(orig, where)

    sqlstate = orig.sqlstate
    if sqlstate:
        detail = orig.diag.message_primary
        detail = one_line(detail, 200) if detail else None
        judgment = postgres_sqlstate(sqlstate)
        if judgment is not None:
            return judgment.error(sqlstate, _with_detail(where, judgment.meaning, sqlstate, detail))
        # A server error we do not classify (e.g. 42P01 in a dataset query): the
        # server's own words are safe (it never sees the DSN) and say what to fix.
        return Unreachable(
            UNEXPECTED,
            f"{where}: {type(orig).__name__} {sqlstate}" + (f": {detail}" if detail else ""),
        )

    if isinstance(orig, psycopg.errors.ConnectionTimeout):
        return network_error(NetworkFailure.TIMEOUT, where)
    if not isinstance(orig, psycopg.OperationalError):
        return unexpected(orig, where)

    message = str(orig)
    lowered = message.lower()
    server_text = _server_text(message)
    for pattern, code in _PATTERNS:
        if not pattern.search(lowered):
            continue
        if not isinstance(code, NetworkFailure):
            judgment = POSTGRES_SQLSTATES[code]
            return judgment.error(code, _with_detail(where, judgment.meaning, code, server_text))
        if code == NetworkFailure.TLS and server_text is None:
            # libpq's reason says which setting to change ("server does not support
            # SSL, but SSL was required"); it never contains a password.
            reason = _LIBPQ_REASON.match(message.splitlines()[0])
            if reason:
                return tls_error(where, one_line(reason.group(1), 200))
        return network_error(code, where, server_text)
    cause = orig.__cause__ or orig.__context__
    if cause is not None:
        found = classify_network_error(cause, where)
        if found is not None:
            return found
    return unexpected(orig, where)


class PostgresConnector(SqlConnector):
    type = "postgres"
    display_name = "PostgreSQL"
    auth_kind = AuthKind.PASSWORD
    provider = "postgres"
    fields = DATABASE_FIELDS
    needs = "host, port, database, user name and password"
    checked = "connect and SELECT 1"
    breaks = "a refused login (28P01, 28000) or database (3D000)"

    drivername = "postgresql+psycopg"
    default_port = 5432
    sslmodes = SSLMODES
    default_sslmode = "prefer"

    def connect_args(self, target: SqlTarget, timeout: float) -> dict[str, Any]:
        return {
            # libpq counts whole seconds (and psycopg waits at least 2) per address tried.
            "connect_timeout": whole_seconds(timeout),
            "sslmode": target.sslmode,
            "application_name": "relink",
        }

    def classify_error(self, exc: BaseException, where: str = "PostgreSQL") -> CheckError:
        return classify_postgres_error(exc, where)

    def prepare_fetch(self, conn: Connection, timeout: float) -> None:
        # Transaction-local (is_local=true), so it also works through a pgbouncer in
        # transaction mode, and unlike a startup `options` it is accepted everywhere.
        conn.execute(
            text("SELECT set_config('statement_timeout', :ms, true)"),
            {"ms": str(max(1, int(timeout * 1000)))},
        )


register(PostgresConnector())
