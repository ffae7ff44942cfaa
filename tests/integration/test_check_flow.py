"""The check-connections flow on a real (temporary) Prefect server: one task run per
batch, a summary result and a markdown artifact, no secret in any of them; an
installation problem warns the admins and completes the run."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
    LogFilterLevel,
)
from prefect.logging.handlers import APILogHandler

from flows.check_connections import check_connections
from relink.app import set_app
from relink.directory import add_account, add_user
from relink.models import Connection, Disconnection
from relink_dev.sandbox import SandboxProvider, SandboxServer
from tests.integration.oauth_fixtures import (
    REDIRECT_URI,
    add_app_connections,
    installation_app,
    stored,
)

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
    assert summary["outcomes"] == {
        "ok": 430,
        "auth_failed": 20,
        "misconfigured": 0,
        "unreachable": 0,
        "error": 0,
    }
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


@pytest.mark.usefixtures("prefect_server")
def test_a_rotated_app_secret_completes_the_run_and_warns_the_admins(relink_app):
    """The operators rotated the Salesforce app's secret and forgot the setting: the run
    completes, breaks no connection, and tells the admins (an artifact of its own, a
    WARNING line) which provider fails and which settings fix it."""
    app_id, old_secret = "relink-salesforce-app", secrets.token_urlsafe(18)
    provider = SandboxProvider()
    provider.register_client(app_id, old_secret, [REDIRECT_URI])
    relink_app.settings.oauth = installation_app(app_id, old_secret)
    with SandboxServer(provider) as sandbox:
        with relink_app.transaction() as session:
            add_account(session, "Acme", now=T0)
            add_user(session, email="o@acme.test", name="O", role="member", account="Acme", now=T0)
        ids = add_app_connections(
            relink_app,
            provider,
            sandbox.url,
            app_id=app_id,
            owner="o@acme.test",
            names=[f"sf{i}" for i in range(6)],
            now=T0,
        )
        tokens = [stored(relink_app, i)[0] for i in ids]
        new_secret = secrets.token_urlsafe(18)
        provider.register_client(app_id, new_secret, [REDIRECT_URI])
        set_app(relink_app)
        try:
            state = asyncio.run(check_connections(return_state=True))
        finally:
            set_app(None)

    assert state.is_completed()
    summary = state.result()
    assert summary["outcomes"]["misconfigured"] == 6 and summary["opened"] == 0
    (problem,) = summary["installation_problems"]
    assert (problem["provider"], problem["code"], problem["connections"]) == (
        "salesforce",
        "invalid_client",
        6,
    )
    assert "RELINK_OAUTH__SALESFORCE__CLIENT_SECRET" in problem["fix"]
    with relink_app.sessions() as session:
        assert set(session.scalars(sa.select(Connection.status))) == {"misconfigured"}
        assert session.scalar(sa.select(sa.func.count(Disconnection.id))) == 0
    APILogHandler().flush()

    async def read_back():
        async with get_client() as client:
            artifacts = await client.read_artifacts()
            warnings = await client.read_logs(
                LogFilter(
                    flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id]),
                    level=LogFilterLevel(ge_=logging.WARNING),
                )
            )
        mine = [a for a in artifacts if a.flow_run_id == state.state_details.flow_run_id]
        return {a.key: a.data for a in mine}, [log.message for log in warnings]

    artifacts, warnings = asyncio.run(read_back())
    installation = artifacts["check-connections-installation"]
    assert "| salesforce | invalid_client | 6 |" in installation
    assert "RELINK_OAUTH__SALESFORCE__CLIENT_ID" in installation
    assert "## Installation problems" in artifacts["check-connections-summary"]
    assert any("installation problem" in w and "salesforce" in w for w in warnings), warnings
    everything = json.dumps([artifacts, warnings, summary])
    for secret in [old_secret, new_secret, *(t["refresh_token"] for t in tokens)]:
        assert secret not in everything
