"""Idle expiry never happens (issue 19): the sweep spends a refresh token that would
lapse unused within RELINK_KEEP_ALIVE_DAYS, even when the access token is still fresh,
against the sandbox provider on loopback; the new end is recorded."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import sqlalchemy as sa

from relink.checks import check_range
from relink.models import Connection
from relink.sweep.validate import CheckPolicy
from relink.timeutil import utcnow
from relink_dev.sandbox import SandboxServer
from tests.integration.oauth_fixtures import (  # noqa: F401 - fixtures
    OAuthClient,
    Owner,
    insert_connection,
    issue,
    oauth_client,
    oauth_settings,
    owner,
    provider,
    sandbox,
    sandbox_server,
    stored,
)

pytestmark = pytest.mark.both_backends  # the token store locks rows on PostgreSQL

DAY = timedelta(days=1)


def connection_with_end(
    app, who: Owner, server: SandboxServer, client: OAuthClient, left: timedelta, kind: str
) -> tuple[int, str]:
    now = utcnow()
    settings = {
        **oauth_settings(server.url, client.client_id),
        "refresh_token_lifetime": "30 days unused" if kind == "idle" else "90 days",
    }
    spec = insert_connection(
        app,
        who,
        type_="oauth2",
        settings=settings,
        credentials=issue(server.provider, client, now),  # the access token is fresh
    )
    with app.transaction() as s:
        s.execute(
            sa.update(Connection)
            .where(Connection.id == spec.id)
            .values(credentials_expire_at=now + left, credentials_expiry_kind=kind)
        )
    return spec.id, spec.credentials["refresh_token"]


def test_the_sweep_refreshes_an_idle_token_within_the_margin_and_only_that_one(
    relink_app,
    owner,  # noqa: F811
    sandbox,  # noqa: F811
    oauth_client,  # noqa: F811
) -> None:
    lapsing, lapsing_token = connection_with_end(
        relink_app, owner, sandbox, oauth_client, 5 * DAY, "idle"
    )
    healthy, healthy_token = connection_with_end(
        relink_app, owner, sandbox, oauth_client, 20 * DAY, "idle"
    )
    hard, hard_token = connection_with_end(
        relink_app, owner, sandbox, oauth_client, 2 * DAY, "hard"
    )
    now = utcnow()
    summary = asyncio.run(check_range(relink_app, 0, None, now=now, policy=CheckPolicy()))
    assert summary.checked == 3

    creds, _, _ = stored(relink_app, lapsing)
    assert creds["refresh_token"] != lapsing_token  # spent and rotated at the sandbox
    assert stored(relink_app, healthy)[0]["refresh_token"] == healthy_token
    assert stored(relink_app, hard)[0]["refresh_token"] == hard_token  # refreshing cannot help
    with relink_app.sessions() as s:
        row = s.get(Connection, lapsing)
        assert row.status == "connected"
        assert row.credentials_expiry_kind == "idle"
        assert 29 * DAY < row.credentials_expire_at - now <= 30 * DAY + timedelta(minutes=5)

    # the next sweep finds it far from lapsing: nothing is spent again
    asyncio.run(check_range(relink_app, 0, None, now=utcnow(), policy=CheckPolicy()))
    assert stored(relink_app, lapsing)[0]["refresh_token"] == creds["refresh_token"]


def test_the_margin_is_a_setting(
    relink_app,
    owner,  # noqa: F811
    sandbox,  # noqa: F811
    oauth_client,  # noqa: F811
) -> None:
    relink_app.settings.keep_alive_days = 21
    connection, token = connection_with_end(
        relink_app, owner, sandbox, oauth_client, 20 * DAY, "idle"
    )
    asyncio.run(check_range(relink_app, 0, None, now=utcnow(), policy=CheckPolicy()))
    assert stored(relink_app, connection)[0]["refresh_token"] != token
