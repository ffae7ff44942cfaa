"""The sandbox OAuth provider as a peer of the HTTP connector tests.

Import the fixtures a test module uses (``from tests.integration.oauth_fixtures import
sandbox, sandbox_server, ...``). One sandbox server per test module; every test
registers a client of its own (unique id and secret), so tests never see each other's
tokens, and the fault a test injects is cleared when it ends.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from connectors.base import CheckContext, CheckResult, ConnectionSpec
from relink.app import Relink
from relink.connections import NewConnection, add_connection
from relink.directory import add_account, add_user
from relink.models import Connection
from relink.settings import OAuthApp
from relink_dev.sandbox import SandboxProvider, SandboxServer

REDIRECT_URI = "http://127.0.0.1:9/oauth/callback"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class OAuthClient:
    client_id: str
    client_secret: str = field(repr=False)


@dataclass(frozen=True)
class Owner:
    account_id: int
    user_id: int


@pytest.fixture(scope="module")
def sandbox_server() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxProvider()) as server:
        yield server


@pytest.fixture
def sandbox(sandbox_server: SandboxServer) -> Iterator[SandboxServer]:
    """The module's sandbox; whatever fault a test injects is cleared afterwards."""
    yield sandbox_server
    sandbox_server.provider.clear_fault()


@pytest.fixture
def provider(sandbox: SandboxServer) -> SandboxProvider:
    return sandbox.provider


def new_client(provider: SandboxProvider, **options: Any) -> OAuthClient:
    """A confidential client of one test (its own id and secret), redirecting to
    `REDIRECT_URI`; `options` as `SandboxProvider.register_client` takes them (which
    grants carry a refresh token, loopback redirects ...)."""
    client = OAuthClient(f"client-{uuid.uuid4().hex[:10]}", f"secret-{uuid.uuid4().hex}")
    provider.register_client(client.client_id, client.client_secret, [REDIRECT_URI], **options)
    return client


@pytest.fixture
def oauth_client(provider: SandboxProvider) -> OAuthClient:
    """A confidential client of this test only."""
    return new_client(provider)


@pytest.fixture
def owner(relink_app: Relink) -> Owner:
    with relink_app.transaction() as session:
        add_account(session, "Acme", now=T0)
        user = add_user(
            session, email="owner@acme.test", name="Owner", role="member", account="Acme", now=T0
        )
        return Owner(user.account_id, user.id)


# --- helpers ------------------------------------------------------------------------------


def oauth_settings(
    base_url: str, client_id: str | None = None, *, introspection: bool = True
) -> dict[str, str]:
    """Settings of a connection to the sandbox (every endpoint overridden)."""
    settings = {
        "authorize_url": f"{base_url}/oauth/authorize",
        "token_url": f"{base_url}/oauth/token",
        "revocation_url": f"{base_url}/oauth/revoke",
        "probe_url": f"{base_url}/api/me",
    }
    if introspection:
        settings["introspection_url"] = f"{base_url}/oauth/introspect"
    if client_id:
        settings["client_id"] = client_id
    return settings


def issue(
    provider: SandboxProvider,
    client: OAuthClient,
    now: datetime,
    *,
    username: str = "alice",
    expires_at: float | None = None,
) -> dict[str, str]:
    """A fresh token set as stored credentials (with the client's secret)."""
    token = provider.issue_token(client.client_id, username, "api")
    return {
        "access_token": token["access_token"],
        "refresh_token": token["refresh_token"],
        "expires_at": str(
            int(expires_at if expires_at is not None else now.timestamp() + token["expires_in"])
        ),
        "client_secret": client.client_secret,
    }


def context(**kw: Any) -> CheckContext:
    kw.setdefault("now", datetime.now(UTC))
    kw.setdefault("timeout", 5.0)
    return CheckContext(**kw)


def insert_connection(
    app: Relink,
    owner: Owner,
    *,
    type_: str,
    settings: Mapping[str, str],
    credentials: Mapping[str, str],
) -> ConnectionSpec:
    """A connection row written the way the core writes it (vault-encrypted credentials)."""
    with app.transaction() as session:
        row = Connection(
            account_id=owner.account_id,
            type=type_,
            name=f"conn-{uuid.uuid4().hex[:8]}",
            mode="direct",
            settings=dict(settings),
            credentials=app.vault.encrypt(credentials),
            owner_id=owner.user_id,
            status="unchecked",
            created_at=T0,
            updated_at=T0,
        )
        session.add(row)
        session.flush()
        return ConnectionSpec(row.id, type_, dict(settings), dict(credentials), row.version)


def stored(app: Relink, connection_id: int) -> tuple[dict[str, str], int, str]:
    """(decrypted credentials, version, raw ciphertext) as they are in the database."""
    with app.engine.connect() as conn:
        row = conn.execute(
            sa.select(Connection.credentials, Connection.version).where(
                Connection.id == connection_id
            )
        ).one()
    return app.vault.decrypt(row.credentials, connection=str(connection_id)), row.version, row[0]


def store_credentials(app: Relink, connection_id: int, credentials: Mapping[str, str]) -> int:
    """Write credentials as another worker would (version + 1); returns the new version."""
    with app.engine.begin() as conn:
        conn.execute(
            sa.update(Connection)
            .where(Connection.id == connection_id)
            .values(
                credentials=app.vault.encrypt(credentials),
                version=Connection.version + 1,
            )
        )
        return conn.execute(
            sa.select(Connection.version).where(Connection.id == connection_id)
        ).scalar_one()


def refresh_at_sandbox(base_url: str, client: OAuthClient, refresh_token: str) -> httpx.Response:
    """A refresh-token grant sent straight to the sandbox (what another worker does)."""
    return httpx.post(
        f"{base_url}/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        auth=(client.client_id, client.client_secret),
        timeout=5,
    )


def token_hits(provider: SandboxProvider) -> int:
    return provider.stats().get("/oauth/token", 0)


def installation_app(app_id: str, secret: str) -> dict[str, OAuthApp]:
    """`Settings.oauth` with the installation's Salesforce app, as
    RELINK_OAUTH__SALESFORCE__CLIENT_ID / __CLIENT_SECRET set it."""
    return {"salesforce": OAuthApp(client_id=app_id, client_secret=SecretStr(secret))}


def add_app_connections(
    app: Relink,
    provider: SandboxProvider,
    sandbox_url: str,
    *,
    app_id: str,
    owner: str,
    names: Iterable[str],
    now: datetime,
) -> list[int]:
    """Salesforce connections of `owner` through the installation's app `app_id` (no
    client of their own), each with a fresh token set of the sandbox, checked there by
    introspection; their ids."""
    ids = []
    with app.transaction() as session:
        for name in names:
            token = provider.issue_token(app_id, "user", "api")
            new = NewConnection(
                type="salesforce",
                name=name,
                owner=owner,
                settings={
                    "token_url": f"{sandbox_url}/oauth/token",
                    "introspection_url": f"{sandbox_url}/oauth/introspect",
                },
                secrets={k: token[k] for k in ("access_token", "refresh_token")},
            )
            ids.append(add_connection(session, app.vault, new, now=now).id)
    return ids


class RecordedWaits:
    """How a check waits between attempts (`validate_all(sleep=, clock=)`), without
    sleeping: each wait is recorded and moves the check's clock on by as much."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.asked.append(seconds)

    def clock(self) -> float:
        return time.monotonic() + sum(self.asked)


def assert_no_secret(result: CheckResult | str, secrets: Iterable[str | None]) -> None:
    text = result if isinstance(result, str) else f"{result.code} {result.message}"
    for secret in secrets:
        if secret:
            assert secret not in text, "a secret leaked into a message"
