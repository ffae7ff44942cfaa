"""Reconnecting a password connection end to end, on the real loopback PostgreSQL with
real password checks (a private cluster, `pg_admin`): the password changes at the source, the
check breaks the connection, another user reconnects with the new password, the
datasets' rows land in the warehouse, and the metric's error is gone."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

from connectors.base import CheckResult
from relink.checks import record_batch
from relink.domain.words import Outcome
from relink.errors import Conflict, NotFound, PermissionDenied
from relink.models import AuditEvent, Connection, Disconnection
from relink.reconnecting import replace as replace_module
from relink.reconnecting import target as target_module
from relink.reconnecting.errors import CredentialsRefused, SourceUnreachable
from relink.reconnecting.replace import reconnect_with_secrets
from relink.sweep.run import sweep
from relink.sweep.validate import Checked
from tests.support.reconnect import (
    ADMIN,
    FAST_CHECKS,
    FAST_REFRESH,
    FOREIGN_ADMIN,
    OUTSIDER,
    OWNER,
    SHARED,
    T0,
    add_people,
    add_pg_connection,
    connection_view,
    failed_attempts_only,
    pg_settings,
    snapshot,
    user_id,
    warehouse_rows,
)

if TYPE_CHECKING:
    from tests.integration.conftest import PgAdmin

T1 = T0 + timedelta(hours=1)
T2 = T0 + timedelta(hours=30)


@pytest.fixture
def shop(relink_app, pg_admin: PgAdmin):
    """A warehouse-mode connection to a role's schema (table `items`, 3 rows), two
    datasets and a metric; checked once (connected)."""
    role = pg_admin.create_role()
    schema = pg_admin.create_schema(role.name)
    add_people(relink_app)
    world = add_pg_connection(
        relink_app,
        settings=pg_settings(pg_admin.url, role.name),
        password=role.password,
        queries=[
            ("Items", f'SELECT id, name, price FROM "{schema}".items ORDER BY id'),
            ("Item count", f'SELECT count(*) AS items FROM "{schema}".items'),
        ],
    )
    asyncio.run(sweep(relink_app, now=T0, policy=FAST_CHECKS))
    return world, role


def break_it(relink_app, pg_admin, role, new_password: str) -> None:
    pg_admin.set_password(role.name, new_password)
    summary = asyncio.run(sweep(relink_app, now=T1, policy=FAST_CHECKS))
    assert summary.outcomes["auth_failed"] == 1


def test_reconnect_by_a_shared_user_fixes_the_connection_and_refreshes_the_warehouse(
    relink_app, pg_admin, shop
):
    world, role = shop
    new_password = "new-pw-marker-5b1e"
    break_it(relink_app, pg_admin, role, new_password)
    broken = connection_view(relink_app, world.connection_id)
    assert broken["status"] == "disconnected"
    assert broken["invalid_since"] == T1.isoformat()
    assert broken["metrics"][0]["error"] is not None

    done = asyncio.run(
        reconnect_with_secrets(
            relink_app,
            world.connection_id,
            actor=SHARED,
            secrets={"password": new_password},
            now=T2,
            policy=FAST_REFRESH,
        )
    )

    assert (done.previous_owner, done.owner, done.by) == (OWNER, SHARED, SHARED)
    assert done.disconnection_closed
    assert done.refresh is not None and done.refresh.count("ok") == 2
    fixed = connection_view(relink_app, world.connection_id)
    assert fixed["status"] == "connected"
    assert fixed["created_by"] == "Cid Shared"
    assert fixed["invalid_since"] is None
    assert fixed["last_error_code"] is None and fixed["last_error_message"] is None
    assert [m["error"] for m in fixed["metrics"]] == [None]
    assert [(d["status"], d["row_count"]) for d in fixed["datasets"]] == [("ok", 3), ("ok", 1)]
    items, count = world.dataset_ids
    assert warehouse_rows(relink_app, f"ds_{items}") == [
        (1, "apple", 1.5),
        (2, "pear", 2.25),
        (3, "fig", 4.0),
    ]
    assert warehouse_rows(relink_app, f"ds_{count}") == [(3,)]

    with relink_app.sessions() as session:
        conn = session.get(Connection, world.connection_id)
        assert relink_app.vault.decrypt(conn.credentials, connection="x") == {
            "password": new_password
        }
        (episode,) = session.scalars(sa.select(Disconnection))
        assert (episode.started_at, episode.ended_at) == (T1, T2)
        events = session.scalars(
            sa.select(AuditEvent)
            .where(AuditEvent.connection_id == world.connection_id)
            .order_by(AuditEvent.id)
        ).all()
        actors = [e.actor.email if e.actor else None for e in events]
    trail = [(e.action, e.details.get("after")) for e in events]
    assert trail == [
        ("connection.created", None),
        ("connection.shared", None),
        ("dataset.created", None),
        ("dataset.created", None),
        ("connection.status_changed", "connected"),
        ("connection.account_seen", None),  # the first check learnt user@host
        ("connection.status_changed", "disconnected"),
        ("connection.status_changed", "connected"),
        ("connection.shared", None),  # the previous owner keeps seeing it
        ("connection.reconnected", None),
        ("dataset.refreshed", None),
        ("dataset.refreshed", None),
    ]
    assert events[5].details["account"] == f"{role.name}@127.0.0.1"
    assert events[8].details == {"shared_with": OWNER, "reason": "previous owner"}
    reconnected = events[9]
    assert actors[9] == SHARED
    assert reconnected.details["previous_owner"] == OWNER
    assert reconnected.details["owner"] == SHARED
    assert reconnected.details["status_before"] == "disconnected"
    everything = json.dumps([e.details for e in events])
    assert new_password not in everything and role.password not in everything


def test_reconnecting_a_working_connection_stores_the_credentials_and_its_new_owner(
    relink_app, pg_admin, shop
):
    """Nothing to repair (connected, no episode): the check's record and the new
    credentials go into the same row, one after the other, in one transaction."""
    world, role = shop
    before = connection_view(relink_app, world.connection_id)
    with relink_app.sessions() as session:
        version = session.get(Connection, world.connection_id).version

    done = asyncio.run(
        reconnect_with_secrets(
            relink_app,
            world.connection_id,
            actor=SHARED,
            secrets={"password": role.password},
            now=T2,
            refresh=False,
        )
    )

    assert (done.owner, done.disconnection_closed) == (SHARED, False)
    after = connection_view(relink_app, world.connection_id)
    assert (before["status"], after["status"]) == ("connected", "connected")
    assert after["created_by"] == "Cid Shared"
    with relink_app.sessions() as session:
        row = session.get(Connection, world.connection_id)
        assert row.last_checked_at == T2
        assert row.version > version


def test_a_wrong_password_changes_nothing(relink_app, pg_admin, shop):
    world, role = shop
    break_it(relink_app, pg_admin, role, "the-real-new-password")
    before = snapshot(relink_app)

    with pytest.raises(CredentialsRefused) as refused:
        asyncio.run(
            reconnect_with_secrets(
                relink_app,
                world.connection_id,
                actor=ADMIN,
                secrets={"password": "still-wrong-marker"},
                now=T2,
                policy=FAST_REFRESH,
            )
        )

    assert refused.value.code == "28P01"
    assert "refused the new credentials" in str(refused.value)
    assert "nothing was changed" in str(refused.value)
    assert "still-wrong-marker" not in str(refused.value)
    (attempt,) = failed_attempts_only(before, snapshot(relink_app))  # kept in the audit trail
    assert attempt["actor_id"] == user_id(relink_app, ADMIN)
    assert attempt["connection_id"] == world.connection_id and attempt["at"] == T2
    assert attempt["details"] == {
        "method": "password",
        "outcome": "auth_failed",
        "code": "28P01",
        "changed": {},
        "secrets_entered": ["password"],
    }


def test_an_unreachable_source_is_a_distinct_error_and_changes_nothing(
    relink_app, postgres_url, closed_port
):
    add_people(relink_app)
    world = add_pg_connection(
        relink_app,
        settings=pg_settings(postgres_url, "nobody", port=str(closed_port)),
        password="old",
        queries=[("Items", "SELECT 1")],
    )
    with relink_app.transaction() as session:  # broken earlier by a refused login
        failed = CheckResult(Outcome.AUTH_FAILED, "28P01", "password authentication failed")
        record_batch(session, [Checked(world.connection_id, "postgres", failed, 1)], [], now=T1)
    before = snapshot(relink_app)

    with pytest.raises(SourceUnreachable) as unreachable:
        asyncio.run(
            reconnect_with_secrets(
                relink_app, world.connection_id, actor=OWNER, secrets={"password": "new"}, now=T2
            )
        )

    assert unreachable.value.code == "connection_refused"
    assert "could not reach the source" in str(unreachable.value)
    assert not isinstance(unreachable.value, CredentialsRefused)
    (attempt,) = failed_attempts_only(before, snapshot(relink_app))
    assert attempt["details"]["outcome"] == "unreachable"
    assert attempt["details"]["code"] == "connection_refused"


@pytest.mark.parametrize("who", [OUTSIDER, FOREIGN_ADMIN])
def test_someone_who_cannot_see_the_connection_gets_not_found(relink_app, shop, who):
    world, _ = shop
    before = snapshot(relink_app)
    with pytest.raises(NotFound, match=f"no connection {world.connection_id} visible to you"):
        asyncio.run(
            reconnect_with_secrets(
                relink_app, world.connection_id, actor=who, secrets={"password": "x"}, now=T2
            )
        )
    with pytest.raises(NotFound):  # a missing id looks the same
        asyncio.run(
            reconnect_with_secrets(relink_app, 999, actor=who, secrets={"password": "x"}, now=T2)
        )
    assert snapshot(relink_app) == before


def test_someone_who_may_see_but_not_reconnect_gets_permission_denied(
    relink_app, shop, monkeypatch
):
    world, _ = shop
    monkeypatch.setattr(target_module, "can_reconnect", lambda viewer, ref: False)
    with pytest.raises(PermissionDenied, match="may see connection"):
        asyncio.run(
            reconnect_with_secrets(
                relink_app, world.connection_id, actor=SHARED, secrets={"password": "x"}, now=T2
            )
        )


def _bump_version_during_validation(monkeypatch, relink_app, times: int) -> list[int]:
    """Someone (a check, another reconnect) changes the connection while we validate."""
    real = replace_module._validate
    bumps: list[int] = []

    async def validate_then_change(app, target, settings, credentials, now):
        validated = await real(app, target, settings, credentials, now)
        if len(bumps) < times:
            with relink_app.transaction() as session:
                conn = session.get(Connection, target.connection_id)
                conn.updated_at = now + timedelta(seconds=len(bumps) + 1)  # bumps the version
            bumps.append(target.version)
        return validated

    monkeypatch.setattr(replace_module, "_validate", validate_then_change)
    return bumps


def test_a_change_during_validation_is_validated_again_once(
    relink_app, pg_admin, shop, monkeypatch
):
    world, role = shop
    break_it(relink_app, pg_admin, role, "pw-after-change")
    bumps = _bump_version_during_validation(monkeypatch, relink_app, times=1)
    done = asyncio.run(
        reconnect_with_secrets(
            relink_app,
            world.connection_id,
            actor=OWNER,
            secrets={"password": "pw-after-change"},
            now=T2,
            refresh=False,
        )
    )
    assert len(bumps) == 1 and done.refresh is None
    assert connection_view(relink_app, world.connection_id)["status"] == "connected"


def test_a_connection_that_keeps_changing_is_never_overwritten(
    relink_app, pg_admin, shop, monkeypatch
):
    world, role = shop
    break_it(relink_app, pg_admin, role, "pw-while-busy")
    bumps = _bump_version_during_validation(monkeypatch, relink_app, times=2)
    with pytest.raises(Conflict, match="changed twice"):
        asyncio.run(
            reconnect_with_secrets(
                relink_app,
                world.connection_id,
                actor=OWNER,
                secrets={"password": "pw-while-busy"},
                now=T2,
            )
        )
    assert len(bumps) == 2
    view = connection_view(relink_app, world.connection_id)
    assert view["status"] == "disconnected" and view["created_by"] == "Bob Owner"


def test_a_reconnect_is_one_reconnected_event_and_a_refused_one_none(
    relink_app, pg_admin, shop, prefect_events
):
    """The reconnect closes the disconnection as a check would, but the news is who fixed
    it: `relink.connection.reconnected`, not `.recovered`; no password in it."""
    world, role = shop
    new_password = "new-pw-marker-event-77c2"
    break_it(relink_app, pg_admin, role, new_password)
    assert prefect_events.names() == ["relink.connection.disconnected"]
    prefect_events.clear()
    with pytest.raises(CredentialsRefused):
        asyncio.run(
            reconnect_with_secrets(
                relink_app,
                world.connection_id,
                actor=ADMIN,
                secrets={"password": "still-wrong-event-marker"},
                now=T2,
                policy=FAST_REFRESH,
            )
        )
    assert prefect_events.names() == []

    asyncio.run(
        reconnect_with_secrets(
            relink_app,
            world.connection_id,
            actor=SHARED,
            secrets={"password": new_password},
            now=T2,
            policy=FAST_REFRESH,
        )
    )

    (event,) = prefect_events.all()
    assert event.event == "relink.connection.reconnected"
    assert event.resource.id == f"relink.connection.{world.connection_id}"
    assert (event.payload["status_before"], event.payload["status"]) == (
        "disconnected",
        "connected",
    )
    assert event.payload["disconnection_closed"] and event.payload["owner_changed"]
    assert event.payload["method"] == "password"
    assert event.payload["account_replaced"] is False  # a new password, the same user
    text = event.model_dump_json()
    assert new_password not in text and "still-wrong-event-marker" not in text
