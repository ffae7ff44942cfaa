# ruff: noqa: F811 - pytest fixtures imported from oauth_fixtures are parameters here
"""Token rotation race: many checks of one OAuth connection and a reconnect of it, all
at once, against a provider that rotates the refresh token on every grant.

tests/integration/test_oauth_connector.py proves the token store with two checks at a
time; here 100 checks run in threads of their own (each its own event loop, so only
the database's lock orders them, as between worker processes: PostgreSQL's row lock,
SQLite's lock file per connection), each as the sweep
makes it (`relink.checks`: load, validate with retries, record) and each spending a
refresh token: the sandbox issues access tokens that live 60 s, inside the 5-minute
refresh window, so every check refreshes. A reconnect (`relink.reconnecting.oauth.finish_oauth`
with a code from the sandbox's consent page, where user "carol" signs in, while the
connection's first token set is "alice"'s) lands in the middle.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from connectors.base import CheckResult
from relink.app import Relink
from relink.checks import _record_with_retry
from relink.domain.words import Outcome
from relink.errors import Conflict
from relink.models import Connection, Disconnection
from relink.reconnecting.oauth import finish_oauth, start_oauth
from relink.reconnecting.replace import Reconnected
from relink.sweep.load import load_batch
from relink.sweep.validate import CheckPolicy, make_context_factory, validate_all
from relink.tokens import DbTokenStore
from relink_dev.sandbox import SandboxProvider, SandboxServer
from tests.integration.oauth_fixtures import (  # noqa: F401 - fixtures
    REDIRECT_URI,
    OAuthClient,
    insert_connection,
    issue,
    oauth_client,
    oauth_settings,
    owner,
    provider,
    refresh_at_sandbox,
    sandbox,
    stored,
    token_hits,
)
from tests.support.promises import scale
from tests.support.web import consent

# Both app databases: row locks order the workers on PostgreSQL, lock files on SQLite.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)

CHECKS = 100
ROUNDS = scale(1, 5)
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
POLICY = CheckPolicy(attempts=3, backoff=0.2, timeout=10.0)  # the sweep's defaults
OWNER = "owner@acme.test"  # the `owner` fixture's user
PROMISE = "A rotated refresh token is never lost: not by concurrent checks, nor by a reconnect"


@pytest.fixture(scope="module")
def sandbox_server() -> Iterator[SandboxServer]:
    """Access tokens live 60 s, less than the refresh window: every check refreshes."""
    with SandboxServer(SandboxProvider(access_token_lifetime=60)) as server:
        yield server


@pytest.fixture
def connection_id(relink_app, owner, sandbox, provider, oauth_client) -> int:
    """An OAuth connection to the sandbox holding a token set of user "alice"."""
    return insert_connection(
        relink_app,
        owner,
        type_="oauth2",
        settings=oauth_settings(sandbox.url, oauth_client.client_id),
        credentials=issue(provider, oauth_client, NOW, username="alice"),
    ).id


async def check(app: Relink, connection_id: int) -> CheckResult:
    """One check as `relink.checks.check_range` makes it, returning the connector's own
    result: the batch summary leaves out a result whose version another check moved on."""
    [spec] = await asyncio.to_thread(load_batch, app, connection_id - 1, connection_id)
    make_ctx = make_context_factory(app, POLICY, now=NOW, token_store=DbTokenStore(app))
    [checked] = await validate_all([spec], make_ctx, POLICY)
    # recorded as check_range records (on SQLite a version moved meanwhile is one retry)
    await asyncio.to_thread(_record_with_retry, app, [checked], [], NOW)
    return checked.result


def reconnect(app: Relink, connection_id: int) -> Reconnected | Conflict:
    """The owner reconnects through the consent page; a Conflict is a clean refusal
    ("changed twice while it was being reconnected; nothing was changed")."""
    started = start_oauth(app, connection_id, actor=OWNER, redirect_uri=REDIRECT_URI, now=NOW)
    answer = consent(started.url, username="carol")
    state, code = answer["state"], answer["code"]
    try:
        return asyncio.run(
            finish_oauth(
                app,
                state=state,
                code=code,
                actor=OWNER,
                now=NOW,
                refresh=False,
                replace_account=True,  # carol's tokens replace alice's: confirmed
            )
        )
    except Conflict as refused:
        return refused


def all_at_once(jobs: list[Callable[[], Any]]) -> list[Any]:
    """Run every job in a thread of its own, released together; their results (or the
    exceptions they raised) in order."""
    start = threading.Barrier(len(jobs))
    results: list[Any] = [None] * len(jobs)

    def run(index: int, job: Callable[[], Any]) -> None:
        start.wait()
        try:
            results[index] = job()
        except Exception as exc:  # noqa: BLE001 - the test reports it
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a check or the reconnect hung"
    return results


def token_owner(sandbox: SandboxServer, client: OAuthClient, app: Relink, cid: int) -> str:
    """Whose grant the stored access token belongs to, as the provider sees it (it must
    be active)."""
    access_token = stored(app, cid)[0]["access_token"]
    answer = httpx.post(
        f"{sandbox.url}/oauth/introspect",
        data={"token": access_token},
        auth=(client.client_id, client.client_secret),
        timeout=5,
    ).json()
    assert answer["active"] is True, answer
    return answer["username"]


def refresh_token_works(sandbox: SandboxServer, client: OAuthClient, app: Relink, cid: int) -> bool:
    """A refresh grant with the stored refresh token, sent to the provider directly."""
    grant = refresh_at_sandbox(sandbox.url, client, stored(app, cid)[0]["refresh_token"])
    return grant.status_code == 200


@pytest.mark.promise(PROMISE)
def test_a_reconnect_with_short_lived_tokens_stores_a_refresh_token_that_works(
    relink_app, sandbox, oauth_client, connection_id, record_property
):
    """Its validation must not spend the new refresh token (the race below found the
    reconnect storing a refresh token that its own validation had rotated away)."""
    done = reconnect(relink_app, connection_id)

    assert isinstance(done, Reconnected), done
    assert token_owner(sandbox, oauth_client, relink_app, connection_id) == "carol"
    result = asyncio.run(check(relink_app, connection_id))  # refreshes: 60 s tokens
    assert (result.outcome, result.code) == (Outcome.OK, None), result
    assert refresh_token_works(sandbox, oauth_client, relink_app, connection_id)
    record_property("trials", 1)
    record_property("outcome", "reconnected, then refreshed by the next check: ok")


@pytest.mark.promise(PROMISE)
def test_checks_and_a_reconnect_racing_keep_a_working_refresh_token(
    relink_app, sandbox, provider, oauth_client, connection_id, record_property
):
    lineage = "alice"  # whose grant the stored tokens descend from
    outcomes: list[str] = []
    for _ in range(ROUNDS):
        grants = token_hits(provider)
        checks = [lambda: asyncio.run(check(relink_app, connection_id))] * CHECKS
        jobs = [*checks[: CHECKS // 2], lambda: reconnect(relink_app, connection_id)]
        results = all_at_once(jobs + checks[CHECKS // 2 :])
        reconnected = results.pop(CHECKS // 2)

        seen = [(r.outcome, r.code) if isinstance(r, CheckResult) else r for r in results]
        assert seen == [(Outcome.OK, None)] * CHECKS, results
        assert isinstance(reconnected, Reconnected | Conflict), reconnected
        assert token_hits(provider) == grants + CHECKS + 1  # a refresh each, and the code
        lineage = "carol" if isinstance(reconnected, Reconnected) else lineage
        assert token_owner(sandbox, oauth_client, relink_app, connection_id) == lineage
        outcomes.append(type(reconnected).__name__)

    with relink_app.sessions() as session:
        status = session.scalar(sa.select(Connection.status).where(Connection.id == connection_id))
        opened = session.scalar(sa.select(sa.func.count()).select_from(Disconnection))
    assert (status, opened) == ("connected", 0)
    assert refresh_token_works(sandbox, oauth_client, relink_app, connection_id)
    record_property("trials", ROUNDS * (CHECKS + 1))
    record_property(
        "outcome",
        f"{ROUNDS * CHECKS} checks, {ROUNDS * CHECKS} rotations, 0 auth_failed; "
        f"reconnects: {', '.join(outcomes)}; the stored refresh token works",
    )
