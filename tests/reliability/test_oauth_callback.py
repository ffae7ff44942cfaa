"""The OAuth callback refuses every forged or stale answer, and then nothing has changed.

The web app (tests/support/web.py) and the real sandbox OAuth provider on loopback: two
broken OAuth connections of the owner's, "CRM" and "Ledger" (shared with `shared`),
each with an open disconnection. An attack starts real reconnects on the page and
consents at the provider, then bends the callback: a tampered, replayed, expired or
foreign `state`, a lost or wrong PKCE verifier, the provider's `error=access_denied`,
a missing code or state. Each gets a 400 page with a one-line reason (no traceback, no
code or state echoed), and every table is as it was: connections (credentials
ciphertext, status, owner, version), disconnections, audit events. When the provider
refused the code, and only then, the pending sign-in is spent (single use) and the
audit trail records the failed reconnect (`connection.reconnect_failed`).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from relink.app import Relink
from relink.models import OAuthState
from relink.reconnecting.oauth import OAUTH_STATE_TTL, start_oauth
from relink.sweep.run import sweep
from relink.timeutil import utcnow
from relink.vault import Vault, generate_key
from relink.web import create_app
from relink.web.reconnecting import callback_url
from relink_dev.sandbox import SandboxServer
from tests.conftest import APP_BACKENDS
from tests.integration.oauth_fixtures import sandbox_server, stored  # noqa: F401 - a fixture
from tests.support.reconnect import FAST_CHECKS, failed_attempts_only, snapshot
from tests.support.web import (
    EMAILS,
    T0,
    TestClient,
    World,
    consent,
    error_message,
    oauth_world,
    open_clients,
    start_reconnect,
)

PROMISE = (
    "A tampered, replayed, expired or foreign OAuth callback, a lost PKCE verifier or a "
    "provider error is refused with a clear 400 and changes nothing"
)
pytestmark = pytest.mark.promise(PROMISE)


@dataclass
class Site:
    world: World
    app: FastAPI
    clients: dict[str, TestClient]

    @property
    def relink(self) -> Relink:
        return self.world.relink

    def flow(self, connection: str = "CRM", who: str = "owner") -> dict[str, str]:
        """A reconnect started on the page and allowed at the provider: the callback's query."""
        return consent(start_reconnect(self.clients[who], self.world.ids[connection]))


@pytest.fixture(scope="module", params=APP_BACKENDS)
def site(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    sandbox_server: SandboxServer,  # noqa: F811 - the fixture imported above
) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("callback")
    postgres = request.getfixturevalue("postgres_url") if request.param != "sqlite" else None
    with oauth_world(request.param, tmp, postgres, sandbox_server, ["CRM", "Ledger"]) as world:
        break_connections(world.relink, sandbox_server, [world.ids["CRM"], world.ids["Ledger"]])
        app = create_app(world.relink)
        with open_clients(app, ("owner", "shared", "admin", "outsider")) as clients:
            yield Site(world, app, clients)


def break_connections(relink: Relink, sandbox: SandboxServer, ids: list[int]) -> None:
    """Revoke their refresh tokens at the provider; a check an hour later finds them broken."""
    for connection_id in ids:
        sandbox.provider.revoke_token(stored(relink, connection_id)[0]["refresh_token"])
    summary = asyncio.run(
        sweep(relink, now=T0 + timedelta(hours=1), policy=FAST_CHECKS, connection_ids=ids)
    )
    assert summary.opened == len(ids), summary


# --- the attacks ------------------------------------------------------------------------


@dataclass(frozen=True)
class Visit:
    """A callback request, and a phrase of the reason the page must give."""

    who: str
    params: dict[str, str]
    says: str
    spends_state: bool = False  # the provider refused the code of a state that was valid


def flipped(value: str) -> str:
    """The same value with its last character changed."""
    return value[:-1] + ("A" if value[-1] != "A" else "B")


def store_verifier(site: Site, state: str, ciphertext: str) -> None:
    """Overwrite the PKCE code verifier stored with a pending sign-in."""
    state_hash = hashlib.sha256(state.encode()).hexdigest()
    with site.relink.engine.begin() as conn:
        conn.execute(
            sa.update(OAuthState)
            .where(OAuthState.state_hash == state_hash)
            .values(code_verifier=ciphertext)
        )


def tampered_state(site: Site) -> Visit:
    query = site.flow()
    return Visit("owner", {**query, "state": flipped(query["state"])}, "unknown sign-in state")


def tampered_code(site: Site) -> Visit:
    query = site.flow()
    return Visit("owner", {**query, "code": flipped(query["code"])}, "refused", True)


def replayed_state(site: Site) -> Visit:
    query = site.flow("Ledger")
    first = site.clients["owner"].get("/oauth/callback", params=query)
    assert first.status_code == 303, first.text[:500]  # the first use reconnects Ledger
    return Visit("owner", query, "already used")


def expired_state(site: Site) -> Visit:
    """Started (through the service, at a chosen time) just over its lifetime ago."""
    started = start_oauth(
        site.relink,
        site.world.ids["CRM"],
        actor=EMAILS["owner"],
        redirect_uri=callback_url(site.relink),
        now=utcnow() - OAUTH_STATE_TTL - timedelta(minutes=1),
    )
    return Visit("owner", consent(started.url), "expired")


def state_of_the_owner_used_by(who: str) -> Callable[[Site], Visit]:
    def attack(site: Site) -> Visit:
        return Visit(who, site.flow(), "started by another user")

    attack.__name__ = f"state_of_the_owner_used_by_{who}"
    return attack


def state_of_another_connection(site: Site) -> Visit:
    """Ledger's state with the code CRM's consent gave: PKCE ties the code to its state."""
    crm, ledger = site.flow("CRM"), site.flow("Ledger")
    return Visit("owner", {"state": ledger["state"], "code": crm["code"]}, "refused", True)


def lost_verifier(site: Site) -> Visit:
    query = site.flow()
    store_verifier(site, query["state"], site.relink.vault.encrypt({}))
    return Visit("owner", query, "code verifier")


def verifier_under_a_dropped_key(site: Site) -> Visit:
    query = site.flow()
    unknown = Vault([generate_key()]).encrypt({"code_verifier": secrets.token_urlsafe(64)})
    store_verifier(site, query["state"], unknown)
    return Visit("owner", query, "code verifier")


def verifier_that_does_not_match(site: Site) -> Visit:
    query = site.flow()
    wrong = site.relink.vault.encrypt({"code_verifier": secrets.token_urlsafe(64)})
    store_verifier(site, query["state"], wrong)
    return Visit("owner", query, "refused", True)


def provider_answered_access_denied(site: Site) -> Visit:
    url = start_reconnect(site.clients["owner"], site.world.ids["CRM"])
    return Visit("owner", consent(url, allow=False), "access_denied")


def code_missing(site: Site) -> Visit:
    return Visit("owner", {"state": site.flow()["state"]}, "no code")


def state_missing(site: Site) -> Visit:
    return Visit("owner", {"code": site.flow()["code"]}, "no state")


ATTACKS = [
    tampered_state,
    tampered_code,
    replayed_state,
    expired_state,
    state_of_the_owner_used_by("shared"),
    state_of_the_owner_used_by("admin"),
    state_of_the_owner_used_by("outsider"),
    state_of_another_connection,
    lost_verifier,
    verifier_under_a_dropped_key,
    verifier_that_does_not_match,
    provider_answered_access_denied,
    code_missing,
    state_missing,
]


# --- the checks -------------------------------------------------------------------------


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.__name__ for a in ATTACKS])
def test_a_bent_callback_is_refused_and_changes_nothing(
    site: Site, attack: Callable[[Site], Visit], record_property: Any
) -> None:
    visit = attack(site)
    before = snapshot(site.relink)

    response = site.clients[visit.who].get("/oauth/callback", params=visit.params)

    assert response.status_code == 400, response.text[:1000]
    reason = error_message(response.text)
    assert visit.says in reason and "nothing was changed" in reason.lower(), reason
    assert "\n" not in reason and len(reason) < 400, reason
    assert "Traceback" not in response.text
    for echoed in ("state", "code"):
        if echoed in visit.params:
            assert visit.params[echoed] not in response.text, f"the {echoed} is on the page"
    after = snapshot(site.relink)
    if visit.spends_state:  # single use: a state whose code the provider refused is spent,
        del before["oauth_states"], after["oauth_states"]
        (refused,) = failed_attempts_only(before, after)  # and the attempt is on record
        assert refused["details"]["outcome"] == "auth_failed"
    else:
        assert after == before, "the refused callback changed the database"
    record_property("trials", 1)
    record_property("outcome", "400 with a one-line reason; the database as it was")
