"""Prefect events of a connection's changes of state, from a sweep against the sandbox
provider, as Prefect's events worker sends them: a disconnection, a recovery, an
installation that is wrong and then fixed; nothing from a rolled-back change, nothing
without a Prefect API, and no secret in any event."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from relink import events
from relink.app import Relink
from relink.checks import record_batch
from relink.directory import add_account, add_user
from relink.models import Connection
from relink.settings import OAuthApp
from relink.sweep.run import sweep
from relink.sweep.validate import Checked, CheckPolicy
from relink_dev.sandbox import SandboxProvider, SandboxServer
from tests.integration.oauth_fixtures import add_app_connections
from tests.integration.test_check_sweep import add_api_connections

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
FAST = CheckPolicy(batch_size=50, concurrency=8, per_provider=8, attempts=1, backoff=0.0)


@pytest.fixture
def sandbox():
    provider = SandboxProvider()
    with SandboxServer(provider) as server:
        yield server


@pytest.fixture
def owner(relink_app):
    with relink_app.transaction() as session:
        add_account(session, "Acme", now=T0)
        return add_user(
            session, email="o@acme.test", name="O", role="member", account="Acme", now=T0
        ).id


def related(event, role: str) -> dict[str, str]:
    (resource,) = [dict(r) for r in event.related if r.role == role]
    return resource


def test_a_broken_key_and_its_recovery_are_events_with_the_connection_account_and_provider(
    relink_app, owner, sandbox, prefect_events
):
    add_api_connections(relink_app, owner, sandbox.url, "rotating-key", 2, "api")
    asyncio.run(sweep(relink_app, now=T0, policy=FAST))  # the key is unknown: 401

    broken = prefect_events.named("relink.connection.disconnected")
    assert sorted(e.resource.id for e in broken) == ["relink.connection.1", "relink.connection.2"]
    first = broken[0]
    assert first.resource["relink.provider"] == "api_key"
    assert first.resource.name in {"api-0", "api-1"}
    assert related(first, "account") == {
        "prefect.resource.id": "relink.account.1",
        "prefect.resource.role": "account",
        "prefect.resource.name": "Acme",
    }
    assert related(first, "provider")["prefect.resource.id"] == "relink.provider.api_key"
    assert first.payload["status_before"] == "connected"
    assert (first.payload["status"], first.payload["code"]) == ("disconnected", "401")
    assert first.payload["invalid_since"] == T0.isoformat()

    prefect_events.clear()
    asyncio.run(sweep(relink_app, now=T0 + timedelta(hours=1), policy=FAST))
    assert prefect_events.names() == []  # still the same disconnection: no news

    sandbox.provider.add_api_key("rotating-key")
    asyncio.run(sweep(relink_app, now=T0 + timedelta(hours=2), policy=FAST))
    recovered = prefect_events.named("relink.connection.recovered")
    assert len(recovered) == 2 and prefect_events.names() == ["relink.connection.recovered"] * 2
    assert recovered[0].payload["status_before"] == "disconnected"


def test_an_outage_is_no_event_of_a_connection(relink_app, owner, sandbox, prefect_events):
    add_api_connections(relink_app, owner, sandbox.url, "good-key", 2, "api")
    sandbox.provider.add_api_key("good-key")
    sandbox.provider.set_fault("error500", path_prefix="/apikey/me")
    asyncio.run(sweep(relink_app, now=T0, policy=FAST))
    assert not [n for n in prefect_events.names() if n.startswith("relink.connection.")]


def test_a_refused_installation_app_is_misconfigured_then_recovered_once_fixed(
    relink_app, settings, sandbox, prefect_events
):
    provider = sandbox.provider
    provider.register_client("sf-app", "the-rotated-secret", ["http://127.0.0.1:9/cb"])
    with relink_app.transaction() as session:
        add_account(session, "Acme", now=T0)
        add_user(session, email="o@acme.test", name="O", role="member", account="Acme", now=T0)
    (conn_id,) = add_app_connections(
        relink_app, provider, sandbox.url, app_id="sf-app", owner="o@acme.test",
        names=["Sales"], now=T0,
    )  # fmt: skip

    def swept(secret: str, now: datetime) -> None:
        app = Relink(
            settings.model_copy(
                update={"oauth": {"salesforce": OAuthApp(client_id="sf-app", client_secret=secret)}}
            )
        )
        try:
            asyncio.run(sweep(app, now=now, policy=FAST))
        finally:
            app.close()

    swept("an-old-secret", T0)
    (wrong,) = prefect_events.named("relink.connection.misconfigured")
    assert wrong.resource.id == f"relink.connection.{conn_id}"
    assert related(wrong, "provider")["prefect.resource.name"] == "Salesforce"
    assert wrong.payload["code"] == "invalid_client"
    assert "an-old-secret" not in wrong.model_dump_json()

    swept("the-rotated-secret", T0 + timedelta(hours=1))
    (fixed,) = prefect_events.named("relink.connection.recovered")
    assert fixed.payload["status_before"] == "misconfigured"
    assert "the-rotated-secret" not in fixed.model_dump_json()


def test_a_rolled_back_change_emits_nothing(relink_app, owner, sandbox, prefect_events):
    from connectors.base import CheckResult
    from relink.domain.words import Outcome

    add_api_connections(relink_app, owner, sandbox.url, "k", 1, "api")
    failed = CheckResult(Outcome.AUTH_FAILED, "401", "the key was refused")
    with pytest.raises(RuntimeError), relink_app.transaction() as session:
        record_batch(session, [Checked(1, "api_key", failed, 1)], [], now=T0)
        session.flush()
        raise RuntimeError("the transaction fails after the change")
    assert prefect_events.names() == []
    with relink_app.sessions() as session:
        assert session.get(Connection, 1).status == "connected"
    # the same change committed is one event
    with relink_app.transaction() as session:
        record_batch(session, [Checked(1, "api_key", failed, 1)], [], now=T0)
    assert prefect_events.names() == ["relink.connection.disconnected"]


def test_without_a_prefect_api_nothing_is_queued_or_sent(relink_app, owner, sandbox, monkeypatch):
    # no API in the environment, and none in Prefect's settings either (a Prefect server
    # started by another test of this worker, or a profile of this machine, would set one)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert not events.enabled()
        _record_a_disconnection_without_an_api(relink_app, owner, sandbox)


def _record_a_disconnection_without_an_api(relink_app, owner, sandbox):
    add_api_connections(relink_app, owner, sandbox.url, "k", 1, "api")
    with relink_app.sessions() as session, session.begin():
        failed_at = session.scalar(sa.select(Connection.id))
        from connectors.base import CheckResult
        from relink.domain.words import Outcome

        record_batch(
            session,
            [Checked(failed_at, "api_key", CheckResult(Outcome.AUTH_FAILED, "401", "x"), 1)],
            [],
            now=T0,
        )
        assert session.info.get("relink.events", []) == []


def test_no_event_names_a_credential(relink_app, owner, sandbox, prefect_events):
    add_api_connections(relink_app, owner, sandbox.url, "the-secret-api-key", 2, "api")
    asyncio.run(sweep(relink_app, now=T0, policy=FAST))
    sandbox.provider.add_api_key("the-secret-api-key")
    asyncio.run(sweep(relink_app, now=T0 + timedelta(hours=1), policy=FAST))
    sent = prefect_events.all()
    assert len(sent) == 4
    text = json.dumps([e.model_dump(mode="json") for e in sent])
    assert "the-secret-api-key" not in text
