"""A small account for reconnect and refresh tests: users, a PostgreSQL connection with
datasets (real tables with rows) and a metric, a broken OAuth connection on the sandbox
provider, and helpers to look at the result (what changed, what the audit trail kept)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from relink.app import Relink
from relink.connections import NewConnection, add_connection, detail, share
from relink.datasets import add_dataset, add_metric
from relink.directory import add_account, add_user, get_user
from relink.models import Base, Connection
from relink.reconnecting.oauth import finish_oauth, start_oauth
from relink.reconnecting.replace import Reconnected
from relink.refreshing.results import RefreshPolicy
from relink.sweep.run import sweep
from relink.sweep.validate import CheckPolicy
from relink_dev.sandbox import SandboxServer
from tests.integration.oauth_fixtures import REDIRECT_URI, OAuthClient, issue, oauth_settings
from tests.support.web import consent

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)
FAST_CHECKS = CheckPolicy(attempts=1, backoff=0.0, timeout=5.0)
FAST_REFRESH = RefreshPolicy(attempts=1, backoff=0.0, timeout=10.0)

OWNER = "bob@acme.test"  # member, "Created By"
SHARED = "cid@acme.test"  # member the connection is shared with
ADMIN = "ann@acme.test"
OUTSIDER = "dan@acme.test"  # member of the same account, not shared
FOREIGN_ADMIN = "eve@other.test"  # admin of another account


@dataclass(frozen=True)
class World:
    connection_id: int
    dataset_ids: list[int]
    metric_id: int | None


def add_people(app: Relink) -> None:
    with app.transaction() as session:
        add_account(session, "Acme", now=T0)
        add_account(session, "Other", now=T0)
        for email, name, role, account in (
            (ADMIN, "Ann Admin", "admin", "Acme"),
            (OWNER, "Bob Owner", "member", "Acme"),
            (SHARED, "Cid Shared", "member", "Acme"),
            (OUTSIDER, "Dan Outsider", "member", "Acme"),
            (FOREIGN_ADMIN, "Eve Elsewhere", "admin", "Other"),
        ):
            add_user(session, email=email, name=name, role=role, account=account, now=T0)


def pg_settings(postgres_url: str, username: str, **over: str) -> dict[str, str]:
    url = sa.make_url(postgres_url)
    return {
        "host": url.host or "127.0.0.1",
        "port": str(url.port or 5432),
        "database": url.database or "test",
        "username": username,
        "sslmode": "disable",
        **over,
    }


def add_pg_connection(
    app: Relink,
    *,
    settings: dict[str, str],
    password: str,
    queries: list[tuple[str, str]],
    mode: str = "warehouse",
    name: str = "Shop",
    metric: bool = True,
) -> World:
    with app.transaction() as session:
        conn = add_connection(
            session,
            app.vault,
            NewConnection(
                type="postgres",
                name=name,
                owner=OWNER,
                mode=mode,
                settings=settings,
                secrets={"password": password},
            ),
            now=T0,
        )
        share(session, conn.id, with_email=SHARED, actor=get_user(session, OWNER), now=T0)
        ids = [
            add_dataset(session, connection_id=conn.id, name=n, query=q, now=T0).id
            for n, q in queries
        ]
        metric_id = (
            add_metric(session, name=f"{name} revenue", dataset_ids=ids, now=T0).id
            if metric
            else None
        )
        return World(conn.id, ids, metric_id)


def add_broken_pg_connection(
    app: Relink, pg_admin: Any, *, new_password: str = "changed-at-source"
) -> tuple[World, Any]:
    """The account, and a warehouse connection of a real PostgreSQL role with a dataset of
    its table, found broken by a check after the role's password changed at the source to
    `new_password`; the connection and the role (`pg_admin.set_password(role.name,
    role.password)` fixes it)."""
    role = pg_admin.create_role()
    schema = pg_admin.create_schema(role.name)
    add_people(app)
    world = add_pg_connection(
        app,
        settings=pg_settings(pg_admin.url, role.name),
        password=role.password,
        queries=[("Items", f'SELECT id, name FROM "{schema}".items ORDER BY id')],
    )
    pg_admin.set_password(role.name, new_password)
    asyncio.run(sweep(app, now=T1, policy=FAST_CHECKS))
    return world, role


def add_broken_oauth_connection(
    app: Relink,
    sandbox: SandboxServer,
    client: OAuthClient,
    *,
    mode: str = "direct",
    **settings: str,
) -> tuple[int, dict[str, str]]:
    """A generic OAuth 2.0 connection of the owner's on the sandbox, with its own client
    (`settings` added to the sandbox's endpoints), whose refresh token the provider has
    revoked and which a check at T1 found disconnected; its id and the revoked token set."""
    tokens = issue(sandbox.provider, client, T0)
    with app.transaction() as session:
        conn = add_connection(
            session,
            app.vault,
            NewConnection(
                type="oauth2",
                name="CRM",
                owner=OWNER,
                mode=mode,
                settings={**oauth_settings(sandbox.url, client.client_id), **settings},
                secrets=tokens,
            ),
            now=T0,
        )
        connection_id = conn.id
    sandbox.provider.revoke_token(tokens["refresh_token"])
    asyncio.run(sweep(app, now=T1, policy=FAST_CHECKS))
    assert connection_view(app, connection_id)["status"] == "disconnected"
    return connection_id, tokens


def consented(
    app: Relink, connection_id: int, *, now: datetime, **changes: Mapping[str, str]
) -> tuple[str, Callable[[], Reconnected]]:
    """An OAuth reconnect started by the owner (with `changes`: settings=, secrets=) and
    allowed at the sandbox's consent page: its consent URL, and the callback to finish it
    (no dataset refresh)."""
    started = start_oauth(
        app, connection_id, actor=OWNER, redirect_uri=REDIRECT_URI, now=now, **changes
    )
    answer = consent(started.url, username="carol")

    def finish() -> Reconnected:
        return asyncio.run(
            finish_oauth(
                app,
                state=answer["state"],
                code=answer["code"],
                actor=OWNER,
                connection_id=connection_id,
                now=now,
                refresh=False,
            )
        )

    return started.url, finish


def snapshot(app: Relink) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every app table, to prove that nothing changed."""
    with app.engine.connect() as conn:
        return {
            table.name: [
                tuple(row) for row in conn.execute(sa.select(table).order_by(*table.primary_key))
            ]
            for table in Base.metadata.sorted_tables
        }


def new_audit_events(
    before: dict[str, list[tuple[Any, ...]]], after: dict[str, list[tuple[Any, ...]]]
) -> list[dict[str, Any]] | None:
    """The audit events added between two snapshots, as dicts; None when an earlier one
    changed or went."""
    earlier = before["audit_events"]
    if after["audit_events"][: len(earlier)] != earlier:
        return None
    names = [c.name for c in Base.metadata.tables["audit_events"].columns]
    return [dict(zip(names, row, strict=True)) for row in after["audit_events"][len(earlier) :]]


def failed_attempts_only(
    before: dict[str, list[tuple[Any, ...]]], after: dict[str, list[tuple[Any, ...]]]
) -> list[dict[str, Any]]:
    """Asserts that between two snapshots nothing changed but the audit trail, which only
    gained `connection.reconnect_failed` events; returns those events."""
    changed = [t for t in before if t != "audit_events" and before[t] != after[t]]
    assert not changed, f"rows changed in {', '.join(changed)}"
    events = new_audit_events(before, after)
    assert events is not None, "earlier audit events changed"
    assert {e["action"] for e in events} <= {"connection.reconnect_failed"}, events
    return events


def user_id(app: Relink, email: str) -> int:
    with app.sessions() as session:
        return get_user(session, email).id


def connection_view(app: Relink, connection_id: int) -> dict[str, Any]:
    with app.sessions() as session:
        return detail(session, session.get(Connection, connection_id))


def warehouse_rows(app: Relink, table: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(app.settings.effective_warehouse_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(f'SELECT * FROM "{table}"')]
    finally:
        engine.dispose()


def warehouse_tables(app: Relink) -> set[str]:
    url = sa.make_url(app.settings.effective_warehouse_url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").exists():
        return set()  # never written to
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


class Cli:
    """`relink ...` in this process (typer's runner), with the test's settings."""

    def __init__(self, settings: Any) -> None:
        self.env = {
            "RELINK_DATABASE_URL": settings.database_url,
            "RELINK_DATA_DIR": str(settings.data_dir),
            "RELINK_SECRET_KEYS": settings.secret_keys.get_secret_value(),
            "RELINK_BASE_URL": settings.base_url,
            "RELINK_CHECK_TIMEOUT": "5",
        }

    def __call__(self, *args: Any, input: str | None = None) -> Any:
        from typer.testing import CliRunner

        from relink.cli import app as cli_app
        from relink.cli._common import reset_app

        reset_app()
        try:
            return CliRunner().invoke(
                cli_app, [str(a) for a in args], input=input, env=self.env, catch_exceptions=False
            )
        finally:
            reset_app()

    def ok(self, *args: Any, input: str | None = None) -> Any:
        result = self(*args, input=input)
        assert result.exit_code == 0, (result.stdout, result.stderr)
        return result

    def fails(self, *args: Any, input: str | None = None) -> str:
        """Exit 1 with exactly one line on stderr; returns it."""
        result = self(*args, input=input)
        assert result.exit_code == 1, (result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        return lines[0]
