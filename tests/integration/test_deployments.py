"""The one definition of the deployments: `prefect.yaml` agrees with
`deployments/definitions.py`, and the Prefect UI's "Run" form explains every parameter."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from prefect.client.schemas.actions import DeploymentScheduleCreate

from deployments.definitions import (
    DEPLOYMENTS,
    WORK_POOL,
    DeploymentSpec,
    ato_deployment,
    by_name,
    load_flow,
    schedule_of,
)

ROOT = Path(__file__).resolve().parents[2]


def prefect_yaml() -> dict:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))


def yaml_schedule(entry: dict) -> dict | None:
    (schedule,) = entry["schedules"] or [None]
    return schedule


def test_prefect_yaml_declares_the_same_deployments_in_the_same_order():
    declared = [d["name"] for d in prefect_yaml()["deployments"]]
    assert declared == [s.name for s in DEPLOYMENTS]


@pytest.mark.parametrize("spec", DEPLOYMENTS, ids=lambda s: s.name)
def test_prefect_yaml_agrees_with_the_python_definition(spec: DeploymentSpec):
    entry = {d["name"]: d for d in prefect_yaml()["deployments"]}[spec.name]
    assert entry["entrypoint"] == spec.entrypoint
    assert entry["description"] == spec.description
    assert tuple(entry["tags"]) == spec.tags
    assert entry["parameters"] == spec.parameters
    limit = entry.get("concurrency_limit")
    if isinstance(limit, dict):
        assert (limit["limit"], limit["collision_strategy"]) == (
            spec.concurrency_limit,
            spec.collision_strategy,
        )
    else:
        assert limit == spec.concurrency_limit and spec.collision_strategy == "ENQUEUE"
    assert entry["work_pool"]["name"] == WORK_POOL
    schedule = yaml_schedule(entry)
    expected = schedule_of(spec)
    if expected is None:
        assert schedule is None, f"{spec.name} runs on demand: no schedule in prefect.yaml"
        return
    assert schedule["active"] is True
    assert schedule["timezone"] == spec.timezone
    if spec.cron is not None:
        assert schedule["cron"] == spec.cron
    else:
        assert timedelta(seconds=schedule["interval"]) == timedelta(minutes=spec.interval_minutes)
        # the same anchor, so the same round times
        client_side = DeploymentScheduleCreate.from_schedule(expected).schedule
        assert str(client_side.anchor_date.isoformat()) == schedule["anchor_date"]


def test_prefect_yaml_points_workers_at_the_checkout():
    (step,) = prefect_yaml()["pull"]
    assert step == {
        "prefect.deployments.steps.set_working_directory": {"directory": "{{ $RELINK_HOME }}"}
    }


def test_the_schedules_the_issue_asks_for():
    assert by_name("check-connections").interval_minutes == 15
    assert by_name("check-connections").concurrency_limit == 1
    assert by_name("check-connections").collision_strategy == "CANCEL_NEW"
    email = by_name("send-disconnection-emails")
    assert (email.cron, email.timezone, email.concurrency_limit) == (
        "0 7 * * *",
        "America/Phoenix",
        1,
    )
    for name in ("reconnect-connection", "refresh-datasets", "check-connections-shard"):
        assert schedule_of(by_name(name)) is None
        assert not by_name(name).scheduled


def test_the_check_interval_is_a_setting(monkeypatch):
    from deployments.definitions import check_interval_minutes

    monkeypatch.setenv("RELINK_CHECK_INTERVAL_MINUTES", "5")
    assert check_interval_minutes() == 5
    monkeypatch.setenv("RELINK_CHECK_INTERVAL_MINUTES", "soon")
    with pytest.raises(ValueError, match="whole minutes"):
        check_interval_minutes()


def test_flow_names_match_deployment_names():
    for spec in DEPLOYMENTS:
        assert load_flow(spec).name == spec.flow_name == spec.name


@pytest.mark.prefect
@pytest.mark.parametrize(
    "name",
    [
        "reconnect-connection",
        "refresh-datasets",
        "check-connections",
        "check-connections-shard",
        "send-disconnection-emails",
    ],
)
def test_every_parameter_of_a_deployment_has_a_description_on_the_server(prefect_server, name):
    """What the UI's Run form shows: the server's stored parameter_openapi_schema."""
    from prefect import get_client

    spec = by_name(name)

    async def stored_schema() -> dict:
        deployment_id = await (await ato_deployment(spec)).apply()
        async with get_client() as client:
            deployment = await client.read_deployment(deployment_id)
        return deployment.parameter_openapi_schema

    schema = asyncio.run(stored_schema())
    properties = schema["properties"]
    assert properties, f"{name} has no parameters"
    missing = [p for p, field in properties.items() if not field.get("description")]
    assert not missing, f"{name}: parameters without a description in the Run form: {missing}"


@pytest.mark.prefect
def test_served_deployments_keep_their_schedules_and_concurrency(prefect_server):
    from prefect import get_client

    async def stored() -> dict:
        out = {}
        async with get_client() as client:
            for spec in DEPLOYMENTS:
                deployment_id = await (await ato_deployment(spec)).apply()
                out[spec.name] = await client.read_deployment(deployment_id)
        return out

    deployments = asyncio.run(stored())
    email = deployments["send-disconnection-emails"]
    (schedule,) = email.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 7 * * *", "America/Phoenix")
    assert email.global_concurrency_limit.limit == 1
    assert email.concurrency_options.collision_strategy == "ENQUEUE"
    check = deployments["check-connections"]
    assert check.global_concurrency_limit.limit == 1
    assert check.concurrency_options.collision_strategy == "CANCEL_NEW"
    assert deployments["reconnect-connection"].schedules == []
    assert deployments["check-connections"].schedules[0].schedule.interval == timedelta(minutes=15)


# --- shards: planned in id windows, claimed once -------------------------------------


def add_connections(app, n: int) -> list[int]:
    from datetime import UTC, datetime

    from relink.connections import NewConnection, add_connection
    from relink.directory import add_account, add_user

    now = datetime(2026, 1, 1, tzinfo=UTC)
    with app.transaction() as session:
        add_account(session, "Shards", now=now)
        add_user(session, email="o@shards.test", name="O", role="admin", account="Shards", now=now)
        ids = [
            add_connection(
                session,
                app.vault,
                NewConnection(
                    type="api_key",
                    name=f"c{i}",
                    owner="o@shards.test",
                    settings={"base_url": "http://127.0.0.1:9", "probe_path": "/me"},
                    secrets={"api_key": f"k{i}"},
                ),
                now=now,
            ).id
            for i in range(n)
        ]
    return ids


def test_shards_cover_every_connection_once(relink_app):
    from relink.sweep.plan import plan_window

    ids = add_connections(relink_app, 7)
    with relink_app.sessions() as session:
        shards = plan_window(session, 3)
        assert shards == [(0, ids[2]), (ids[2], ids[5]), (ids[5], None)]
        inner = plan_window(session, 2, ids[2], ids[5])
        assert inner == [(ids[2], ids[4]), (ids[4], ids[5])]
        assert plan_window(session, 10) == [(0, None)]


def test_a_shard_is_claimed_once(relink_app):
    from concurrent.futures import ThreadPoolExecutor
    from datetime import UTC, datetime

    from relink.sweep.shards import claim_shard, create_shards

    now = datetime(2026, 1, 1, tzinfo=UTC)
    with relink_app.transaction() as session:
        create_shards(session, "sweep-1", [(0, 10), (10, None)], now=now)
    with relink_app.transaction() as session:  # a rerun of the sweep adds nothing
        create_shards(session, "sweep-1", [(0, 10), (10, None)], now=now)

    def claim(worker: str):
        return claim_shard(relink_app, "sweep-1", 2, claimant=worker, now=now)

    with ThreadPoolExecutor(8) as pool:
        claims = list(pool.map(claim, [f"w{i}" for i in range(8)]))
    winners = [c for c in claims if c is not None]
    assert len(winners) == 1
    assert (winners[0].after_id, winners[0].upto_id) == (10, None)
    assert claim_shard(relink_app, "sweep-1", 1, claimant="late", now=now) is not None
    assert claim_shard(relink_app, "sweep-1", 3, claimant="late", now=now) is None


@pytest.mark.prefect
def test_a_shard_run_that_finds_its_shard_claimed_checks_nothing(prefect_server, relink_app):
    from datetime import UTC, datetime

    from flows.check_connections_shard import check_connections_shard
    from relink.app import set_app
    from relink.models import Connection
    from relink.sweep.shards import create_shards

    add_connections(relink_app, 2)
    with relink_app.transaction() as session:
        create_shards(session, "sweep-2", [(0, None)], now=datetime(2026, 1, 1, tzinfo=UTC))
    set_app(relink_app)
    try:
        first = asyncio.run(check_connections_shard("sweep-2", 1, concurrency=4))
        with relink_app.sessions() as session:
            checked_at = [c.last_checked_at for c in session.query(Connection)]
        second = asyncio.run(check_connections_shard("sweep-2", 1))
    finally:
        set_app(None)
    assert first["claimed"] and first["checked"] == 2
    assert second == {"sweep_id": "sweep-2", "shard": 1, "claimed": False}
    with relink_app.sessions() as session:
        assert [c.last_checked_at for c in session.query(Connection)] == checked_at


@pytest.mark.prefect
def test_a_sweep_in_one_run_records_its_summary(prefect_server, relink_app):
    from flows.check_connections import check_connections
    from relink.app import set_app
    from relink.sweep.record import last_sweep

    add_connections(relink_app, 3)
    set_app(relink_app)
    try:
        result = asyncio.run(check_connections(shard_size=2, batch_size=2))
    finally:
        set_app(None)
    assert result["checked"] == 3 and result["shards"] == 0  # not a deployment run: no fan-out
    with relink_app.sessions() as session:
        last = last_sweep(session)
    assert last["source"] == "check-connections" and last["outcome"] == "completed"
    assert last["summary"]["checked"] == 3
