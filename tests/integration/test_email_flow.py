"""The send-disconnection-emails flow on a real (temporary) Prefect server: one task run
per batch, a summary result and a markdown artifact, no secret in any of them."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from pydantic import SecretStr

from flows.send_disconnection_emails import send_disconnection_emails
from relink.app import Relink, set_app
from relink.timeutil import utcnow
from tests.support.emaildata import API_KEY, SECRET, World, emails_per_disconnection
from tests.support.sendgrid_endpoint import BadRequest, SendGridEndpoint


@pytest.fixture
def endpoint():
    with SendGridEndpoint(api_key=API_KEY) as running:
        yield running


@pytest.fixture
def app(relink_app, endpoint):
    settings = relink_app.settings.model_copy(
        update={
            "sendgrid_api_key": SecretStr(API_KEY),
            "sendgrid_host": endpoint.url,
            "email_timeout": 5.0,
        }
    )
    app = Relink(settings)
    set_app(app)
    yield app
    set_app(None)
    app.close()


# The flow is thin: the core under it runs on both backends in test_disconnection_emails.
@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_flow_sends_the_due_emails_and_publishes_a_summary(app, endpoint):
    world = World(app)
    now = utcnow()
    due = [world.broken(now - timedelta(hours=25 + i)) for i in range(4)]
    world.broken(now - timedelta(hours=2))  # not due yet
    endpoint.script(BadRequest("Invalid recipient"))  # SendGrid refuses one of the four

    state = asyncio.run(send_disconnection_emails(return_state=True))
    summary = state.result()
    assert (summary["sent"], summary["failed"], summary["batches"]) == (3, 1, 1)
    states = world.states()
    assert sorted(states) == due and sorted(states.values()) == ["failed", "sent", "sent", "sent"]
    sent = [d for d, state in states.items() if state == "sent"]
    assert emails_per_disconnection(r.body for r in endpoint.delivered) == dict.fromkeys(sent, 1)

    expected = [
        "email batch 1",
        "expire-stale-claims",
        "find-due-disconnections",
        "find-due-heads-ups",  # none due: no heads-up batch
    ]

    def names_of(tasks):
        return sorted(t.name.rsplit("-", 1)[0] for t in tasks)

    async def read_back():
        async with get_client() as client:
            run = await client.read_flow_run(state.state_details.flow_run_id)
            # the server writes task runs from the events it receives (a task run's name
            # after its start among them): ask until they are in, within a bound
            for _ in range(100):
                tasks = await client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
                )
                if names_of(tasks) == expected:
                    break
                await asyncio.sleep(0.2)
            artifacts = await client.read_artifacts()
            return run, tasks, [a for a in artifacts if a.flow_run_id == run.id]

    run, tasks, artifacts = asyncio.run(read_back())
    assert run.name.startswith("disconnection emails at ")
    assert names_of(tasks) == expected  # one run per batch, not per email
    (artifact,) = artifacts
    assert artifact.key == "send-disconnection-emails-summary"
    assert "| sent | 3 | 0 |" in artifact.data and "| failed | 1 | 0 |" in artifact.data
    everything = json.dumps(
        [run.model_dump(mode="json"), artifact.data, summary]
        + [t.model_dump(mode="json") for t in tasks]
    )
    assert SECRET not in everything and API_KEY not in everything

    # the next run, right after: nothing is due any more
    again = asyncio.run(send_disconnection_emails())
    assert again["batches"] == 0 and len(endpoint.requests) == 4
