"""A provider outage is visible as one thing: a sweep that finds most connections of one
provider failing alike opens a provider incident, the next sweeps keep it (one row), and
the first sweep that finds the provider well ends it. `relink status` (text and JSON)
and the Connections page show it, the page counting only what the viewer may see; its
opening and end are Prefect events."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
import sqlalchemy as sa

from connectors.base import CheckResult
from relink.domain.words import Outcome
from relink.models import Connection, ProviderIncident
from relink.sweep.run import SweepPolicy, plain_steps, run_sweep
from relink.sweep.validate import CheckPolicy
from relink.web import create_app
from relink_dev.sandbox import SandboxProvider, SandboxServer
from tests.support.reconnect import Cli
from tests.support.web import EMAILS, T0, build_world, client_for

pytestmark = pytest.mark.both_backends  # the incident's row is locked by each sweep

FAST = CheckPolicy(batch_size=50, concurrency=8, per_provider=8, attempts=1, backoff=0.0)
KEY = "incident-key"


@pytest.fixture
def sandbox():
    provider = SandboxProvider()
    provider.add_api_key(KEY)
    with SandboxServer(provider) as server:
        yield server


def add_api(relink_app, sandbox, owner: str, count: int, prefix: str) -> None:
    from relink.connections import NewConnection, add_connection

    with relink_app.transaction() as session:
        for n in range(count):
            add_connection(
                session,
                relink_app.vault,
                NewConnection(
                    type="api_key",
                    name=f"{prefix} {n}",
                    owner=owner,
                    settings={
                        "base_url": sandbox.url,
                        "probe_path": "/apikey/me",
                        "header": "X-API-Key",
                    },
                    secrets={"api_key": KEY},
                ),
                now=T0,
            )


def swept(relink_app, now):
    report = asyncio.run(
        run_sweep(
            relink_app,
            now=now,
            steps=plain_steps(relink_app),
            policy=SweepPolicy(check=FAST),
            source="a test",
        )
    )
    return report.summary


def incidents(relink_app) -> list[ProviderIncident]:
    with relink_app.sessions() as session:
        return list(session.scalars(sa.select(ProviderIncident).order_by(ProviderIncident.id)))


def test_an_outage_opens_one_incident_shown_everywhere_until_the_provider_is_well(
    relink_app, settings, sandbox, prefect_events
):
    world = build_world(relink_app, sandbox_url=sandbox.url)
    add_api(relink_app, sandbox, EMAILS["owner"], 2, "Owner API")
    add_api(relink_app, sandbox, EMAILS["admin"], 4, "Admin API")
    sandbox.provider.set_fault("error500", path_prefix="/apikey/me")
    start = T0 + timedelta(hours=12, minutes=15)  # 14:15 MST

    first = swept(relink_app, start)
    later = swept(relink_app, start + timedelta(hours=1))

    # an outage breaks nothing (the world's two PostgreSQL connections fail on their own)
    assert first.outcomes["unreachable"] == later.outcomes["unreachable"] == 7
    with relink_app.sessions() as session:
        broken = session.scalars(
            sa.select(Connection.type).where(Connection.status == "disconnected")
        )
        assert set(broken) == {"postgres"}
    (incident,) = incidents(relink_app)
    assert (incident.provider, incident.outcome, incident.code) == (
        "api_key",
        "unreachable",
        "http_500",
    )
    assert (incident.started_at, incident.updated_at) == (start, start + timedelta(hours=1))
    assert incident.ended_at is None
    (opened,) = prefect_events.named("relink.provider.incident")
    assert opened.resource.id == "relink.provider.api_key"
    assert opened.resource["relink.incident.state"] == "opened"
    assert opened.payload["failed"] == 6 and opened.payload["code"] == "http_500"

    # relink status: every connection of the installation ("Owned API", without the
    # probe path, fails otherwise)
    cli = Cli(settings)
    status = json.loads(cli.ok("status", "--json").stdout)
    (shown,) = status["provider_incidents"]
    assert (shown["failed"], shown["connections"]) == (6, 7)
    assert shown["since"] == start.isoformat()
    text = " ".join(cli.ok("status").stdout.split())  # as printed, unwrapped
    assert (
        "HTTP API (API key): 6 of 7 connections unreachable with http_500 since "
        "2026-11-02 14:15 MST — likely a provider outage, no connection was marked broken"
    ) in text

    # the Connections page: each viewer's own count; nothing for who has none of them
    app = create_app(relink_app)
    banners = {}
    for who in ("admin", "owner", "member", "outsider"):
        with client_for(app, who) as client:
            page = client.get("/connections").text
        banners[who] = [line for line in page.splitlines() if 'id="incident-' in line]
    assert "6 of 7 connections unreachable with http_500" in banners["admin"][0]
    assert "2 of 3 connections unreachable with http_500" in banners["owner"][0]
    assert banners["member"] == banners["outsider"] == []

    sandbox.provider.clear_fault()
    well = swept(relink_app, start + timedelta(hours=2))
    assert well.outcomes["ok"] == 6
    (ended,) = incidents(relink_app)
    assert ended.ended_at == start + timedelta(hours=2)
    closed = prefect_events.named("relink.provider.incident")[-1]
    assert closed.resource["relink.incident.state"] == "closed"
    assert json.loads(cli.ok("status", "--json").stdout)["provider_incidents"] == []
    with client_for(app, "admin") as client:
        assert 'id="incident-' not in client.get("/connections").text

    # a new outage is a new incident
    sandbox.provider.set_fault("error500", path_prefix="/apikey/me")
    swept(relink_app, start + timedelta(hours=3))
    assert [i.ended_at is None for i in incidents(relink_app)] == [False, True]
    assert world.ids  # the world's own connections took part


def test_a_recheck_of_one_connection_neither_opens_nor_ends_an_incident(
    relink_app, settings, sandbox
):
    build_world(relink_app, sandbox_url=sandbox.url)
    add_api(relink_app, sandbox, EMAILS["owner"], 6, "API")
    sandbox.provider.set_fault("error500", path_prefix="/apikey/me")
    swept(relink_app, T0)
    sandbox.provider.clear_fault()
    with relink_app.sessions() as session:
        one = session.scalar(sa.select(Connection.id).where(Connection.name == "API 0"))
    asyncio.run(
        run_sweep(
            relink_app,
            now=T0 + timedelta(hours=1),
            steps=plain_steps(relink_app),
            policy=SweepPolicy(check=FAST),
            source="a test",
            connection_ids=[one],
        )
    )
    (incident,) = incidents(relink_app)
    assert incident.ended_at is None  # one connection well says nothing of the provider
    assert CheckResult(Outcome.OK).outcome is Outcome.OK
