"""The audit trail names who asked: a re-check (`relink reconnect --check-only`, the
connection page's "Check again", the reconnect-connection flow), the status change it
causes and the refresh that follows record the requesting user as their actor, and so
does a reconnect's own status change. `relink datasets refresh` on a broken connection
says why it refreshes nothing and how to reconnect. Real PostgreSQL with password checks,
the app database on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

from relink.app import set_app
from relink.models import AuditEvent, Dataset
from relink.reconnecting.replace import reconnect_with_secrets
from relink.web import create_app
from tests.conftest import APP_BACKENDS
from tests.support.reconnect import (
    ADMIN,
    FAST_REFRESH,
    OWNER,
    SHARED,
    T0,
    Cli,
    add_broken_pg_connection,
    connection_view,
    pg_settings,
    snapshot,
)
from tests.support.web import EMAILS, build_world, client_for, page_csrf

if TYPE_CHECKING:
    from tests.integration.conftest import PgAdmin

T2 = T0 + timedelta(hours=2)


@pytest.fixture
def broken(relink_app, pg_admin: PgAdmin):
    """A connection broken by a password change at the source; `fix()` puts it back."""
    world, role = add_broken_pg_connection(relink_app, pg_admin)
    assert connection_view(relink_app, world.connection_id)["status"] == "disconnected"
    return world, role, lambda: pg_admin.set_password(role.name, role.password)


def trail(app, connection_id: int, after_id: int = 0) -> list[tuple[str, str | None, str | None]]:
    """(action, actor's email, status after) of the connection's audit events."""
    with app.sessions() as session:
        events = session.scalars(
            sa.select(AuditEvent)
            .where(AuditEvent.connection_id == connection_id, AuditEvent.id > after_id)
            .order_by(AuditEvent.id)
        ).all()
        return [
            (e.action, e.actor.email if e.actor else None, e.details.get("after")) for e in events
        ]


def last_event_id(app) -> int:
    with app.sessions() as session:
        return session.scalar(sa.select(sa.func.max(AuditEvent.id))) or 0


def test_a_check_only_reconnect_names_who_asked_for_the_check_and_the_refresh(
    relink_app, settings, broken
):
    world, _, fix = broken
    fix()
    before = last_event_id(relink_app)
    Cli(settings).ok("reconnect", world.connection_id, "--as", SHARED, "--check-only")
    assert trail(relink_app, world.connection_id, before) == [
        ("connection.status_changed", SHARED, "connected"),
        # the first check that gets in learns whose database account it is (issue 19.3)
        ("connection.account_seen", SHARED, None),
        ("dataset.refreshed", SHARED, None),
    ]


def test_a_reconnects_own_status_change_names_who_reconnected(relink_app, broken):
    world, role, fix = broken
    fix()
    before = last_event_id(relink_app)
    asyncio.run(
        reconnect_with_secrets(
            relink_app,
            world.connection_id,
            actor=ADMIN,
            secrets={"password": role.password},
            now=T2,
            policy=FAST_REFRESH,
        )
    )
    assert trail(relink_app, world.connection_id, before) == [
        ("connection.status_changed", ADMIN, "connected"),
        ("connection.shared", ADMIN, None),  # the previous owner keeps it (issue 16.4)
        ("connection.reconnected", ADMIN, None),
        ("dataset.refreshed", ADMIN, None),
    ]


def test_datasets_refresh_on_a_broken_connection_says_how_to_reconnect_and_refreshes_nothing(
    relink_app, settings, broken
):
    world, _, _ = broken
    before = snapshot(relink_app)
    line = Cli(settings).fails("datasets", "refresh", "--connection", world.connection_id)
    assert f"connection {world.connection_id} ('Shop') is disconnected since" in line
    assert line.endswith(f"relink reconnect {world.connection_id} --as {OWNER}")
    assert snapshot(relink_app) == before
    with relink_app.sessions() as session:
        assert session.get(Dataset, world.dataset_ids[0]).status == "pending"


# --- the connection page's "Check again" ------------------------------------------------------


@pytest.fixture
def page_world(relink_app, pg_admin: PgAdmin):
    """The web layout, its "Owned DB" a real role whose password changed at the source."""
    role = pg_admin.create_role()
    world = build_world(
        relink_app, db_settings=pg_settings(pg_admin.url, role.name), db_password=role.password
    )
    pg_admin.set_password(role.name, "changed-at-the-source")
    return world, lambda: pg_admin.set_password(role.name, role.password)


def test_check_again_on_the_page_records_the_visitor_and_says_what_it_found(relink_app, page_world):
    world, fix = page_world
    owned = world.ids["Owned DB"]
    app = create_app(relink_app)
    with client_for(app, "shared") as client:
        page = client.get(f"/connections/{owned}").text
        assert 'id="check-again"' in page
        answer = client.post(f"/connections/{owned}/check", data={"csrf_token": page_csrf(client)})
        assert answer.status_code == 303
        assert answer.headers["location"] == f"/connections/{owned}"
        shown = client.get(f"/connections/{owned}").text
        assert "Still disconnected" in shown and 'id="broken"' in shown

        fix()
        client.post(f"/connections/{owned}/check", data={"csrf_token": page_csrf(client)})
        assert "its stored credentials were accepted" in client.get(f"/connections/{owned}").text
    sam = EMAILS["shared"]
    assert [e for e in trail(relink_app, owned) if e[0] == "connection.status_changed"] == [
        ("connection.status_changed", sam, "disconnected"),
        ("connection.status_changed", sam, "connected"),
    ]


def test_check_again_is_offered_only_to_who_may_reconnect(relink_app, page_world):
    world, _ = page_world
    owned, other = world.ids["Owned DB"], world.ids["Other DB"]
    app = create_app(relink_app)
    with client_for(app, "owner") as client:
        assert 'id="check-again"' in client.get(f"/connections/{owned}").text
    with client_for(app, "outsider") as client:
        assert 'id="check-again"' in client.get(f"/connections/{other}").text
        assert (
            client.post(
                f"/connections/{owned}/check", data={"csrf_token": page_csrf(client)}
            ).status_code
            == 404
        )


# --- the reconnect-connection flow ------------------------------------------------------------


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize("database_url", [APP_BACKENDS[-1]], indirect=True)
def test_the_reconnect_flow_records_who_asked_for_the_check_and_the_refresh(relink_app, broken):
    from flows.reconnect_connection import reconnect_connection

    world, _, fix = broken
    fix()
    before = last_event_id(relink_app)
    set_app(relink_app)
    try:
        result = asyncio.run(reconnect_connection(world.connection_id, requested_by=ADMIN))
    finally:
        set_app(None)
    assert result["refresh"]["ok"] == 1
    assert trail(relink_app, world.connection_id, before) == [
        ("connection.status_changed", ADMIN, "connected"),
        ("connection.account_seen", ADMIN, None),
        ("dataset.refreshed", ADMIN, None),
    ]
