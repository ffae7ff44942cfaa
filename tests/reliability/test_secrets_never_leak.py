"""Secrets never leak: one world with connections of every kind, whose every credential
is a unique marker, goes through every flow, CLI command and page; then everything
Relink wrote is searched for the markers, raw and URL-encoded.

The secrets: PostgreSQL and MariaDB passwords, API keys, OAuth access and refresh
tokens, a connection's own and the installation's OAuth client secrets, the vault key,
the SendGrid API key, the web session secret, web sign-in passwords, the wrong passwords
and keys typed into failed reconnects and sign-ins, and (read back from the vault at the
end) every credential and PKCE verifier Relink stored along the way.

Where they must not be: log records (this process's, at DEBUG, and those Prefect
stored), the process's stdout and stderr, every CLI run's output, every HTTP answer
(status, headers, cookies, redirect URLs, body), every email handed to SendGrid, every
table of Prefect's database (flow-run parameters, task runs, states, artifacts, logs,
events, Relink's own events among them), Prefect's result storage, and every table and
file in Relink's data folder (the app database holds credentials only encrypted). Left
out on purpose: what the sandbox logs as the OAuth provider (a provider knows the tokens
it issues), and the Authorization header of the requests to SendGrid, where its key
belongs (checked there).

Before the scan counts, it proves it saw its haystacks: every flow run is in Prefect's
database with its parameters, artifacts and logs, the emails are there, every route of
the web app was asked. `test_the_scan_finds_a_secret_raw_or_url_encoded` checks the
scan itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import sqlalchemy as sa
from prefect import tags
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.settings import (
    PREFECT_LOCAL_STORAGE_PATH,
    PREFECT_SERVER_DATABASE_CONNECTION_URL,
    temporary_settings,
)

from flows.check_connections import check_connections
from flows.check_connections_shard import check_connections_shard
from flows.reconnect_connection import reconnect_connection
from flows.refresh_datasets import refresh_datasets
from flows.send_disconnection_emails import send_disconnection_emails
from relink import passwords
from relink.app import Relink, set_app
from relink.cli import _common as cli_output
from relink.connections import NewConnection, add_connection, share
from relink.datasets import add_dataset
from relink.directory import get_user
from relink.models import Connection, Disconnection, OAuthState
from relink.settings import OAuthApp, Settings
from relink.sweep.shards import create_shards
from relink.timeutil import utcnow
from relink.vault import generate_key
from relink.web import create_app
from relink_dev.sandbox import SandboxProvider, SandboxServer
from tests.integration.oauth_fixtures import oauth_settings
from tests.support import app_db
from tests.support.reconnect import ADMIN, OUTSIDER, OWNER, SHARED, T0, Cli, add_people, pg_settings
from tests.support.secret_scan import Markers, Scan, stored_under
from tests.support.sendgrid_endpoint import SendGridEndpoint
from tests.support.web import TestClient, cheap_hashing, csrf_of, page_csrf, sign_in

if TYPE_CHECKING:
    from tests.integration.conftest import MariaAdmin, PgAdmin

pytestmark = [pytest.mark.prefect, pytest.mark.postgres, pytest.mark.mariadb]

BASE_URL = "http://127.0.0.1:8000"  # loopback: the sandbox accepts its /oauth/callback
CALLBACK = f"{BASE_URL}/oauth/callback"
CRM_CLIENT = "relink-crm-client"  # the CRM connection's own OAuth client
APP_CLIENT = "relink-installation"  # the installation's Salesforce app (RELINK_OAUTH__...)
GOOD = ("Warehouse PG", "Orders MySQL", "Billing API", "CRM")
BROKEN = ("Stale PG", "Stale MySQL", "Revoked API", "Sales")
UNKNOWN_ID = 999_999


@dataclass
class World:
    relink: Relink
    markers: Markers
    sandbox: SandboxServer
    endpoint: SendGridEndpoint
    ids: dict[str, int] = field(default_factory=dict)  # connection name -> id

    @property
    def provider(self) -> SandboxProvider:
        return self.sandbox.provider

    @property
    def data_dir(self) -> Path:
        return self.relink.settings.data_dir


# --- the world ---------------------------------------------------------------------------


@pytest.fixture
def world(
    tmp_path: Path, pg_admin: PgAdmin, maria_admin: MariaAdmin, mariadb_url: str
) -> Iterator[World]:
    markers = Markers()
    sendgrid_key = markers.new("sendgrid api key")
    with SandboxServer(SandboxProvider()) as sandbox, SendGridEndpoint(sendgrid_key) as endpoint:
        relink = Relink(secret_settings(markers, tmp_path / "data", endpoint.url))
        app_db.migrate(relink.engine)
        world = World(relink, markers, sandbox, endpoint)
        add_people(relink)
        set_web_passwords(world)
        add_sql_connections(world, pg_admin, maria_admin, pg_admin.url, mariadb_url)
        add_http_connections(world)
        set_app(relink)
        try:
            yield world
        finally:
            set_app(None)
            relink.close()


def secret_settings(markers: Markers, data_dir: Path, sendgrid_url: str) -> Settings:
    """Every secret setting is a marker: vault key, session secret, SendGrid key, OAuth app."""
    data_dir.mkdir(parents=True)
    return Settings(
        _env_file=None,
        database_url=f"sqlite:///{data_dir / 'relink.db'}",
        data_dir=data_dir,
        base_url=BASE_URL,
        secret_keys=markers.add("vault key", generate_key()),
        session_secret=markers.new("session secret"),
        sendgrid_api_key=markers.value("sendgrid api key"),
        sendgrid_host=sendgrid_url,
        email_timeout=5.0,
        check_timeout=5.0,
        oauth={
            "salesforce": OAuthApp(
                client_id=APP_CLIENT, client_secret=markers.new("installation client secret")
            )
        },
    )


def set_web_passwords(world: World) -> None:
    cheap_hashing()
    with world.relink.transaction() as session:
        for email in (ADMIN, OWNER):
            password = world.markers.new(f"web password of {email}")
            passwords.set_password(session, email, password, now=T0)


def add_sql_connections(
    world: World, pg_admin: PgAdmin, maria_admin: MariaAdmin, postgres_url: str, mariadb_url: str
) -> None:
    """Working and broken PostgreSQL and MariaDB connections; every password a marker."""
    m = world.markers
    role = pg_admin.create_role(m.new("postgres password"))
    schema = pg_admin.create_schema(role.name)
    # "Stale PG": the role's password was changed at the source to one Relink never saw
    stale = pg_admin.create_role(m.new("postgres changed password"))
    user = maria_admin.create_user(m.new("mysql password"))
    table = maria_admin.create_table()
    maria = sa.make_url(mariadb_url)
    mysql = {
        "host": maria.host or "127.0.0.1",
        "port": str(maria.port or 3306),
        "database": maria.database or "test",
        "username": user.name,
        "sslmode": "disabled",
    }
    add(
        world,
        "Warehouse PG",
        "postgres",
        pg_settings(postgres_url, role.name),
        {"password": role.password},
        dataset=f'SELECT id, name FROM "{schema}".items',
    )
    add(
        world,
        "Stale PG",
        "postgres",
        pg_settings(postgres_url, stale.name),
        {"password": m.new("postgres old password")},
    )
    add(
        world,
        "Orders MySQL",
        "mysql",
        mysql,
        {"password": user.password},
        dataset=f"SELECT id, name FROM test.{table}",
    )
    add(world, "Stale MySQL", "mysql", mysql, {"password": m.new("mysql wrong password")})


def add_http_connections(world: World) -> None:
    """API-key and OAuth connections on the sandbox provider."""
    m, provider, url = world.markers, world.provider, world.sandbox.url
    provider.add_api_key(m.new("api key"))
    api = {"base_url": url, "probe_path": "/apikey/me", "header": "X-API-Key"}
    add(
        world,
        "Billing API",
        "api_key",
        api,
        {"api_key": m.value("api key")},
        dataset="/apikey/records?path=invoices | data.records",
    )
    add(world, "Revoked API", "api_key", api, {"api_key": m.new("revoked api key")})

    crm_secret = m.new("crm client secret")
    provider.register_client(CRM_CLIENT, crm_secret, [CALLBACK], allow_loopback_redirects=True)
    add(
        world,
        "CRM",
        "oauth2",
        {**oauth_settings(url, CRM_CLIENT), "api_base_url": url},
        {**issued_tokens(world, CRM_CLIENT, "crm"), "client_secret": crm_secret},
        dataset="/api/records?path=deals | data.records",
    )

    # Salesforce through the installation's app: no client id or secret of its own
    provider.register_client(APP_CLIENT, m.value("installation client secret"), [CALLBACK])
    sales = issued_tokens(world, APP_CLIENT, "sales")
    add(
        world,
        "Sales",
        "salesforce",
        {**oauth_settings(url), "api_base_url": url},
        sales,
        dataset="/api/records?path=opportunities | data.records",
    )
    provider.revoke_token(sales["refresh_token"])  # the owner revoked Relink's access


def issued_tokens(world: World, client_id: str, label: str) -> dict[str, str]:
    token = world.provider.issue_token(client_id, "carol", "api")
    return {
        "access_token": world.markers.add(f"{label} access token", token["access_token"]),
        "refresh_token": world.markers.add(f"{label} refresh token", token["refresh_token"]),
        "expires_at": str(int(utcnow().timestamp()) + 3600),
    }


def add(
    world: World,
    name: str,
    type_: str,
    settings: dict[str, str],
    secrets: dict[str, str],
    *,
    dataset: str | None = None,
) -> None:
    """Bob's warehouse connection, shared with Cid, with a dataset when a query is given."""
    with world.relink.transaction() as session:
        new = NewConnection(type_, name, OWNER, "warehouse", settings, secrets)
        conn = add_connection(session, world.relink.vault, new, now=T0)
        share(session, conn.id, with_email=SHARED, actor=get_user(session, OWNER), now=T0)
        if dataset:
            add_dataset(session, connection_id=conn.id, name=f"{name} rows", query=dataset, now=T0)
        world.ids[name] = conn.id


def consent(authorization_url: str) -> str:
    """What the person does at the provider: allow. The URL it redirects the browser to."""
    answer = httpx.post(authorization_url, data={"username": "carol", "decision": "allow"})
    assert answer.status_code == 302, answer.text
    return answer.headers["location"]


# --- flows, on the session's Prefect server ------------------------------------------------


@contextlib.contextmanager
def prefect_keeps_everything(storage: Path, tag: str) -> Iterator[None]:
    """Flow and task runs send every log record to Prefect (not only warnings), any
    persisted result lands in `storage`, where the scan finds it, and every flow run
    (subflows too) carries `tag`, to be counted in Prefect's database."""
    loggers = [logging.getLogger(name) for name in ("prefect.flow_runs", "prefect.task_runs")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    try:
        with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: storage}), tags(tag):
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


FLOW_RUNS = 7  # what run_flows starts: six runs and one refresh-datasets subflow


def run_flows(world: World) -> None:
    """Every flow, as its deployment would run it."""
    ids = world.ids
    swept = asyncio.run(check_connections())
    assert swept["outcomes"] == {
        "ok": len(GOOD),
        "auth_failed": len(BROKEN),
        "misconfigured": 0,
        "unreachable": 0,
        "error": 0,
    }
    sweep_id = f"secret-scan-{uuid.uuid4()}"  # a shard of a fanned-out sweep, run here
    with world.relink.transaction() as session:
        create_shards(session, sweep_id, [(0, None)], now=utcnow())
    shard = asyncio.run(check_connections_shard(sweep_id, 1))
    assert shard["checked"] == len(GOOD) + len(BROKEN)
    a_day_passes(world.relink)
    assert asyncio.run(send_disconnection_emails())["sent"] == len(BROKEN)
    still = asyncio.run(
        reconnect_connection(ids["Stale PG"], requested_by=ADMIN, notify_owner=True)
    )
    assert still["emailed"]["result"] == "sent", still
    works = asyncio.run(reconnect_connection(ids["Warehouse PG"], requested_by=OWNER))
    assert works["refresh"]["ok"] == 1, works  # ran refresh-datasets as a subflow
    refreshed = asyncio.run(refresh_datasets())
    assert (refreshed["ok"], refreshed["skipped"]) == (len(GOOD), 1), refreshed  # Sales: broken


def a_day_passes(relink: Relink) -> None:
    """The open disconnections started 25 hours earlier: the email run finds them due."""
    earlier = timedelta(hours=25)
    with relink.transaction() as session:
        for episode in session.scalars(
            sa.select(Disconnection).where(Disconnection.ended_at.is_(None))
        ):
            episode.started_at -= earlier
        for conn in session.scalars(
            sa.select(Connection).where(Connection.invalid_since.is_not(None))
        ):
            conn.invalid_since -= earlier


# --- the command line --------------------------------------------------------------------


class Commands:
    """`relink ...` with the world's environment; every run's output goes to the scan."""

    def __init__(self, world: World, scan: Scan) -> None:
        settings = world.relink.settings
        self.cli = Cli(settings)
        self.cli.env.update(
            {
                "RELINK_SESSION_SECRET": settings.session_secret.get_secret_value(),
                "RELINK_SENDGRID_API_KEY": settings.sendgrid_api_key.get_secret_value(),
                "RELINK_SENDGRID_HOST": settings.sendgrid_host,
                "RELINK_EMAIL_TIMEOUT": "5",
                "RELINK_OAUTH__SALESFORCE__CLIENT_ID": APP_CLIENT,
                "RELINK_OAUTH__SALESFORCE__CLIENT_SECRET": (
                    settings.oauth["salesforce"].client_secret.get_secret_value()
                ),
                "IMPORTED_API_KEY": world.markers.new("imported api key"),
            }
        )
        self.scan = scan
        self.runs = 0

    def __call__(self, *args: Any, typed: str | None = None, exit_code: int = 0) -> Any:
        """Run; `typed` is a secret given on stdin. A failure must be one clear line."""
        result = self.cli(*args, input=None if typed is None else typed + "\n")
        self.runs += 1
        command = "relink " + " ".join(map(str, args))
        self.scan.add(f"cli: {command} (stdout)", result.stdout)
        self.scan.add(f"cli: {command} (stderr)", result.stderr)
        assert result.exit_code == exit_code, (command, result.stdout, result.stderr)
        if exit_code == 1:
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), (command, result.stderr)
        return result


def run_every_command(run: Commands, world: World, workdir: Path) -> None:
    """What `relink --help` lists, with and without --json, and the errors; not the servers
    (`web` is asked through its app, `sandbox` plays the provider, `run` starts them) nor
    `db downgrade` and `demo seed`, which hold no secret of this world."""
    m, ids = world.markers, world.ids
    run("db", "upgrade")
    run("config", "show")
    run("config", "show", "--json")
    run("keys", "generate")
    run("keys", "rotate")
    run("accounts", "add", "Elsewhere")
    run("accounts", "list")
    run("users", "add", "zoe@elsewhere.test", "--name", "Zoe", "--account", "Elsewhere")
    run("users", "list", "--json")
    run("users", "set-password", SHARED, typed=m.new("web password typed in the cli"))
    run("connectors", "list")
    run("connectors", "show", "postgres", "--json")
    run("connectors", "show", "nosuch", exit_code=1)
    run("connections", "list", "--as", ADMIN)
    run("connections", "list", "--as", OWNER, "--json")
    for conn_id in ids.values():
        run("connections", "show", conn_id, "--as", ADMIN)
        run("connections", "show", conn_id, "--as", OWNER, "--json")
    run("connections", "show", UNKNOWN_ID, "--as", ADMIN, exit_code=1)
    add_connections(run, world, workdir)
    run("connections", "share", ids["Billing API"], "--with", OUTSIDER, "--as", OWNER)
    dataset = f"datasets add --connection {ids['Billing API']} --name Payments --query".split()
    added = run(*dataset, "/apikey/records?path=payments | data.records")
    run("metrics", "add", "--name", "Paid", "--dataset", added.stdout.split()[1])
    run("datasets", "refresh", "--connection", ids["Billing API"])
    run("check")
    run("check", "--json", "--connection", ids["Stale MySQL"])
    run("notify")
    run("notify", "--dry-run", "--as-of", "2030-01-02T14:00Z", "--json")
    run("outbox", "list")
    recorded = json.loads(run("outbox", "list", "--json").stdout)
    assert len(recorded) == len(BROKEN)
    for email in recorded:
        run("outbox", "show", email["id"])
    run("outbox", "release", recorded[0]["id"], "--as", ADMIN, exit_code=1)  # not unknown
    run("status")
    run("status", "--json")
    reconnect_from_the_terminal(run, world)
    run("audit")
    run("audit", "--as", OWNER, "--json")
    run("audit", "--connection", UNKNOWN_ID, exit_code=1)


def add_connections(run: Commands, world: World, workdir: Path) -> None:
    """Secrets from stdin, the environment and import files; refused ones are not echoed."""
    m = world.markers
    pg = f"connections add postgres --owner {OWNER} --set host=127.0.0.1 --set database=test"
    new = [*pg.split(), "--set", "username=reader"]
    run(*new, "--name", "CLI PG", "--secret", "password", typed=m.new("cli postgres password"))
    on_the_line = f"password={m.new('password on the command line')}"
    refused = run(*new, "--name", "Typed", "--set", on_the_line, exit_code=1)
    assert "never on the command line" in refused.stderr
    unknown = ("connections", "add", "nosuch", "--name", "Nope", "--owner", OWNER)
    run(*unknown, "--secret", "password", typed=m.new("unknown connector password"), exit_code=1)
    api = {"base_url": world.sandbox.url, "probe_path": "/apikey/me", "header": "X-API-Key"}
    entry = {"type": "api_key", "name": "Imported API", "owner": OWNER, "settings": api}
    by_reference = {"api_key": {"env": "IMPORTED_API_KEY"}}
    inline = {"api_key": m.new("inline import secret")}  # refused: secrets are references
    for name, secrets, exit_code in (("import", by_reference, 0), ("inline", inline, 1)):
        file = workdir / f"{name}.yaml"  # JSON is YAML
        file.write_text(json.dumps({"connections": [{**entry, "secrets": secrets}]}))
        run("connections", "import", file, exit_code=exit_code)


def reconnect_from_the_terminal(run: Commands, world: World) -> None:
    """Refused and accepted reconnects with secrets on stdin, check-only, OAuth."""
    m, ids = world.markers, world.ids
    stale_pg, revoked, crm = ids["Stale PG"], ids["Revoked API"], ids["CRM"]
    wrong = run(
        "reconnect", stale_pg, "--as", OWNER, typed=m.new("typo postgres password"), exit_code=1
    )
    assert "refused the new credentials" in wrong.stderr
    assert "password authentication failed" in wrong.stderr
    run("reconnect", stale_pg, "--as", OWNER, typed=m.value("postgres changed password"))
    wrong = run("reconnect", revoked, "--as", OWNER, typed=m.new("typo api key"), exit_code=1)
    assert "refused the new credentials" in wrong.stderr
    world.provider.add_api_key(m.new("new api key"))
    run("reconnect", revoked, "--as", SHARED, typed=m.value("new api key"))
    typed = m.new("password for nobody")
    run("reconnect", UNKNOWN_ID, "--as", OWNER, typed=typed, exit_code=1)
    run("reconnect", ids["Stale MySQL"], "--as", OUTSIDER, typed=typed, exit_code=1)
    run("reconnect", ids["Stale MySQL"], "--as", OWNER, "--check-only", exit_code=1)
    run("reconnect", ids["Orders MySQL"], "--as", OWNER, "--check-only", "--json")
    started = run("reconnect", crm, "--as", OWNER, "--no-wait")
    redirect = consent(started.stdout.strip())
    run("reconnect", crm, "--as", OWNER, "--code-url", redirect)
    run("reconnect", crm, "--as", OWNER, "--code-url", redirect, exit_code=1)  # replayed
    denied = f"{CALLBACK}?error=access_denied&state=nope"
    run("reconnect", crm, "--as", OWNER, "--code-url", denied, exit_code=1)


# --- the web pages and the JSON API -------------------------------------------------------

ANONYMOUS_VISITS = (
    "/",
    "/login",
    "/connections",
    "/api/connections",
    "/connectors",
    "/docs",
    "/openapi.json",
    "/static/relink.css",
    "/static/docs.js",
    "/static/swagger/swagger-ui.css",
    "/static/swagger/swagger-ui-bundle.js",
)
ADMIN_LISTS = (
    "/connections",
    "/connections?status=disconnected",
    "/api/connections",
    "/api/connections?status=connected",
    "/connectors",
)
PER_CONNECTION = ("/connections/{}", "/connections/{}/reconnect", "/api/connections/{}")


@dataclass
class Browsing:
    """Browsers whose every answer (status, headers with cookies and redirects, body)
    goes to the scan; `visited` says which routes were asked."""

    app: Any
    scan: Scan
    visited: list[tuple[str, str]] = field(default_factory=list)  # (method, path)

    def browser(self) -> TestClient:
        client = TestClient(self.app, follow_redirects=False)
        client.event_hooks = {"request": [], "response": [self.record]}
        return client

    def record(self, response: httpx.Response) -> None:
        response.read()
        method, path = response.request.method, response.request.url.path
        self.visited.append((method, path))
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.multi_items())
        answer = f"{response.status_code}\n{headers}\n\n".encode() + response.content
        self.scan.add(f"http: {method} {path} -> {response.status_code}", answer)

    def unvisited_routes(self) -> list[str]:
        return [
            f"{method} {route.path}"
            for route in self.app.routes
            for method in sorted(getattr(route, "methods", None) or ())
            if method != "HEAD"
            and not any(m == method and route.path_regex.match(p) for m, p in self.visited)
        ]


def browse(world: World, scan: Scan) -> int:
    """Every page and API route, anonymous and signed in, with their errors, a refused and
    an accepted password reconnect and an OAuth reconnect. Returns the answers seen."""
    m, ids = world.markers, world.ids
    browsing = Browsing(create_app(world.relink), scan)
    anonymous = browsing.browser()
    for path in (*ANONYMOUS_VISITS, *(p.format(ids["Warehouse PG"]) for p in PER_CONNECTION)):
        anonymous.get(path)
    refused = sign_in(anonymous, ADMIN, m.new("typo web password"))
    assert refused.status_code == 400 and "Wrong email or password." in refused.text

    admin = browsing.browser()
    assert sign_in(admin, ADMIN, m.value(f"web password of {ADMIN}")).status_code == 303
    for path in (*ADMIN_LISTS, *(p.format(i) for p in PER_CONNECTION for i in ids.values())):
        assert admin.get(path).status_code == 200, path
    for path in (f"/connections/{UNKNOWN_ID}", f"/api/connections/{UNKNOWN_ID}", "/nowhere"):
        assert admin.get(path).status_code == 404, path
    assert admin.get("/api/connections?limit=0").status_code == 400
    reconnect_on_the_page(admin, world)
    assert admin.post("/logout", data={"csrf_token": page_csrf(admin)}).status_code == 303
    assert browsing.unvisited_routes() == []
    return len(browsing.visited)


def reconnect_on_the_page(admin: TestClient, world: World) -> None:
    m, ids = world.markers, world.ids
    mysql = f"/connections/{ids['Stale MySQL']}/reconnect"
    no_token = admin.post(mysql, data={"password": m.new("password without a form token")})
    assert no_token.status_code == 403
    token = csrf_of(admin.get(mysql).text)
    wrong = admin.post(mysql, data={"csrf_token": token, "password": m.new("typo mysql password")})
    assert wrong.status_code == 400 and "refused the new credentials" in wrong.text
    right = admin.post(mysql, data={"csrf_token": token, "password": m.value("mysql password")})
    assert right.status_code == 303

    sales = f"/connections/{ids['Sales']}/reconnect"
    start = admin.post(sales, data={"csrf_token": csrf_of(admin.get(sales).text)})
    assert start.status_code == 303
    back = httpx.URL(consent(start.headers["location"]))
    state, code = back.params["state"], back.params["code"]
    for refused in (
        {"state": state[:-2] + "xy", "code": code},  # tampered
        {"state": state, "error": "access_denied"},
    ):
        assert admin.get("/oauth/callback", params=refused).status_code == 400
    assert admin.get("/oauth/callback", params={"state": state, "code": code}).status_code == 303
    replayed = admin.get("/oauth/callback", params={"state": state, "code": code})
    assert replayed.status_code == 400
    assert "Reconnected" in admin.get(f"/connections/{ids['Sales']}").text


# --- what was written --------------------------------------------------------------------


def emails_sent(world: World) -> list[tuple[str, str]]:
    """What SendGrid was asked to send, but the Authorization header (where its API key
    belongs, and is: checked here)."""
    requests = world.endpoint.requests
    key = world.markers.value("sendgrid api key")
    assert requests and all(r.headers["authorization"] == f"Bearer {key}" for r in requests)
    assert "Stale MySQL" in json.dumps([r.body for r in requests])  # the emails are there
    return [
        (
            f"email: request {n} to SendGrid",
            json.dumps({k: v for k, v in r.headers.items() if k != "authorization"})
            + json.dumps(r.body),
        )
        for n, r in enumerate(requests, start=1)
    ]


def prefect_database() -> Path:
    """The SQLite file of the session's Prefect test server."""
    return Path(sa.make_url(PREFECT_SERVER_DATABASE_CONNECTION_URL.value()).database or "")


def prefect_count(database: Path, table: str, column: str, text: str) -> int:
    """Rows of a Prefect table whose `column` holds `text`."""
    query = f"SELECT count(*) FROM {table} WHERE {column} LIKE ?"
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        return conn.execute(query, (f"%{text}%",)).fetchone()[0]


def wait_for_prefect_log(database: Path, text: str, timeout: float = 20.0) -> None:
    """Logs reach Prefect's database in batches: wait until the last flow's line is there."""
    APILogWorker.drain_all(timeout=10)
    deadline = time.monotonic() + timeout
    while not prefect_count(database, "log", "message", text):
        assert time.monotonic() < deadline, f"no Prefect log line {text!r} after {timeout} s"
        time.sleep(0.2)


# Relink's own Prefect events the flows make (relink.events): they are in the scan too
RELINK_EVENTS = ("relink.connection.disconnected", "relink.email.sent")


def wait_for_prefect_events(database: Path, names: tuple[str, ...], timeout: float = 30.0) -> None:
    """Events reach Prefect's database in batches: wait until each of `names` is there."""
    EventsWorker.drain_all(timeout=10, at_exit=False)
    deadline = time.monotonic() + timeout
    while missing := [n for n in names if not prefect_count(database, "events", "event", n)]:
        assert time.monotonic() < deadline, f"no Prefect event {missing} after {timeout} s"
        time.sleep(0.2)


def add_prefect_records(scan: Scan, tag: str, results: Path) -> int:
    """Every table of Prefect's database and any stored result; returns how many of the
    flow runs tagged `tag` the database holds (all of them, checked)."""
    database = prefect_database()
    wait_for_prefect_log(database, "refreshed 5 dataset(s)")  # the last flow's summary
    wait_for_prefect_events(database, RELINK_EVENTS)
    for name, data in stored_under(database.parent):
        scan.add(f"prefect database: {name}", data)
    for name, data in stored_under(results):
        scan.add(f"prefect results: {name}", data)
    flow_runs = prefect_count(database, "flow_run", "tags", tag)
    assert flow_runs == FLOW_RUNS, "a flow run is missing from Prefect's database"
    recorded = scan.text_of("prefect database: ")  # what the scan read holds the runs':
    assert '"requested_by": "ann@acme.test"' in recorded  # parameters,
    assert "still needs a reconnect" in recorded  # artifacts,
    assert "refreshed 5 dataset(s)" in recorded  # logs,
    assert all(name in recorded for name in RELINK_EVENTS)  # and Relink's events
    return flow_runs


def learn_stored_secrets(world: World) -> None:
    """Everything the vault holds at the end is a secret too: the tokens and keys the
    reconnects stored, and the PKCE verifiers of the OAuth sign-ins."""
    relink, markers = world.relink, world.markers
    with relink.sessions() as session:
        for conn in session.scalars(sa.select(Connection)):
            for key, value in relink.vault.decrypt(conn.credentials, connection=conn.name).items():
                if len(value) >= 16 and value not in markers:
                    markers.add(f"{conn.name} {key} (stored)", value)
        for pending in session.scalars(sa.select(OAuthState)):
            verifier = relink.vault.decrypt(pending.code_verifier, connection="oauth state")
            markers.add(f"PKCE verifier {pending.id}", verifier["code_verifier"])


# --- the promise -------------------------------------------------------------------------


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.promise(
    "Secrets never leak: no credential or secret setting appears in logs, CLI output, "
    "Prefect's database, emails, HTTP answers or redirects, or stored files"
)
def test_no_secret_leaks_from_any_flow_command_or_page(
    world: World,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    record_property: Any,
) -> None:
    # The sandbox plays the OAuth provider inside this process; its authorization server
    # (Authlib's RFC 6749 grants) logs the tokens it issues at DEBUG, as a provider may.
    # Those records are the provider's, not Relink's. Everything else: DEBUG and up.
    caplog.set_level(logging.WARNING, logger="authlib.oauth2.rfc6749")
    caplog.set_level(logging.DEBUG)
    # Rich folds a long table cell over lines at 80 columns, which would cut a printed
    # secret in pieces the scan cannot see: a console wide enough never folds.
    for console in (cli_output.console, cli_output.err_console):
        monkeypatch.setattr(console, "_width", 100_000)
    scan = Scan(world.markers)
    tag, results = f"secret-scan-{uuid.uuid4().hex[:12]}", tmp_path / "prefect-results"

    with prefect_keeps_everything(results, tag):
        run_flows(world)
    commands = Commands(world, scan)
    run_every_command(commands, world, tmp_path)
    answers = browse(world, scan)

    emails = emails_sent(world)
    scan.add_all(emails)
    flow_runs = add_prefect_records(scan, tag, results)
    scan.add_all((f"relink data: {name}", data) for name, data in stored_under(world.data_dir))
    scan.add("log records", caplog.text)
    assert "GET /connections/" in caplog.text  # the web's request log, for one
    out, err = capfd.readouterr()
    scan.add("process stdout", out)
    scan.add("process stderr", err)
    learn_stored_secrets(world)

    hits = scan.hits()
    record_property("trials", scan.pairs)
    record_property(
        "outcome",
        f"{len(hits)} of {len(world.markers)} secrets found in {len(scan.surfaces)} places "
        f"({scan.bytes_scanned / 1e6:.1f} MB): {commands.runs} CLI runs, {answers} HTTP "
        f"answers, {flow_runs} flow runs in Prefect's database, {len(emails)} emails, "
        "log records, stored files",
    )
    assert not hits, "secrets leaked:\n" + "\n".join(map(str, hits))


def test_the_scan_finds_a_secret_raw_or_url_encoded() -> None:
    """The scan itself: a marker counts raw and URL-encoded, nothing else does."""
    markers = Markers()
    secret = markers.new("probe")
    scan = Scan(markers)
    scan.add("raw", f"password={secret}")
    scan.add("query string", httpx.URL("http://x/", params={"p": secret}).query)
    scan.add("masked", "password=***")
    assert [hit.surface for hit in scan.hits()] == ["raw", "query string"]
