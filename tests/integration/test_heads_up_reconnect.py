"""Issue 19's walk-through, on the sandbox provider: a token whose hard cap the provider
sends (`refresh_token_expires_in`, as Intuit does) expires in 8 days; at 7 its owner gets
the one heads-up; the owner reconnects, the new grant's end is recorded from the token
response, and no further email comes. Each email run is told its `now`."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from connectors.oauth2 import token_credentials
from relink.connections import NewConnection, add_connection
from relink.emailing.run import send_due
from relink.models import Connection, HeadsUp
from relink.timeutil import utcnow
from tests.integration.oauth_fixtures import (  # noqa: F401 - fixtures
    REDIRECT_URI,
    new_client,
    oauth_settings,
    provider,
    sandbox,
    sandbox_server,
)
from tests.support.reconnect import OWNER, add_people, consented

pytestmark = pytest.mark.both_backends

DAY = timedelta(days=1)
CAP = 100 * DAY  # the provider's hard cap on a grant


def test_expires_in_8_days_heads_up_at_7_reconnect_no_further_email(
    relink_app,
    sandbox,  # noqa: F811
) -> None:
    client = new_client(sandbox.provider, refresh_token_expires_in=int(CAP.total_seconds()))
    now = utcnow()
    answer = sandbox.provider.issue_token(client.client_id, "alice", "api")
    assert 0 <= CAP.total_seconds() - answer["refresh_token_expires_in"] < 60  # the sandbox says
    add_people(relink_app)
    with relink_app.transaction() as s:
        conn = add_connection(
            s,
            relink_app.vault,
            NewConnection(
                type="oauth2",
                name="Sales",
                owner=OWNER,
                settings=oauth_settings(sandbox.url, client.client_id),
                secrets={
                    **token_credentials({}, answer, now),
                    "client_secret": client.client_secret,
                },
            ),
            now=now,
        )
        sales = conn.id
        assert conn.credentials_expiry_kind == "hard"
        assert abs(conn.credentials_expire_at - (now + CAP)) < timedelta(minutes=1)
        # the grant is 92 days old: 8 days of its cap are left
        conn.credentials_expire_at = now + 8 * DAY

    assert send_due(relink_app, now=now).heads_ups["outbox"] == 0  # in 8 days: not yet
    at_7 = send_due(relink_app, now=now + DAY)
    assert at_7.heads_ups["outbox"] == 1

    reconnected_at = now + DAY + timedelta(minutes=5)
    _, finish = consented(relink_app, sales, now=reconnected_at)
    finish()
    with relink_app.sessions() as s:
        renewed = s.get(Connection, sales).credentials_expire_at
    # the new grant's cap, counted from the reconnect as the token response said it
    assert abs(renewed - (reconnected_at + CAP)) < timedelta(minutes=1)

    for later in (DAY + timedelta(hours=1), 2 * DAY, 7 * DAY, 8 * DAY, 30 * DAY):
        assert send_due(relink_app, now=now + later).heads_ups["outbox"] == 0
    with relink_app.sessions() as s:
        assert s.scalar(sa.select(sa.func.count(HeadsUp.id))) == 1
