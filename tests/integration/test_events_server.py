"""Relink's events read back from a real Prefect server's events API (the session's
temporary server, `prefect_server`): what an Automation or the event feed of Prefect's
UI sees after a sweep that breaks a connection and meets a provider outage, and an
email run."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import timedelta

import pytest
from prefect.client.orchestration import get_client
from prefect.events.worker import EventsWorker

from relink.emailing.mailer import OutboxMailer
from relink.emailing.run import send_due
from relink.sweep.run import SweepPolicy, plain_steps, run_sweep
from relink.timeutil import utcnow
from relink_dev.sandbox import SandboxProvider, SandboxServer
from tests.integration.test_incidents import FAST, add_api
from tests.support.emaildata import Sleeps
from tests.support.web import EMAILS, build_world

pytestmark = pytest.mark.usefixtures("prefect_server")

EXPECTED = {"relink.connection.disconnected": 2, "relink.email.sent": 2}
WANTED = {
    "relink.connection.disconnected",
    "relink.provider.incident",
    "relink.email.sent",
}


async def read_events(since) -> list[dict]:
    """`POST /api/events/filter`: Relink's events that occurred since `since`."""
    async with get_client() as client:
        response = await client._client.post(
            "/events/filter",
            json={
                "filter": {
                    "occurred": {"since": since.isoformat(), "until": utcnow().isoformat()},
                    "event": {"prefix": ["relink."]},
                    "order": "ASC",
                },
                "limit": 50,
            },
        )
        response.raise_for_status()
        return response.json()["events"]


def test_the_events_reach_prefects_events_api(relink_app, tmp_path):
    # the events an earlier test in this process queued go out first, and occurred before
    # `started`: a test that sent emails a moment ago does not add to the counts below
    EventsWorker.drain_all(timeout=10, at_exit=False)
    started = utcnow()
    provider = SandboxProvider()
    with SandboxServer(provider) as sandbox:
        build_world(relink_app, sandbox_url=sandbox.url)  # its two PostgreSQL ones break
        add_api(relink_app, sandbox, EMAILS["owner"], 6, "API")
        provider.set_fault("error500", path_prefix="/apikey/me")
        now = utcnow()
        asyncio.run(
            run_sweep(
                relink_app,
                now=now,
                steps=plain_steps(relink_app),
                policy=SweepPolicy(check=FAST),
                source="a test",
            )
        )
    send_due(
        relink_app,
        now=now + timedelta(hours=25),
        mailer=OutboxMailer(tmp_path / "outbox"),
        sleep=Sleeps(),
    )
    EventsWorker.drain_all(timeout=10, at_exit=False)

    deadline = time.monotonic() + 30  # the server writes the events it receives in batches
    while True:
        events = asyncio.run(read_events(started))
        counts = Counter(e["event"] for e in events)  # all of them, not just one of each
        if all(counts[name] >= EXPECTED.get(name, 1) for name in WANTED) or (
            time.monotonic() > deadline
        ):
            break
        time.sleep(0.3)

    by_name = {}
    for event in events:
        by_name.setdefault(event["event"], []).append(event)
    assert set(by_name) >= WANTED, sorted(by_name)
    broken = by_name["relink.connection.disconnected"]
    assert len(broken) == 2 and len(by_name["relink.email.sent"]) == 2
    (incident,) = by_name["relink.provider.incident"]
    assert incident["resource"]["prefect.resource.id"] == "relink.provider.api_key"
    assert incident["resource"]["relink.incident.state"] == "opened"
    assert incident["payload"]["failed"] == 6
    roles = {r["prefect.resource.role"]: r for r in broken[0]["related"]}
    assert roles["account"]["prefect.resource.id"] == "relink.account.1"
    assert roles["provider"]["prefect.resource.id"] == "relink.provider.postgres"
