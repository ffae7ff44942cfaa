"""One logical time per run, on a real (temporary) Prefect server: flow runs are created
scheduled at given instants and run later, as a worker that starts them late would. The
sweep records its checks at its scheduled time, and the email run decides at its own:
a disconnection first seen by the sweep scheduled at T is emailed by the run scheduled
at T + 24 h, whichever of the two runs scheduled at that instant starts first."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from prefect.client.orchestration import get_client
from prefect.flow_engine import run_flow_async
from prefect.states import Scheduled

from flows.check_connections import check_connections
from flows.send_disconnection_emails import send_disconnection_emails
from relink.app import set_app
from relink.connections import NewConnection, add_connection
from relink.directory import add_account, add_user
from relink.models import Connection, Disconnection, Notification
from relink_dev.sandbox import SandboxProvider, SandboxServer

T = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)  # 07:00 MST: a sweep and the email run at once
GOOD_KEY = "logical-time-good-key"

# times are stored as the backends store them, and the due rule runs as SQL
pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.both_backends]


def run_scheduled_at(flow: Any, at: datetime, **parameters: Any) -> Any:
    """Create a run of `flow` scheduled at `at`, then run it now (it starts late)."""

    async def go() -> Any:
        async with get_client() as client:
            flow_run = await client.create_flow_run(
                flow, parameters=parameters, state=Scheduled(scheduled_time=at)
            )
        state = await run_flow_async(
            flow, flow_run=flow_run, parameters=parameters, return_type="state"
        )
        assert state.is_completed(), state
        return await state.result()

    return asyncio.run(go())


@pytest.fixture
def world(relink_app):
    provider = SandboxProvider()
    provider.add_api_key(GOOD_KEY)
    with SandboxServer(provider) as sandbox:
        with relink_app.transaction() as session:
            add_account(session, "Acme", now=T - timedelta(days=30))
            add_user(
                session,
                email="owner@acme.test",
                name="Owner",
                role="member",
                account="Acme",
                now=T - timedelta(days=30),
            )
            for name, key in (("Works", GOOD_KEY), ("Revoked", "a-revoked-key")):
                add_connection(
                    session,
                    relink_app.vault,
                    NewConnection(
                        type="api_key",
                        name=name,
                        owner="owner@acme.test",
                        settings={
                            "base_url": sandbox.url,
                            "probe_path": "/apikey/me",
                            "header": "X-API-Key",
                        },
                        secrets={"api_key": key},
                    ),
                    now=T - timedelta(days=30),
                )
        set_app(relink_app)
        try:
            yield relink_app
        finally:
            set_app(None)


def disconnections(app) -> list[tuple[str, datetime, datetime | None]]:
    with app.sessions() as session:
        return list(
            session.execute(
                sa.select(Connection.name, Disconnection.started_at, Connection.last_checked_at)
                .join(Connection, Connection.id == Disconnection.connection_id)
                .order_by(Disconnection.id)
            ).all()
        )


def emails(app) -> list[str]:
    with app.sessions() as session:
        return list(session.scalars(sa.select(Notification.state)))


def test_a_disconnection_first_seen_by_the_sweep_at_t_is_emailed_by_the_run_at_t_plus_24h(world):
    swept = run_scheduled_at(check_connections, T)
    assert swept["outcomes"]["auth_failed"] == 1 and swept["opened"] == 1
    # the check is recorded at the sweep's scheduled time, not when its process started
    assert disconnections(world) == [("Revoked", T, T)]

    # the email run scheduled at the same instant as that sweep: not 24 hours yet
    assert run_scheduled_at(send_disconnection_emails, T)["outbox"] == 0

    # a day later both are scheduled at once again; the sweep's process started first
    later = T + timedelta(hours=24)
    assert run_scheduled_at(check_connections, later)["opened"] == 0
    sent = run_scheduled_at(send_disconnection_emails, later)
    assert sent["outbox"] == 1, sent  # at 24 hours, not at 48
    assert emails(world) == ["outbox"]
    assert disconnections(world) == [("Revoked", T, later)]


def test_an_email_run_started_late_decides_at_its_scheduled_time(world):
    run_scheduled_at(check_connections, T)
    # the run scheduled a minute before the 24 hours are up starts a day late: nothing
    # is due at its logical time, whatever the wall clock says
    early = run_scheduled_at(send_disconnection_emails, T + timedelta(hours=24, minutes=-1))
    assert early["outbox"] == 0 and emails(world) == []
    assert run_scheduled_at(send_disconnection_emails, T + timedelta(hours=24))["outbox"] == 1
