"""Helpers for the web tests: a small account layout, signed-in clients, a served app.

The layout ("Acme" and "Other Co"):

    admin     ada@acme.test     admin of Acme
    owner     owen@acme.test    member, owns "Owned DB" (shared with `shared`) and "Owned API"
    shared    sam@acme.test     member, "Owned DB" is shared with them
    member    mia@acme.test     member of Acme, sees neither
    outsider  oscar@other.test  admin of Other Co, owns "Other DB"

`add_oauth_connection` adds an OAuth 2.0 connection of the owner's (on the sandbox
provider), and `start_reconnect` / `consent` walk through the provider's consent page.
"""

from __future__ import annotations

import html
import re
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from argon2 import PasswordHasher

from relink import passwords
from relink.app import Relink
from relink.connections import NewConnection, add_connection, share
from relink.datasets import add_dataset, add_metric
from relink.directory import add_account, add_user
from relink.models import Disconnection, Notification, User
from relink.settings import Settings
from relink.vault import generate_key
from relink_dev.sandbox import SandboxProvider, SandboxServer
from tests.integration.oauth_fixtures import OAuthClient, issue, oauth_settings
from tests.support import app_db
from tests.support.pg import temporary_schema

with warnings.catch_warnings():
    # Starlette asks for httpx2 instead of httpx; both work for the test client.
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from fastapi.testclient import TestClient

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
PASSWORD = "correct horse battery staple"
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)

WHO = ("admin", "owner", "shared", "member", "outsider", "anonymous")
EMAILS = {
    "admin": "ada@acme.test",
    "owner": "owen@acme.test",
    "shared": "sam@acme.test",
    "member": "mia@acme.test",
    "outsider": "oscar@other.test",
}
OLD_DB_PASSWORD = "the-old-db-password"

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
ERROR_MESSAGE_RE = re.compile(r'<p id="error-message">(.*?)</p>', re.DOTALL)


@dataclass
class World:
    relink: Relink
    ids: dict[str, int] = field(default_factory=dict)  # connection name -> id
    users: dict[str, int] = field(default_factory=dict)  # who -> user id


def cheap_hashing() -> None:
    """argon2 at its lowest cost: tests sign in often."""
    passwords.hasher = CHEAP_HASHER


@contextmanager
def app_database(backend: str, tmp_path: Path, postgres_url: str | None) -> Iterator[str]:
    """An empty app database: a SQLite file, or a fresh schema on the PostgreSQL server."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'relink.db'}"
        return
    assert postgres_url
    with temporary_schema(postgres_url, prefix="relink_web") as url:
        yield url


def make_relink(database_url: str, data_dir: Path, base_url: str = "http://testserver") -> Relink:
    settings = Settings(
        _env_file=None,
        database_url=database_url,
        data_dir=data_dir,
        secret_keys=generate_key(),
        base_url=base_url,
    )
    relink = Relink(settings)
    app_db.migrate(relink.engine)
    return relink


def build_world(
    relink: Relink,
    *,
    db_settings: dict[str, str] | None = None,
    db_password: str = OLD_DB_PASSWORD,
    sandbox_url: str | None = None,
) -> World:
    """The layout above; "Owned DB" points at `db_settings` (a PostgreSQL database)."""
    cheap_hashing()
    world = World(relink)
    pg = db_settings or {
        "host": "127.0.0.1",
        "port": "5432",
        "database": "test",
        "username": "relink_nobody",
    }
    with relink.transaction() as s:
        add_account(s, "Acme", now=T0)
        add_account(s, "Other Co", now=T0)
        people = {
            "admin": ("Ada Admin", "admin", "Acme"),
            "owner": ("Owen Owner", "member", "Acme"),
            "shared": ("Sam Shared", "member", "Acme"),
            "member": ("Mia Member", "member", "Acme"),
            "outsider": ("Oscar Outsider", "admin", "Other Co"),
        }
        users = {}
        for who, (name, role, account) in people.items():
            users[who] = add_user(
                s, email=EMAILS[who], name=name, role=role, account=account, now=T0
            )
            passwords.set_password(s, EMAILS[who], PASSWORD, now=T0)
            world.users[who] = users[who].id
        owned = add_connection(
            s,
            relink.vault,
            NewConnection(
                type="postgres",
                name="Owned DB",
                owner=EMAILS["owner"],
                mode="direct",
                settings=pg,
                secrets={"password": db_password},
            ),
            now=T0,
        )
        share(s, owned.id, with_email=EMAILS["shared"], actor=users["owner"], now=T0)
        api = add_connection(
            s,
            relink.vault,
            NewConnection(
                type="api_key",
                name="Owned API",
                owner=EMAILS["owner"],
                mode="warehouse",
                settings={"base_url": sandbox_url or "http://127.0.0.1:9", "header": "X-API-Key"},
                secrets={"api_key": "an-old-api-key"},
            ),
            now=T0,
        )
        other = add_connection(
            s,
            relink.vault,
            NewConnection(
                type="postgres",
                name="Other DB",
                owner=EMAILS["outsider"],
                settings=pg,
                secrets={"password": "other-secret"},
            ),
            now=T0,
        )
        for conn in (owned, api, other):
            world.ids[conn.name] = conn.id
    return world


def add_sent_email(relink: Relink, connection_id: int) -> int:
    """A disconnection of the connection and its email, sent: the email's id."""
    with relink.transaction() as s:
        episode = Disconnection(connection_id=connection_id, started_at=T0, reason_code="28P01")
        s.add(episode)
        s.flush()
        sent = T0 + timedelta(days=1)
        email = Notification(
            disconnection_id=episode.id,
            state="sent",
            recipients=[EMAILS["owner"]],
            subject="Reconnect your PostgreSQL connection",
            attempts=1,
            provider_message_id="sg-1",
            claimed_at=sent,
            sent_at=sent,
            updated_at=sent,
        )
        s.add(email)
        s.get(Disconnection, episode.id).awaiting_email = False
        s.flush()
        return email.id


def add_items_dataset(relink: Relink, connection_id: int, schema: str) -> int:
    with relink.transaction() as s:
        ds = add_dataset(
            s,
            connection_id=connection_id,
            name="Items",
            query=f'SELECT id, name, price FROM "{schema}".items ORDER BY id',
            now=T0,
        )
        add_metric(s, name="Item count", dataset_ids=[ds.id], now=T0)
        return ds.id


def register_oauth_client(relink: Relink, provider: SandboxProvider) -> OAuthClient:
    """A confidential client of the sandbox provider that redirects to this app's callback."""
    client = OAuthClient(f"client-{uuid.uuid4().hex[:10]}", f"secret-{uuid.uuid4().hex}")
    callback = relink.settings.base_url.rstrip("/") + "/oauth/callback"
    provider.register_client(client.client_id, client.client_secret, [callback])
    return client


def add_oauth_connection(
    relink: Relink,
    world: World,
    sandbox: SandboxServer,
    client: OAuthClient,
    *,
    name: str,
    shared_with: str | None = "shared",
) -> int:
    """An OAuth 2.0 connection of the owner's on the sandbox provider, with a fresh token
    set, shared with `shared_with`; its id is put in `world.ids`."""
    with relink.transaction() as s:
        conn = add_connection(
            s,
            relink.vault,
            NewConnection(
                type="oauth2",
                name=name,
                owner=EMAILS["owner"],
                settings=oauth_settings(sandbox.url, client.client_id),
                secrets=issue(sandbox.provider, client, T0),
            ),
            now=T0,
        )
        if shared_with:
            owner = s.get(User, world.users["owner"])
            assert owner is not None
            share(s, conn.id, with_email=EMAILS[shared_with], actor=owner, now=T0)
        world.ids[name] = conn.id
        return conn.id


@contextmanager
def oauth_world(
    backend: str,
    tmp_path: Path,
    postgres_url: str | None,
    sandbox: SandboxServer,
    oauth_names: Iterable[str],
) -> Iterator[World]:
    """The layout above on a new app database, plus OAuth connections of the owner's on
    the sandbox provider (shared with `shared`), one per name in `oauth_names`."""
    with app_database(backend, tmp_path, postgres_url) as url:
        relink = make_relink(url, tmp_path / "data")
        try:
            world = build_world(relink)
            client = register_oauth_client(relink, sandbox.provider)
            for name in oauth_names:
                add_oauth_connection(relink, world, sandbox, client, name=name)
            yield world
        finally:
            relink.close()


# --- clients ------------------------------------------------------------------------------


def csrf_of(html: str) -> str:
    found = CSRF_RE.search(html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def error_message(page: str) -> str:
    """The reason an error page gives, as the visitor reads it."""
    found = ERROR_MESSAGE_RE.search(page)
    assert found, "the page gives no reason"
    return html.unescape(found.group(1)).strip()


def client_for(app: Any, who: str) -> TestClient:
    """A client signed in through the sign-in form (or not at all, for "anonymous")."""
    client = TestClient(app, follow_redirects=False)
    if who == "anonymous":
        return client
    sign_in(client, EMAILS[who])
    return client


@contextmanager
def open_clients(app: Any, visitors: Iterable[str] = WHO) -> Iterator[dict[str, TestClient]]:
    """A signed-in client per visitor, kept open: one event loop a client, not one a request."""
    with ExitStack() as stack:
        yield {who: stack.enter_context(client_for(app, who)) for who in visitors}


def sign_in(client: TestClient, email: str, password: str = PASSWORD, next_: str = "") -> Any:
    page = client.get("/login")
    assert page.status_code == 200, page.status_code
    response = client.post(
        "/login",
        data={
            "csrf_token": csrf_of(page.text),
            "email": email,
            "password": password,
            "next": next_,
        },
    )
    return response


def page_csrf(client: TestClient) -> str:
    """The CSRF token of the client's session, read off a page."""
    return csrf_of(client.get("/connectors").text)


# --- reconnecting through an OAuth provider's consent page --------------------------------


def start_reconnect(client: TestClient, connection_id: int) -> str:
    """Press the reconnect button of an OAuth connection: the provider's consent URL."""
    page = client.get(f"/connections/{connection_id}/reconnect")
    assert page.status_code == 200, page.status_code
    response = client.post(
        f"/connections/{connection_id}/reconnect", data={"csrf_token": csrf_of(page.text)}
    )
    assert response.status_code == 303, response.text[:500]
    return response.headers["location"]


def consent(
    authorization_url: str, *, allow: bool = True, username: str = "demo"
) -> dict[str, str]:
    """What the person does on the provider's consent page (allow or deny): the query the
    provider redirects back to the callback with."""
    decision = {"username": username, "decision": "allow" if allow else "deny"}
    answer = httpx.post(authorization_url, data=decision, timeout=5)
    assert answer.status_code == 302, answer.text[:500]
    return dict(httpx.URL(answer.headers["location"]).params)


# --- a served app (uvicorn in a thread) ---------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServedApp:
    """`relink web`'s app on uvicorn in a daemon thread, on a port chosen beforehand."""

    def __init__(self, app: Any, port: int) -> None:
        import uvicorn

        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, access_log=False, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="relink-web", daemon=True)

    def start(self) -> ServedApp:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
