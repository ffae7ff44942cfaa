"""Bad input, web: form posts to `POST /login` and `POST /connections/{id}/reconnect` with
arbitrary fields (CSRF tokens right, wrong or missing; passwords of any script, huge or
empty; unknown fields), bodies that are oversized, not UTF-8, not the content type they
claim, or of no form type at all; and `GET /oauth/callback` with arbitrary `state`,
`code` and `error` parameters. Every answer is a 4xx page without a traceback (a signed-out
visitor of the callback is sent to sign in), never a 5xx, and the app database stays as
it was.

The connection the reconnect posts go to is a real PostgreSQL role that checks its
password: a post with the right CSRF token really asks the server, which refuses; such
a refused attempt only adds its record to the audit trail (`connection.reconnect_failed`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_from_bytes, urlencode

import pytest
import sqlalchemy as sa
from hypothesis import example, given
from hypothesis import strategies as st

from relink.web import create_app
from tests.integration.conftest import PgAdmin
from tests.support.fuzz import (
    Tally,
    absent_ids,
    fuzz,
    fuzz_world,
    http_refusal,
    huge,
    junk,
    not_numbers,
    unchanged,
    unknown_emails,
)
from tests.support.reconnect import pg_settings
from tests.support.web import EMAILS, TestClient, World, client_for, csrf_of, page_csrf

FORM = "application/x-www-form-urlencoded"
LIMIT = 1024 * 1024  # Starlette's limit of one form field


@dataclass
class Site:
    world: World
    owner: TestClient  # signed in as the owner of "Owned DB" and "Owned API"
    owner_csrf: str
    visitor: TestClient  # signed out, with the sign-in form's session
    visitor_csrf: str


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory,
    pwcheck_engine: sa.Engine,
    pwcheck_postgres_url: str,
) -> Iterator[Site]:
    admin = PgAdmin(pwcheck_engine)
    role = admin.create_role()
    folder = tmp_path_factory.mktemp("fuzz-web")
    try:
        with fuzz_world(
            folder,
            db_settings=pg_settings(pwcheck_postgres_url, role.name),
            db_password=role.password,
        ) as world:
            app = create_app(world.relink)
            owner = client_for(app, "owner")
            visitor = client_for(app, "anonymous")
            form = visitor.get("/login").text
            yield Site(world, owner, page_csrf(owner), visitor, csrf_of(form))
    finally:
        admin.cleanup()


# --- bodies -------------------------------------------------------------------------------

passwords = st.one_of(junk, huge, st.just(""))


def csrf_fields(valid: str) -> st.SearchStrategy[dict[str, str]]:
    """The session's own token, another one, a near miss or none at all."""
    return st.one_of(
        st.just({"csrf_token": valid}),
        st.just({"csrf_token": valid[:-1]}),
        st.just({"csrf_token": "A" * 43}),  # shaped like one (43 characters), not this one
        junk.map(lambda t: {"csrf_token": t}),
        st.just({}),
    )


def extra_fields() -> st.SearchStrategy[dict[str, str]]:
    return st.dictionaries(junk, junk, max_size=3)


def urlencoded(fields: dict[str, str]) -> tuple[bytes, str]:
    return urlencode(fields).encode(), FORM


def multipart(fields: dict[str, str]) -> tuple[bytes, str]:
    boundary = "relink-fuzz-boundary"  # fixed, so a failing input replays byte for byte
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{quote_from_bytes(name.encode())}"'
        f"\r\n\r\n{value}\r\n"
        for name, value in fields.items()
    ]
    body = "".join(parts) + f"--{boundary}--\r\n"
    return body.encode(), f"multipart/form-data; boundary={boundary}"


content_types = st.one_of(
    st.sampled_from(
        [
            FORM,
            f"{FORM}; charset=utf-16",
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "multipart/form-data; boundary=nothing-like-it",
            "application/json",
            "text/plain",
            "",
        ]
    ),
    junk.filter(lambda s: s.isascii() and s.isprintable()),
)


def bodies(fields: st.SearchStrategy[dict[str, str]]) -> st.SearchStrategy[tuple[bytes, str]]:
    """The fields as a form would send them, or bytes a form would never send."""
    return st.one_of(
        fields.map(urlencoded),
        fields.map(multipart),
        st.tuples(st.binary(max_size=300), content_types),  # not UTF-8, not what they claim
        fields.map(lambda f: (urlencode(f, encoding="latin-1", errors="replace").encode(), FORM)),
        fields.map(lambda f: urlencoded({**f, "password": "x" * (LIMIT + 1)})),  # oversized
        fields.map(lambda f: multipart({**f, "password": "x" * (LIMIT + 1)})),
    )


def post(client: TestClient, path: str, body: tuple[bytes, str]) -> Any:
    content, content_type = body
    return client.post(path, content=content, headers={"content-type": content_type})


# --- sign-in --------------------------------------------------------------------------------


def sign_in_fields(csrf: str) -> st.SearchStrategy[dict[str, str]]:
    known = st.sampled_from(sorted(EMAILS.values()))
    return st.builds(
        lambda token, email, password, next_, extra: {
            **extra,
            **token,
            "email": email,
            "password": password,
            "next": next_,
        },
        csrf_fields(csrf),
        st.one_of(known, unknown_emails, junk),
        passwords,  # never one of the world's: their password is a fixed passphrase
        st.one_of(junk, st.sampled_from(["//evil.test", "https://evil.test/", "/\\evil"])),
        extra_fields(),
    )


@pytest.mark.promise(
    "Bad form posts get a 4xx page, never a 5xx or a traceback, and change nothing."
)
def test_bad_sign_in_posts_are_refused_and_change_nothing(site: Site, record_property: Any) -> None:
    tally = Tally("sign-in posts")

    token = {"csrf_token": site.visitor_csrf}

    @fuzz(quick=30, soak=1000)
    @given(body=bodies(sign_in_fields(site.visitor_csrf)))
    # Always tried: a real user with a wrong password, and one past argon2's limit.
    @example(body=urlencoded({**token, "email": EMAILS["owner"], "password": "wrong-1234"}))
    @example(body=urlencoded({**token, "email": EMAILS["admin"], "password": "p" * 5000}))
    def one(body: tuple[bytes, str]) -> None:
        with unchanged(site.world.relink):
            tally.saw(http_refusal(post(site.visitor, "/login", body)))

    one()
    tally.record(record_property)


# --- reconnect ------------------------------------------------------------------------------


def reconnect_paths(world: World) -> st.SearchStrategy[str]:
    """Mostly the owner's password connection; also others', absent ones and non-ids."""
    elsewhere = st.one_of(
        st.sampled_from([world.ids["Owned API"], world.ids["Other DB"]]).map(str),
        absent_ids.map(str),
        not_numbers.map(lambda s: quote_from_bytes(s.encode(), safe="")),
    )
    owned = str(world.ids["Owned DB"])
    ids = st.sampled_from(["owned", "owned", "elsewhere"]).flatmap(
        lambda where: st.just(owned) if where == "owned" else elsewhere
    )
    return ids.map(lambda i: f"/connections/{i}/reconnect")


@st.composite
def reconnect_posts(draw: st.DrawFn, site: Site) -> tuple[str, tuple[bytes, str]]:
    path = draw(reconnect_paths(site.world))
    fields = st.builds(
        lambda token, password, extra: {**extra, **token, "password": password},
        csrf_fields(site.owner_csrf),
        passwords,
        extra_fields(),
    )
    if path != f"/connections/{site.world.ids['Owned DB']}/reconnect":
        # Elsewhere, only a wrong token: a right one on "Owned API" asks a source that is
        # not there (502, "could not be reached"), which is not a bad input.
        fields = fields.filter(lambda f: f.get("csrf_token") != site.owner_csrf)
    return path, draw(bodies(fields))


@pytest.mark.promise(
    "Bad form posts get a 4xx page, never a 5xx or a traceback, and change nothing."
)
def test_bad_reconnect_posts_are_refused_and_change_nothing(
    site: Site, record_property: Any
) -> None:
    tally = Tally("reconnect posts")

    owned = f"/connections/{site.world.ids['Owned DB']}/reconnect"
    token = {"csrf_token": site.owner_csrf}

    @fuzz(quick=30, soak=1000)
    @given(request=reconnect_posts(site))
    # Always tried: passwords libpq cuts short, or long, or past the form's limit.
    @example(request=(owned, urlencoded({**token, "password": "\x00"})))
    @example(request=(owned, urlencoded({**token, "password": "é\x00" * 4000})))
    @example(request=(owned, multipart({**token, "password": "x" * (LIMIT + 1)})))
    def one(request: tuple[str, tuple[bytes, str]]) -> None:
        path, body = request
        with unchanged(site.world.relink, refused_reconnects=True):
            response = post(site.owner, path, body)
            answer = http_refusal(response)
            refused = "The source refused these credentials." in response.text
            tally.saw(f"{answer} (PostgreSQL refused the password)" if refused else answer)

    one()
    tally.record(record_property)


# --- the OAuth callback ---------------------------------------------------------------------

values = st.one_of(
    junk.map(lambda s: quote_from_bytes(s.encode(), safe="")),
    st.binary(max_size=40).map(lambda b: quote_from_bytes(b, safe="")),  # not UTF-8
    # long, yet five of them within what a client sends (httpx: URLs up to 64 KiB)
    st.text(min_size=1, max_size=3).map(lambda s: quote_from_bytes((s * 200).encode(), safe="")),
    st.just(""),
    st.none(),  # a bare name, no "="
)
params = st.one_of(st.sampled_from(["state", "code", "error", "error_description"]), junk)


@st.composite
def callback_queries(draw: st.DrawFn) -> str:
    """A query string as a provider (or anyone) could send it: repeated, missing, empty."""
    pairs = draw(st.lists(st.tuples(params, values), max_size=5))
    return "&".join(
        f"{quote_from_bytes(name.encode(), safe='')}" + ("" if value is None else f"={value}")
        for name, value in pairs
    )


@pytest.mark.promise("A bad OAuth callback query is refused with a 4xx and changes nothing.")
def test_bad_oauth_callbacks_are_refused_and_change_nothing(
    site: Site, record_property: Any
) -> None:
    tally = Tally("callback queries")

    @fuzz(quick=30, soak=1000)
    @given(query=callback_queries(), signed_in=st.booleans())
    def one(query: str, signed_in: bool) -> None:
        client = site.owner if signed_in else site.visitor
        with unchanged(site.world.relink):
            response = client.get(f"/oauth/callback?{query}")
            if signed_in:
                tally.saw(http_refusal(response))
            else:  # sent to sign in, the query (it may hold a code) left behind
                assert response.status_code == 303, response.status_code
                assert response.headers["location"] == "/login"
                tally.saw("303 to /login")

    one()
    tally.record(record_property)
