"""Every route × every kind of visitor: the expected status, cell by cell.

Visitors (tests/support/web.py): the account's admin, the connection's owner, a user it
is shared with, another member of the account, a user of another account, and nobody.
"Owned DB" belongs to the owner; "Other DB" to the other account.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from relink.web import create_app
from tests.conftest import APP_BACKENDS
from tests.support.web import WHO, World, app_database, build_world, client_for, make_relink

# route -> expected status per visitor, in the order of WHO:
#        admin owner shared member outsider anonymous
TABLE: dict[str, tuple[int, int, int, int, int, int]] = {
    "GET /": (303, 303, 303, 303, 303, 303),
    "GET /connections": (200, 200, 200, 200, 200, 303),
    "GET /connections?status=disconnected": (200, 200, 200, 200, 200, 303),
    "GET /connections/{owned}": (200, 200, 200, 404, 404, 303),
    "GET /connections/{other}": (404, 404, 404, 404, 200, 303),
    "GET /connections/999999": (404, 404, 404, 404, 404, 303),
    "GET /connections/{owned}/reconnect": (200, 200, 200, 404, 404, 303),
    "GET /connections/{other}/reconnect": (404, 404, 404, 404, 200, 303),
    # no password entered: refused before the source is asked (400), nothing changes
    "POST /connections/{owned}/reconnect": (400, 400, 400, 404, 404, 303),
    "POST /connections/{other}/reconnect": (404, 404, 404, 404, 400, 303),
    "GET /oauth/callback?state=forged&code=x": (400, 400, 400, 400, 400, 303),
    "GET /connectors": (200, 200, 200, 200, 200, 200),
    "GET /login": (303, 303, 303, 303, 303, 200),
    "GET /api/connections": (200, 200, 200, 200, 200, 401),
    "GET /api/connections/{owned}": (200, 200, 200, 404, 404, 401),
    "GET /api/connections/{other}": (404, 404, 404, 404, 200, 401),
    "GET /api/connections/999999": (404, 404, 404, 404, 404, 401),
    "GET /openapi.json": (200, 200, 200, 200, 200, 200),
    "GET /docs": (200, 200, 200, 200, 200, 200),
}

CELLS = [(route, who) for route in TABLE for who in WHO]


@pytest.fixture(scope="module", params=APP_BACKENDS)
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    tmp = tmp_path_factory.mktemp("web")
    postgres = request.getfixturevalue("postgres_url") if request.param != "sqlite" else None
    with app_database(request.param, tmp, postgres) as url:
        relink = make_relink(url, tmp / "data")
        built = build_world(relink)
        app = create_app(relink)
        clients = {who: client_for(app, who) for who in WHO}
        yield built, clients
        relink.close()


def call(client, route: str, ids: dict[str, int]):
    method, target = route.split(" ", 1)
    target = target.format(owned=ids["Owned DB"], other=ids["Other DB"])
    if method == "GET":
        return client.get(target)
    # a form post carries the session's CSRF token (anonymous has none)
    token = client.cookies.get("relink_session") and _token(client)
    return client.post(target, data={"csrf_token": token or "", "password": ""})


def _token(client) -> str:
    from tests.support.web import page_csrf

    return page_csrf(client)


@pytest.mark.parametrize(("route", "who"), CELLS, ids=[f"{r} as {w}" for r, w in CELLS])
def test_status(world: tuple[World, dict], route: str, who: str) -> None:
    built, clients = world
    expected = TABLE[route][WHO.index(who)]
    response = call(clients[who], route, built.ids)
    assert response.status_code == expected, response.text[:500]
    if expected == 303 and who == "anonymous" and route != "GET /":
        assert response.headers["location"].startswith("/login")


def test_hidden_and_missing_connections_look_the_same(world: tuple[World, dict]) -> None:
    built, clients = world
    hidden = clients["member"].get(f"/connections/{built.ids['Owned DB']}")
    missing = clients["member"].get("/connections/999999")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.text == missing.text
    api_hidden = clients["member"].get(f"/api/connections/{built.ids['Owned DB']}")
    api_missing = clients["member"].get("/api/connections/999999")
    assert api_hidden.json() == api_missing.json()


@pytest.mark.parametrize(
    ("who", "names"),
    [
        ("admin", {"Owned DB", "Owned API"}),
        ("owner", {"Owned DB", "Owned API"}),
        ("shared", {"Owned DB"}),
        ("member", set()),
        ("outsider", {"Other DB"}),
    ],
)
def test_list_shows_exactly_what_the_user_may_see(
    world: tuple[World, dict], who: str, names: set[str]
) -> None:
    _, clients = world
    listed = clients[who].get("/api/connections").json()["connections"]
    assert {c["name"] for c in listed} == names
    page = clients[who].get("/connections").text
    for name in {"Owned DB", "Owned API", "Other DB"}:
        assert (f">{name}</a>" in page) == (name in names), name
