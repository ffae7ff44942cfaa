"""docs/automations.md's two Automations are ready to use: each parses as Prefect's own
automation model (what `prefect automation create --from-file` validates, and the
server's, which checks the Jinja templates), and each trigger fires on the event Relink
sends, and not on its neighbours."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from prefect.events.schemas.automations import AutomationCore
from prefect.server.events.schemas.automations import AutomationCore as ServerAutomation
from prefect.server.events.schemas.events import ReceivedEvent

from relink import events
from relink.models import ProviderIncident
from tests.support.emaildata import World

DOC = Path(__file__).resolve().parents[2] / "docs" / "automations.md"
T0 = datetime(2026, 3, 2, 21, 15, tzinfo=UTC)


def automations() -> dict[str, dict]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    found = {a["name"]: a for a in map(yaml.safe_load, blocks)}
    assert len(found) == 2
    return found


@pytest.mark.parametrize("name", sorted(automations()))
def test_each_automation_is_valid_for_prefect(name):
    data = automations()[name]
    AutomationCore.model_validate(data)  # the CLI's model
    ServerAutomation.model_validate(data)  # the server's: the templates too


def received(event) -> ReceivedEvent:
    return ReceivedEvent.model_validate(event.model_dump())


def fires(name: str, event) -> bool:
    trigger = ServerAutomation.model_validate(automations()[name]).trigger
    return trigger.covers(received(event))


def test_the_triggers_fire_on_what_relink_sends(relink_app, prefect_events):
    world = World(relink_app)
    conn_id = world.connection()
    episode = world.disconnection(conn_id, T0 - timedelta(hours=30))
    with relink_app.transaction() as session:
        outage = ProviderIncident(
            provider="salesforce",
            outcome="unreachable",
            code="http_503",
            failed=412,
            checked=430,
            started_at=T0,
            updated_at=T0,
        )
        session.add(outage)
        session.flush()
        events.provider_incident(session, outage, "opened", "Salesforce: ...", at=T0)
        outage.ended_at = T0 + timedelta(hours=1)
        events.provider_incident(session, outage, "closed", "Salesforce: ... over", at=T0)
        for n, state in enumerate(("failed", "sent", "unknown"), start=1):
            events.email_changed(session, n, episode, state, at=T0, error="refused")
    sent = {(e.event, e.payload.get("state")): e for e in prefect_events.all()}

    slack, webhook = "relink-provider-incident-to-slack", "relink-email-failed-to-webhook"
    assert fires(slack, sent[("relink.provider.incident", "opened")])
    assert not fires(slack, sent[("relink.provider.incident", "closed")])
    assert not fires(slack, sent[("relink.email.failed", "failed")])
    assert fires(webhook, sent[("relink.email.failed", "failed")])
    assert not fires(webhook, sent[("relink.email.sent", "sent")])
    assert not fires(webhook, sent[("relink.email.unknown", "unknown")])

    # and their templates render, with the event, to what the receiver reads
    (notify,) = automations()[slack]["actions"]
    opened = received(sent[("relink.provider.incident", "opened")])
    assert render(notify["body"], opened) == "Salesforce: ..."
    assert render(notify["subject"], opened) == "Relink: Salesforce incident"
    (call,) = automations()[webhook]["actions"]
    body = json.loads(render(call["payload"], received(sent[("relink.email.failed", "failed")])))
    assert body["event"] == "relink.email.failed" and body["error"] == "refused"
    assert body["connection_id"] == conn_id


def render(template: str, event: ReceivedEvent) -> str:
    from prefect.server.utilities.user_templates import render_user_template_sync

    return render_user_template_sync(template, {"event": event})
