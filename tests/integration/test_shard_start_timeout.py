"""A sweep never waits forever, on a real (temporary) Prefect server where no worker
serves the check-connections-shard deployment: a shard run not started within
RELINK_SHARD_START_TIMEOUT is cancelled, its shard claimed for the sweep (a worker that
picks the run up late checks nothing), its connections reported as not checked; the
sweep fails with a message saying so, and the next sweep checks them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime

import pytest
import sqlalchemy as sa
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

from deployments.definitions import ato_deployment, by_name
from flows.check_connections import check_connections
from flows.check_connections_shard import check_connections_shard
from relink.app import set_app
from relink.models import Connection, SweepShard
from relink.sweep.record import last_sweep
from relink.sweep.shards import WITHDRAWN
from tests.integration.test_deployments import add_connections
from tests.support.reconnect import Cli

# shards are claimed with row locks
pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.both_backends]


@pytest.fixture
def shard_deployment() -> Iterator[str]:
    """The shard deployment, registered on the server; no worker or runner serves it."""

    async def register() -> str:
        deployment = await ato_deployment(by_name("check-connections-shard"))
        return str(await deployment.apply())

    async def remove(deployment_id: str) -> None:
        async with get_client() as client:
            await client.delete_deployment(deployment_id)

    deployment_id = asyncio.run(register())
    yield deployment_id
    asyncio.run(remove(deployment_id))


@pytest.fixture
def app_with_connections(relink_app):
    add_connections(relink_app, 5)
    relink_app.settings.shard_start_timeout = 0  # no shard run ever starts in time
    relink_app.settings.check_timeout = 2
    set_app(relink_app)
    yield relink_app
    set_app(None)


async def shard_runs(deployment_id: str):
    async with get_client() as client:
        return await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )


def test_a_shard_run_never_started_is_cancelled_and_its_connections_reported(
    app_with_connections, shard_deployment
):
    app = app_with_connections

    async def sweep():
        # bounded: a sweep that waits for its shards forever fails here instead
        return await asyncio.wait_for(
            check_connections(shard_size=2, fan_out=True, return_state=True), timeout=120
        )

    state = asyncio.run(sweep())

    assert state.is_failed()
    assert "shard(s) 1, 2, 3 did not start within 0 s and were cancelled" in state.message
    assert "their 5 connection(s) were not checked in this sweep" in state.message
    assert "the next sweep checks them" in state.message
    sweep_id = str(state.state_details.flow_run_id)
    with app.sessions() as session:
        last = last_sweep(session)
        shards = session.scalars(sa.select(SweepShard).where(SweepShard.sweep_id == sweep_id))
        claimed = {s.shard: (s.claimed_by, s.finished_at) for s in shards}
        checked = set(session.scalars(sa.select(Connection.last_checked_at)))
    assert last["outcome"] == "failed" and last["summary"]["sweep_id"] == sweep_id
    assert last["summary"]["checked"] == 0
    assert last["summary"]["not_checked"] == {"not_started": 5}
    assert last["summary"]["not_started_shards"] == [1, 2, 3]
    assert claimed == {n: (WITHDRAWN, None) for n in (1, 2, 3)}
    assert checked == {None}

    runs = asyncio.run(shard_runs(shard_deployment))
    assert sorted(r.parameters["shard"] for r in runs) == [1, 2, 3]
    assert {r.state.type.value for r in runs} == {"CANCELLED"}

    async def sweep_time():
        async with get_client() as client:
            return (await client.read_flow_run(state.state_details.flow_run_id)).expected_start_time

    scheduled = asyncio.run(sweep_time())
    # each shard was to check as of its sweep's logical time
    assert [datetime.fromisoformat(str(r.parameters["as_of"])) for r in runs] == [scheduled] * 3

    shown = " ".join(Cli(app.settings).ok("status").stdout.split())
    assert "failed: 0 checked" in shown
    assert "5 not checked (the next sweep checks them)" in shown

    # a worker that starts a cancelled shard's run late checks nothing
    late = asyncio.run(check_connections_shard(sweep_id, 2))
    assert late == {"sweep_id": sweep_id, "shard": 2, "claimed": False}

    # the next sweep covers them
    following = asyncio.run(check_connections())
    assert following["checked"] == 5 and following["not_checked"] == {}
    with app.sessions() as session:
        assert None not in set(session.scalars(sa.select(Connection.last_checked_at)))
