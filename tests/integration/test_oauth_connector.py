# ruff: noqa: F811 - pytest fixtures imported from oauth_fixtures are parameters here
"""The OAuth 2.0 connector against the sandbox provider (a real Authlib authorization
server over loopback HTTP), with rotated tokens stored through `DbTokenStore` in the app
database (SQLite, and PostgreSQL when RELINK_TEST_POSTGRES_URL is set)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import sqlalchemy as sa

import connectors
from connectors.base import AuthFailed, CheckResult, ConnectionSpec, Credentials, Unreachable
from connectors.oauth2 import OAuth2Connector
from relink.domain.health import dataset_error
from relink.domain.words import Outcome
from relink.locks import ConnectionLocks, lock_dir
from relink.models import Connection
from relink.sweep.validate import CheckPolicy, validate_all
from relink.tokens import DbTokenStore
from relink_dev.sandbox import SandboxProvider, SandboxServer, demo_records
from tests.integration.oauth_fixtures import (  # noqa: F401 - fixtures
    REDIRECT_URI,
    OAuthClient,
    Owner,
    RecordedWaits,
    assert_no_secret,
    context,
    insert_connection,
    issue,
    oauth_client,
    oauth_settings,
    owner,
    provider,
    refresh_at_sandbox,
    sandbox,
    sandbox_server,
    store_credentials,
    stored,
    token_hits,
)

OAUTH = connectors.get("oauth2")
SALESFORCE = connectors.get("salesforce")
assert isinstance(OAUTH, OAuth2Connector)


def run(coro: Awaitable[CheckResult]) -> CheckResult:
    return asyncio.run(coro)  # type: ignore[arg-type]


def secrets_of(*credential_sets: Credentials, client: OAuthClient | None = None) -> list[str]:
    values = [v for creds in credential_sets for k, v in creds.items() if k != "expires_at"]
    return values + ([client.client_secret] if client else [])


def expired(now: datetime) -> float:
    return now.timestamp() - 60


# --- a valid token --------------------------------------------------------------------


@pytest.mark.parametrize("introspection", [True, False], ids=["introspection", "probe"])
def test_a_valid_token_is_ok(relink_app, owner, sandbox, provider, oauth_client, introspection):
    ctx = context(token_store=DbTokenStore(relink_app))
    creds = issue(provider, oauth_client, ctx.now)
    spec = insert_connection(
        relink_app,
        owner,
        type_="oauth2",
        settings=oauth_settings(sandbox.url, oauth_client.client_id, introspection=introspection),
        credentials=creds,
    )
    hits = provider.stats()

    result = run(OAUTH.validate(spec, ctx))

    # nothing stored; the introspection or userinfo answer names the consenting account
    assert result == CheckResult.ok(identity=result.identity)
    assert result.identity is not None and result.identity.subject == "alice"
    after = provider.stats()
    used = "/oauth/introspect" if introspection else "/api/me"
    assert after.get(used, 0) == hits.get(used, 0) + 1
    assert after.get("/oauth/token", 0) == hits.get("/oauth/token", 0)


def test_client_credentials_come_from_the_installation_and_post_auth_works(sandbox, provider):
    """Salesforce's provider entry sends client_secret_post; the sandbox accepts both."""
    client = OAuthClient(f"app-{secrets.token_hex(4)}", secrets.token_urlsafe(16))
    provider.register_client(client.client_id, client.client_secret, [REDIRECT_URI])
    salesforce = connectors.get("salesforce")
    ctx = context(
        app_settings={
            "oauth": {
                "salesforce": {
                    "client_id": client.client_id,
                    "client_secret": client.client_secret,
                }
            }
        }
    )
    creds = issue(provider, client, ctx.now, expires_at=expired(ctx.now))
    del creds["client_secret"]  # the installation's app is used
    spec = ConnectionSpec(1, "salesforce", oauth_settings(sandbox.url), creds)
    assert salesforce.plan(spec.settings, creds, ctx).auth_method == "client_secret_post"

    result = run(salesforce.validate(spec, ctx))

    assert result.outcome is Outcome.OK, result
    assert_no_secret(result, secrets_of(creds, client=client))


def test_a_wrong_secret_of_the_connections_own_client_is_auth_failed_invalid_client(
    sandbox, provider, oauth_client
):
    """The connection carries its own client (its client_id setting): its owner entered
    it and fixes it by reconnecting."""
    ctx = context()
    creds = issue(provider, oauth_client, ctx.now, expires_at=expired(ctx.now))
    creds["client_secret"] = "not-the-secret-at-all"
    spec = ConnectionSpec(1, "oauth2", oauth_settings(sandbox.url, oauth_client.client_id), creds)

    result = run(OAUTH.validate(spec, ctx))

    assert (result.outcome, result.code) == (Outcome.AUTH_FAILED, "invalid_client")
    assert_no_secret(result, secrets_of(creds, client=oauth_client))


# --- refresh and rotation ----------------------------------------------------------------


def test_an_expired_token_is_refreshed_and_the_rotated_set_is_stored_encrypted(
    relink_app, owner, sandbox, provider, oauth_client
):
    ctx = context(token_store=DbTokenStore(relink_app))
    old = issue(provider, oauth_client, ctx.now, expires_at=expired(ctx.now))
    spec = insert_connection(
        relink_app,
        owner,
        type_="oauth2",
        settings=oauth_settings(sandbox.url, oauth_client.client_id),
        credentials=old,
    )
    hits = token_hits(provider)

    result = run(OAUTH.validate(spec, ctx))

    assert result.outcome is Outcome.OK, result
    assert result.stored_version == spec.version + 1
    assert token_hits(provider) == hits + 1
    new, version, ciphertext = stored(relink_app, spec.id)
    assert version == spec.version + 1
    assert new["refresh_token"] != old["refresh_token"]
    assert new["access_token"] != old["access_token"]
    assert int(new["expires_at"]) > ctx.now.timestamp()
    assert new["client_secret"] == oauth_client.client_secret  # other secrets kept
    for value in (new["refresh_token"], new["access_token"], oauth_client.client_secret):
        assert value not in ciphertext
    # rotation: the spent refresh token is dead at the provider, the stored one works
    spent = refresh_at_sandbox(sandbox.url, oauth_client, old["refresh_token"])
    assert (spent.status_code, spent.json()["error"]) == (400, "invalid_grant")
    assert refresh_at_sandbox(sandbox.url, oauth_client, new["refresh_token"]).status_code == 200
    assert_no_secret(result, secrets_of(old, new, client=oauth_client))


@pytest.mark.parametrize("introspection", [True, False], ids=["introspection", "probe"])
def test_a_token_the_provider_expired_early_is_refreshed_once_rejected(
    relink_app, owner, sandbox, provider, oauth_client, introspection
):
    """expires_at says valid, the provider says expired: one refresh, one more check."""
    ctx = context(token_store=DbTokenStore(relink_app))
    old = issue(provider, oauth_client, ctx.now)
    provider.expire_access_token(old["access_token"])
    spec = insert_connection(
        relink_app,
        owner,
        type_="oauth2",
        settings=oauth_settings(sandbox.url, oauth_client.client_id, introspection=introspection),
        credentials=old,
    )

    result = run(OAUTH.validate(spec, ctx))

    assert result.outcome is Outcome.OK, result
    assert result.stored_version == spec.version + 1
    new, version, _ = stored(relink_app, spec.id)
    assert version == spec.version + 1
    assert new["access_token"] != old["access_token"]
    assert_no_secret(result, secrets_of(old, new, client=oauth_client))


def test_a_revoked_refresh_token_is_auth_failed_invalid_grant(
    relink_app, owner, sandbox, provider, oauth_client
):
    ctx = context(token_store=DbTokenStore(relink_app))
    creds = issue(provider, oauth_client, ctx.now, expires_at=expired(ctx.now))
    provider.revoke_token(creds["refresh_token"])
    spec = insert_connection(
        relink_app,
        owner,
        type_="oauth2",
        settings=oauth_settings(sandbox.url, oauth_client.client_id),
        credentials=creds,
    )

    result = run(OAUTH.validate(spec, ctx))

    assert (result.outcome, result.code) == (Outcome.AUTH_FAILED, "invalid_grant")
    assert result.stored_version is None
    assert stored(relink_app, spec.id)[:2] == (creds, spec.version)  # nothing written
    assert_no_secret(result, secrets_of(creds, client=oauth_client))
    # said once: the connector says what is wrong, a dataset's message adds the advice
    shown = dataset_error(
        dataset_status="ok",
        dataset_error=None,
        connection_name="CRM",
        connection_status="disconnected",
        connection_error=result.message,
    )
    assert "invalid_grant" in (shown or "") and (shown or "").count("reconnect") == 1


@pytest.mark.parametrize("introspection", [True, False], ids=["introspection", "probe"])
def test_a_revoked_access_token_without_refresh_token_is_auth_failed(
    sandbox, provider, oauth_client, introspection
):
    ctx = context()
    creds = issue(provider, oauth_client, ctx.now)
    provider.revoke_token(creds["access_token"])
    del creds["refresh_token"]
    settings = oauth_settings(sandbox.url, oauth_client.client_id, introspection=introspection)

    result = run(OAUTH.validate(ConnectionSpec(1, "oauth2", settings, creds), ctx))

    expected = "inactive_token" if introspection else "invalid_token"
    assert (result.outcome, result.code) == (Outcome.AUTH_FAILED, expected)
    assert_no_secret(result, secrets_of(creds, client=oauth_client))


def test_an_expired_token_without_refresh_token_is_auth_failed(sandbox, provider, oauth_client):
    ctx = context()
    creds = issue(provider, oauth_client, ctx.now, expires_at=expired(ctx.now))
    del creds["refresh_token"]
    spec = ConnectionSpec(1, "oauth2", oauth_settings(sandbox.url, oauth_client.client_id), creds)

    result = run(OAUTH.validate(spec, ctx))

    assert (result.outcome, result.code) == (Outcome.AUTH_FAILED, "no_refresh_token")


def test_a_refresh_without_any_client_id_is_misconfigured_and_names_the_setting(
    sandbox, provider, oauth_client
):
    """An installation without the provider's OAuth app must not break connections."""
    ctx = context()
    creds = issue(provider, oauth_client, ctx.now, expires_at=expired(ctx.now))
    spec = ConnectionSpec(1, "oauth2", oauth_settings(sandbox.url), creds)

    result = run(OAUTH.validate(spec, ctx))

    assert (result.outcome, result.code) == (Outcome.MISCONFIGURED, "oauth_app_not_configured")
    assert "RELINK_OAUTH__OAUTH2__CLIENT_ID" in result.message


# --- the installation's OAuth app ----------------------------------------------------------


def installation_app(provider: SandboxProvider, **options) -> tuple[OAuthClient, dict]:
    """A client registered at the sandbox as the installation's Salesforce app, and the
    app settings (RELINK_OAUTH__SALESFORCE__...) a check gets."""
    client = OAuthClient(f"app-{secrets.token_hex(4)}", secrets.token_urlsafe(16))
    provider.register_client(client.client_id, client.client_secret, [REDIRECT_URI], **options)
    app = {"client_id": client.client_id, "client_secret": client.client_secret}
    return client, {"oauth": {"salesforce": app}}


@pytest.mark.parametrize("endpoint", ["token", "introspection"])
def test_a_rotated_app_secret_is_misconfigured_and_says_which_settings_to_fix(
    sandbox, provider, endpoint
):
    """The operators rotated the app's secret at the provider and kept the old one in the
    settings: every connection through the app is refused alike, and only an admin can
    fix it. Neither the old secret nor the owner's tokens appear in the message."""
    client, app_settings = installation_app(provider)
    ctx = context(app_settings=app_settings)
    expiry = expired(ctx.now) if endpoint == "token" else None
    creds = issue(provider, client, ctx.now, expires_at=expiry)
    del creds["client_secret"]  # the installation's app, not the connection's own client
    spec = ConnectionSpec(1, "salesforce", oauth_settings(sandbox.url), creds)
    provider.register_client(client.client_id, secrets.token_urlsafe(16), [REDIRECT_URI])

    result = run(SALESFORCE.validate(spec, ctx))

    assert (result.outcome, result.code) == (Outcome.MISCONFIGURED, "invalid_client")
    assert "RELINK_OAUTH__SALESFORCE__CLIENT_ID" in result.message
    assert "RELINK_OAUTH__SALESFORCE__CLIENT_SECRET" in result.message
    assert_no_secret(result, secrets_of(creds, client=client))


def test_an_app_not_allowed_to_refresh_is_misconfigured_unauthorized_client(sandbox, provider):
    client, app_settings = installation_app(provider, grant_types=["authorization_code"])
    ctx = context(app_settings=app_settings)
    creds = issue(provider, client, ctx.now, expires_at=expired(ctx.now))
    del creds["client_secret"]
    spec = ConnectionSpec(1, "salesforce", oauth_settings(sandbox.url), creds)

    result = run(SALESFORCE.validate(spec, ctx))

    assert (result.outcome, result.code) == (Outcome.MISCONFIGURED, "unauthorized_client")
    assert "refresh-token grant" in result.message
    assert_no_secret(result, secrets_of(creds, client=client))


# --- a 403 at the probe ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "body", "expected"),
    [
        ("salesforce", "Bad_OAuth_Token", (Outcome.AUTH_FAILED, "bad_oauth_token")),
        ("salesforce", "<html>Request blocked.</html>", (Outcome.UNREACHABLE, "http_403")),
        ("microsoft_graph", "", (Outcome.UNREACHABLE, "http_403")),
        ("oauth2", "Bad_OAuth_Token", (Outcome.UNREACHABLE, "http_403")),  # not its word
    ],
    ids=["salesforce-bad-token", "salesforce-waf", "graph-bare", "generic-foreign-word"],
)
def test_a_403_breaks_a_connection_only_with_its_providers_documented_body(
    sandbox, provider, oauth_client, type_, body, expected
):
    ctx = context()
    creds = issue(provider, oauth_client, ctx.now)
    del creds["client_secret"]  # no introspection: the probe URL is the check
    settings = oauth_settings(sandbox.url, oauth_client.client_id, introspection=False)
    spec = ConnectionSpec(1, type_, settings, creds)
    provider.set_fault("answer", path_prefix="/api/me", status=403, body=body)

    result = run(connectors.get(type_).validate(spec, ctx))

    assert (result.outcome, result.code) == expected
    assert_no_secret(result, secrets_of(creds))


def test_without_a_token_store_a_refresh_is_handed_to_the_caller(sandbox, provider, oauth_client):
    """Nothing is stored (no store), but the set given is spent: the result carries the
    refreshed one, for the caller (a reconnect) to store instead."""
    ctx = context(token_store=None)
    creds = issue(provider, oauth_client, ctx.now, expires_at=expired(ctx.now))
    spec = ConnectionSpec(1, "oauth2", oauth_settings(sandbox.url, oauth_client.client_id), creds)

    result = run(OAUTH.validate(spec, ctx))

    assert (result.outcome, result.code, result.stored_version) == (Outcome.OK, None, None)
    fresh = result.credentials
    assert fresh is not None and fresh["client_secret"] == oauth_client.client_secret
    assert fresh["refresh_token"] != creds["refresh_token"]  # rotated: the given one is spent
    assert refresh_at_sandbox(sandbox.url, oauth_client, creds["refresh_token"]).status_code == 400
    assert refresh_at_sandbox(sandbox.url, oauth_client, fresh["refresh_token"]).status_code == 200
    assert fresh["refresh_token"] not in repr(result)  # never in a log line


# --- outages -----------------------------------------------------------------------------


def test_a_stopped_provider_is_unreachable_connection_refused(oauth_client):
    provider = SandboxProvider()
    provider.register_client(oauth_client.client_id, oauth_client.client_secret, [REDIRECT_URI])
    server = SandboxServer(provider).start()
    ctx = context()
    creds = issue(provider, oauth_client, ctx.now)
    spec = ConnectionSpec(1, "oauth2", oauth_settings(server.url, oauth_client.client_id), creds)
    server.stop()

    result = run(OAUTH.validate(spec, ctx))

    assert (result.outcome, result.code) == (Outcome.UNREACHABLE, "connection_refused")
    assert_no_secret(result, secrets_of(creds, client=oauth_client))


FAULTS = [
    ("error500", {}, "http_500"),
    ("rate_limit", {}, "http_429"),
    ("slow", {"delay": 1.5}, "timeout"),
    ("drop", {}, "connection_lost"),
]


@pytest.mark.parametrize(("mode", "options", "code"), FAULTS, ids=[f[0] for f in FAULTS])
@pytest.mark.parametrize("endpoint", ["verify", "refresh"])
def test_provider_faults_are_unreachable(
    sandbox, provider, oauth_client, mode, options, code, endpoint
):
    ctx = context(timeout=0.5)
    expiry = expired(ctx.now) if endpoint == "refresh" else None
    creds = issue(provider, oauth_client, ctx.now, expires_at=expiry)
    spec = ConnectionSpec(1, "oauth2", oauth_settings(sandbox.url, oauth_client.client_id), creds)
    path = "/oauth/token" if endpoint == "refresh" else "/oauth/introspect"
    provider.set_fault(mode, path_prefix=path, **options)

    result = run(OAUTH.validate(spec, ctx))

    assert (result.outcome, result.code) == (Outcome.UNREACHABLE, code)
    assert_no_secret(result, secrets_of(creds, client=oauth_client))


def test_a_token_endpoint_asking_to_wait_is_asked_again_after_that_wait(
    sandbox, provider, oauth_client
):
    ctx = context()
    creds = issue(provider, oauth_client, ctx.now, expires_at=expired(ctx.now))
    spec = ConnectionSpec(1, "oauth2", oauth_settings(sandbox.url, oauth_client.client_id), creds)
    limited = {"Retry-After": "3", "Content-Type": "application/json"}
    provider.set_fault(
        "answer", path_prefix="/oauth/token", status=429, body='{"error": "slow_down"}',
        headers=limited, times=1,
    )  # fmt: skip
    waits = RecordedWaits()

    (checked,) = run(
        validate_all([spec], lambda: ctx, CheckPolicy(), sleep=waits.sleep, clock=waits.clock)
    )

    assert checked.result.outcome is Outcome.OK, checked.result
    assert waits.asked == [3.0]


def test_a_failed_refresh_leaves_the_stored_credentials_alone(
    relink_app, owner, sandbox, provider, oauth_client
):
    ctx = context(token_store=DbTokenStore(relink_app))
    creds = issue(provider, oauth_client, ctx.now, expires_at=expired(ctx.now))
    spec = insert_connection(
        relink_app,
        owner,
        type_="oauth2",
        settings=oauth_settings(sandbox.url, oauth_client.client_id),
        credentials=creds,
    )
    provider.set_fault("error500", path_prefix="/oauth/token")

    result = run(OAUTH.validate(spec, ctx))

    assert (result.outcome, result.code) == (Outcome.UNREACHABLE, "http_500")
    assert stored(relink_app, spec.id)[:2] == (creds, spec.version)
    provider.clear_fault()
    assert run(OAUTH.validate(spec, ctx)).outcome is Outcome.OK  # the row is not left locked


# --- concurrency and rotation races --------------------------------------------------------


def test_two_concurrent_checks_refresh_once_and_the_stored_token_works(
    relink_app, owner, sandbox, provider, oauth_client
):
    store = DbTokenStore(relink_app)
    ctx = context(token_store=store)
    old = issue(provider, oauth_client, ctx.now, expires_at=expired(ctx.now))
    spec = insert_connection(
        relink_app,
        owner,
        type_="oauth2",
        settings=oauth_settings(sandbox.url, oauth_client.client_id),
        credentials=old,
    )
    hits = token_hits(provider)

    async def both() -> list[CheckResult]:
        return await asyncio.gather(OAUTH.validate(spec, ctx), OAUTH.validate(spec, ctx))

    first, second = asyncio.run(both())

    assert first.outcome is Outcome.OK and second.outcome is Outcome.OK, (first, second)
    assert token_hits(provider) == hits + 1  # exactly one refresh reached the provider
    new, version, _ = stored(relink_app, spec.id)
    assert first.stored_version == second.stored_version == version == spec.version + 1
    # the stored refresh token is the live one: one more refresh with it works
    assert refresh_at_sandbox(sandbox.url, oauth_client, new["refresh_token"]).status_code == 200


def test_many_refreshes_in_one_batch_all_succeed_and_keep_each_its_own_tokens(
    relink_app, owner, sandbox, provider, oauth_client
):
    """24 refreshes at once: none waits for a pooled database connection (on SQLite the
    pool once ran dry and stalled them for 30 s), and although the checks of a batch
    share one Authlib client, every rotated token set is stored on the connection whose
    grant it came from."""
    store = DbTokenStore(relink_app)
    ctx = context(token_store=store)
    users = [f"user-{i}" for i in range(24)]
    specs = [
        insert_connection(
            relink_app,
            owner,
            type_="oauth2",
            settings=oauth_settings(sandbox.url, oauth_client.client_id),
            credentials=issue(
                provider, oauth_client, ctx.now, username=user, expires_at=expired(ctx.now)
            ),
        )
        for user in users
    ]
    hits = token_hits(provider)
    policy = CheckPolicy(concurrency=24, per_provider=24, attempts=1)

    checked = asyncio.run(validate_all(specs, lambda: ctx, policy))

    assert [c.result.outcome for c in checked] == [Outcome.OK] * 24, [
        c.result for c in checked if c.result.outcome is not Outcome.OK
    ]
    assert token_hits(provider) == hits + 24
    for spec, user in zip(specs, users, strict=True):
        new, _, _ = stored(relink_app, spec.id)
        for kind in ("access_token", "refresh_token"):
            answer = httpx.post(
                f"{sandbox.url}/oauth/introspect",
                data={"token": new[kind], "token_type_hint": kind},
                auth=(oauth_client.client_id, oauth_client.client_secret),
                timeout=5,
            ).json()
            assert (answer["active"], answer["username"]) == (True, user), (spec.id, kind)


@pytest.mark.both_backends  # SQLite: the lock file; PostgreSQL: the row lock
def test_checks_in_two_event_loops_refresh_once_under_the_database_lock(
    relink_app, owner, sandbox, provider, oauth_client
):
    """Two workers (threads with loops of their own): only the database's lock is shared,
    the row lock on PostgreSQL, the connection's lock file on SQLite."""
    ctx = context(token_store=DbTokenStore(relink_app))
    old = issue(provider, oauth_client, ctx.now, expires_at=expired(ctx.now))
    spec = insert_connection(
        relink_app,
        owner,
        type_="oauth2",
        settings=oauth_settings(sandbox.url, oauth_client.client_id),
        credentials=old,
    )
    hits = token_hits(provider)
    results: list[CheckResult] = []
    start = threading.Barrier(2)

    def worker() -> None:
        start.wait()
        results.append(asyncio.run(OAUTH.validate(spec, ctx)))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)

    assert [r.outcome for r in results] == [Outcome.OK, Outcome.OK], results
    assert token_hits(provider) == hits + 1


def test_a_refresh_held_by_another_process_past_the_lock_timeout_is_unreachable_busy(
    relink_app, owner, sandbox, provider, oauth_client
):
    """SQLite: another process holds the connection's lock file for longer than
    RELINK_REFRESH_LOCK_TIMEOUT; the check asks nothing and breaks nothing."""
    if relink_app.engine.dialect.name != "sqlite":
        pytest.skip("lock files are SQLite's; PostgreSQL waits on the row lock")
    waited: list[float] = []

    async def no_real_wait(seconds: float) -> None:
        waited.append(seconds)

    directory = lock_dir(relink_app.engine.url)
    locks = ConnectionLocks(directory, timeout=1.0, clock=lambda: sum(waited), sleep=no_real_wait)
    ctx = context(token_store=DbTokenStore(relink_app, locks=locks))
    old = issue(provider, oauth_client, ctx.now, expires_at=expired(ctx.now))
    spec = insert_connection(
        relink_app,
        owner,
        type_="oauth2",
        settings=oauth_settings(sandbox.url, oauth_client.client_id),
        credentials=old,
    )
    hits = token_hits(provider)
    other_process = ConnectionLocks(directory)

    async def while_another_holds_it() -> CheckResult:
        async with other_process.hold(spec.id):
            return await OAUTH.validate(spec, ctx)

    result = run(while_another_holds_it())

    assert (result.outcome, result.code) == (Outcome.UNREACHABLE, "token_refresh_busy")
    assert "RELINK_REFRESH_LOCK_TIMEOUT" in result.message
    assert token_hits(provider) == hits  # the refresh token was not spent
    assert stored(relink_app, spec.id)[:2] == (old, spec.version)
    assert run(OAUTH.validate(spec, ctx)).outcome is Outcome.OK  # released: refreshed


def test_a_newer_token_set_stored_by_another_worker_is_used(
    relink_app, owner, sandbox, provider, oauth_client
):
    ctx = context(token_store=DbTokenStore(relink_app))
    old = issue(provider, oauth_client, ctx.now, expires_at=expired(ctx.now))
    spec = insert_connection(
        relink_app,
        owner,
        type_="oauth2",
        settings=oauth_settings(sandbox.url, oauth_client.client_id),
        credentials=old,
    )
    # another worker rotates the refresh token and stores the new set after our spec was read
    rotated = refresh_at_sandbox(sandbox.url, oauth_client, old["refresh_token"]).json()
    newer = {
        **old,
        "access_token": rotated["access_token"],
        "refresh_token": rotated["refresh_token"],
        "expires_at": str(int(ctx.now.timestamp()) + rotated["expires_in"]),
    }
    version = store_credentials(relink_app, spec.id, newer)
    hits = token_hits(provider)

    result = run(OAUTH.validate(spec, ctx))

    assert (result.outcome, result.stored_version) == (Outcome.OK, version)
    assert token_hits(provider) == hits  # nothing left to refresh
    assert stored(relink_app, spec.id)[:2] == (newer, version)


class _LosesTheRace:
    """A store that lost a rotation race it could not see (SQLite, two processes): the
    other worker rotates and stores between our read and our refresh call."""

    def __init__(self, inner: DbTokenStore, other_worker: Callable[[], None]) -> None:
        self.inner = inner
        self.other_worker = other_worker
        self.raced = False

    async def refresh(self, conn, refresh, *, usable):
        if not self.raced:
            self.raced = True
            await asyncio.to_thread(self.other_worker)
            fresh = await refresh(conn.credentials)  # the refresh token the other one spent
            raise AssertionError(f"the spent refresh token worked: {sorted(fresh)}")
        return await self.inner.refresh(conn, refresh, usable=usable)

    async def reload(self, connection_id):
        return await self.inner.reload(connection_id)


def test_invalid_grant_after_another_worker_rotated_is_not_a_failure(
    relink_app, owner, sandbox, provider, oauth_client
):
    now = datetime.now(UTC)
    old = issue(provider, oauth_client, now, expires_at=expired(now))
    spec = insert_connection(
        relink_app,
        owner,
        type_="oauth2",
        settings=oauth_settings(sandbox.url, oauth_client.client_id),
        credentials=old,
    )
    newer: dict[str, str] = {}

    def other_worker() -> None:
        rotated = refresh_at_sandbox(sandbox.url, oauth_client, old["refresh_token"]).json()
        newer.update(
            old,
            access_token=rotated["access_token"],
            refresh_token=rotated["refresh_token"],
            expires_at=str(int(now.timestamp()) + rotated["expires_in"]),
        )
        store_credentials(relink_app, spec.id, newer)

    store = _LosesTheRace(DbTokenStore(relink_app), other_worker)
    ctx = context(now=now, token_store=store)

    result = run(OAUTH.validate(spec, ctx))

    assert store.raced
    assert (result.outcome, result.code) == (Outcome.OK, None), result
    assert result.stored_version == spec.version + 1
    assert stored(relink_app, spec.id)[0] == newer
    assert_no_secret(result, secrets_of(old, newer, client=oauth_client))


def test_a_status_write_during_a_refresh_does_not_lose_the_rotated_tokens(
    relink_app, owner, sandbox, provider, oauth_client
):
    """Without row locks (SQLite) the version check catches the other write; ours is
    written again on the new version because the credentials were not touched."""
    if relink_app.engine.dialect.name != "sqlite":
        pytest.skip("with a row lock the other write waits for our commit")
    store = DbTokenStore(relink_app)
    now = datetime.now(UTC)
    old = issue(provider, oauth_client, now, expires_at=expired(now))
    spec = insert_connection(
        relink_app,
        owner,
        type_="oauth2",
        settings=oauth_settings(sandbox.url, oauth_client.client_id),
        credentials=old,
    )

    def status_write() -> None:
        with relink_app.engine.begin() as conn:
            conn.execute(
                sa.update(Connection)
                .where(Connection.id == spec.id)
                .values(status="connected", version=Connection.version + 1)
            )

    async def refresh(current: Credentials) -> Credentials:
        await asyncio.to_thread(status_write)
        return {**current, "access_token": "rotated-access", "refresh_token": "rotated-refresh"}

    creds, version = asyncio.run(store.refresh(spec, refresh, usable=lambda c: False))

    assert version == spec.version + 2
    assert stored(relink_app, spec.id)[:2] == (dict(creds), version)
    assert creds["refresh_token"] == "rotated-refresh"


# --- the reconnect helpers -----------------------------------------------------------------


def _consent(sandbox_url: str, authorization_url: str, decision: str = "allow") -> dict:
    query = urlsplit(authorization_url).query
    response = httpx.post(
        f"{sandbox_url}/oauth/authorize?{query}",
        data={"username": "alice", "decision": decision},
        timeout=5,
    )
    assert response.status_code == 302, response.text
    return {k: v[0] for k, v in parse_qs(urlsplit(response.headers["location"]).query).items()}


def test_authorization_url_and_exchange_code_round_trip_with_pkce(sandbox, provider, oauth_client):
    ctx = context(
        app_settings={
            "oauth": {
                "oauth2": {
                    "client_id": oauth_client.client_id,
                    "client_secret": oauth_client.client_secret,
                }
            }
        }
    )
    settings = {**oauth_settings(sandbox.url), "scope": "api"}
    verifier, state = secrets.token_urlsafe(48), secrets.token_urlsafe(16)

    url = OAUTH.authorization_url(settings, ctx, REDIRECT_URI, state, verifier)

    params = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    assert url.startswith(f"{sandbox.url}/oauth/authorize?")
    assert params == {
        "response_type": "code",
        "client_id": oauth_client.client_id,
        "redirect_uri": REDIRECT_URI,
        "scope": "api",
        "state": state,
        "code_challenge": challenge.decode(),
        "code_challenge_method": "S256",
    }
    answer = _consent(sandbox.url, url)
    assert answer["state"] == state

    creds = asyncio.run(OAUTH.exchange_code(settings, ctx, answer["code"], REDIRECT_URI, verifier))

    assert set(creds) == {"access_token", "refresh_token", "expires_at"}
    assert int(creds["expires_at"]) > ctx.now.timestamp()
    result = run(OAUTH.validate(ConnectionSpec(1, "oauth2", settings, creds), ctx))
    assert result.outcome is Outcome.OK, result


def test_exchange_code_with_the_wrong_verifier_is_auth_failed_invalid_grant(
    sandbox, provider, oauth_client
):
    ctx = context()
    settings = oauth_settings(sandbox.url, oauth_client.client_id)
    secret = {"client_secret": oauth_client.client_secret}
    verifier = secrets.token_urlsafe(48)
    url = OAUTH.authorization_url(settings, ctx, REDIRECT_URI, "st", verifier)
    code = _consent(sandbox.url, url)["code"]

    with pytest.raises(AuthFailed) as caught:
        asyncio.run(
            OAUTH.exchange_code(
                settings, ctx, code, REDIRECT_URI, secrets.token_urlsafe(48), credentials=secret
            )
        )

    assert caught.value.code == "invalid_grant"
    assert_no_secret(caught.value.message, [code, verifier, oauth_client.client_secret])


# --- fetch -----------------------------------------------------------------------------------


def test_fetch_refreshes_first_and_returns_columns_and_rows(
    relink_app, owner, sandbox, provider, oauth_client
):
    ctx = context(token_store=DbTokenStore(relink_app))
    creds = issue(provider, oauth_client, ctx.now, expires_at=expired(ctx.now))
    spec = insert_connection(
        relink_app,
        owner,
        type_="oauth2",
        settings=oauth_settings(sandbox.url, oauth_client.client_id),
        credentials=creds,
    )

    result = asyncio.run(
        OAUTH.fetch(spec, "/api/records?path=opportunities&limit=3 | data.records", ctx)
    )

    expected = demo_records("opportunities", 3)
    # first-seen order of the body's keys (the sandbox's Flask jsonify sorts them)
    assert result.columns == ["amount", "created_at", "id", "name"]
    assert result.rows == [tuple(r[c] for c in result.columns) for r in expected]
    assert stored(relink_app, spec.id)[1] == spec.version + 1  # the refresh was stored


@pytest.mark.parametrize(
    ("query", "error", "code"),
    [
        ("/api/records | data.nope", Unreachable, "invalid_query"),
        ("https://elsewhere.example/api/records", Unreachable, "invalid_query"),
        ("/api/missing", Unreachable, "http_404"),
    ],
)
def test_fetch_errors_are_classified(sandbox, provider, oauth_client, query, error, code):
    ctx = context()
    creds = issue(provider, oauth_client, ctx.now)
    spec = ConnectionSpec(1, "oauth2", oauth_settings(sandbox.url, oauth_client.client_id), creds)

    with pytest.raises(error) as caught:
        asyncio.run(OAUTH.fetch(spec, query, ctx))

    assert caught.value.code == code
    assert_no_secret(caught.value.message, secrets_of(creds, client=oauth_client))


def test_fetch_with_a_revoked_grant_raises_auth_failed(sandbox, provider, oauth_client):
    ctx = context()
    creds = issue(provider, oauth_client, ctx.now, expires_at=expired(ctx.now))
    provider.revoke_token(creds["refresh_token"])
    spec = ConnectionSpec(1, "oauth2", oauth_settings(sandbox.url, oauth_client.client_id), creds)

    with pytest.raises(AuthFailed) as caught:
        asyncio.run(OAUTH.fetch(spec, "/api/records | data.records", ctx))

    assert caught.value.code == "invalid_grant"
    assert_no_secret(caught.value.message, secrets_of(creds, client=oauth_client))


def test_reloading_a_connection_that_does_not_exist_names_it(relink_app):
    store = DbTokenStore(relink_app)
    with pytest.raises(LookupError, match="connection 999"):
        asyncio.run(store.reload(999))
