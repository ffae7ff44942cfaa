"""MySQL / MariaDB through SQLAlchemy + PyMySQL: the connector, its TLS arguments, and
`classify_mysql_error` (pure), which judges PyMySQL's errno by its row of
`connectors.outcomes` and reports that errno as the code, or the network failure the
socket error PyMySQL kept says. What it cannot classify is `Unreachable("error")`. The
table: docs/connectors.md."""

from __future__ import annotations

import ssl
from typing import Any

import pymysql

from connectors.base import CheckError, Field, Unreachable, one_line
from connectors.network import classify_network_error
from connectors.outcomes import MYSQL_ERRNOS, MYSQL_LOGIN_ERRNOS, MYSQL_LOGIN_NOTE, UNEXPECTED
from connectors.registry import register
from connectors.sql import (
    SqlConnector,
    SqlTarget,
    unexpected,
    unwrap,
)
from relink.domain.words import AuthKind, Outcome

FIELDS = (
    Field("host", "Host", help="Server name or address", reconnect=True),
    Field("port", "Port", default="3306", help="TCP port", reconnect=True),
    Field("database", "Database", help="Database (schema) name", reconnect=True),
    Field(
        "username",
        "Username",
        help="A user that may connect and read the tables",
        reconnect=True,
    ),
    Field(
        "password",
        "Password",
        secret=True,
        required=False,  # MariaDB/MySQL accounts may have none (root on a developer machine)
        help="The user's password; empty for a user without one",
        reconnect=True,
    ),
    Field(
        "sslmode",
        "SSL mode",
        required=False,
        default="preferred",
        help="disabled, preferred or required",
    ),
)

SSLMODES = frozenset({"disabled", "preferred", "required"})

# Below 2000 (and from 3000) the text comes from the server, which never sees the
# DSN; 2000-2999 are client errors whose text we do not quote.
_CLIENT_ERRNOS = range(2000, 3000)


def _errno(exc: pymysql.err.MySQLError) -> int | None:
    first = exc.args[0] if exc.args else None
    return first if isinstance(first, int) else None


def classify_mysql_error(exc: BaseException, where: str = "MySQL") -> CheckError:
    """Pure: a PyMySQL (or SQLAlchemy-wrapped) exception -> its `CheckError`."""
    if isinstance(exc, CheckError):
        return exc
    orig = unwrap(exc)
    if not isinstance(orig, pymysql.err.MySQLError):
        return classify_network_error(orig, where) or unexpected(orig, where)

    errno = _errno(orig)
    server_text = None
    if errno is not None and errno not in _CLIENT_ERRNOS and len(orig.args) > 1:
        server_text = one_line(str(orig.args[1]), 200) or None

    judgment = MYSQL_ERRNOS.get(errno) if errno is not None else None
    if judgment is not None:
        if judgment.outcome is Outcome.UNREACHABLE:
            # The socket error PyMySQL kept says more than the errno (2003 covers refused,
            # DNS and timeout alike; 2013 is how a read timeout shows).
            socket_error = getattr(orig, "original_exception", None) or orig.__context__
            if socket_error is not None:
                found = classify_network_error(socket_error, where)
                if found is not None:
                    return Unreachable(found.code, f"{found.message} ({errno})")
        if errno in MYSQL_LOGIN_ERRNOS:
            # one explanation whichever of the two the server sent (its text differs too)
            return judgment.error(
                str(errno),
                f"{where}: {judgment.meaning} (the server sent {errno}; {MYSQL_LOGIN_NOTE})",
            )
        return judgment.error(str(errno), f"{where}: {server_text or judgment.meaning} ({errno})")
    if server_text:
        # A server error we do not classify (e.g. 1146 in a dataset query): the
        # server's own words are safe (it never sees the DSN) and say what to fix.
        return Unreachable(UNEXPECTED, f"{where}: {type(orig).__name__} {errno}: {server_text}")
    return unexpected(orig, where, str(errno) if errno is not None else None)


def ssl_args(sslmode: str) -> dict[str, Any]:
    """PyMySQL's TLS arguments for the connection's sslmode.

    * disabled: never TLS.
    * required: TLS or fail (2026 when the server has none); like MySQL's REQUIRED
      the certificate is not verified.
    * preferred: PyMySQL's default. Note that PyMySQL does not try TLS unless asked,
      so today this connects without TLS; verifying modes are not offered.
    """
    if sslmode == "disabled":
        return {"ssl_disabled": True}
    if sslmode == "required":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return {"ssl": context}
    return {}


class MySQLConnector(SqlConnector):
    type = "mysql"
    display_name = "MySQL / MariaDB"
    auth_kind = AuthKind.PASSWORD
    provider = "mysql"
    fields = FIELDS
    needs = "host, port, database, user name and password (if the account has one)"
    checked = "connect and SELECT 1"
    breaks = "a refused login (1045, 1698) or database (1049, 1044)"

    drivername = "mysql+pymysql"
    default_port = 3306
    sslmodes = SSLMODES
    default_sslmode = "preferred"
    # CURRENT_USER() is the account matched, 'reader@%': its user part
    whoami_sql = "SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1)"

    def connect_args(self, target: SqlTarget, timeout: float) -> dict[str, Any]:
        return {
            "connect_timeout": timeout,
            "read_timeout": timeout,
            "write_timeout": timeout,
            **ssl_args(target.sslmode),
        }

    def classify_error(self, exc: BaseException, where: str = "MySQL") -> CheckError:
        return classify_mysql_error(exc, where)


register(MySQLConnector())
