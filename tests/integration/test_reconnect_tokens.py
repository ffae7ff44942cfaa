"""A reconnect never stores a token set that cannot last, against the sandbox provider (a
real Authlib authorization server on loopback): when validating the new tokens had to
refresh them, the refreshed set is stored; a grant without a refresh token is refused
unless the provider's access tokens last; and the generic connector asks for offline
access through its `authorize_params` setting."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import httpx
import pytest

from connectors.base import CheckContext
from connectors.oauth2 import OAuth2Connector, ProviderEndpoints
from relink.reconnecting.errors import CredentialsRefused
from relink_dev.sandbox import SandboxServer
from tests.integration.oauth_fixtures import (
    REDIRECT_URI,
    OAuthClient,
    new_client,
    refresh_at_sandbox,
    sandbox,  # noqa: F401
    sandbox_server,  # noqa: F401
    stored,
)
from tests.support import web
from tests.support.reconnect import (
    T0,
    add_broken_oauth_connection,
    add_people,
    connection_view,
    consented,
    failed_attempts_only,
    snapshot,
)

pytestmark = pytest.mark.both_backends  # the token store locks the row it refreshes

T2 = T0 + timedelta(hours=30)


def broken_connection(relink_app, sandbox: SandboxServer, client: OAuthClient) -> int:  # noqa: F811
    add_people(relink_app)
    return add_broken_oauth_connection(relink_app, sandbox, client)[0]


def reconnect(relink_app, connection_id: int, **changes: dict[str, str]):
    return consented(relink_app, connection_id, now=T2, **changes)


def introspect(sandbox: SandboxServer, client: OAuthClient, token: str) -> bool:  # noqa: F811
    answer = httpx.post(
        f"{sandbox.url}/oauth/introspect",
        data={"token": token},
        auth=(client.client_id, client.client_secret),
        timeout=5,
    )
    return answer.json()["active"]


def test_a_reconnect_whose_new_access_token_was_already_inactive_stores_the_refreshed_set(
    relink_app,
    sandbox,  # noqa: F811
):
    """The consent hands out an access token the provider already calls inactive: the
    validation refreshes it (spending the refresh token of the grant), and that refreshed
    set, not the spent one, is what the connection keeps."""
    client = new_client(sandbox.provider, inactive_code_tokens=True)
    connection_id = broken_connection(relink_app, sandbox, client)
    _, finish = reconnect(relink_app, connection_id)
    granted_hits = sandbox.provider.stats().get("/oauth/token", 0)

    finish()

    assert sandbox.provider.stats()["/oauth/token"] == granted_hits + 2  # the code, one refresh
    credentials, _, _ = stored(relink_app, connection_id)
    assert introspect(sandbox, client, credentials["access_token"])  # the stored one works
    assert connection_view(relink_app, connection_id)["status"] == "connected"
    # and so does the stored refresh token: it has not been spent
    assert refresh_at_sandbox(sandbox.url, client, credentials["refresh_token"]).status_code == 200


def test_a_grant_without_a_refresh_token_is_refused_and_changes_nothing(
    relink_app,
    sandbox,  # noqa: F811
):
    client = new_client(sandbox.provider, refresh_tokens="never")
    connection_id = broken_connection(relink_app, sandbox, client)
    _, finish = reconnect(relink_app, connection_id)
    before = snapshot(relink_app)

    with pytest.raises(CredentialsRefused) as refused:
        finish()

    assert refused.value.code == "no_refresh_token"
    assert "the provider granted no refresh token; for this provider ask for offline access" in (
        str(refused.value)
    )
    after = snapshot(relink_app)
    assert after.pop("oauth_states") != before.pop("oauth_states")  # the sign-in is used up
    (attempt,) = failed_attempts_only(before, after)  # and nothing else but the audit trail
    assert attempt["details"]["code"] == "no_refresh_token"
    assert connection_view(relink_app, connection_id)["status"] == "disconnected"


def test_a_provider_whose_access_tokens_last_may_grant_no_refresh_token(
    sandbox,  # noqa: F811
):
    client = new_client(sandbox.provider, refresh_tokens="never")
    lasting = OAuth2Connector(
        "lasting",
        "Lasting tokens",
        ProviderEndpoints(
            authorize_url=f"{sandbox.url}/oauth/authorize",
            token_url=f"{sandbox.url}/oauth/token",
            access_tokens_last=True,
        ),
    )
    ctx = CheckContext(now=T0, timeout=5.0)
    settings = {"client_id": client.client_id}
    verifier = uuid.uuid4().hex * 2
    url = lasting.authorization_url(settings, ctx, REDIRECT_URI, "st", verifier)
    answer = web.consent(url)

    tokens = asyncio.run(
        lasting.exchange_code(
            settings,
            ctx,
            answer["code"],
            REDIRECT_URI,
            verifier,
            credentials={"client_secret": client.client_secret},
        )
    )

    assert tokens["access_token"] and "refresh_token" not in tokens


def test_the_generic_connector_asks_for_offline_access_through_a_setting(
    relink_app,
    sandbox,  # noqa: F811
):
    """A provider that grants a refresh token only to `access_type=offline` (as Google
    does): without the setting the grant is refused; the owner adds it on the reconnect
    form and the connection works, the setting kept for the next consent."""
    client = new_client(sandbox.provider, refresh_tokens="offline")
    connection_id = broken_connection(relink_app, sandbox, client)
    url, finish = reconnect(relink_app, connection_id)
    assert "access_type" not in httpx.URL(url).params
    with pytest.raises(CredentialsRefused, match="no refresh token"):
        finish()

    offline = {"authorize_params": "access_type=offline&prompt=consent"}
    url, finish = reconnect(relink_app, connection_id, settings=offline)
    params = httpx.URL(url).params
    assert (params["access_type"], params["prompt"]) == ("offline", "consent")
    done = finish()

    assert done.changed == ("authorize_params",)
    view = connection_view(relink_app, connection_id)
    assert view["status"] == "connected"
    assert view["settings"]["authorize_params"] == offline["authorize_params"]
    credentials, _, _ = stored(relink_app, connection_id)
    assert refresh_at_sandbox(sandbox.url, client, credentials["refresh_token"]).status_code == 200
    url, _ = reconnect(relink_app, connection_id)  # the next consent asks again
    assert httpx.URL(url).params["access_type"] == "offline"
