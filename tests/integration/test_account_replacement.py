"""A reconnect with another account's credentials is confirmed before it is final: on the
web pages a confirm step after the provider's callback ("This replaces max@acme.test with
ann@acme.test"), in the CLI --replace-account (without it a one-line refusal naming both
accounts that changes nothing); the audit trail records both accounts. Real parts: the
sandbox OAuth provider on loopback, the loopback PostgreSQL server."""

from __future__ import annotations

import asyncio
import html
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from relink.app import Relink
from relink.checks import check_range
from relink.cli import app as cli_app
from relink.cli._common import reset_app
from relink.connections import NewConnection, add_connection
from relink.domain.identity import Identity
from relink.errors import InvalidInput
from relink.models import AuditEvent, Connection
from relink.reconnecting.confirm import confirm_replacement
from relink.sweep.validate import CheckPolicy
from relink.timeutil import utcnow
from relink.web import create_app
from relink_dev.sandbox import SandboxProvider, SandboxServer
from tests.integration.oauth_fixtures import issue, oauth_settings
from tests.support.web import (
    EMAILS,
    T0,
    World,
    build_world,
    client_for,
    consent,
    make_relink,
    page_csrf,
    register_oauth_client,
    start_reconnect,
)

BASE_URL = "http://127.0.0.1:8000"  # loopback: the sandbox accepts its /oauth/callback
POLICY = CheckPolicy(attempts=1, timeout=5.0)
MAX, ANN = "max@acme.test", "ann@acme.test"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxProvider()) as server:
        yield server


@pytest.fixture
def relink(database_url: str, tmp_path) -> Iterator[Relink]:
    app = make_relink(database_url, tmp_path / "data", base_url=BASE_URL)
    yield app
    app.close()


def check(relink: Relink, connection_id: int) -> None:
    asyncio.run(
        check_range(
            relink,
            connection_id - 1,
            connection_id,
            now=utcnow(),
            policy=POLICY,
            only=[connection_id],
        )
    )


def connection(relink: Relink, connection_id: int) -> tuple[Any, ...]:
    with relink.sessions() as s:
        conn = s.get(Connection, connection_id)
        assert conn is not None
        return (conn.identity, conn.credentials, conn.owner_id, conn.status, conn.version)


def reconnected_events(relink: Relink, connection_id: int) -> list[dict[str, Any]]:
    with relink.sessions() as s:
        return [
            dict(e.details)
            for e in s.scalars(
                sa.select(AuditEvent).where(
                    AuditEvent.connection_id == connection_id,
                    AuditEvent.action == "connection.reconnected",
                )
            )
        ]


# --- the web pages: a confirm step after the OAuth callback ---------------------------------


@pytest.fixture
def crm(relink: Relink, sandbox: SandboxServer) -> tuple[World, int]:
    """An OAuth connection of the owner's whose tokens are max@acme.test's, as a check
    learnt from the sandbox."""
    world = build_world(relink)
    client = register_oauth_client(relink, sandbox.provider)
    with relink.transaction() as s:
        conn = add_connection(
            s,
            relink.vault,
            NewConnection(
                type="oauth2",
                name="CRM",
                owner=EMAILS["owner"],
                settings=oauth_settings(sandbox.url, client.client_id),
                secrets=issue(sandbox.provider, client, T0, username=MAX),
            ),
            now=T0,
        )
        conn_id = conn.id
    check(relink, conn_id)
    assert connection(relink, conn_id)[0] == Identity(MAX, MAX)
    return world, conn_id


def test_the_web_confirm_step_shows_both_accounts_and_commits_only_when_confirmed(
    relink: Relink, crm: tuple[World, int]
) -> None:
    _, conn_id = crm
    owner = client_for(create_app(relink), "owner")
    answer = consent(start_reconnect(owner, conn_id), username=ANN)
    before = connection(relink, conn_id)

    callback = owner.get("/oauth/callback", params=answer)
    assert callback.status_code == 303
    confirm_url = f"/connections/{conn_id}/reconnect/confirm"
    assert callback.headers["location"] == confirm_url  # a page of its own: a reload asks again
    page = owner.get(confirm_url)

    assert page.status_code == 200
    assert owner.get(confirm_url).text == page.text
    text = html.unescape(page.text)
    assert "This replaces max@acme.test with ann@acme.test" in text
    assert 'id="confirm-replace"' in page.text and 'id="keep-account"' in page.text
    assert connection(relink, conn_id) == before  # nothing changed before the confirmation
    assert answer["code"] not in page.text

    confirm = {"csrf_token": page_csrf(owner)}
    done = owner.post(confirm_url, data=confirm)

    assert done.status_code == 303
    assert connection(relink, conn_id)[0] == Identity(ANN, ANN)
    landing = html.unescape(owner.get(done.headers["location"]).text)
    assert "Connected as ann@acme.test" in landing
    (event,) = reconnected_events(relink, conn_id)
    assert (event["account_before"], event["account"], event["account_replaced"]) == (
        MAX,
        ANN,
        True,
    )

    # confirming again: nothing is held any more, refused in one line, nothing changes
    after = connection(relink, conn_id)
    again = owner.post(confirm_url, data=confirm)
    assert again.status_code == 400 and "nothing was changed" in again.text
    assert connection(relink, conn_id) == after
    assert owner.get(confirm_url).headers["location"] == f"/connections/{conn_id}"


def test_a_held_replacement_is_confirmed_only_by_whoever_started_it(
    relink: Relink, crm: tuple[World, int]
) -> None:
    _, conn_id = crm
    app = create_app(relink)
    owner, admin = client_for(app, "owner"), client_for(app, "admin")
    owner.get("/oauth/callback", params=consent(start_reconnect(owner, conn_id), username=ANN))
    before = connection(relink, conn_id)

    # the owner's session holds the confirmation, the admin's does not
    other = admin.post(
        f"/connections/{conn_id}/reconnect/confirm", data={"csrf_token": page_csrf(admin)}
    )
    assert other.status_code == 400
    # and the token itself is bound to the user who was shown it
    with pytest.raises(InvalidInput, match="not one you started"):
        token = _held_token(relink, conn_id)
        asyncio.run(
            confirm_replacement(relink, token, actor=EMAILS["admin"], connection_id=conn_id)
        )
    assert connection(relink, conn_id) == before


# --- the CLI: --replace-account, else a one-line refusal ------------------------------------


@pytest.mark.postgres
def test_cli_refuses_another_database_account_in_one_line_unless_replace_account(
    relink: Relink, pg_admin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = pg_admin.create_role(), pg_admin.create_role()
    url = sa.make_url(pg_admin.url)
    host = url.host or "127.0.0.1"
    settings = {
        "host": host,
        "port": str(url.port or 5432),
        "database": url.database or "test",
        "username": old.name,
    }
    world = build_world(relink, db_settings=settings, db_password=old.password)
    conn_id = world.ids["Owned DB"]
    check(relink, conn_id)
    before = connection(relink, conn_id)
    assert before[0] == Identity(f"{old.name}@{host}", f"{old.name}@{host}")
    monkeypatch.setenv("NEW_DB_PASSWORD", new.password)
    args = [
        "reconnect",
        str(conn_id),
        "--as",
        EMAILS["owner"],
        "--set",
        f"username={new.name}",
        "--secret-env",
        "password=NEW_DB_PASSWORD",
    ]

    refused = cli(relink, *args)

    assert refused.exit_code == 1
    line = refused.output.strip()
    assert line.count("\n") == 0, refused.output
    assert f"This replaces {old.name}@{host} with {new.name}@{host}" in line
    assert "--replace-account" in line and "nothing was changed" in line
    assert new.password not in refused.output
    assert connection(relink, conn_id) == before
    assert reconnected_events(relink, conn_id) == []

    done = cli(relink, *args, "--replace-account")

    assert done.exit_code == 0, done.output
    assert f"connected as {new.name}@{host} (was {old.name}@{host})" in done.output
    assert connection(relink, conn_id)[0] == Identity(f"{new.name}@{host}", f"{new.name}@{host}")
    (event,) = reconnected_events(relink, conn_id)
    assert (event["account_before"], event["account"]) == (
        f"{old.name}@{host}",
        f"{new.name}@{host}",
    )
    assert new.password not in str(event)


def _held_token(relink: Relink, connection_id: int) -> str:
    """A held replacement's token, made again for the test: the stored row has only its
    hash, so a second one is held for the same connection and user."""
    from relink.reconnecting.confirm import hold_replacement
    from relink.reconnecting.form import Changes
    from relink.reconnecting.target import load_target

    target = load_target(relink, EMAILS["owner"], connection_id)
    return hold_replacement(
        relink, target, {"access_token": "x"}, Changes(), Identity(ANN, ANN), now=utcnow()
    )


def cli(relink: Relink, *args: str) -> Any:
    settings = relink.settings
    env = {
        "RELINK_DATABASE_URL": settings.database_url,
        "RELINK_DATA_DIR": str(settings.data_dir),
        "RELINK_SECRET_KEYS": settings.secret_keys.get_secret_value(),
    }
    reset_app()
    try:
        return CliRunner().invoke(cli_app, list(args), env=env)
    finally:
        reset_app()


@pytest.mark.postgres
def test_the_database_form_asks_before_another_user_replaces_the_connections_account(
    relink: Relink, pg_admin: Any
) -> None:
    old, new = pg_admin.create_role(), pg_admin.create_role()
    url = sa.make_url(pg_admin.url)
    host = url.host or "127.0.0.1"
    settings = {
        "host": host,
        "port": str(url.port or 5432),
        "database": url.database or "test",
        "username": old.name,
    }
    world = build_world(relink, db_settings=settings, db_password=old.password)
    conn_id = world.ids["Owned DB"]
    check(relink, conn_id)
    before = connection(relink, conn_id)
    owner = client_for(create_app(relink), "owner")
    form = {"csrf_token": page_csrf(owner), "username": new.name, "password": new.password}

    held = owner.post(f"/connections/{conn_id}/reconnect", data=form)
    assert held.status_code == 303
    page = owner.get(held.headers["location"])

    assert page.status_code == 200
    assert f"This replaces {old.name}@{host} with {new.name}@{host}" in html.unescape(page.text)
    assert new.password not in page.text  # the typed secret is held, never put back
    assert connection(relink, conn_id) == before

    done = owner.post(
        f"/connections/{conn_id}/reconnect/confirm", data={"csrf_token": page_csrf(owner)}
    )

    assert done.status_code == 303
    assert connection(relink, conn_id)[0] == Identity(f"{new.name}@{host}", f"{new.name}@{host}")
    (event,) = reconnected_events(relink, conn_id)
    assert (event["account_before"], event["account"]) == (
        f"{old.name}@{host}",
        f"{new.name}@{host}",
    )
