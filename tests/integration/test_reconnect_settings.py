"""A reconnect can fix everything the owner can fix: a wrong user name or database (real
PostgreSQL with password checks, and the demo's own broken MariaDB connection), a moved
API (the sandbox's API-key endpoints), a connection's own OAuth client (the sandbox
provider). Changed settings and new secrets are validated together; a refused attempt
changes nothing but the audit trail, which records it; what only an admin can change is
refused before the source is asked."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING

import httpx
import pytest
import sqlalchemy as sa

from relink import demo
from relink.connections import NewConnection, add_connection
from relink.datasets import add_dataset
from relink.errors import InvalidInput
from relink.models import AuditEvent, Connection, OAuthState
from relink.reconnecting.errors import CredentialsRefused
from relink.reconnecting.form import reconnect_form
from relink.reconnecting.oauth import start_oauth
from relink.reconnecting.recheck import recheck
from relink.reconnecting.replace import reconnect_with_secrets
from relink.sweep.run import sweep
from tests.integration.oauth_fixtures import (
    REDIRECT_URI,
    new_client,
    provider,  # noqa: F401
    refresh_at_sandbox,
    sandbox,  # noqa: F401
    sandbox_server,  # noqa: F401
    stored,
)
from tests.support.reconnect import (
    FAST_CHECKS,
    FAST_REFRESH,
    OWNER,
    SHARED,
    T0,
    add_broken_oauth_connection,
    add_people,
    add_pg_connection,
    connection_view,
    consented,
    failed_attempts_only,
    pg_settings,
    snapshot,
    user_id,
)

if TYPE_CHECKING:
    from tests.integration.conftest import PgAdmin

T1 = T0 + timedelta(hours=1)
T2 = T0 + timedelta(hours=30)


@pytest.fixture
def misdirected(relink_app, pg_admin: PgAdmin):
    """A PostgreSQL connection that names a role and a database that do not exist (the
    owner typed them wrong), broken by a check; the right role exists with its table."""
    role = pg_admin.create_role()
    schema = pg_admin.create_schema(role.name)
    add_people(relink_app)
    world = add_pg_connection(
        relink_app,
        settings=pg_settings(pg_admin.url, "relink_no_such_role", database="no_such_database"),
        password="typo",
        queries=[("Items", f'SELECT id, name FROM "{schema}".items ORDER BY id')],
    )
    asyncio.run(sweep(relink_app, now=T1, policy=FAST_CHECKS))
    assert connection_view(relink_app, world.connection_id)["status"] == "disconnected"
    return world, role, sa.make_url(pg_admin.url).database or "test"


def test_the_form_shows_what_a_reconnect_may_change_with_its_current_values(
    relink_app, misdirected
):
    world, _, _ = misdirected
    form = reconnect_form(relink_app, SHARED, world.connection_id)
    shown = {spec.name: value for spec, value in form.settings}
    assert shown["username"] == "relink_no_such_role"
    assert shown["database"] == "no_such_database"
    assert list(shown) == ["host", "port", "database", "username"]
    assert [spec.name for spec in form.secrets] == ["password"]
    assert [spec.name for spec, _ in form.fixed] == ["sslmode"]  # shown, not changeable


def test_a_reconnect_fixes_the_user_name_and_database_with_the_password(relink_app, misdirected):
    world, role, database = misdirected
    done = asyncio.run(
        reconnect_with_secrets(
            relink_app,
            world.connection_id,
            actor=SHARED,
            secrets={"password": role.password},
            settings={"username": role.name, "database": database, "host": "127.0.0.1"},
            now=T2,
            policy=FAST_REFRESH,
        )
    )

    assert done.changed == ("database", "username")  # host was already 127.0.0.1
    assert done.refresh is not None and done.refresh.count("ok") == 1
    view = connection_view(relink_app, world.connection_id)
    assert view["status"] == "connected" and view["datasets"][0]["row_count"] == 3
    assert (view["settings"]["username"], view["settings"]["database"]) == (role.name, database)
    with relink_app.sessions() as session:
        event = session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "connection.reconnected")
        ).one()
    assert event.details["changed"] == {
        "database": ["no_such_database", database],
        "username": ["relink_no_such_role", role.name],
    }
    assert role.password not in json.dumps(event.details)


def test_a_refused_change_changes_nothing_and_is_kept_in_the_audit_trail(relink_app, misdirected):
    world, role, database = misdirected
    before = snapshot(relink_app)
    typed = "a-wrong-password-marker"

    with pytest.raises(CredentialsRefused) as refused:
        asyncio.run(
            reconnect_with_secrets(
                relink_app,
                world.connection_id,
                actor=SHARED,
                secrets={"password": typed},
                settings={"username": role.name, "database": database},
                now=T2,
            )
        )

    assert refused.value.code == "28P01"  # the new user exists: its password was refused
    (attempt,) = failed_attempts_only(before, snapshot(relink_app))
    assert (attempt["actor_id"], attempt["at"]) == (user_id(relink_app, SHARED), T2)
    assert attempt["details"] == {
        "method": "password",
        "outcome": "auth_failed",
        "code": "28P01",
        "changed": {
            "database": ["no_such_database", database],
            "username": ["relink_no_such_role", role.name],
        },
        "secrets_entered": ["password"],
    }
    assert typed not in json.dumps(attempt["details"])


@pytest.mark.parametrize(
    ("changes", "refusal"),
    [
        ({"sslmode": "require"}, "cannot change 'sslmode'; it may change: host, port"),
        ({"password": "x"}, "cannot change 'password'"),  # a secret, not a setting
        ({"port": "abc"}, "port must be a number from 1 to 65535"),
        ({"host": " "}, "Host may not be empty"),
    ],
)
def test_what_a_reconnect_may_not_change_is_refused_before_the_source_is_asked(
    relink_app, misdirected, changes, refusal
):
    world, role, _ = misdirected
    before = snapshot(relink_app)
    with pytest.raises(InvalidInput, match=refusal):
        asyncio.run(
            reconnect_with_secrets(
                relink_app,
                world.connection_id,
                actor=SHARED,
                secrets={"password": role.password},
                settings=changes,
                now=T2,
            )
        )
    assert snapshot(relink_app) == before


def test_the_demo_finance_connection_is_fixed_with_the_credentials_relink_run_prints(
    relink_app, mariadb_url
):
    with relink_app.transaction() as session:
        demo.seed(session, relink_app.vault, now=T0)
        finance = session.scalar(sa.select(Connection.id).where(Connection.name == demo.FINANCE))
    broken = asyncio.run(recheck(relink_app, finance, requested_by=demo.MEMBER[0], now=T1))
    assert (broken.status, broken.outcome) == ("disconnected", "auth_failed")  # 1045 or 1698
    fix = dict(demo.FINANCE_FIX)
    password = fix.pop("password")

    done = asyncio.run(
        reconnect_with_secrets(
            relink_app,
            finance,
            actor=demo.MEMBER[0],
            secrets={"password": password},
            settings=fix,
            now=T2,
            policy=FAST_REFRESH,
        )
    )

    assert done.changed == ("username",) and done.disconnection_closed
    view = connection_view(relink_app, finance)
    assert view["status"] == "connected" and view["datasets"][0]["row_count"] == 1


def test_an_api_that_moved_is_reconnected_with_its_new_base_url_and_key(
    relink_app,
    sandbox,  # noqa: F811
    closed_port,
):
    key = f"key-{uuid.uuid4().hex}"
    sandbox.provider.add_api_key(key)
    add_people(relink_app)
    with relink_app.transaction() as session:
        conn = add_connection(
            session,
            relink_app.vault,
            NewConnection(
                type="api_key",
                name="Billing",
                owner=OWNER,
                settings={
                    "base_url": f"http://127.0.0.1:{closed_port}",
                    "probe_path": "/apikey/me",
                },
                secrets={"api_key": "the-old-key"},
            ),
            now=T0,
        )
        add_dataset(
            session,
            connection_id=conn.id,
            name="Payments",
            query="/apikey/records?path=payments | data.records",
            now=T0,
        )
        connection_id = conn.id
    assert [s.name for s, _ in reconnect_form(relink_app, OWNER, connection_id).settings] == [
        "base_url"
    ]

    done = asyncio.run(
        reconnect_with_secrets(
            relink_app,
            connection_id,
            actor=OWNER,
            secrets={"api_key": key},
            settings={"base_url": sandbox.url},
            now=T2,
            policy=FAST_REFRESH,
        )
    )

    assert done.changed == ("base_url",) and done.refresh.count("ok") == 1
    view = connection_view(relink_app, connection_id)
    assert view["status"] == "connected" and view["settings"]["base_url"] == sandbox.url


# --- OAuth: the connection's own client --------------------------------------------------------


@pytest.fixture
def own_client_crm(relink_app, sandbox):  # noqa: F811
    """A generic OAuth connection with its own client, broken by a check."""
    add_people(relink_app)
    old = new_client(sandbox.provider)
    return add_broken_oauth_connection(relink_app, sandbox, old)[0], old


def test_a_reconnect_moves_an_oauth_connection_to_a_new_client_of_its_own(
    relink_app,
    sandbox,  # noqa: F811
    own_client_crm,
):
    connection_id, old = own_client_crm
    new = new_client(sandbox.provider)
    form = reconnect_form(relink_app, OWNER, connection_id)
    assert dict((s.name, v) for s, v in form.settings)["client_id"] == old.client_id
    assert [s.name for s in form.secrets] == ["client_secret"]

    url, finish = consented(
        relink_app,
        connection_id,
        now=T2,
        settings={"client_id": new.client_id},
        secrets={"client_secret": new.client_secret},
    )
    assert httpx.URL(url).params["client_id"] == new.client_id
    with relink_app.sessions() as session:
        pending = session.scalars(sa.select(OAuthState)).one().code_verifier
    assert new.client_secret not in pending and new.client_id not in pending  # sealed
    assert connection_view(relink_app, connection_id)["settings"]["client_id"] == old.client_id

    done = finish()

    assert done.changed == ("client_id",)
    view = connection_view(relink_app, connection_id)
    assert view["status"] == "connected" and view["settings"]["client_id"] == new.client_id
    credentials, _, _ = stored(relink_app, connection_id)
    assert credentials["client_secret"] == new.client_secret
    assert refresh_at_sandbox(sandbox.url, new, credentials["refresh_token"]).status_code == 200


def test_a_named_providers_endpoints_are_not_the_owners_to_change(relink_app, sandbox):  # noqa: F811
    add_people(relink_app)
    with relink_app.transaction() as session:
        conn = add_connection(
            session,
            relink_app.vault,
            NewConnection(
                type="salesforce",
                name="Sales",
                owner=OWNER,
                settings={"token_url": f"{sandbox.url}/oauth/token"},
                secrets={"access_token": "a", "refresh_token": "r"},
            ),
            now=T0,
        )
        connection_id = conn.id
    assert reconnect_form(relink_app, OWNER, connection_id).settings == ()
    with pytest.raises(InvalidInput, match="cannot change 'token_url'; it may change: only the"):
        start_oauth(
            relink_app,
            connection_id,
            actor=OWNER,
            redirect_uri=REDIRECT_URI,
            now=T2,
            settings={"token_url": "https://elsewhere.example/token"},
        )
