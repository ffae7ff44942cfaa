"""Bad input, connector settings: every connector's connection requirements, fuzzed.

* `relink connections add TYPE --set ...` with one bad value (a port that is no port, an
  unknown sslmode, a URL that is not http(s), a header that is no header name, an
  unknown or missing field, a secret on the command line, an unset variable, a blank,
  huge or multi-line name, an unknown owner or mode) exits 1 or 2 and writes nothing;
* a stored connection whose settings are bad that way is checked without asking the
  source: `validate` reports `auth_failed` / `invalid_settings` in one line, and the
  add-time check names the same problem;
* `settings_problem` takes any mapping (any keys, any JSON values) without raising.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import connectors
from connectors.base import CheckContext, ConnectionSpec
from connectors.oauth2 import AUTH_METHODS, URL_SETTINGS
from connectors.sql import SqlConnector
from relink.domain.words import AuthKind, Outcome
from tests.support.fuzz import (
    Tally,
    bad_ports,
    cli_error,
    fuzz,
    fuzz_world,
    huge,
    junk,
    unchanged,
    unknown_emails,
)
from tests.support.reconnect import Cli
from tests.support.web import EMAILS, World

OWNER = EMAILS["owner"]
SECRET_VAR = "RELINK_FUZZ_SECRET"
PROMISE = (
    "Bad connector settings are refused with a clear error before any source is asked, "
    "and nothing is written."
)

ALL = list(connectors.all_connectors())
SQL = [c for c in ALL if isinstance(c, SqlConnector)]
API_KEY = [c for c in ALL if c.auth_kind is AuthKind.API_KEY]
OAUTH = [c for c in ALL if c.auth_kind is AuthKind.OAUTH2]
# A kind of connector first, then one of its kind: the seven OAuth providers do not
# crowd out the others.
any_connector = st.sampled_from([SQL, API_KEY, OAUTH]).flatmap(st.sampled_from)

# Good settings and the one secret each kind needs.
GOOD = {
    **{c.type: {"host": "db.internal", "database": "sales", "username": "reader"} for c in SQL},
    **{c.type: {"base_url": "https://api.example.com"} for c in API_KEY},
    **{c.type: {} for c in OAUTH},
}
SECRET = {
    **{c.type: "password" for c in SQL},
    **{c.type: "api_key" for c in API_KEY},
    **{c.type: "refresh_token" for c in OAUTH},
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with fuzz_world(tmp_path_factory.mktemp("fuzz-connectors")) as built:
        yield built


# --- bad setting values, per kind of connector ---------------------------------------------


def not_an_sslmode(connector: SqlConnector) -> st.SearchStrategy[str]:
    return junk.filter(lambda s: s.strip() and s.strip().lower() not in connector.sslmodes)


not_http_urls = st.one_of(
    junk.filter(lambda s: s.strip() and not s.strip().lower().startswith("http")),
    st.sampled_from(["ftp://files.example.com", "http://", "https://:443/x", "example.com"]),
)
# Refused when added; a stored one is only found out by the request (`unreachable`).
ports_out_of_range = st.integers(min_value=65536, max_value=10**6).map(
    lambda p: f"http://127.0.0.1:{p}/"
)
not_header_names = junk.filter(lambda s: s.strip() and any(c in s for c in ' :()<>@,;"/[]?={}\n'))
not_auth_methods = junk.filter(lambda s: s.strip() and s.strip() not in AUTH_METHODS)


def bad_settings(
    connector: connectors.Connector, *, stored: bool = False
) -> st.SearchStrategy[dict[str, str]]:
    """One setting of `connector` that no source would accept, over good ones. `stored`:
    only what a check finds out before any request (OAuth connections, for instance,
    look at a URL only when they get to use it)."""
    good = GOOD[connector.type]
    urls = not_http_urls if stored else st.one_of(not_http_urls, ports_out_of_range)
    if isinstance(connector, SqlConnector):
        bad = st.one_of(
            bad_ports.map(lambda p: {"port": p}),
            not_an_sslmode(connector).map(lambda m: {"sslmode": m}),
        )
    elif connector.auth_kind is AuthKind.API_KEY:
        bad = st.one_of(
            urls.map(lambda u: {"base_url": u}),
            not_header_names.map(lambda h: {"header": h}),
        )
    elif stored:
        bad = not_auth_methods.map(lambda m: {"token_endpoint_auth_method": m})
    else:
        bad = st.one_of(
            not_auth_methods.map(lambda m: {"token_endpoint_auth_method": m}),
            st.tuples(st.sampled_from(URL_SETTINGS), urls).map(lambda p: {p[0]: p[1]}),
        )
    return bad.map(lambda one: {**good, **one})


# --- `relink connections add` -----------------------------------------------------------


def add_args(type_: str, settings: dict[str, str], **over: Any) -> list[str]:
    args = ["connections", "add", over.get("type", type_), "--name", over.get("name", "Fuzzed")]
    args += ["--owner", over.get("owner", OWNER)]
    if "mode" in over:
        args += ["--mode", over["mode"]]
    for key, value in settings.items():
        args += ["--set", f"{key}={value}"]
    args += over.get("extra", [])
    args += ["--secret-env", over.get("secret_env", f"{SECRET[type_]}={SECRET_VAR}")]
    return args


def with_one_bad_setting() -> st.SearchStrategy[list[str]]:
    return any_connector.flatmap(
        lambda c: bad_settings(c).map(lambda settings: add_args(c.type, settings))
    )


def other_bad_arguments(connector: connectors.Connector) -> st.SearchStrategy[dict[str, Any]]:
    """What `add_args` takes instead of its good defaults: one bad argument."""
    fields = {f.name for f in connector.fields}
    settings = sorted(connector.setting_fields)
    # Blank means "the default" where there is one (a port): only those without one.
    required = [
        f.name for f in connector.fields if f.required and not f.secret and f.default is None
    ]
    bad = [
        st.one_of(st.sampled_from(["", "  "]), huge, junk.map(lambda s: f"a\n{s}b")).map(
            lambda n: {"name": n}
        ),
        unknown_emails.map(lambda e: {"owner": e}),
        junk.filter(lambda s: s not in {"warehouse", "direct"}).map(lambda m: {"mode": m}),
        junk.filter(lambda s: s not in GOOD).map(lambda t: {"type": t}),
        junk.filter(lambda k: k.strip() not in fields and "=" not in k).map(
            lambda k: {"extra": ["--set", f"{k}=x"]}
        ),
        junk.filter(lambda s: "=" not in s).map(lambda s: {"extra": ["--set", s]}),
        st.sampled_from(sorted(connector.secret_fields)).map(
            lambda s: {"extra": ["--set", f"{s}=in-the-clear"]}
        ),
        st.just({"secret_env": f"{SECRET[connector.type]}=RELINK_FUZZ_UNSET"}),
        st.sampled_from(settings).map(lambda s: {"secret_env": f"{s}={SECRET_VAR}"}),
        junk.filter(lambda s: "=" not in s).map(lambda s: {"secret_env": s}),
    ]
    if required:
        bad.append(st.sampled_from(required).map(lambda r: {"extra": ["--set", f"{r}= "]}))
    return st.one_of(bad)


def with_one_bad_argument() -> st.SearchStrategy[list[str]]:
    """Good settings; one other argument bad."""
    return any_connector.flatmap(
        lambda c: other_bad_arguments(c).map(lambda over: add_args(c.type, GOOD[c.type], **over))
    )


@pytest.mark.promise(PROMISE)
@pytest.mark.parametrize(
    "bad", ["a setting", "another argument"], ids=["bad setting", "bad argument"]
)
def test_connections_add_refuses_bad_input_and_writes_nothing(
    bad: str, world: World, record_property: Any
) -> None:
    cli = Cli(world.relink.settings)
    cli.env[SECRET_VAR] = "a-fuzz-secret"
    tally = Tally(f"`connections add` with {bad}")
    arguments = with_one_bad_setting() if bad == "a setting" else with_one_bad_argument()

    @fuzz(quick=15, soak=400)
    @given(args=arguments)
    def one(args: list[str]) -> None:
        with unchanged(world.relink):
            tally.saw(cli_error(cli(*args)))

    one()
    tally.record(record_property)


# --- a check of stored bad settings -----------------------------------------------------------

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), junk),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(junk, inner, max_size=3)),
    max_leaves=8,
)


def check(connector: connectors.Connector, settings: dict[str, Any]) -> Any:
    spec = ConnectionSpec(1, connector.type, settings, {SECRET[connector.type]: "s3cret"})
    ctx = CheckContext(now=datetime(2026, 3, 2, tzinfo=UTC), timeout=2.0)
    return asyncio.run(connector.validate(spec, ctx))


@pytest.mark.promise(PROMISE)
def test_checking_bad_settings_asks_no_source(record_property: Any) -> None:
    """`validate` of settings that are bad whatever the credentials: `invalid_settings`,
    one line, before any request (a request would end `unreachable` here, or hang)."""
    tally = Tally("stored bad settings checked")

    @fuzz(quick=60, soak=2000)
    @given(data=st.data(), connector=any_connector)
    def one(data: st.DataObject, connector: connectors.Connector) -> None:
        settings = data.draw(bad_settings(connector, stored=True))
        extra = data.draw(st.dictionaries(junk, json_values, max_size=3))
        settings = {**extra, **settings}
        problem = connector.settings_problem(settings)
        result = check(connector, settings)
        assert (result.outcome, result.code) == (Outcome.AUTH_FAILED, "invalid_settings"), result
        assert problem is not None, settings  # and `connections add` refuses it
        assert len(result.message.splitlines()) == 1 and "s3cret" not in result.message
        tally.saw(f"{connector.auth_kind} invalid_settings")

    one()
    tally.record(record_property)


@pytest.mark.promise(PROMISE)
def test_any_settings_mapping_gets_an_answer_not_an_exception(record_property: Any) -> None:
    tally = Tally("arbitrary settings mappings")

    @fuzz(quick=60, soak=3000)
    @given(
        connector=any_connector,
        settings=st.dictionaries(
            st.one_of(junk, st.sampled_from([*URL_SETTINGS, "host", "port", "base_url"])),
            json_values,
            max_size=6,
        ),
    )
    def one(connector: connectors.Connector, settings: dict[str, Any]) -> None:
        problem = connector.settings_problem(settings)
        assert problem is None or len(problem.splitlines()) == 1, problem
        tally.saw("a problem named" if problem else "no problem")

    one()
    tally.record(record_property)
