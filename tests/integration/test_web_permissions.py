"""Every route × every kind of visitor: the expected status, cell by cell.

Visitors (tests/support/web.py): the account's admin, the connection's owner, a user it
is shared with, another member of the account, a user of another account, and nobody.
"Owned DB" (a password) and "Owned CRM" (OAuth, on the sandbox provider) belong to the
owner and are shared; "Other DB" belongs to the other account.

The table lists requests, not routes: `test_the_table_covers_every_route` reads the
routes off the app, so a new route without a row fails. A form post carries the
visitor's own CSRF token unless its row says otherwise; a post with no token or another
session's token is refused before anything happens (the session cookie stays as it was).
No post changes a table of the app database, except the OAuth start (it stores the
pending sign-in) and "Check again" (the check's record: the connection, a disconnection it
opens, the status change in the audit trail, and the follow-up that runs it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from fastapi import FastAPI
from starlette.routing import compile_path

from relink.web import create_app
from relink.web.sessions import COOKIE_NAME
from relink_dev.sandbox import SandboxServer
from tests.conftest import APP_BACKENDS
from tests.integration.oauth_fixtures import sandbox_server  # noqa: F401 - a fixture
from tests.support.reconnect import snapshot
from tests.support.web import (
    EMAILS,
    PASSWORD,
    WHO,
    TestClient,
    World,
    add_sent_email,
    client_for,
    csrf_of,
    oauth_world,
    open_clients,
    page_csrf,
)

PROMISE = "Every page and API route answers each kind of visitor as the access rules say"
pytestmark = pytest.mark.promise(PROMISE)

Token = Literal["own", "none", "foreign"]


@dataclass(frozen=True)
class Row:
    """One request and the status each visitor gets, in the order of WHO."""

    request: str  # "METHOD /path?query"; {owned}, {other}, {crm}: connections; {email}: an email
    expect: tuple[int, int, int, int, int, int]
    form: dict[str, str] = field(default_factory=dict)
    token: Token = "own"  # the CSRF token a post carries
    redirect: str = "/login"  # where a 303 sends a signed-in visitor
    ends_session: bool = False  # signs out: a client of its own, signed out afterwards
    writes: tuple[str, ...] = ()  # the tables a post may change (the OAuth start's state)

    @property
    def method(self) -> str:
        return self.request.split(" ", 1)[0]

    @property
    def target(self) -> str:
        return self.request.split(" ", 1)[1]

    @property
    def label(self) -> str:
        return self.request if self.token == "own" else f"{self.request} [{self.token} token]"


ALL_OK = (200, 200, 200, 200, 200, 200)
SIGNED_IN = (200, 200, 200, 200, 200, 303)
OWNED = (200, 200, 200, 404, 404, 303)  # admin, owner and shared see it
OTHER = (404, 404, 404, 404, 200, 303)  # only the other account sees it
API_SIGNED_IN = (200, 200, 200, 200, 200, 401)
API_OWNED = (200, 200, 200, 404, 404, 401)
API_OTHER = (404, 404, 404, 404, 200, 401)
NOT_FOUND = (404, 404, 404, 404, 404, 303)
ADMINS = (200, 403, 403, 403, 200, 303)  # each account's admin sees its own emails
OUR_ADMIN = (200, 403, 403, 403, 404, 303)  # an email of Acme's: Acme's admin only
ADMIN_REFUSED = (403, 403, 403, 403, 404, 303)  # the admin and the email first, then the token
BAD = (400, 400, 400, 400, 400, 303)  # refused before anything happens
REFUSED = (403, 403, 403, 403, 403, 403)  # no valid CSRF token
OWNED_REFUSED = (403, 403, 403, 404, 404, 303)  # visibility first, then the token
WRONG_PASSWORD = {"email": EMAILS["admin"], "password": "not the password"}
RIGHT_PASSWORD = {"email": EMAILS["admin"], "password": PASSWORD}
NEW_DB_PASSWORD = {"password": "a-new-db-password"}
AUTHORIZE = "{sandbox}/oauth/authorize?"
# what a check may record, and its follow-up (written first, so a restart does not lose it)
CHECKED = ("connections", "disconnections", "audit_events", "followups")

ROWS = [
    Row("GET /", (303,) * 6, redirect="/connections"),
    Row("GET /login", (303, 303, 303, 303, 303, 200), redirect="/connections"),
    Row("POST /login", (400,) * 6, form=WRONG_PASSWORD),
    Row("POST /login", REFUSED, form=RIGHT_PASSWORD, token="none"),
    Row("POST /login", REFUSED, form=RIGHT_PASSWORD, token="foreign"),
    Row("POST /logout", (303,) * 6, ends_session=True),
    Row("POST /logout", REFUSED, token="none"),
    Row("POST /logout", REFUSED, token="foreign"),
    Row("GET /connections", SIGNED_IN),
    Row("GET /connections?status=disconnected", SIGNED_IN),
    Row("GET /connections/{owned}", OWNED),
    Row("GET /connections/{crm}", OWNED),
    Row("GET /connections/{other}", OTHER),
    Row("GET /connections/999999", NOT_FOUND),
    Row("GET /connections/{owned}/reconnect", OWNED),
    Row("GET /connections/{crm}/reconnect", OWNED),
    Row("GET /connections/{other}/reconnect", OTHER),
    Row("GET /connections/999999/reconnect", NOT_FOUND),
    # no password entered: refused before the source is asked (400), nothing changes
    Row("POST /connections/{owned}/reconnect", (400, 400, 400, 404, 404, 303)),
    Row("POST /connections/{other}/reconnect", (404, 404, 404, 404, 400, 303)),
    Row("POST /connections/{owned}/reconnect", OWNED_REFUSED, NEW_DB_PASSWORD, "none"),
    Row("POST /connections/{owned}/reconnect", OWNED_REFUSED, NEW_DB_PASSWORD, "foreign"),
    # an OAuth connection: the button sends the visitor to the provider's consent page
    Row(
        "POST /connections/{crm}/reconnect",
        (303, 303, 303, 404, 404, 303),
        redirect=AUTHORIZE,
        writes=("oauth_states",),
    ),
    Row("POST /connections/{crm}/reconnect", OWNED_REFUSED, token="none"),
    Row("POST /connections/{crm}/reconnect", OWNED_REFUSED, token="foreign"),
    # confirming an account replacement: only one held in the visitor's own session
    Row(
        "GET /connections/{crm}/reconnect/confirm",
        (303, 303, 303, 404, 404, 303),
        redirect="/connections/",
    ),
    Row("POST /connections/{crm}/reconnect/confirm", (400, 400, 400, 404, 404, 303)),
    Row(
        "POST /connections/{crm}/reconnect/confirm",
        (400, 400, 400, 404, 404, 303),
        {"confirmation": "forged"},
    ),
    Row("POST /connections/{crm}/reconnect/confirm", OWNED_REFUSED, token="none"),
    Row("POST /connections/{crm}/reconnect/confirm", OWNED_REFUSED, token="foreign"),
    # "Check again": who may reconnect it asks for a check now, then sees the page again
    Row(
        "POST /connections/{owned}/check",
        (303, 303, 303, 404, 404, 303),
        redirect="/connections/",
        writes=CHECKED,
    ),
    Row(
        "POST /connections/{other}/check",
        (404, 404, 404, 404, 303, 303),
        redirect="/connections/",
        writes=CHECKED,
    ),
    Row("POST /connections/999999/check", NOT_FOUND),
    Row("POST /connections/{owned}/check", OWNED_REFUSED, token="none"),
    Row("POST /connections/{owned}/check", OWNED_REFUSED, token="foreign"),
    Row("GET /oauth/callback?state=forged&code=x", BAD),
    Row("GET /oauth/callback?state=forged&error=access_denied", BAD),
    Row("GET /oauth/callback", BAD),
    Row("GET /emails", ADMINS),
    Row("GET /emails?state=unknown", ADMINS),
    Row("GET /emails?state=nonsense", ADMINS),
    Row("GET /emails/{email}", OUR_ADMIN),
    Row("GET /emails/{email}/html", OUR_ADMIN),
    Row("GET /emails/999999", (404, 403, 403, 403, 404, 303)),
    Row("POST /emails/{email}/release", ADMIN_REFUSED, token="none"),
    Row("POST /emails/{email}/release", ADMIN_REFUSED, token="foreign"),
    # a sent email: release is refused with a message on the page (the flash, kept in the
    # session until a page shows it: hence after the refused posts), nothing changes
    Row("POST /emails/{email}/release", (303, 403, 403, 403, 404, 303), redirect="/emails/"),
    Row("GET /connectors", ALL_OK),
    Row("GET /static/relink.css", ALL_OK),
    Row("GET /static/favicon.svg", ALL_OK),
    Row("GET /favicon.ico", ALL_OK),
    Row("GET /static/docs.js", ALL_OK),
    Row("GET /static/swagger/swagger-ui.css", ALL_OK),
    Row("GET /static/swagger/swagger-ui-bundle.js", ALL_OK),
    Row("GET /docs", ALL_OK),
    Row("GET /openapi.json", ALL_OK),
    Row("GET /api/connections", API_SIGNED_IN),
    Row("GET /api/connections?status=disconnected", API_SIGNED_IN),
    Row("GET /api/connections/{owned}", API_OWNED),
    Row("GET /api/connections/{crm}", API_OWNED),
    Row("GET /api/connections/{other}", API_OTHER),
    Row("GET /api/connections/999999", (404, 404, 404, 404, 404, 401)),
]

CELLS = [(row, who) for row in ROWS for who in WHO]


@dataclass
class Matrix:
    world: World
    app: FastAPI
    clients: dict[str, TestClient]
    tokens: dict[str, str]  # each client's CSRF token ("foreign": another session's)
    sandbox_url: str
    email_id: int  # the email about a disconnection of "Owned DB", sent

    def url(self, row: Row) -> str:
        ids = self.world.ids
        return row.target.format(
            owned=ids["Owned DB"], other=ids["Other DB"], crm=ids["Owned CRM"], email=self.email_id
        )


@pytest.fixture(scope="module", params=APP_BACKENDS[:1])  # SQLite: test_visibility checks the SQL
def matrix(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    sandbox_server: SandboxServer,  # noqa: F811 - the fixture imported above
) -> Iterator[Matrix]:
    tmp = tmp_path_factory.mktemp("web")
    postgres = request.getfixturevalue("postgres_url") if request.param != "sqlite" else None
    with oauth_world(request.param, tmp, postgres, sandbox_server, ["Owned CRM"]) as world:
        email_id = add_sent_email(world.relink, world.ids["Owned DB"])
        app = create_app(world.relink)
        with open_clients(app) as clients:
            tokens = {who: own_token(client, who) for who, client in clients.items()}
            tokens["foreign"] = own_token(TestClient(app), "anonymous")
            yield Matrix(world, app, clients, tokens, sandbox_server.url, email_id)


# --- the cells ----------------------------------------------------------------------------


def own_token(client: TestClient, who: str) -> str:
    """The CSRF token of the client's session (an anonymous one: the sign-in form's)."""
    return csrf_of(client.get("/login").text) if who == "anonymous" else page_csrf(client)


def send(matrix: Matrix, client: TestClient, who: str, row: Row) -> Any:
    if row.method == "GET":
        return client.get(matrix.url(row))
    tokens = {"own": matrix.tokens[who], "none": "", "foreign": matrix.tokens["foreign"]}
    if row.ends_session:
        tokens["own"] = own_token(client, who)
    return client.post(matrix.url(row), data={"csrf_token": tokens[row.token], **row.form})


def session_cookie(client: TestClient) -> str | None:
    """The signed session the browser holds: a refused post must leave it as it was."""
    return client.cookies.get(COOKIE_NAME)


def location(matrix: Matrix, row: Row, who: str) -> str:
    """Where a 303 goes: an anonymous visitor to sign-in (except from `/`), else the row's."""
    if who == "anonymous" and row.target != "/":
        return "/login"
    return row.redirect.format(sandbox=matrix.sandbox_url)


@pytest.mark.parametrize(("row", "who"), CELLS, ids=[f"{r.label} as {w}" for r, w in CELLS])
def test_status(matrix: Matrix, row: Row, who: str, record_property: Any) -> None:
    client = client_for(matrix.app, who) if row.ends_session else matrix.clients[who]
    expected = row.expect[WHO.index(who)]
    database = snapshot(matrix.world.relink) if row.method == "POST" else None
    session = session_cookie(client)

    response = send(matrix, client, who, row)

    assert response.status_code == expected, response.text[:500]
    if expected == 303:
        assert response.headers["location"].startswith(location(matrix, row, who))
    if database is not None:
        after = snapshot(matrix.world.relink)
        changed = {table for table, rows in after.items() if rows != database[table]}
        assert changed <= set(row.writes), f"the post changed {changed}"
    if row.token != "own":
        assert session_cookie(client) == session, "a refused post changed the session"
    if row.ends_session:
        assert session_cookie(client) is None
        assert client.get("/api/connections").status_code == 401
    record_property("trials", 1)
    record_property("outcome", f"{len(CELLS)} cells a backend, each as expected")


def app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path template) of every route the app serves; HEAD is GET's twin."""
    try:  # FastAPI >= 0.150 keeps included routers as they are
        from fastapi.routing import iter_route_contexts

        routes: list[Any] = list(iter_route_contexts(app.routes))
    except ImportError:  # older FastAPI copies every route into the app
        routes = list(app.routes)
    return {(method, r.path) for r in routes for method in (r.methods or ()) if method != "HEAD"}


def route_of(row: Row, routes: set[tuple[str, str]]) -> tuple[str, str]:
    path = row.target.split("?")[0].format(owned=1, other=2, crm=3, email=4)
    matches = [
        (method, template)
        for method, template in routes
        if method == row.method and compile_path(template)[0].fullmatch(path)
    ]
    assert len(matches) == 1, f"{row.request} matches {matches or 'no route'}"
    return matches[0]


def test_the_table_covers_every_route(matrix: Matrix, record_property: Any) -> None:
    routes = app_routes(matrix.app)
    covered = {route_of(row, routes) for row in ROWS}
    assert routes - covered == set(), "routes without a row in the permission table"
    record_property("trials", len(routes))
    record_property("outcome", f"{len(ROWS)} requests cover all {len(routes)} routes × 6 visitors")


def test_hidden_and_missing_connections_look_the_same(matrix: Matrix) -> None:
    ids, clients = matrix.world.ids, matrix.clients
    hidden = clients["member"].get(f"/connections/{ids['Owned DB']}")
    missing = clients["member"].get("/connections/999999")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.text == missing.text
    api_hidden = clients["member"].get(f"/api/connections/{ids['Owned DB']}")
    api_missing = clients["member"].get("/api/connections/999999")
    assert api_hidden.json() == api_missing.json()


@pytest.mark.parametrize(
    ("who", "names"),
    [
        ("admin", {"Owned DB", "Owned API", "Owned CRM"}),
        ("owner", {"Owned DB", "Owned API", "Owned CRM"}),
        ("shared", {"Owned DB", "Owned CRM"}),
        ("member", set()),
        ("outsider", {"Other DB"}),
    ],
)
def test_list_shows_exactly_what_the_user_may_see(
    matrix: Matrix, who: str, names: set[str]
) -> None:
    client = matrix.clients[who]
    listed = client.get("/api/connections").json()["connections"]
    assert {c["name"] for c in listed} == names
    page = client.get("/connections").text
    for name in {"Owned DB", "Owned API", "Owned CRM", "Other DB"}:
        assert (f">{name}</a>" in page) == (name in names), name
