"""Whose account a connection uses ("Connected as …"): learnt by a check against the real
PostgreSQL and MariaDB servers (user@host), recorded once with its audit row, and shown
on the connection page, in the JSON API and in `relink connections show`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from relink.app import Relink
from relink.checks import check_range
from relink.cli import app as cli_app
from relink.cli._common import reset_app
from relink.connections import NewConnection, add_connection
from relink.models import AuditEvent, Connection
from relink.sweep.validate import CheckPolicy
from relink.web import create_app
from tests.support.web import EMAILS, T0, World, build_world, client_for, make_relink

POLICY = CheckPolicy(attempts=1, timeout=5.0)


@pytest.fixture
def relink(database_url: str, tmp_path) -> Iterator[Relink]:
    app = make_relink(database_url, tmp_path / "data")
    yield app
    app.close()


@pytest.fixture
def pg_world(relink: Relink, pg_admin: Any) -> tuple[World, str]:
    role = pg_admin.create_role()
    url = sa.make_url(pg_admin.url)
    settings = {
        "host": url.host or "127.0.0.1",
        "port": str(url.port or 5432),
        "database": url.database or "test",
        "username": role.name,
    }
    return build_world(relink, db_settings=settings, db_password=role.password), (
        f"{role.name}@{settings['host']}"
    )


def check(relink: Relink, connection_id: int, now=T0) -> None:
    asyncio.run(
        check_range(
            relink, connection_id - 1, connection_id, now=now, policy=POLICY, only=[connection_id]
        )
    )


def seen_rows(relink: Relink, connection_id: int) -> list[dict[str, Any]]:
    with relink.sessions() as s:
        return [
            dict(e.details)
            for e in s.scalars(
                sa.select(AuditEvent)
                .where(
                    AuditEvent.connection_id == connection_id,
                    AuditEvent.action == "connection.account_seen",
                )
                .order_by(AuditEvent.id)
            )
        ]


@pytest.mark.postgres
def test_a_postgres_check_records_user_at_host_once_and_every_view_shows_it(
    relink: Relink, pg_world: tuple[World, str]
) -> None:
    world, login = pg_world
    conn_id = world.ids["Owned DB"]

    check(relink, conn_id)
    check(relink, conn_id)  # the same account again: nothing new to record

    with relink.sessions() as s:
        conn = s.get(Connection, conn_id)
        assert conn is not None
        assert (conn.identity_subject, conn.identity_label) == (login, login)
    assert seen_rows(relink, conn_id) == [{"account": login, "account_before": None}]

    owner = client_for(create_app(relink), "owner")
    api = owner.get(f"/api/connections/{conn_id}").json()
    assert (api["connected_as"], api["connected_as_subject"]) == (login, login)
    listed = owner.get("/api/connections").json()["connections"]
    assert {c["id"]: c["connected_as"] for c in listed}[conn_id] == login
    page = owner.get(f"/connections/{conn_id}").text
    assert "Connected as" in page and f'<dd id="fact-connected-as">{login}</dd>' in page

    shown = cli(relink, "connections", "show", str(conn_id), "--as", EMAILS["owner"], "--json")
    assert json.loads(shown)["connected_as"] == login
    table = cli(relink, "connections", "show", str(conn_id), "--as", EMAILS["owner"])
    assert "connected_as" in table and login in table


@pytest.mark.mariadb
def test_a_mariadb_check_records_the_user_the_server_authenticated_at_the_host(
    relink: Relink, maria_admin: Any, mariadb_url: str
) -> None:
    user = maria_admin.create_user()
    url = sa.make_url(mariadb_url)
    build_world(relink)
    with relink.transaction() as s:
        conn = add_connection(
            s,
            relink.vault,
            NewConnection(
                type="mysql",
                name="Finance",
                owner=EMAILS["owner"],
                settings={
                    "host": url.host or "127.0.0.1",
                    "port": str(url.port or 3306),
                    "database": url.database or "test",
                    "username": user.name,
                },
                secrets={"password": user.password},
            ),
            now=T0,
        )
        conn_id = conn.id

    check(relink, conn_id)

    login = f"{user.name}@{url.host or '127.0.0.1'}"
    assert seen_rows(relink, conn_id) == [{"account": login, "account_before": None}]
    page = client_for(create_app(relink), "owner").get(f"/connections/{conn_id}").text
    assert f'<dd id="fact-connected-as">{login}</dd>' in page


def test_a_connection_whose_source_never_said_shows_that_it_is_not_known(
    relink: Relink,
) -> None:
    world = build_world(relink)
    owner = client_for(create_app(relink), "owner")
    conn_id = world.ids["Owned API"]
    assert owner.get(f"/api/connections/{conn_id}").json()["connected_as"] is None
    assert "not known" in owner.get(f"/connections/{conn_id}").text


def cli(relink: Relink, *args: str) -> str:
    settings = relink.settings
    env = {
        "RELINK_DATABASE_URL": settings.database_url,
        "RELINK_DATA_DIR": str(settings.data_dir),
        "RELINK_SECRET_KEYS": settings.secret_keys.get_secret_value(),
    }
    reset_app()
    try:
        result = CliRunner().invoke(cli_app, list(args), env=env)
    finally:
        reset_app()
    assert result.exit_code == 0, result.output
    return result.output
