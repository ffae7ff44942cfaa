"""Prefect events of the disconnection emails, through the official SDK to the local
SendGrid endpoint: one `relink.email.sent`, `.failed` or `.unknown` per email as the
ledger records its end (a claim whose run died included), with the email, its
connection, account and provider; no address, key or credential in any of them."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from relink.emailing.ledger import expire_stale_claims
from relink.emailing.mailer import OutboxMailer, SendGridMailer
from relink.emailing.run import send_due
from relink.emailing.sender import SendHooks
from tests.support.emaildata import ADMIN, API_KEY, OWNER, RUN, SECRET, Sleeps, World
from tests.support.sendgrid_endpoint import BadRequest, Hang, SendGridEndpoint

pytestmark = pytest.mark.both_backends  # the ledger's claims and marks


@pytest.fixture
def endpoint():
    with SendGridEndpoint(api_key=API_KEY) as running:
        yield running


def test_each_emails_end_is_one_event_naming_its_connection(relink_app, endpoint, prefect_events):
    world = World(relink_app)
    failed = world.broken(RUN - timedelta(hours=27))
    unknown_one = world.broken(RUN - timedelta(hours=26))
    sent = world.broken(RUN - timedelta(hours=25))
    refusal = BadRequest("The from address does not match a verified Sender Identity")
    endpoint.script_for("disconnection_id", str(failed), refusal)
    endpoint.script_for("disconnection_id", str(unknown_one), Hang(seconds=5))
    mailer = SendGridMailer(API_KEY, endpoint.url, timeout=0.3)

    send_due(relink_app, now=RUN, mailer=mailer, sleep=Sleeps())
    endpoint.release_hangs()

    by_name = {e.event: e for e in prefect_events.all() if e.event.startswith("relink.email.")}
    assert sorted(by_name) == ["relink.email.failed", "relink.email.sent", "relink.email.unknown"]
    assert by_name["relink.email.failed"].payload["disconnection_id"] == failed
    assert "verified Sender Identity" in by_name["relink.email.failed"].payload["error"]
    assert by_name["relink.email.unknown"].payload["disconnection_id"] == unknown_one
    event = by_name["relink.email.sent"]
    assert event.payload["disconnection_id"] == sent
    assert event.payload["state"] == "sent" and event.payload["attempts"] == 1
    notification_id = world.notifications()[sent].id
    assert event.resource.id == f"relink.email.{notification_id}"
    roles = {r.role: r.id for r in event.related}
    assert roles["connection"] == f"relink.connection.{event.payload['connection_id']}"
    assert roles["account"] == "relink.account.1"
    assert roles["provider"].startswith("relink.provider.")
    text = json.dumps([e.model_dump(mode="json") for e in prefect_events.all()])
    for secret in (SECRET, API_KEY, OWNER, ADMIN):
        assert secret not in text


def test_an_email_written_to_the_outbox_is_sent_as_far_as_relink_goes(
    relink_app, tmp_path, prefect_events
):
    World(relink_app).broken(RUN - timedelta(hours=25))
    send_due(relink_app, now=RUN, mailer=OutboxMailer(tmp_path / "outbox"), sleep=Sleeps())
    (event,) = prefect_events.named("relink.email.sent")
    assert event.payload["state"] == "outbox"


def test_a_claim_whose_run_died_becomes_unknown_once_with_its_event(
    relink_app, endpoint, prefect_events
):
    world = World(relink_app)
    episode = world.broken(RUN - timedelta(hours=25))

    class Crash(Exception):
        pass

    def crash(item):
        raise Crash

    mailer = SendGridMailer(API_KEY, endpoint.url, timeout=0.3)
    with pytest.raises(Crash):
        send_due(relink_app, now=RUN, mailer=mailer, hooks=SendHooks(after_claim=crash))
    assert prefect_events.names() == []  # claimed: no news yet

    assert expire_stale_claims(relink_app, now=RUN + timedelta(hours=1)) == 1
    assert expire_stale_claims(relink_app, now=RUN + timedelta(hours=2)) == 0
    (event,) = prefect_events.named("relink.email.unknown")
    assert event.payload["disconnection_id"] == episode
    assert "may have been sent" in event.payload["error"]


def test_an_expiry_heads_up_is_an_email_event_too(relink_app, tmp_path, prefect_events):
    from relink.connections import NewConnection, add_connection
    from tests.support.web import EMAILS, build_world
    from tests.support.web import T0 as WEB_T0

    build_world(relink_app)
    with relink_app.transaction() as s:
        sales = add_connection(
            s,
            relink_app.vault,
            NewConnection(
                type="salesforce",
                name="Sales",
                owner=EMAILS["owner"],
                settings={"client_id": "app", "refresh_token_lifetime": "8 days"},
                secrets={"access_token": "a-token", "refresh_token": "r-token"},
            ),
            now=WEB_T0,
        ).id
    send_due(
        relink_app,
        now=WEB_T0 + timedelta(days=1),  # expires in 7 days: the heads-up
        mailer=OutboxMailer(tmp_path / "outbox"),
        sleep=Sleeps(),
    )
    (event,) = prefect_events.named("relink.email.sent")
    assert event.resource.id.startswith("relink.email.heads-up.")
    assert event.payload["kind"] == "heads_up" and event.payload["connection_id"] == sales
    assert event.payload["expires_at"] == (WEB_T0 + timedelta(days=8)).isoformat()
    assert "r-token" not in event.model_dump_json()
