"""Whose account an OAuth connection uses, against the sandbox provider on loopback (a
real Authlib authorization server with OpenID Connect): the consent's ID token is verified
against the sandbox's JWKS and names the account; a forged or tampered one refuses the
reconnect in one line and changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime

import pytest
import sqlalchemy as sa

from connectors import registry
from connectors.base import CheckContext
from relink.domain.identity import Identity
from relink.models import AuditEvent, Connection
from relink.reconnecting.errors import AccountReplacement, CredentialsRefused
from relink.reconnecting.oauth import finish_oauth, start_oauth
from relink.timeutil import utcnow
from relink_dev.sandbox import SandboxProvider, SandboxServer
from tests.integration.oauth_fixtures import new_client, oauth_settings
from tests.support import web
from tests.support.reconnect import OWNER, add_broken_oauth_connection, add_people

REDIRECT_URI = "http://127.0.0.1:9/oauth/callback"  # never called: the test reads the redirect
SCOPE = "api openid email"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxProvider()) as server:
        yield server


@pytest.fixture(autouse=True)
def valid_id_tokens(sandbox: SandboxServer) -> Iterator[None]:
    yield
    sandbox.provider.set_id_token_fault(None)


def openid_settings(sandbox: SandboxServer) -> dict[str, str]:
    return {"scope": SCOPE, "issuer": sandbox.url, "jwks_uri": f"{sandbox.url}/oauth/jwks"}


def test_the_consent_id_token_names_the_account_once_verified(sandbox: SandboxServer) -> None:
    client = new_client(sandbox.provider, scope=SCOPE)
    settings = {**oauth_settings(sandbox.url, client.client_id), **openid_settings(sandbox)}
    oauth = registry.get("oauth2")
    ctx = CheckContext(now=utcnow(), timeout=5.0)
    url = oauth.authorization_url(settings, ctx, REDIRECT_URI, "state-1", "v" * 64)
    answer = web.consent(url, username="ann@acme.test")

    grant = asyncio.run(
        oauth.grant_code(
            settings,
            ctx,
            answer["code"],
            REDIRECT_URI,
            "v" * 64,
            credentials={"client_secret": client.client_secret},
        )
    )

    assert grant.identity == Identity("ann@acme.test", "ann@acme.test")
    assert "id_token" not in grant.credentials  # the token is read, never stored


@pytest.fixture
def crm(relink_app, sandbox: SandboxServer) -> int:
    """A broken OAuth connection of Bob's on the sandbox, with OpenID settings."""
    client = new_client(sandbox.provider, scope=SCOPE, allow_loopback_redirects=True)
    add_people(relink_app)
    connection_id, _ = add_broken_oauth_connection(
        relink_app, sandbox, client, api_base_url=sandbox.url, **openid_settings(sandbox)
    )
    return connection_id


def row(app, connection_id: int) -> tuple:
    with app.sessions() as session:
        conn = session.get(Connection, connection_id)
        assert conn is not None
        return (conn.status, conn.credentials, conn.owner_id, conn.identity, conn.version)


@pytest.mark.parametrize("fault", ["forged", "tampered"])
def test_a_forged_or_tampered_id_token_refuses_the_reconnect_and_changes_nothing(
    relink_app, sandbox: SandboxServer, crm: int, fault: str
) -> None:
    now: datetime = utcnow()  # the sandbox signs with its own clock
    before = row(relink_app, crm)
    started = start_oauth(relink_app, crm, actor=OWNER, redirect_uri=REDIRECT_URI, now=now)
    answer = web.consent(started.url, username="intruder")
    sandbox.provider.set_id_token_fault(fault, times=1)

    with pytest.raises(CredentialsRefused) as refused:
        asyncio.run(
            finish_oauth(
                relink_app,
                state=answer["state"],
                code=answer["code"],
                actor=OWNER,
                connection_id=crm,
                now=now,
                refresh=False,
            )
        )

    message = str(refused.value)
    assert refused.value.code == "invalid_id_token"
    assert "\n" not in message and "ID token" in message and "nothing was changed" in message
    assert row(relink_app, crm) == before
    with relink_app.sessions() as session:
        failed = session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "connection.reconnect_failed")
        ).one()
    assert failed.details["code"] == "invalid_id_token"


def set_account(app, connection_id: int, account: Identity) -> None:
    with app.transaction() as session:
        conn = session.get(Connection, connection_id)
        assert conn is not None
        conn.identity = account


def reconnect_as(app, connection_id: int, username: str, **options) -> object:
    now = utcnow()
    started = start_oauth(app, connection_id, actor=OWNER, redirect_uri=REDIRECT_URI, now=now)
    answer = web.consent(started.url, username=username)
    return asyncio.run(
        finish_oauth(
            app,
            state=answer["state"],
            code=answer["code"],
            actor=OWNER,
            connection_id=connection_id,
            now=now,
            refresh=False,
            **options,
        )
    )


MAX = Identity("max@acme.test", "max@acme.test")


def test_consenting_as_another_account_is_refused_until_the_replacement_is_confirmed(
    relink_app, crm: int
) -> None:
    set_account(relink_app, crm, MAX)
    before = row(relink_app, crm)

    with pytest.raises(AccountReplacement) as refused:
        reconnect_as(relink_app, crm, "ann@acme.test")

    assert refused.value.line == "This replaces max@acme.test with ann@acme.test"
    assert refused.value.token is None  # not held: the caller asks again with consent
    assert row(relink_app, crm) == before

    done = reconnect_as(relink_app, crm, "ann@acme.test", replace_account=True)

    assert (done.account_before, done.account, done.account_replaced) == (
        "max@acme.test",
        "ann@acme.test",
        True,
    )
    with relink_app.sessions() as session:
        conn = session.get(Connection, crm)
        assert conn.identity == Identity("ann@acme.test", "ann@acme.test")  # the ID token's
        event = session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "connection.reconnected")
        ).one()
    assert event.details["account"] == "ann@acme.test"
    assert event.details["account_before"] == "max@acme.test"
    assert event.details["account_replaced"] is True


def test_consenting_as_the_same_account_needs_no_confirmation(relink_app, crm: int) -> None:
    set_account(relink_app, crm, MAX)

    done = reconnect_as(relink_app, crm, "max@acme.test")

    assert (done.account_before, done.account, done.account_replaced) == (
        "max@acme.test",
        "max@acme.test",
        False,
    )
