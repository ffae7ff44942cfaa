"""The check-connections flow on a real (temporary) Prefect server: one task run per
batch, a summary result and a markdown artifact, no secret in any of them."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.check_connections import check_connections
from relink.app import set_app
from relink.directory import add_account, add_user
from relink.models import Connection
from relink.sandbox import SandboxProvider, SandboxServer

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SECRET = "api-key-marker-7f3a"


@pytest.fixture
def sandbox():
    provider = SandboxProvider()
    provider.add_api_key(SECRET)
    with SandboxServer(provider) as server:
        yield server


@pytest.fixture
def app_with_connections(relink_app, sandbox):
    with relink_app.transaction() as session:
        add_account(session, "Acme", now=T0)
        owner = add_user(
            session, email="o@acme.test", name="O", role="member", account="Acme", now=T0
        )
        for i, key in enumerate([SECRET] * 430 + ["revoked-" + SECRET] * 20):
            session.add(
                Connection(
                    account_id=1,
                    type="api_key",
                    name=f"c{i}",
                    mode="direct",
                    settings={
                        "base_url": sandbox.url,
                        "probe_path": "/apikey/me",
                        "header": "X-API-Key",
                    },
                    credentials=relink_app.vault.encrypt({"api_key": key}),
                    owner=owner,
                    status="unchecked",
                    created_at=T0,
                    updated_at=T0,
                )
            )
    set_app(relink_app)
    yield relink_app
    set_app(None)


@pytest.mark.usefixtures("prefect_server")
def test_flow_checks_in_batches_and_publishes_a_summary(app_with_connections):
    state = asyncio.run(check_connections(batch_size=100, return_state=True))
    summary = state.result()
    assert summary["checked"] == 450
    assert summary["outcomes"] == {"ok": 430, "auth_failed": 20, "unreachable": 0, "error": 0}
    assert summary["batches"] == 5
    with app_with_connections.sessions() as session:
        assert (
            session.scalar(sa.select(sa.func.count()).where(Connection.status == "disconnected"))
            == 20
        )

    async def read_back():
        async with get_client() as client:
            run = await client.read_flow_run(state.state_details.flow_run_id)
            tasks = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
            )
            artifacts = await client.read_artifacts()
            return run, tasks, [a for a in artifacts if a.flow_run_id == run.id]

    run, tasks, artifacts = asyncio.run(read_back())
    assert run.name == "check 450 connections"
    assert len(tasks) == 5  # one task run per batch, never per connection
    (artifact,) = artifacts
    assert artifact.key == "check-connections-summary"
    assert "| ok | 430 |" in artifact.data
    everything = json.dumps(
        [
            run.model_dump(mode="json"),
            artifact.data,
            summary,
            [t.model_dump(mode="json") for t in tasks],
        ]
    )
    assert SECRET not in everything
