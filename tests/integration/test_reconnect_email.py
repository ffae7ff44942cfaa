"""The email the reconnect-connection flow sends with `notify_owner` is the disconnection's
one email, in the exactly-once ledger: the 07:00 run sends no second one, `relink outbox
list` shows it with its true state, and its last error is redacted as the run's is."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from flows.reconnect_connection import reconnect_connection
from relink.app import Relink, set_app
from relink.emailing.mailer import SendGridMailer
from relink.emailing.outbox import list_notifications
from relink.emailing.run import send_due
from relink.models import AuditEvent
from relink.reconnecting.email_link import email_reconnect_link
from relink.sweep.run import sweep
from tests.conftest import APP_BACKENDS
from tests.support import emaildata
from tests.support.emaildata import API_KEY, RUN, SECRET, Sleeps
from tests.support.reconnect import (
    ADMIN,
    FAST_CHECKS,
    OWNER,
    T0,
    add_people,
    add_pg_connection,
    connection_view,
    pg_settings,
)
from tests.support.sendgrid_endpoint import BadRequest, SendGridEndpoint


@pytest.fixture
def endpoint():
    with SendGridEndpoint(api_key=API_KEY) as running:
        yield running


def with_sendgrid(app: Relink, endpoint: SendGridEndpoint) -> Relink:
    settings = app.settings.model_copy(
        update={"sendgrid_api_key": SecretStr(API_KEY), "sendgrid_host": endpoint.url}
    )
    return Relink(settings)


def requested_events(app: Relink) -> list[dict]:
    with app.sessions() as session:
        return [
            e.details
            for e in session.scalars(
                sa.select(AuditEvent).where(AuditEvent.action == "connection.reconnect_requested")
            )
        ]


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize("database_url", [APP_BACKENDS[-1]], indirect=True)
def test_the_flows_email_is_the_only_one_the_0700_run_never_sends_another(
    relink_app, pg_admin, endpoint
):
    role = pg_admin.create_role()
    add_people(relink_app)
    world = add_pg_connection(
        relink_app,
        settings=pg_settings(pg_admin.url, role.name),
        password=role.password,
        queries=[("One", "SELECT 1 AS one")],
    )
    pg_admin.set_password(role.name, "changed-at-source-marker")
    asyncio.run(sweep(relink_app, now=T0, policy=FAST_CHECKS))
    assert connection_view(relink_app, world.connection_id)["status"] == "disconnected"
    app = with_sendgrid(relink_app, endpoint)
    set_app(app)
    try:
        first = asyncio.run(
            reconnect_connection(world.connection_id, requested_by=ADMIN, notify_owner=True)
        )
        again = asyncio.run(
            reconnect_connection(world.connection_id, requested_by=ADMIN, notify_owner=True)
        )
    finally:
        set_app(None)

    assert first["emailed"]["to"] == [OWNER]
    assert (first["emailed"]["result"], first["emailed"]["earlier"]) == ("sent", False)
    assert (again["emailed"]["result"], again["emailed"]["earlier"]) == ("sent", True)
    # a day later, the 07:00 run: the disconnection has had its email
    mailer = SendGridMailer(API_KEY, endpoint.url, timeout=2)
    daily = send_due(app, now=T0 + timedelta(days=1, hours=5), mailer=mailer, sleep=Sleeps())
    assert daily.counts["sent"] == 0
    (body,) = [r.body for r in endpoint.delivered]
    assert body["custom_args"]["connection_id"] == str(world.connection_id)
    with app.sessions() as session:
        (view,) = list_notifications(session)
    assert (view.id, view.state, view.to) == (first["emailed"]["notification_id"], "sent", [OWNER])
    assert view.provider_message_id  # SendGrid's X-Message-Id, as the run records it
    assert [(e["result"], e["earlier"]) for e in requested_events(app)] == [
        ("sent", False),
        ("sent", True),
    ]
    app.close()


def test_outbox_mode_says_outbox_and_the_last_error_is_redacted(relink_app):
    world = emaildata.World(relink_app)
    episode = world.broken(
        RUN - timedelta(hours=2), error=f"token {SECRET} was refused by the source"
    )
    connection_id = 1

    emailed = email_reconnect_link(relink_app, connection_id, requested_by=ADMIN, now=RUN)

    assert (emailed.result, emailed.to, emailed.why) == ("outbox", (OWNER,), "owner")
    (eml,) = (relink_app.settings.data_dir / "outbox").glob("*.eml")
    assert eml.name == f"disconnection-{episode}.eml"
    text = eml.read_text()
    assert SECRET not in text and "[redacted]" in text
    with relink_app.sessions() as session:
        (view,) = list_notifications(session)
    assert (view.disconnection_id, view.state) == (episode, "outbox")
    assert requested_events(relink_app)[0]["result"] == "outbox"
    later = send_due(relink_app, now=RUN + timedelta(days=1), sleep=Sleeps())
    assert later.counts["outbox"] == 0 and len(list(eml.parent.glob("*.eml"))) == 1


def test_a_refused_email_is_recorded_failed_and_never_sent_again(relink_app, endpoint):
    world = emaildata.World(relink_app)
    episode = world.broken(RUN - timedelta(hours=30))
    endpoint.script(BadRequest("The to array is invalid"))
    app = with_sendgrid(relink_app, endpoint)

    emailed = email_reconnect_link(app, 1, requested_by=ADMIN, now=RUN)

    assert emailed.result == "failed" and "to array" in (emailed.error or "")
    assert world.states() == {episode: "failed"}
    mailer = SendGridMailer(API_KEY, endpoint.url, timeout=2)
    daily = send_due(app, now=RUN + timedelta(hours=1), mailer=mailer, sleep=Sleeps())
    assert (daily.counts["sent"], daily.counts["failed"], len(endpoint.requests)) == (0, 0, 1)
    app.close()


def test_no_open_disconnection_emails_nobody(relink_app):
    world = emaildata.World(relink_app)
    episode = world.broken(RUN - timedelta(hours=30))
    world.close(episode, RUN - timedelta(hours=1))

    emailed = email_reconnect_link(relink_app, 1, requested_by=ADMIN, now=RUN)

    assert (emailed.result, emailed.to) == ("none", ())
    assert world.notifications() == {}
    assert not (relink_app.settings.data_dir / "outbox").exists() or not list(
        (relink_app.settings.data_dir / "outbox").glob("*.eml")
    )
