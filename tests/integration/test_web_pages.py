"""The web pages over HTTP: sign-in and out, CSRF, `next` safety, the session cookie,
the JSON API, security headers, and reconnecting from the page (PostgreSQL with a real
password check, OAuth through the sandbox provider)."""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from typer.testing import CliRunner

from relink import audit, passwords
from relink.app import Relink
from relink.cli import app as cli_app
from relink.cli._common import reset_app
from relink.connections import NewConnection, add_connection
from relink.datasets import add_dataset
from relink.domain.words import Status
from relink.models import AuditEvent, Connection, Dataset, User
from relink.web import create_app
from relink.web.sessions import COOKIE_NAME
from relink_dev.sandbox import SandboxServer, seed_demo
from tests.support.reconnect import snapshot
from tests.support.web import (
    EMAILS,
    OLD_DB_PASSWORD,
    PASSWORD,
    T0,
    TestClient,
    World,
    add_items_dataset,
    add_oauth_connection,
    build_world,
    client_for,
    consent,
    csrf_of,
    make_relink,
    page_csrf,
    register_oauth_client,
    sign_in,
)

BASE_URL = "http://127.0.0.1:8000"  # loopback: the sandbox accepts its /oauth/callback


# A test marked `reads_only` changes nothing in the app database (it reads pages, signs in,
# sends refused requests): such tests share one world, built once for the module. Every
# other test gets a world of its own.
reads_only = pytest.mark.reads_only


@pytest.fixture(scope="module")
def shared_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Relink, World, Any]]:
    """The layout of tests/support/web.py on SQLite, once a module, for `reads_only` tests."""
    tmp = tmp_path_factory.mktemp("web_pages")
    app = make_relink(f"sqlite:///{tmp / 'relink.db'}", tmp / "data", base_url=BASE_URL)
    try:
        yield app, build_world(app), create_app(app)
    finally:
        app.close()


def shares(request: pytest.FixtureRequest) -> bool:
    return request.node.get_closest_marker("reads_only") is not None


@pytest.fixture
def relink(request: pytest.FixtureRequest, database_url: str, tmp_path) -> Iterator[Relink]:
    if shares(request):
        shared = request.getfixturevalue("shared_world")[0]
        before = snapshot(shared)
        yield shared
        assert snapshot(shared) == before, "a reads_only test changed the shared world"
        return
    app = make_relink(database_url, tmp_path / "data", base_url=BASE_URL)
    yield app
    app.close()


@pytest.fixture
def world(request: pytest.FixtureRequest, relink: Relink) -> World:
    if shares(request):
        return request.getfixturevalue("shared_world")[1]
    return build_world(relink)


@pytest.fixture
def web(request: pytest.FixtureRequest, relink: Relink, world: World) -> Any:
    if shares(request):
        return request.getfixturevalue("shared_world")[2]
    return create_app(relink)


def connection(relink: Relink, connection_id: int) -> Connection:
    with relink.sessions() as s:
        conn = s.get(Connection, connection_id)
        assert conn is not None
        conn.owner  # noqa: B018 - loaded while the session is open
        return conn


def stored_secrets(relink: Relink, connection_id: int) -> dict[str, str]:
    conn = connection(relink, connection_id)
    return relink.vault.decrypt(conn.credentials, connection=str(connection_id))


# --- sign-in and sign-out ---------------------------------------------------------------


def test_sign_in_goes_to_next_and_sets_a_safe_cookie(web: Any, world: World) -> None:
    client = TestClient(web, follow_redirects=False)
    target = f"/connections/{world.ids['Owned DB']}"
    response = sign_in(client, EMAILS["owner"], next_=target)
    assert response.status_code == 303
    assert response.headers["location"] == target
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    assert PASSWORD not in cookie
    assert client.get(target).status_code == 200


@pytest.mark.parametrize(
    ("email", "password"),
    [
        (EMAILS["owner"], "not the password at all"),
        ("nobody@acme.test", PASSWORD),
        ("not an email", PASSWORD),
        (EMAILS["owner"], ""),
    ],
)
def test_failed_sign_in_never_says_which_part_was_wrong(
    web: Any, email: str, password: str
) -> None:
    client = TestClient(web, follow_redirects=False)
    response = sign_in(client, email, password)
    assert response.status_code == 400
    assert "Wrong email or password." in response.text
    assert password not in response.text or not password
    assert client.get("/connections").status_code == 303


def test_inactive_user_cannot_sign_in_and_loses_open_sessions(
    web: Any, relink: Relink, world: World
) -> None:
    open_client = client_for(web, "owner")
    assert open_client.get("/connections").status_code == 200
    with relink.transaction() as s:
        s.get(User, world.users["owner"]).active = False
    assert open_client.get("/connections").status_code == 303
    assert open_client.get("/api/connections").status_code == 401
    response = sign_in(TestClient(web, follow_redirects=False), EMAILS["owner"])
    assert response.status_code == 400
    assert "Wrong email or password." in response.text


def test_a_new_password_ends_older_sessions(web: Any, relink: Relink) -> None:
    client = client_for(web, "shared")
    with relink.transaction() as s:
        passwords.set_password(s, EMAILS["shared"], "a brand new password", now=T0)
    assert client.get("/connections").status_code == 303
    assert sign_in(client, EMAILS["shared"], "a brand new password").status_code == 303


def test_sign_out_needs_the_csrf_token_then_ends_the_session(web: Any) -> None:
    client = client_for(web, "owner")
    assert client.post("/logout", data={}).status_code == 403
    assert client.post("/logout", data={"csrf_token": "guess"}).status_code == 403
    assert client.get("/connections").status_code == 200
    response = client.post("/logout", data={"csrf_token": page_csrf(client)})
    assert response.status_code == 303
    assert response.headers["location"] == "/login"
    assert f'{COOKIE_NAME}=""' in response.headers["set-cookie"]
    assert client.get("/connections").status_code == 303


@reads_only
def test_sign_in_form_needs_its_csrf_token(web: Any) -> None:
    client = TestClient(web, follow_redirects=False)
    client.get("/login")
    response = client.post("/login", data={"email": EMAILS["owner"], "password": PASSWORD})
    assert response.status_code == 403
    assert client.get("/connections").status_code == 303


@reads_only
def test_a_new_session_gets_a_new_csrf_token(web: Any) -> None:
    client = TestClient(web, follow_redirects=False)
    before = csrf_of(client.get("/login").text)
    sign_in(client, EMAILS["owner"])
    assert page_csrf(client) != before


UNSAFE_NEXT = (
    "//evil.example/x",
    "https://evil.example/",
    "http:/evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "/\t/evil.example",
    "javascript:alert(1)",
    "evil.example",
    "/ok\r\nSet-Cookie: x=1",
)


@reads_only
def test_next_only_accepts_same_site_paths(web: Any) -> None:
    """More cases in tests/unit/test_web_sessions.py; here through the real form."""
    for target in UNSAFE_NEXT:
        client = TestClient(web, follow_redirects=False)
        response = sign_in(client, EMAILS["owner"], next_=target)
        assert response.status_code == 303, target
        assert response.headers["location"] == "/connections", target
    client = TestClient(web, follow_redirects=False)
    response = sign_in(client, EMAILS["owner"], next_="/connections?status=disconnected")
    assert response.headers["location"] == "/connections?status=disconnected"


@reads_only
def test_anonymous_page_visit_comes_back_after_sign_in(web: Any, world: World) -> None:
    """The email button's link, followed while signed out."""
    client = TestClient(web, follow_redirects=False)
    target = f"/connections/{world.ids['Owned DB']}"
    first = client.get(target)
    assert first.status_code == 303
    login_url = first.headers["location"]
    assert login_url == f"/login?next=%2Fconnections%2F{world.ids['Owned DB']}"
    page = client.get(login_url)
    assert f'name="next" value="{target}"' in page.text
    response = client.post(
        "/login",
        data={
            "csrf_token": csrf_of(page.text),
            "email": EMAILS["owner"],
            "password": PASSWORD,
            "next": target,
        },
    )
    assert response.headers["location"] == target
    assert "Owned DB" in client.get(target).text


# --- the cookie ---------------------------------------------------------------------------


@reads_only
def test_tampered_or_foreign_cookies_are_anonymous(web: Any, relink: Relink, world: World) -> None:
    client = client_for(web, "owner")
    good = client.cookies[COOKIE_NAME]
    payload, rest = good.split(".", 1)
    for bad in (
        payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + rest,
        good[:-3] + ("abc" if good[-3:] != "abc" else "xyz"),
        "garbage",
    ):
        fresh = TestClient(web, follow_redirects=False, cookies={COOKIE_NAME: bad})
        response = fresh.get("/connections")
        assert response.status_code == 303, bad
        assert f'{COOKIE_NAME}=""' in response.headers["set-cookie"]
        assert fresh.get("/api/connections").status_code == 401

    # the same user id, signed with another installation's secret
    from relink.web.sessions import SessionCodec, WebSession

    forged = SessionCodec("another installation's secret").dumps(
        WebSession(user_id=world.users["admin"], password_fingerprint="x")
    )
    other = TestClient(web, follow_redirects=False, cookies={COOKIE_NAME: forged})
    assert other.get("/api/connections").status_code == 401


def test_session_secret_comes_from_settings_or_a_private_key_file(relink: Relink) -> None:
    from relink.web.sessions import session_secret

    first = session_secret(relink.settings)
    assert first == session_secret(relink.settings)
    key_file = relink.settings.session_key_file
    assert key_file.stat().st_mode & 0o777 == 0o600
    configured = relink.settings.model_copy(
        update={"session_secret": SecretStr("configured-secret")}
    )
    assert session_secret(configured) == "configured-secret"
    assert relink.settings.masked()["session_secret"] == ""
    assert configured.masked()["session_secret"] == "**********"


# --- headers and logs -------------------------------------------------------------------


@reads_only
def test_security_headers(web: Any, world: World) -> None:
    client = client_for(web, "owner")
    for path in ("/connections", f"/connections/{world.ids['Owned DB']}", "/api/connections"):
        headers = client.get(path).headers
        assert headers["cache-control"] == "no-store"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        csp = headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp
        assert "default-src 'none'" in csp
        assert "unsafe-inline" not in csp and "script-src" not in csp
    page = client.get("/connections").text
    assert "<script" not in page and " style=" not in page


@reads_only
def test_request_log_has_the_path_but_never_the_query(
    web: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = client_for(web, "owner")
    with caplog.at_level(logging.INFO, logger="relink.web"):
        client.get("/oauth/callback?state=state-value-123&code=code-value-456")
    lines = [r.getMessage() for r in caplog.records if r.name == "relink.web"]
    assert any(line.startswith("GET /oauth/callback 400") for line in lines), lines
    assert not any("value-" in line for line in lines)


@reads_only
def test_unknown_input_is_not_echoed(web: Any) -> None:
    client = client_for(web, "owner")
    response = client.get("/api/connections?status=s3cret-looking-value")
    assert response.status_code == 400
    assert "s3cret" not in response.text
    assert client.get("/connections/not-a-number").status_code == 404


@reads_only
def test_an_unknown_status_filter_says_so_and_shows_every_connection(
    web: Any, world: World
) -> None:
    client = client_for(web, "owner")
    every = client.get("/connections").text
    page = client.get("/connections?status=brokn")
    assert page.status_code == 200
    assert "There is no status “brokn”; showing every connection." in page.text
    assert 'id="unknown-status"' not in every
    for name in ("Owned DB", "Owned API"):
        assert name in page.text
    assert 'id="unknown-status"' not in client.get("/connections?status=disconnected").text


@reads_only
def test_a_missing_page_keeps_the_signed_in_header(web: Any) -> None:
    owner = client_for(web, "owner")
    page = owner.get("/no-such-page")
    assert page.status_code == 404
    assert 'id="signed-in-as"' in page.text and 'id="nav-data"' in page.text
    anonymous = client_for(web, "anonymous").get("/no-such-page")
    assert anonymous.status_code == 404
    assert 'id="signed-in-as"' not in anonymous.text and 'id="nav-data"' not in anonymous.text


@reads_only
def test_the_site_has_an_icon(web: Any) -> None:
    client = client_for(web, "anonymous")
    for path in ("/favicon.ico", "/static/favicon.svg"):
        icon = client.get(path)
        assert icon.status_code == 200, path
        assert icon.headers["content-type"].startswith("image/svg+xml")
        assert icon.text.startswith("<svg")
    assert 'rel="icon" href="/static/favicon.svg"' in client.get("/login").text


# --- JSON API -------------------------------------------------------------------------


def test_api_gives_the_same_data_as_the_pages(web: Any, relink: Relink, world: World) -> None:
    with relink.transaction() as s:
        add_dataset(s, connection_id=world.ids["Owned DB"], name="Orders", query="SELECT 1", now=T0)
    client = client_for(web, "shared")
    listed = client.get("/api/connections").json()
    assert listed["next_after"] is None
    (row,) = listed["connections"]
    assert row["name"] == "Owned DB" and row["created_by"] == "Owen Owner"
    assert row["status"] == Status.UNCHECKED and row["mode"] == "direct"
    detail = client.get(f"/api/connections/{row['id']}").json()
    assert detail["datasets"][0]["name"] == "Orders"
    assert detail["shared_with"] == [EMAILS["shared"]]
    assert OLD_DB_PASSWORD not in client.get(f"/api/connections/{row['id']}").text
    assert OLD_DB_PASSWORD not in client.get(f"/connections/{row['id']}").text
    broken = client.get("/api/connections?status=disconnected").json()
    assert broken["connections"] == []
    schema = client.get("/openapi.json").json()
    assert {"/api/connections", "/api/connections/{connection_id}"} <= set(schema["paths"])


def test_list_filters_broken_connections(web: Any, relink: Relink, world: World) -> None:
    with relink.transaction() as s:
        conn = s.get(Connection, world.ids["Owned DB"])
        conn.status = Status.DISCONNECTED
        conn.invalid_since = T0
    client = client_for(web, "owner")
    broken = client.get("/connections?status=disconnected").text
    assert "Owned DB" in broken and "Owned API" not in broken
    assert "Disconnected since 2026-11-02 02:00 MST" in broken
    everything = client.get("/connections").text
    assert "Owned DB" in everything and "Owned API" in everything


MICROSECONDS = re.compile(r"\d{2}:\d{2}:\d{2}\.\d")


def test_times_are_shown_in_the_account_zone_with_utc_on_hover(
    web: Any, relink: Relink, world: World
) -> None:
    """Every time on the pages in MST, as the emails say it, the UTC time on hover; no
    microseconds anywhere, not even in a history message that embeds an ISO time."""
    checked = T0.replace(microsecond=123456)
    with relink.transaction() as s:
        conn = s.get(Connection, world.ids["Owned DB"])
        conn.status = Status.DISCONNECTED
        conn.invalid_since = checked
        conn.last_checked_at = checked
        audit.record(
            s,
            "connection.reconnect_failed",
            at=checked,
            connection=conn,
            message=f"the token expired at {checked.isoformat()}",
        )
    client = client_for(web, "owner")
    tag = (
        '<time datetime="2026-11-02T09:00:00+00:00" title="2026-11-02 09:00 UTC">'
        "2026-11-02 02:00 MST</time>"
    )
    listing = client.get("/connections").text
    page = client.get(f"/connections/{world.ids['Owned DB']}").text
    assert tag in listing and tag in page
    assert 'title="invalid since 2026-11-02 09:00 UTC"' in page  # the badge's hover
    assert "Disconnected since 2026-11-02 02:00 MST" in page
    assert "the token expired at 2026-11-02 02:00 MST" in page  # the history's message
    for shown in (listing, page):
        assert not MICROSECONDS.search(shown) and "123456" not in shown
        assert " UTC<" not in shown  # UTC only on hover


@reads_only
def test_details_page_shows_the_action_for_the_mode(web: Any, world: World) -> None:
    client = client_for(web, "owner")
    direct = client.get(f"/connections/{world.ids['Owned DB']}").text
    assert ">Reconnect</a>" in direct
    assert 'href="/connectors?kind=postgres#postgres"' in direct  # its details open
    warehouse = client.get(f"/connections/{world.ids['Owned API']}").text
    assert ">Manage Connection</a>" in warehouse
    history = client.get(f"/connections/{world.ids['Owned DB']}").text
    assert history.index("Shared") < history.index("Connection created")  # newest first


@pytest.mark.parametrize("who", ["admin", "owner"])
def test_a_misconfigured_connection_offers_no_reconnect_until_an_admin_fixes_it(
    web: Any, relink: Relink, world: World, who: str
) -> None:
    """The installation is wrong (the OAuth app refused): a reconnect goes through the
    same app and cannot help, so the page offers none, and says who fixes it."""
    connection_id = world.ids["Owned DB"]
    with relink.transaction() as s:
        conn = s.get(Connection, connection_id)
        conn.status = Status.MISCONFIGURED
        conn.last_error_code = "invalid_client"
        conn.last_error_message = "the provider refused the installation's OAuth app"
    client = client_for(web, who)

    page = client.get(f"/connections/{connection_id}").text

    assert 'id="misconfigured"' in page
    assert 'id="reconnect"' not in page and ">Reconnect</a>" not in page
    with relink.transaction() as s:
        s.get(Connection, connection_id).status = Status.CONNECTED  # the admin fixed it
    assert ">Reconnect</a>" in client.get(f"/connections/{connection_id}").text


@reads_only
def test_reconnect_form_never_prefills_secrets(web: Any, world: World) -> None:
    client = client_for(web, "owner")
    page = client.get(f"/connections/{world.ids['Owned DB']}/reconnect").text
    assert 'type="password" id="field-password" name="password"' in page
    assert OLD_DB_PASSWORD not in page
    assert "relink_nobody" in page  # the current (non-secret) settings are shown
    # ... pre-filled in the inputs of what a reconnect may change
    assert 'type="text" id="field-username" name="username" value="relink_nobody"' in page
    assert 'id="field-sslmode"' not in page


@reads_only
def test_connectors_catalog_lists_requirements(web: Any) -> None:
    page = TestClient(web).get("/connectors").text
    assert 'id="postgres"' in page and 'id="salesforce"' in page and 'id="api_key"' in page
    assert "secret" in page


# --- reconnect: PostgreSQL with a real password check -----------------------------------


@pytest.fixture
def pg_world(relink: Relink, pg_admin: Any) -> tuple[World, Any, str]:
    role = pg_admin.create_role()
    schema = pg_admin.create_schema(role.name)
    url = sa.make_url(pg_admin.url)
    settings = {
        "host": url.host or "127.0.0.1",
        "port": str(url.port or 5432),
        "database": url.database or "test",
        "username": role.name,
    }
    built = build_world(relink, db_settings=settings, db_password=role.password)
    add_items_dataset(relink, built.ids["Owned DB"], schema)
    new_password = role.password + "-rotated"
    pg_admin.set_password(role.name, new_password)  # the stored one stops working
    return built, role, new_password


def test_reconnect_postgres_wrong_password_changes_nothing(
    relink: Relink, pg_world: tuple[World, Any, str]
) -> None:
    built, role, _ = pg_world
    conn_id = built.ids["Owned DB"]
    client = client_for(create_app(relink), "shared")
    wrong = "definitely-wrong-password-42"
    response = client.post(
        f"/connections/{conn_id}/reconnect",
        data={"csrf_token": page_csrf(client), "password": wrong},
    )
    assert response.status_code == 400
    assert "The source refused these credentials." in response.text
    assert "28P01" in response.text and "nothing was changed" in response.text
    assert wrong not in response.text
    assert stored_secrets(relink, conn_id) == {"password": role.password}
    assert connection(relink, conn_id).owner.email == EMAILS["owner"]


def test_reconnect_postgres_with_the_new_password(
    relink: Relink, pg_world: tuple[World, Any, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    built, _, new_password = pg_world
    conn_id = built.ids["Owned DB"]
    client = client_for(create_app(relink), "shared")
    bad_token = client.post(
        f"/connections/{conn_id}/reconnect", data={"csrf_token": "x", "password": new_password}
    )
    assert bad_token.status_code == 403
    assert stored_secrets(relink, conn_id) != {"password": new_password}

    response = client.post(
        f"/connections/{conn_id}/reconnect",
        data={"csrf_token": page_csrf(client), "password": new_password},
    )
    assert response.status_code == 303, response.text[:2000]
    assert response.headers["location"] == f"/connections/{conn_id}"
    page = client.get(f"/connections/{conn_id}").text
    assert "Reconnected" in page and "Datasets refreshed: 1 of 1." in page
    assert new_password not in page
    conn = connection(relink, conn_id)
    assert conn.status == Status.CONNECTED and conn.invalid_since is None
    assert conn.owner.email == EMAILS["shared"]  # the reconnecting user is Created By now
    assert stored_secrets(relink, conn_id) == {"password": new_password}
    with relink.sessions() as s:
        ds = s.scalar(sa.select(Dataset).where(Dataset.connection_id == conn_id))
        assert ds is not None and ds.status == "ok" and ds.row_count == 3
        actions = set(s.scalars(sa.select(AuditEvent.action)))
    assert "connection.reconnected" in actions
    assert new_password not in caplog.text  # nor in any log line


def test_seeing_without_being_allowed_to_reconnect_is_403(
    web: Any, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Today everyone who sees a connection may reconnect it; should the rule narrow,
    the pages answer 403 and offer no button."""
    monkeypatch.setattr("relink.web.pages.can_reconnect", lambda viewer, ref: False)
    client = client_for(web, "shared")
    conn_id = world.ids["Owned DB"]
    assert 'id="reconnect"' not in client.get(f"/connections/{conn_id}").text
    assert client.get(f"/connections/{conn_id}/reconnect").status_code == 403
    response = client.post(
        f"/connections/{conn_id}/reconnect",
        data={"csrf_token": page_csrf(client), "password": "whatever-1234"},
    )
    assert response.status_code == 403


def test_reconnect_unreachable_source_says_so_and_changes_nothing(
    relink: Relink, world: World, closed_port: int
) -> None:
    conn_id = world.ids["Owned DB"]
    with relink.transaction() as s:
        conn = s.get(Connection, conn_id)
        conn.settings = {**conn.settings, "port": str(closed_port)}
    client = client_for(create_app(relink), "owner")
    response = client.post(
        f"/connections/{conn_id}/reconnect",
        data={"csrf_token": page_csrf(client), "password": "whatever-1234"},
    )
    assert response.status_code == 502
    assert "The source could not be reached." in response.text
    assert stored_secrets(relink, conn_id) == {"password": OLD_DB_PASSWORD}


# --- reconnect: OAuth through the sandbox provider ------------------------------------------


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    server = SandboxServer()
    seed_demo(server.provider)
    with server:
        yield server


@pytest.fixture
def oauth_id(relink: Relink, world: World, sandbox: SandboxServer) -> int:
    url = sandbox.url
    with relink.transaction() as s:
        conn = add_connection(
            s,
            relink.vault,
            NewConnection(
                type="salesforce",
                name="Sales",
                owner=EMAILS["owner"],
                mode="warehouse",
                settings={
                    "authorize_url": f"{url}/oauth/authorize",
                    "token_url": f"{url}/oauth/token",
                    "introspection_url": f"{url}/oauth/introspect",
                    "revocation_url": f"{url}/oauth/revoke",
                    "probe_url": f"{url}/api/me",
                    "client_id": "relink-demo",
                },
                secrets={
                    "access_token": "revoked-access",
                    "refresh_token": "revoked-refresh",
                    "client_secret": "relink-demo-secret",
                },
            ),
            now=T0,
        )
        s.flush()
        add_dataset(
            s,
            connection_id=conn.id,
            name="Opportunities",
            query="/api/records?path=opportunities",
            now=T0,
        )
        conn.status = Status.DISCONNECTED
        conn.invalid_since = T0
        return conn.id


def start(client: TestClient, conn_id: int, sandbox: SandboxServer) -> str:
    """Reconnect on the page; returns the callback URL's query after consent."""
    page = client.get(f"/connections/{conn_id}/reconnect")
    assert page.status_code == 200
    assert f"form-action 'self' {sandbox.url}" in page.headers["content-security-policy"]
    response = client.post(
        f"/connections/{conn_id}/reconnect", data={"csrf_token": csrf_of(page.text)}
    )
    assert response.status_code == 303, response.text[:2000]
    consent = response.headers["location"]
    assert consent.startswith(f"{sandbox.url}/oauth/authorize?")
    params = parse_qs(urlsplit(consent).query)
    assert params["code_challenge_method"] == ["S256"] and params["state"]
    assert params["redirect_uri"] == [f"{BASE_URL}/oauth/callback"]
    allowed = httpx.post(consent, data={"username": "demo", "decision": "allow"}, timeout=5)
    assert allowed.status_code == 302, allowed.text
    back = urlsplit(allowed.headers["location"])
    assert back.path == "/oauth/callback"
    return back.query


def test_oauth_reconnect_through_the_consent_page(
    relink: Relink, oauth_id: int, sandbox: SandboxServer
) -> None:
    client = client_for(create_app(relink), "admin")
    query = start(client, oauth_id, sandbox)
    response = client.get(f"/oauth/callback?{query}")
    assert response.status_code == 303, response.text[:2000]
    assert response.headers["location"] == f"/connections/{oauth_id}"
    page = client.get(f"/connections/{oauth_id}").text
    flash = page[page.find('id="flash"') :][:400]
    assert "Reconnected" in flash and "Datasets refreshed: 1 of 1." in flash, flash
    assert "status-connected" in page
    conn = connection(relink, oauth_id)
    assert conn.status == Status.CONNECTED and conn.owner.email == EMAILS["admin"]
    tokens = stored_secrets(relink, oauth_id)
    assert tokens["access_token"] != "revoked-access"
    assert tokens["client_secret"] == "relink-demo-secret"
    assert tokens["access_token"] not in page

    # the same callback again: replayed, refused, nothing changes
    version = conn.version
    again = client.get(f"/oauth/callback?{query}")
    assert again.status_code == 400
    assert "already used" in again.text
    assert connection(relink, oauth_id).version == version


def test_oauth_state_of_another_user_or_tampered_is_refused(
    relink: Relink, oauth_id: int, sandbox: SandboxServer
) -> None:
    web = create_app(relink)
    admin, owner = client_for(web, "admin"), client_for(web, "owner")
    query = start(admin, oauth_id, sandbox)
    params = parse_qs(query)
    state, code = params["state"][0], params["code"][0]

    foreign = owner.get("/oauth/callback", params={"state": state, "code": code})
    assert foreign.status_code == 400 and "another user" in foreign.text
    tampered = admin.get("/oauth/callback", params={"state": state[:-2] + "xy", "code": code})
    assert tampered.status_code == 400
    denied = admin.get("/oauth/callback", params={"state": state, "error": "access_denied"})
    assert denied.status_code == 400
    conn = connection(relink, oauth_id)
    assert conn.status == Status.DISCONNECTED and conn.owner.email == EMAILS["owner"]
    assert stored_secrets(relink, oauth_id)["access_token"] == "revoked-access"

    # the rightful user's callback still works once
    assert admin.get("/oauth/callback", params={"state": state, "code": code}).status_code == 303
    assert connection(relink, oauth_id).status == Status.CONNECTED


# --- the CLI -------------------------------------------------------------------------------


def test_cli_sets_a_password_from_stdin(relink: Relink, world: World, monkeypatch) -> None:
    settings = relink.settings
    env = {
        "RELINK_DATABASE_URL": settings.database_url,
        "RELINK_DATA_DIR": str(settings.data_dir),
        "RELINK_SECRET_KEYS": settings.secret_keys.get_secret_value(),
    }
    runner = CliRunner()

    def run(*args: str, input: str | None = None) -> Any:
        reset_app()
        try:
            return runner.invoke(cli_app, list(args), input=input, env=env)
        finally:
            reset_app()

    short = run("users", "set-password", EMAILS["member"], input="short\n")
    assert short.exit_code == 1 and "at least 10 characters" in short.output
    done = run("users", "set-password", EMAILS["member"], input="a fresh password 1\n")
    assert done.exit_code == 0, done.output
    assert "a fresh password 1" not in done.output
    unknown = run("users", "set-password", "who@acme.test", input="a fresh password 1\n")
    assert unknown.exit_code == 1
    client = TestClient(create_app(relink), follow_redirects=False)
    assert sign_in(client, EMAILS["member"], "a fresh password 1").status_code == 303

    served: dict[str, Any] = {}
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: served.update(kw, app=app))
    result = run("web", "--port", "8123")
    assert result.exit_code == 0, result.output
    assert served["port"] == 8123 and served["access_log"] is False


@reads_only
def test_api_docs_page_loads_swagger_from_this_server_not_a_cdn(web: Any) -> None:
    client = client_for(web, "anonymous")
    page = client.get("/docs")
    assert page.status_code == 200
    assert "https://" not in page.text and "http://" not in page.text
    for asset in ("/static/swagger/swagger-ui-bundle.js", "/static/swagger/swagger-ui.css"):
        assert asset in page.text
        served = client.get(asset)
        assert served.status_code == 200 and len(served.content) > 10_000
    assert "'self'" in page.headers["content-security-policy"]
    assert "cdn" not in page.headers["content-security-policy"]


def test_oauth_reconnect_form_offers_the_connections_own_client_never_its_secret(
    relink: Relink, oauth_id: int
) -> None:
    page = client_for(create_app(relink), "owner").get(f"/connections/{oauth_id}/reconnect").text
    assert 'type="text" id="field-client_id" name="client_id" value="relink-demo"' in page
    assert 'type="password" id="field-client_secret" name="client_secret"' in page
    assert "relink-demo-secret" not in page and "revoked-refresh" not in page
    assert 'id="field-token_url"' not in page  # a named provider's endpoints are its own


def test_a_sign_in_page_that_moved_elsewhere_is_reached_through_a_link(
    relink: Relink, world: World, sandbox: SandboxServer
) -> None:
    """A new authorize URL on another origin: this page's CSP would block a redirect to it,
    so the page offers a link; the new URL is kept only once the sign-in there succeeds."""
    oauth_client = register_oauth_client(relink, sandbox.provider)
    conn_id = add_oauth_connection(relink, world, sandbox, oauth_client, name="CRM")
    moved = sandbox.url.replace("127.0.0.1", "localhost") + "/oauth/authorize"
    browser = client_for(create_app(relink), "owner")
    form = browser.get(f"/connections/{conn_id}/reconnect").text
    assert f'name="authorize_url" value="{sandbox.url}/oauth/authorize"' in form

    response = browser.post(
        f"/connections/{conn_id}/reconnect",
        data={"csrf_token": csrf_of(form), "authorize_url": moved},
    )

    assert response.status_code == 200, response.text[:2000]
    found = re.search(r'id="continue-elsewhere" href="([^"]+)"', response.text)
    assert found is not None
    link = html.unescape(found.group(1))
    assert link.startswith(f"{moved}?")
    assert connection(relink, conn_id).settings["authorize_url"] != moved  # not yet
    query = consent(link)
    back = browser.get("/oauth/callback", params=query)
    assert back.status_code == 303, back.text[:2000]
    conn = connection(relink, conn_id)
    assert conn.status == Status.CONNECTED and conn.settings["authorize_url"] == moved
