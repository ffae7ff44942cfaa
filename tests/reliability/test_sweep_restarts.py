# ruff: noqa: F811 - pytest fixtures imported from oauth_fixtures are parameters here
"""Restarts: the app database's connections are killed (`pg_terminate_backend`, what a
database restart or a failover does to its clients) in the middle of a check sweep.

The check-connections flow runs on a real Prefect test server against a PostgreSQL
app database, in batches of 20: API-key connections, then OAuth connections whose
access tokens need a refresh (the sandbox issues 60-second tokens), then API-key
connections again. The OAuth token endpoint sits behind a `FaultySource` held shut:
when four refreshes wait there, each holding its connection's row lock (the token
store's limit per event loop), every app-database session of the sweep is killed, and
the refreshes go on. The sweep may fail or retry; no connection may break because of
the database, and the next sweep must check every connection and find it working.

The provider rotates the refresh token as it answers a refresh, so the answer in hand
when the session died is the only copy of the new one: the token store now writes it
again through a new session. Before, it was lost with the session, and the next sweep
found those four connections "revoked".
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from flows.check_connections import check_connections
from relink.app import Relink, set_app
from relink.models import Connection, Disconnection
from relink.timeutil import utcnow
from relink_dev.sandbox import SandboxProvider, SandboxServer
from tests.integration.oauth_fixtures import (  # noqa: F401 - fixtures
    insert_connection,
    issue,
    oauth_client,
    oauth_settings,
    owner,
    provider,
    sandbox,
)
from tests.support.faulty_sources import HOLD, FaultySource, FaultySources
from tests.support.pg import temporary_schema
from tests.support.promises import scale

APP_NAME = f"relink-restarts-{uuid.uuid4().hex[:8]}"  # how the killer finds the sweep's sessions
BATCH = 20
ROUNDS = scale(1, 10)
HELD = 4  # relink.tokens.DEFAULT_MAX_LOCKED: row locks one event loop holds at a time
API_KEY = f"key-{uuid.uuid4().hex}"

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture(scope="module")
def sandbox_server() -> Iterator[SandboxServer]:
    """Access tokens live 60 s, less than the refresh window: every check refreshes."""
    provider = SandboxProvider(access_token_lifetime=60)
    provider.add_api_key(API_KEY)
    with SandboxServer(provider) as server:
        yield server


@pytest.fixture
def database_url(postgres_url: str) -> Iterator[str]:
    """The app database on PostgreSQL; its sessions carry APP_NAME."""
    with temporary_schema(postgres_url) as url:
        named = sa.make_url(url).update_query_dict({"application_name": APP_NAME})
        yield named.render_as_string(hide_password=False)


@pytest.fixture
def token_endpoint(sandbox: SandboxServer) -> Iterator[FaultySource]:
    with FaultySources() as sources:
        yield sources.add("127.0.0.1", sandbox.port)


@pytest.fixture
def fleet(relink_app, owner, sandbox, provider, oauth_client, token_endpoint) -> int:
    """API-key connections around a batch of OAuth ones; how many connections in all."""
    oauth = oauth_settings(sandbox.url, oauth_client.client_id)
    oauth["token_url"] = f"{token_endpoint.url}/oauth/token"
    api_key = {"base_url": sandbox.url, "probe_path": "/apikey/me", "header": "X-API-Key"}
    for kind in ("api_key", "oauth2", "api_key"):
        for _ in range(BATCH):
            if kind == "oauth2":
                settings, credentials = oauth, issue(provider, oauth_client, utcnow())
            else:
                settings, credentials = api_key, {"api_key": API_KEY}
            insert_connection(
                relink_app, owner, type_=kind, settings=settings, credentials=credentials
            )
    set_app(relink_app)  # what the flow's tasks use
    yield 3 * BATCH
    set_app(None)


def kill_app_sessions(pg_engine: sa.Engine) -> int:
    """Terminate every session of the app database; how many there were."""
    with pg_engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = :name"
            ),
            {"name": APP_NAME},
        ).scalar_one()


def sweep_in_background() -> tuple[threading.Thread, list[Any]]:
    """The check-connections flow in a thread of its own; its final state lands in the list."""
    states: list[Any] = []

    def run() -> None:
        states.append(asyncio.run(check_connections(batch_size=BATCH, return_state=True)))

    thread = threading.Thread(target=run)
    thread.start()
    return thread, states


def broken(app: Relink) -> list[str]:
    """Connections a sweep marked disconnected, and disconnections opened."""
    with app.sessions() as session:
        names = session.scalars(
            sa.select(Connection.name).where(Connection.status == "disconnected")
        ).all()
        opened = session.scalar(sa.select(sa.func.count()).select_from(Disconnection))
    return [*names, *(["a disconnection"] * opened)]


@pytest.mark.promise(
    "The app database dropping every session mid-sweep breaks no connection, and the "
    "next sweep checks them all"
)
def test_killing_the_app_database_sessions_mid_sweep_breaks_nothing(
    relink_app, fleet, token_endpoint, pg_engine, record_property
):
    endings: Counter[str] = Counter()
    for _ in range(ROUNDS):
        token_endpoint.set(HOLD)
        thread, states = sweep_in_background()
        token_endpoint.wait_held(HELD)
        killed = kill_app_sessions(pg_engine)
        token_endpoint.release()
        thread.join(timeout=120)
        assert not thread.is_alive(), "the sweep hung after its database sessions died"
        (interrupted,) = states
        endings[interrupted.type.value.lower()] += 1
        assert killed >= HELD  # the sessions holding the row locks of the held refreshes
        assert broken(relink_app) == []

        started = utcnow()
        after = asyncio.run(check_connections(batch_size=BATCH, return_state=True))
        summary = after.result()
        assert summary["outcomes"] == {
            "ok": fleet,
            "auth_failed": 0,
            "misconfigured": 0,
            "unreachable": 0,
            "error": 0,
        }
        assert broken(relink_app) == []
        with relink_app.sessions() as session:
            stale = session.scalars(
                sa.select(Connection.name).where(
                    (Connection.last_checked_at < started) | (Connection.status != "connected")
                )
            ).all()
        assert stale == []

    record_property("trials", ROUNDS)
    record_property(
        "outcome",
        f"{ROUNDS} sweep(s) interrupted ({', '.join(f'{n} {e}' for e, n in endings.items())}): "
        "0 connections broken; "
        f"the next sweep checked {fleet} of {fleet}, all ok",
    )
