"""The reconnect-connection and refresh-datasets flows on a real (temporary) Prefect
server, against the real loopback PostgreSQL with real password checks."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.reconnect_connection import reconnect_connection
from flows.refresh_datasets import refresh_datasets
from relink.app import set_app
from relink_dev.sandbox import SandboxProvider, SandboxServer
from tests.conftest import APP_BACKENDS
from tests.integration.oauth_fixtures import add_app_connections, installation_app
from tests.support.reconnect import (
    ADMIN,
    OWNER,
    T0,
    add_broken_pg_connection,
    add_people,
    add_pg_connection,
    connection_view,
    pg_settings,
    warehouse_rows,
)

if TYPE_CHECKING:
    from tests.integration.conftest import PgAdmin

# The app database's behaviour is covered on every backend by the other reconnect tests;
# the flows run once, on the last configured backend (PostgreSQL when it is set up).
pytestmark = [
    pytest.mark.usefixtures("prefect_server"),
    pytest.mark.parametrize("database_url", [APP_BACKENDS[-1]], indirect=True),
]


@pytest.fixture
def broken(relink_app, pg_admin: PgAdmin):
    """A connection whose password was changed at the source, found broken by a check."""
    world, role = add_broken_pg_connection(
        relink_app, pg_admin, new_password="changed-at-source-marker"
    )
    assert connection_view(relink_app, world.connection_id)["status"] == "disconnected"
    set_app(relink_app)
    yield world, role
    set_app(None)


async def _run_record(flow_run_id):
    async with get_client() as client:
        run = await client.read_flow_run(flow_run_id)
        tasks = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
        )
        artifacts = [a for a in await client.read_artifacts() if a.flow_run_id == run.id]
        return run, tasks, artifacts


def run_record(state):
    return asyncio.run(_run_record(state.state_details.flow_run_id))


def test_still_invalid_credentials_give_the_owner_the_reconnect_link_and_no_secret(
    relink_app, broken
):
    world, role = broken
    state = asyncio.run(
        reconnect_connection(
            world.connection_id, requested_by=ADMIN, notify_owner=True, return_state=True
        )
    )
    result = state.result()

    link = f"http://relink.test/connections/{world.connection_id}"
    assert result["reconnect_url"] == link
    assert result["connection"]["status"] == "disconnected"
    # no SendGrid key: the email went to the outbox, and says so
    assert result["emailed"]["to"] == [OWNER] and result["emailed"]["result"] == "outbox"
    run, tasks, artifacts = run_record(state)
    assert run.name == f"reconnect connection {world.connection_id}"
    (artifact,) = artifacts
    assert artifact.key == "reconnect-connection"
    assert f"]({link})" in artifact.data and OWNER in artifact.data
    (email,) = (relink_app.settings.data_dir / "outbox").glob("disconnection-*.eml")
    assert link in email.read_text()
    everything = json.dumps(
        [
            run.model_dump(mode="json"),
            [t.model_dump(mode="json") for t in tasks],
            artifact.data,
            result,
            email.read_text(),
        ]
    )
    for secret in (role.password, "changed-at-source-marker"):
        assert secret not in everything
    assert connection_view(relink_app, world.connection_id)["status"] == "disconnected"


def test_a_misconfigured_installation_waits_for_an_admin_and_emails_no_owner(relink_app):
    """The installation's Salesforce app was refused: the re-check says an admin must fix
    it, hands out no reconnect link and emails nobody, even when asked to."""
    provider = SandboxProvider()
    provider.register_client("sf-app", "the-rotated-secret", ["http://127.0.0.1:9/cb"])
    relink_app.settings.oauth = installation_app("sf-app", "an-old-secret")
    add_people(relink_app)
    with SandboxServer(provider) as sandbox:
        (connection_id,) = add_app_connections(
            relink_app, provider, sandbox.url, app_id="sf-app", owner=OWNER, names=["Sales"], now=T0
        )
        set_app(relink_app)
        try:
            state = asyncio.run(
                reconnect_connection(
                    connection_id, requested_by=ADMIN, notify_owner=True, return_state=True
                )
            )
        finally:
            set_app(None)
    result = state.result()

    assert result["connection"]["status"] == "misconfigured"
    assert result["reconnect_url"] is None and result["emailed"] is None
    assert list((relink_app.settings.data_dir / "outbox").glob("*.eml")) == []
    _, _, (artifact,) = run_record(state)
    assert "waits for an administrator" in artifact.data
    assert "RELINK_OAUTH__SALESFORCE__CLIENT_SECRET" in artifact.data
    assert "an-old-secret" not in json.dumps([artifact.data, result])


def test_credentials_fixed_at_the_source_close_the_disconnection_and_refresh(
    relink_app, pg_admin, broken
):
    world, role = broken
    pg_admin.set_password(role.name, role.password)  # someone fixed it at the source

    state = asyncio.run(
        reconnect_connection(world.connection_id, requested_by=OWNER, return_state=True)
    )
    result = state.result()

    assert result["reconnect_url"] is None
    assert result["connection"]["disconnection_closed"] is True
    assert result["refresh"]["ok"] == 1
    view = connection_view(relink_app, world.connection_id)
    assert view["status"] == "connected" and view["metrics"][0]["error"] is None
    assert warehouse_rows(relink_app, f"ds_{world.dataset_ids[0]}") == [
        (1, "apple"),
        (2, "pear"),
        (3, "fig"),
    ]
    _, _, artifacts = run_record(state)
    assert "works again" in artifacts[0].data


def test_refresh_datasets_publishes_a_summary(relink_app, broken, postgres_url):
    world, _ = broken
    good = add_pg_connection(
        relink_app,
        name="Trusted",
        settings=pg_settings(postgres_url, "postgres"),
        password="trusted",
        queries=[("Answer", "SELECT 42 AS answer"), ("Broken", "SELECT * FROM relink_nope")],
        metric=False,
    )
    ids = good.dataset_ids + world.dataset_ids  # the last one's connection is broken

    state = asyncio.run(refresh_datasets(dataset_ids=ids, return_state=True))
    summary = state.result()

    assert (summary["datasets"], summary["ok"], summary["error"], summary["skipped"]) == (
        3,
        1,
        1,
        1,
    )
    run, tasks, artifacts = run_record(state)
    assert run.name == "refresh 3 dataset(s)"
    assert len(tasks) == 3
    assert artifacts[0].key == "refresh-datasets-summary"
    assert "| Answer (" in artifacts[0].data and "relink_nope" in artifacts[0].data
