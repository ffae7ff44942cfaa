"""Reconnecting an OAuth connection against the sandbox provider (a real Authlib
authorization server over loopback HTTP): the refresh token is revoked, the check
breaks the connection, and an automated authorization-code exchange (consent form
POSTed with httpx) reconnects it. Foreign, replayed and expired states change nothing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from relink import passwords
from relink.connections import NewConnection, add_connection, share
from relink.datasets import add_dataset
from relink.directory import get_user
from relink.errors import InvalidInput, NotFound
from relink.models import Connection, OAuthState
from relink.reconnecting.errors import OAuthStateRefused
from relink.reconnecting.oauth import finish_oauth, start_oauth
from relink.web import create_app
from relink_dev.sandbox import SandboxProvider, SandboxServer
from tests.integration.oauth_fixtures import new_client
from tests.support import web
from tests.support.reconnect import (
    ADMIN,
    FAST_REFRESH,
    OUTSIDER,
    OWNER,
    SHARED,
    T0,
    Cli,
    add_broken_oauth_connection,
    add_people,
    connection_view,
    snapshot,
    warehouse_rows,
)

REDIRECT_URI = "http://127.0.0.1:9/oauth/callback"  # never called: the test reads the redirect
T1 = T0 + timedelta(hours=1)
T2 = T0 + timedelta(hours=30)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxProvider()) as server:
        yield server


@pytest.fixture
def crm(relink_app, sandbox):
    """A warehouse-mode OAuth connection (owner Bob, shared with Cid) with one dataset,
    whose refresh token has been revoked and which a check found broken."""
    client = new_client(sandbox.provider, allow_loopback_redirects=True)
    add_people(relink_app)
    connection_id, token = add_broken_oauth_connection(
        relink_app, sandbox, client, mode="warehouse", api_base_url=sandbox.url, scope="api"
    )
    with relink_app.transaction() as session:
        share(session, connection_id, with_email=SHARED, actor=get_user(session, OWNER), now=T0)
        dataset = add_dataset(
            session,
            connection_id=connection_id,
            name="Opportunities",
            query="/api/records?path=opportunities | data.records",
            now=T0,
        )
        return connection_id, dataset.id, token, client.client_secret


def consent(authorization_url: str) -> tuple[str, str]:
    """What a person does in the browser: open the URL, allow; returns (state, code)."""
    assert 'id="allow"' in httpx.get(authorization_url, timeout=5).text
    answer = web.consent(authorization_url, username="carol")
    return answer["state"], answer["code"]


def test_a_revoked_connection_is_reconnected_through_the_authorization_code_flow(relink_app, crm):
    connection_id, dataset_id, old, client_secret = crm
    started = start_oauth(
        relink_app, connection_id, actor=SHARED, redirect_uri=REDIRECT_URI, now=T2
    )
    url = httpx.URL(started.url)
    assert url.params["code_challenge_method"] == "S256"
    assert url.params["redirect_uri"] == REDIRECT_URI
    assert started.expires_at == T2 + timedelta(minutes=10)
    with relink_app.sessions() as session:
        pending = session.scalars(sa.select(OAuthState)).one()
        assert pending.state_hash != url.params["state"] and len(pending.state_hash) == 64
        assert (pending.connection_id, pending.used_at) == (connection_id, None)
        assert "code_verifier" not in pending.code_verifier  # encrypted

    state, code = consent(started.url)
    assert state == started.state
    done = asyncio.run(
        finish_oauth(
            relink_app,
            state=state,
            code=code,
            actor=SHARED,
            connection_id=connection_id,
            now=T2,
            policy=FAST_REFRESH,
        )
    )

    assert (done.previous_owner, done.owner) == (OWNER, SHARED)
    view = connection_view(relink_app, connection_id)
    assert view["status"] == "connected" and view["created_by"] == "Cid Shared"
    assert view["datasets"][0]["status"] == "ok" and view["datasets"][0]["row_count"] == 25
    assert len(warehouse_rows(relink_app, f"ds_{dataset_id}")) == 25
    with relink_app.sessions() as session:
        row = session.get(Connection, connection_id)
        stored = relink_app.vault.decrypt(row.credentials, connection="x")
        used = session.scalars(sa.select(OAuthState)).one().used_at
    assert stored["access_token"] not in (old["access_token"], None)
    assert stored["refresh_token"] not in (old["refresh_token"], None)
    assert stored["client_secret"] == client_secret  # kept: not part of the token set
    for secret in (stored["access_token"], stored["refresh_token"], client_secret):
        assert secret not in row.credentials  # encrypted at rest
    assert used == T2

    # the same state again: refused, nothing changes
    before = snapshot(relink_app)
    with pytest.raises(OAuthStateRefused, match="already used") as replayed:
        asyncio.run(finish_oauth(relink_app, state=state, code=code, actor=SHARED, now=T2))
    assert replayed.value.reason == "replayed"
    assert snapshot(relink_app) == before


@pytest.mark.parametrize(
    ("finisher", "for_connection", "minutes", "reason"),
    [
        (ADMIN, None, 1, "other_user"),
        (SHARED, 999, 1, "other_connection"),
        (SHARED, None, 10, "expired"),
    ],
)
def test_a_foreign_or_expired_state_is_refused_and_changes_nothing(
    relink_app, crm, finisher, for_connection, minutes, reason
):
    connection_id = crm[0]
    started = start_oauth(
        relink_app, connection_id, actor=SHARED, redirect_uri=REDIRECT_URI, now=T2
    )
    state, code = consent(started.url)
    before = snapshot(relink_app)

    with pytest.raises(OAuthStateRefused) as refused:
        asyncio.run(
            finish_oauth(
                relink_app,
                state=state,
                code=code,
                actor=finisher,
                connection_id=for_connection,
                now=T2 + timedelta(minutes=minutes),
            )
        )

    assert refused.value.reason == reason
    assert "start the reconnect again" in str(refused.value)
    assert snapshot(relink_app) == before
    assert connection_view(relink_app, connection_id)["status"] == "disconnected"


def test_an_unknown_state_is_refused(relink_app, crm):
    with pytest.raises(OAuthStateRefused, match="unknown sign-in state"):
        asyncio.run(finish_oauth(relink_app, state="made-up", code="x", actor=SHARED, now=T2))


def test_only_those_who_may_reconnect_can_start_and_password_connections_cannot(
    relink_app, crm, postgres_url
):
    connection_id = crm[0]
    with pytest.raises(NotFound):
        start_oauth(relink_app, connection_id, actor=OUTSIDER, redirect_uri=REDIRECT_URI, now=T2)
    with relink_app.transaction() as session:
        pg = add_connection(
            session,
            relink_app.vault,
            NewConnection(
                type="postgres",
                name="DB",
                owner=OWNER,
                settings={"host": "127.0.0.1", "database": "test", "username": "x"},
                secrets={"password": "p"},
            ),
            now=T0,
        )
    with pytest.raises(InvalidInput, match="new secret values"):
        start_oauth(relink_app, pg.id, actor=OWNER, redirect_uri=REDIRECT_URI, now=T2)
    with relink_app.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(OAuthState)) == 0


# --- the CLI ----------------------------------------------------------------------------


def test_cli_no_wait_then_code_url_reconnects(relink_app, settings, crm):
    connection_id = crm[0]
    cli = Cli(settings)
    started = cli.ok("reconnect", connection_id, "--as", SHARED, "--no-wait", "--callback-port", 9)
    url = started.stdout.strip()
    assert "--code-url" in started.stderr
    state, code = consent(url)
    redirected = f"{REDIRECT_URI}?code={code}&state={state}"

    assert "visible to you" in cli.fails(
        "reconnect", connection_id, "--as", OUTSIDER, "--code-url", redirected
    )
    done = cli.ok("reconnect", connection_id, "--as", SHARED, "--code-url", redirected)
    assert f"reconnected by {SHARED}" in done.stdout
    assert code not in done.stdout + done.stderr
    assert "already used" in cli.fails(
        "reconnect", connection_id, "--as", SHARED, "--code-url", redirected
    )
    assert "access_denied" in cli.fails(
        "reconnect",
        connection_id,
        "--as",
        SHARED,
        "--code-url",
        f"{REDIRECT_URI}?error=access_denied",
    )


def test_cli_starts_an_oauth_reconnect_with_the_settings_to_fix(relink_app, settings, crm):
    connection_id = crm[0]
    cli = Cli(settings)
    offline = "access_type=offline&prompt=consent"
    started = cli.ok(
        "reconnect",
        connection_id,
        "--as",
        SHARED,
        "--no-wait",
        "--callback-port",
        9,
        "--set",
        f"authorize_params={offline}",
    )
    url = started.stdout.strip()
    assert httpx.URL(url).params["access_type"] == "offline"
    assert "authorize_params" not in connection_view(relink_app, connection_id)["settings"]
    state, code = consent(url)

    redirected = f"{REDIRECT_URI}?code={code}&state={state}"
    done = cli.ok("reconnect", connection_id, "--as", SHARED, "--code-url", redirected)

    assert "changed: authorize_params" in done.stdout
    view = connection_view(relink_app, connection_id)
    assert view["status"] == "connected" and view["settings"]["authorize_params"] == offline


def test_cli_waits_for_the_redirect_on_a_local_listener(relink_app, settings, crm):
    connection_id = crm[0]
    relink = Path(sys.executable).with_name("relink")
    proc = subprocess.Popen(
        [str(relink), "reconnect", str(connection_id), "--as", SHARED, "--callback-port", "0"],
        env={**os.environ, **Cli(settings).env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read()
        redirect_uri = httpx.URL(url).params["redirect_uri"]
        assert redirect_uri.startswith("http://127.0.0.1:") and redirect_uri.endswith(
            "/oauth/callback"
        )
        with httpx.Client(timeout=5) as browser:
            answer = browser.post(url, data={"username": "carol", "decision": "allow"})
            assert answer.status_code == 302
            stray = browser.get(redirect_uri, params={"state": "not-ours", "code": "x"})
            assert stray.status_code == 404  # someone else's redirect is ignored
            landed = browser.get(answer.headers["location"])
        assert landed.status_code == 200 and "Signed in" in landed.text
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert f"reconnected by {SHARED}" in out
    assert connection_view(relink_app, connection_id)["status"] == "connected"


def relink_reconnect(settings, *args: str, base_url: str) -> subprocess.Popen:
    relink = Path(sys.executable).with_name("relink")
    env = {**os.environ, **Cli(settings).env, "RELINK_BASE_URL": base_url}
    return subprocess.Popen(
        [str(relink), "reconnect", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_with_the_web_pages_up_the_cli_uses_their_callback_and_waits_for_them(
    relink_app, settings, crm
):
    """`relink reconnect` beside `relink run`: the pages own port 8000 and the callback;
    the person allows access in a browser signed in to them, the CLI reports the result."""
    connection_id = crm[0]
    port = web.free_port()
    base_url = f"http://127.0.0.1:{port}"
    relink_app.settings.base_url = base_url
    with relink_app.transaction() as session:
        passwords.set_password(session, SHARED, web.PASSWORD, now=T0)
    served = web.ServedApp(create_app(relink_app), port).start()
    proc = relink_reconnect(settings, str(connection_id), "--as", SHARED, base_url=base_url)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read()
        assert httpx.URL(url).params["redirect_uri"] == f"{base_url}/oauth/callback"
        with httpx.Client(base_url=base_url, timeout=10) as browser:
            login = browser.get("/login")
            signed = browser.post(
                "/login",
                data={
                    "csrf_token": web.csrf_of(login.text),
                    "email": SHARED,
                    "password": web.PASSWORD,
                },
            )
            assert signed.status_code == 303
            answer = browser.post(url, data={"username": "carol", "decision": "allow"})
            assert answer.status_code == 302
            landed = browser.get(answer.headers["location"])
            assert landed.status_code == 303  # to the connection's page, with the flash
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        served.stop()
    assert proc.returncode == 0, err
    assert "signed in to the web pages" in err
    assert f"reconnected by {SHARED} on the web pages" in out
    assert connection_view(relink_app, connection_id)["status"] == "connected"


def test_without_the_web_pages_the_cli_listens_on_a_free_port_not_8000(relink_app, settings, crm):
    connection_id = crm[0]
    closed = f"http://127.0.0.1:{web.free_port()}"  # nothing answers there
    proc = relink_reconnect(settings, str(connection_id), "--as", SHARED, base_url=closed)
    try:
        url = proc.stdout.readline().strip()
        redirect_uri = httpx.URL(httpx.URL(url).params["redirect_uri"])
        assert redirect_uri.host == "127.0.0.1" and redirect_uri.port not in (None, 8000)
        answer = httpx.post(url, data={"username": "carol", "decision": "allow"}, timeout=5)
        assert httpx.get(answer.headers["location"], timeout=5).status_code == 200
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert f"reconnected by {SHARED}" in out
