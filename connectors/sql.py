"""What the PostgreSQL and MySQL/MariaDB connectors share: settings parsed into a
`SqlTarget` (bad ones are `AuthFailed("invalid_settings")`), the SQLAlchemy URL built
with `URL.create`, one engine per check (`NullPool`) run in this module's own thread
pool, validate (connect and ask the server who we are: the connection's identity,
user@host) and fetch (the dataset's query as written), a
backstop around the driver's timeouts, and messages that are one line, name the server
but never the DSN, and have the password scrubbed. A dialect subclasses `SqlConnector`
with its driver, connect arguments and `classify_error`. Details: docs/connectors.md."""

from __future__ import annotations

import abc
import asyncio
import functools
import math
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection
from sqlalchemy.pool import NullPool

from connectors.base import (
    AuthFailed,
    CheckContext,
    CheckError,
    CheckResult,
    ConnectionSpec,
    Connector,
    FetchResult,
    Unreachable,
    one_line,
)
from connectors.network import NetworkFailure, network_error
from connectors.outcomes import INVALID_SETTINGS, UNEXPECTED
from relink.domain.identity import Identity, identity

T = TypeVar("T")
# Threads for blocking driver work: wider than the checks a sweep has in flight at once
# (`CheckPolicy.concurrency`), so a check never waits for a thread; made as needed.
DRIVER_THREADS = 256
# The backstop around the driver's own timeouts (see the module docstring).
BACKSTOP_FACTOR = 3.0
BACKSTOP_MIN_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class SqlTarget:
    """Validated connection settings plus the password (never shown in repr)."""

    host: str
    port: int
    database: str
    username: str
    password: str = field(repr=False)
    sslmode: str

    @property
    def where(self) -> str:
        """How messages name the server: host, port and database, never the DSN."""
        return f"{self.host}:{self.port}/{self.database}"


def parse_target(
    conn: ConnectionSpec,
    *,
    default_port: int,
    sslmodes: frozenset[str],
    default_sslmode: str,
) -> SqlTarget:
    """Read host/port/database/username/sslmode from settings and the password.

    Bad settings raise `AuthFailed(code="invalid_settings")`, not `ValueError` and not
    `Unreachable`:
    * `validate` must never raise for a problem of the connection itself, and an
      exception would abort a whole check batch (or show a traceback on reconnect);
    * it is not an outage: retrying will never make port "abc" work, only the owner
      entering the right settings will, which is what `auth_failed` leads to (the
      connection shows as broken, the owner is told, and reconnects with them);
    * the distinct code and a message naming the field keep it apart from a refused
      password.
    """
    settings: Mapping[str, Any] = conn.settings or {}

    def text(name: str) -> str:
        value = settings.get(name)
        return "" if value is None else str(value).strip()

    host, database, username = text("host"), text("database"), text("username")
    for name, value in (("host", host), ("database", database), ("username", username)):
        if not value:
            raise AuthFailed(INVALID_SETTINGS, f"the connection has no {name}; edit it and set one")

    raw_port = text("port")
    if not raw_port:
        port = default_port
    else:
        try:
            port = int(raw_port)
        except ValueError:
            port = -1
        if not 1 <= port <= 65535:
            raise AuthFailed(
                INVALID_SETTINGS,
                f"port must be a number from 1 to 65535, got {raw_port[:20]!r}",
            )

    sslmode = text("sslmode").lower() or default_sslmode
    if sslmode not in sslmodes:
        raise AuthFailed(
            INVALID_SETTINGS,
            f"sslmode must be one of {', '.join(sorted(sslmodes))}, got {sslmode[:20]!r}",
        )

    password = (conn.credentials or {}).get("password") or ""
    return SqlTarget(host, port, database, username, str(password), sslmode)


def scrub(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def unexpected(exc: BaseException, where: str, code: str | None = None) -> Unreachable:
    """Anything we cannot classify: an outage, named by class (and code), never by text.

    The raw message of an unknown exception could echo a DSN, so it is not used.
    """
    detail = type(exc).__name__ + (f" {code}" if code else "")
    return Unreachable(UNEXPECTED, f"{where}: unexpected error ({detail})")


def unwrap(exc: BaseException) -> BaseException:
    """SQLAlchemy wraps the driver's exception in `DBAPIError.orig`."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        return exc.orig
    return exc


class SqlConnector(Connector):
    """validate/fetch for a SQLAlchemy dialect; subclasses supply the dialect parts."""

    drivername: str  # e.g. "postgresql+psycopg"
    default_port: int
    sslmodes: frozenset[str]
    default_sslmode: str
    # the user the server authenticated (a proxy or SET ROLE may differ from the setting)
    whoami_sql: str = "SELECT current_user"

    # --- what a dialect supplies ------------------------------------------------------

    @abc.abstractmethod
    def connect_args(self, target: SqlTarget, timeout: float) -> dict[str, Any]:
        """The driver's keyword arguments: timeouts and TLS."""

    @abc.abstractmethod
    def classify_error(self, exc: BaseException, where: str = "the server") -> CheckError:
        """Pure: a driver (or SQLAlchemy) exception -> AuthFailed / Unreachable."""

    def prepare_fetch(self, conn: Connection, timeout: float) -> None:
        """Runs in the fetch transaction before the query (e.g. a statement timeout)."""

    # --- shared -----------------------------------------------------------------------

    def target(self, conn: ConnectionSpec) -> SqlTarget:
        return parse_target(
            conn,
            default_port=self.default_port,
            sslmodes=self.sslmodes,
            default_sslmode=self.default_sslmode,
        )

    def url(self, target: SqlTarget) -> URL:
        return URL.create(
            self.drivername,
            username=target.username,
            password=target.password or None,
            host=target.host,
            port=target.port,
            database=target.database,
        )

    def where(self, target: SqlTarget) -> str:
        return f"{self.display_name} at {target.where}"

    def settings_problem(self, settings: Mapping[str, Any]) -> str | None:
        try:
            self.target(ConnectionSpec(0, self.type, settings, {}))
        except AuthFailed as err:
            return err.message
        return None

    async def validate(self, conn: ConnectionSpec, ctx: CheckContext) -> CheckResult:
        try:
            user = await self._run(conn, ctx, self._whoami)
            target = self.target(conn)
        except CheckError as err:
            return CheckResult.from_error(err)
        return CheckResult.ok(identity=self.identity(user or target.username, target))

    def identity(self, user: str, target: SqlTarget) -> Identity | None:
        """user@host: the account the server authenticated, on the host the settings name."""
        login = f"{user}@{target.host}"
        return identity(login, login)

    def _whoami(self, connection: Connection) -> str:
        value = connection.execute(sa.text(self.whoami_sql)).scalar_one()
        return str(value or "")

    async def fetch(self, conn: ConnectionSpec, query: str, ctx: CheckContext) -> FetchResult:
        timeout = ctx.timeout

        def work(connection: Connection) -> FetchResult:
            self.prepare_fetch(connection, timeout)
            # exec_driver_sql + no_parameters: the dataset's SQL goes to the driver as
            # written (no ":name" bind parsing, no "%" formatting of LIKE patterns).
            result = connection.execution_options(no_parameters=True).exec_driver_sql(query)
            if not result.returns_rows:
                return FetchResult([], [])
            columns = list(result.keys())
            return FetchResult(columns, [tuple(row) for row in result.fetchall()])

        return await self._run(conn, ctx, work)

    async def _run(
        self, conn: ConnectionSpec, ctx: CheckContext, work: Callable[[Connection], T]
    ) -> T:
        """Run `work` on a fresh connection in a thread; failures become CheckError."""
        target = self.target(conn)  # raises AuthFailed(invalid_settings)
        where = self.where(target)
        timeout = max(float(ctx.timeout), 0.5)
        backstop = max(timeout * BACKSTOP_FACTOR, BACKSTOP_MIN_SECONDS)
        blocking = functools.partial(self._blocking, target, where, timeout, work)
        try:
            return await asyncio.wait_for(
                asyncio.get_running_loop().run_in_executor(_driver_threads(), blocking), backstop
            )
        except CheckError as err:
            # `from None`: the driver's exception (host, user, SQL) stays out of tracebacks
            # and logs; the code and message carry what the owner needs.
            raise self._safe(err, target) from None
        except TimeoutError:
            # Only the backstop gets here: `_blocking` turns every driver error into a
            # CheckError. The thread ends on its own when the driver's timeout fires.
            raise network_error(
                NetworkFailure.TIMEOUT, where, f"no answer within {backstop:g}s"
            ) from None

    def _blocking(
        self, target: SqlTarget, where: str, timeout: float, work: Callable[[Connection], T]
    ) -> T:
        try:
            engine = sa.create_engine(
                self.url(target),
                poolclass=NullPool,
                connect_args=self.connect_args(target, timeout),
            )
            try:
                with engine.connect() as connection:
                    return work(connection)  # never committed: leaving the block rolls back
            finally:
                engine.dispose()
        except CheckError:
            raise
        except Exception as exc:  # noqa: BLE001 - every driver error gets classified
            raise self.classify_error(exc, where) from None

    @staticmethod
    def _safe(err: CheckError, target: SqlTarget) -> CheckError:
        """One line, password scrubbed: the last word on every message we report."""
        message = one_line(scrub(err.message, target.password))
        if message == err.message:
            return err
        return type(err)(err.code, message)


@functools.cache
def _driver_threads() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(DRIVER_THREADS, thread_name_prefix="relink-sql")


def whole_seconds(timeout: float) -> int:
    """Drivers that take whole seconds (libpq's connect_timeout)."""
    return max(1, math.ceil(timeout))
