"""The sandbox provider as a real OAuth peer over loopback HTTP."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from relink_dev.sandbox import (
    DEMO_CLIENT_ID,
    SandboxProvider,
    SandboxServer,
    seed_demo,
)

CLIENT_ID = "test-client"
CLIENT_SECRET = "test-client-secret"
REDIRECT_URI = "http://127.0.0.1:9/cb"
AUTH = (CLIENT_ID, CLIENT_SECRET)
GOOD_KEY = "good-key"
BLOCKED_KEY = "blocked-key"


@pytest.fixture(scope="module")
def provider() -> SandboxProvider:
    prov = SandboxProvider()
    prov.register_client(CLIENT_ID, CLIENT_SECRET, [REDIRECT_URI], scope="api profile")
    prov.add_api_key(GOOD_KEY)
    prov.forbid_api_key(BLOCKED_KEY)
    return prov


@pytest.fixture(scope="module")
def sandbox(provider: SandboxProvider) -> Iterator[SandboxServer]:
    with SandboxServer(provider) as server:
        yield server


@pytest.fixture
def http(sandbox: SandboxServer, provider: SandboxProvider) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.url, timeout=5.0) as client:
        yield client
    provider.set_fault("ok")


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorize(
    http: httpx.Client, challenge: str | None, decision: str = "allow", state: str = "st-1"
) -> httpx.URL:
    params = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "scope": "api",
        "state": state,
    }
    if challenge:
        params |= {"code_challenge": challenge, "code_challenge_method": "S256"}
    resp = http.post(
        "/oauth/authorize", params=params, data={"username": "alice", "decision": decision}
    )
    assert resp.status_code == 302, resp.text
    return httpx.URL(resp.headers["location"])


def exchange(http: httpx.Client, code: str, verifier: str | None) -> httpx.Response:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI}
    if verifier:
        data["code_verifier"] = verifier
    return http.post("/oauth/token", data=data, auth=AUTH)


def new_tokens(http: httpx.Client) -> dict[str, str]:
    verifier, challenge = pkce_pair()
    resp = exchange(http, authorize(http, challenge).params["code"], verifier)
    assert resp.status_code == 200, resp.text
    return resp.json()


def introspect(http: httpx.Client, token: str) -> dict[str, object]:
    resp = http.post("/oauth/introspect", data={"token": token}, auth=AUTH)
    assert resp.status_code == 200, resp.text
    return resp.json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --------------------------------------------------------------- authorization code


def test_consent_page_shows_form(http: httpx.Client) -> None:
    resp = http.get(
        "/oauth/authorize",
        params={"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": REDIRECT_URI},
    )
    assert resp.status_code == 200
    for marker in ('id="allow"', 'id="deny"', 'name="username"', 'value="demo"', CLIENT_ID):
        assert marker in resp.text


def test_the_root_page_says_what_the_sandbox_is_and_shows_no_secret(http: httpx.Client) -> None:
    page = http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "sandbox OAuth 2.0 provider" in page.text and "/oauth/token" in page.text
    assert CLIENT_ID in page.text and CLIENT_SECRET not in page.text
    assert http.get("/static/relink.css").headers["content-type"].startswith("text/css")


def test_the_consent_page_lists_each_scope_asked_for(http: httpx.Client) -> None:
    params = {"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": REDIRECT_URI}
    asked = http.get("/oauth/authorize", params={**params, "scope": "profile email"}).text
    assert "<code>profile</code></li>" in asked
    assert "<code>email</code>" in asked and "it will not be granted" in asked
    default = http.get("/oauth/authorize", params=params).text
    assert "names no scope" in default and "<code>api</code>, <code>profile</code>" in default


def test_unknown_redirect_uri_is_not_followed(http: httpx.Client) -> None:
    resp = http.get(
        "/oauth/authorize",
        params={"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": "http://evil/"},
    )
    assert resp.status_code == 400
    assert "location" not in resp.headers


def test_code_with_pkce_exchanges_once(http: httpx.Client) -> None:
    verifier, challenge = pkce_pair()
    location = authorize(http, challenge, state="s-42")
    assert location.params["state"] == "s-42"

    first = exchange(http, location.params["code"], verifier)
    assert first.status_code == 200, first.text
    token = first.json()
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == 3600
    assert token["scope"] == "api"
    assert token["refresh_token"]

    replay = exchange(http, location.params["code"], verifier)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    # RFC 6749 4.1.2: a replayed code revokes what it issued.
    assert introspect(http, token["access_token"]) == {"active": False}


@pytest.mark.parametrize("verifier", ["x" * 64, None, "short"])
def test_bad_or_missing_verifier_is_invalid_grant(http: httpx.Client, verifier: str | None) -> None:
    _, challenge = pkce_pair()
    resp = exchange(http, authorize(http, challenge).params["code"], verifier)
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_grant"


def test_confidential_client_may_skip_pkce_with_post_auth(http: httpx.Client) -> None:
    code = authorize(http, None).params["code"]
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    assert http.post("/oauth/token", data=data).status_code == 200


def test_plain_pkce_is_refused(http: httpx.Client) -> None:
    params = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "state": "p",
        "code_challenge": "a" * 43,
        "code_challenge_method": "plain",
    }
    resp = http.get("/oauth/authorize", params=params)
    assert resp.status_code == 302
    assert httpx.URL(resp.headers["location"]).params["error"] == "invalid_request"


def test_deny_redirects_access_denied(http: httpx.Client) -> None:
    location = authorize(http, None, decision="deny", state="d-1")
    assert location.params["error"] == "access_denied"
    assert location.params["state"] == "d-1"
    assert "code" not in location.params


def test_wrong_client_secret_is_401(http: httpx.Client) -> None:
    code = authorize(http, None).params["code"]
    resp = http.post(
        "/oauth/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI},
        auth=(CLIENT_ID, "nope"),
    )
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_client"


# --------------------------------------------------------------------- refresh


def test_refresh_rotates_and_old_token_dies(http: httpx.Client) -> None:
    old = new_tokens(http)
    refresh = {"grant_type": "refresh_token", "refresh_token": old["refresh_token"]}
    first = http.post("/oauth/token", data=refresh, auth=AUTH)
    assert first.status_code == 200, first.text
    new = first.json()
    assert new["refresh_token"] != old["refresh_token"]
    assert new["access_token"] != old["access_token"]
    assert http.get("/api/me", headers=bearer(new["access_token"])).status_code == 200

    again = http.post("/oauth/token", data=refresh, auth=AUTH)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"

    newer = {"grant_type": "refresh_token", "refresh_token": new["refresh_token"]}
    assert http.post("/oauth/token", data=newer, auth=AUTH).status_code == 200


def test_a_spent_refresh_token_presented_again_revokes_the_grant_with_reuse_detection(
    http: httpx.Client, provider: SandboxProvider
) -> None:
    """As providers with reuse detection do: the set a concurrent refresh just got dies
    too, while another grant of the same client lives on."""
    client = {"client_id": "reuse-detecting", "client_secret": "s3cret-reuse"}
    created = http.post("/_sandbox/clients", json={**client, "revoke_on_reuse": True})
    assert created.status_code == 201
    auth = (client["client_id"], client["client_secret"])
    old = provider.issue_token(client["client_id"], "alice")
    other = provider.issue_token(client["client_id"], "bob")
    spend = {"grant_type": "refresh_token", "refresh_token": old["refresh_token"]}
    new = http.post("/oauth/token", data=spend, auth=auth).json()
    newer = http.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": new["refresh_token"]},
        auth=auth,
    ).json()
    reuses = provider.reuses()

    again = http.post("/oauth/token", data=spend, auth=auth)

    assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")
    assert provider.reuses() == reuses + 1
    assert http.get("/api/me", headers=bearer(newer["access_token"])).status_code == 401
    kept = {"grant_type": "refresh_token", "refresh_token": newer["refresh_token"]}
    assert http.post("/oauth/token", data=kept, auth=auth).json()["error"] == "invalid_grant"
    assert http.get("/api/me", headers=bearer(other["access_token"])).status_code == 200


def test_without_reuse_detection_a_spent_refresh_token_is_only_counted(
    http: httpx.Client, provider: SandboxProvider
) -> None:
    old = new_tokens(http)
    spend = {"grant_type": "refresh_token", "refresh_token": old["refresh_token"]}
    new = http.post("/oauth/token", data=spend, auth=AUTH).json()
    reuses = provider.reuses()

    assert http.post("/oauth/token", data=spend, auth=AUTH).status_code == 400

    assert provider.reuses() == reuses + 1
    assert http.get("/api/me", headers=bearer(new["access_token"])).status_code == 200


# ------------------------------------------------------- introspection / revocation


def test_introspect_active_then_revoked(http: httpx.Client) -> None:
    token = new_tokens(http)
    info = introspect(http, token["access_token"])
    assert info["active"] is True
    assert info["sub"] == "alice"
    assert info["client_id"] == CLIENT_ID
    assert info["scope"] == "api"
    assert isinstance(info["exp"], int)

    resp = http.post("/oauth/revoke", data={"token": token["refresh_token"]}, auth=AUTH)
    assert resp.status_code == 200
    assert introspect(http, token["access_token"]) == {"active": False}
    assert introspect(http, token["refresh_token"]) == {"active": False}
    assert introspect(http, "never-issued") == {"active": False}


def test_expired_access_token_keeps_refresh(http: httpx.Client, provider: SandboxProvider) -> None:
    token = new_tokens(http)
    assert provider.expire_access_token(token["access_token"])
    assert introspect(http, token["access_token"]) == {"active": False}
    assert introspect(http, token["refresh_token"])["active"] is True
    refresh = {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]}
    assert http.post("/oauth/token", data=refresh, auth=AUTH).status_code == 200


# ----------------------------------------------------------------- protected API


def test_api_me_then_401_after_revoke(http: httpx.Client, provider: SandboxProvider) -> None:
    token = provider.issue_token(CLIENT_ID, username="bob")
    resp = http.get("/api/me", headers=bearer(token["access_token"]))
    assert resp.status_code == 200
    assert resp.json() == {"sub": "bob", "name": "Bob", "email": "bob@sandbox.relink.test"}

    assert provider.revoke_token(token["access_token"])
    resp = http.get("/api/me", headers=bearer(token["access_token"]))
    assert resp.status_code == 401
    challenge = resp.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="invalid_token"' in challenge
    assert resp.json()["error"] == "invalid_token"


def test_records_are_deterministic(http: httpx.Client, provider: SandboxProvider) -> None:
    headers = bearer(provider.issue_token(CLIENT_ID)["access_token"])
    full = http.get("/api/records", params={"path": "sales"}, headers=headers).json()
    rows = full["data"]["records"]
    assert len(rows) == 25
    assert set(rows[0]) == {"id", "name", "amount", "created_at"}
    limited = http.get("/api/records", params={"path": "sales", "limit": 3}, headers=headers)
    assert limited.json()["data"]["records"] == rows[:3]
    assert http.get("/api/records", params={"path": "sales"}).status_code == 401


def test_api_key_endpoints(http: httpx.Client) -> None:
    assert http.get("/apikey/me", headers={"X-API-Key": GOOD_KEY}).status_code == 200
    assert http.get("/apikey/me", headers=bearer(GOOD_KEY)).status_code == 200
    assert http.get("/apikey/me").status_code == 401
    assert http.get("/apikey/me", headers={"X-API-Key": "unknown"}).status_code == 401
    assert http.get("/apikey/me", headers={"X-API-Key": BLOCKED_KEY}).status_code == 403
    records = http.get("/apikey/records", params={"limit": 2}, headers={"X-API-Key": GOOD_KEY})
    assert len(records.json()["data"]["records"]) == 2


def test_parallel_token_checks(http: httpx.Client, provider: SandboxProvider) -> None:
    headers = bearer(provider.issue_token(CLIENT_ID)["access_token"])

    def probe(_: int) -> int:
        return http.get("/api/me", headers=headers).status_code  # httpx.Client is thread-safe

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(probe, range(40))) == {200}


# ------------------------------------------------------------------- admin + faults


def test_admin_endpoints(http: httpx.Client) -> None:
    resp = http.post("/_sandbox/tokens", json={"client_id": CLIENT_ID, "username": "carol"})
    assert resp.status_code == 200
    token = resp.json()
    assert http.get("/api/me", headers=bearer(token["access_token"])).json()["sub"] == "carol"
    assert http.post("/_sandbox/revoke", json={"username": "carol"}).json() == {"revoked": 1}
    assert http.get("/api/me", headers=bearer(token["access_token"])).status_code == 401
    assert http.post("/_sandbox/tokens", json={"client_id": "nobody"}).status_code == 400
    assert http.get("/_sandbox/stats").json()["/_sandbox/tokens"] >= 2


def test_fault_error500_and_rate_limit(http: httpx.Client, provider: SandboxProvider) -> None:
    provider.set_fault("error500", path_prefix="/apikey/", times=1)
    assert http.get("/apikey/me", headers={"X-API-Key": GOOD_KEY}).status_code == 500
    assert http.get("/apikey/me", headers={"X-API-Key": GOOD_KEY}).status_code == 200

    resp = http.post("/_sandbox/fault", json={"mode": "rate_limit", "path_prefix": "/apikey/"})
    assert resp.status_code == 200  # admin paths are never faulted
    for _ in range(2):
        limited = http.get("/apikey/me", headers={"X-API-Key": GOOD_KEY})
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == "1"
    assert http.post("/_sandbox/fault", json={"mode": "ok"}).status_code == 200
    assert http.get("/apikey/me", headers={"X-API-Key": GOOD_KEY}).status_code == 200


def test_fault_slow_answers_normally(http: httpx.Client, provider: SandboxProvider) -> None:
    provider.set_fault("slow", path_prefix="/apikey/", delay=0.3, times=1)
    started = time.monotonic()
    resp = http.get("/apikey/me", headers={"X-API-Key": GOOD_KEY})
    assert resp.status_code == 200
    assert time.monotonic() - started >= 0.3


def test_fault_drop_closes_connection(http: httpx.Client, provider: SandboxProvider) -> None:
    provider.set_fault("drop", path_prefix="/api/", times=1)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        http.get("/api/me")
    assert http.get("/api/me").status_code == 401  # fault used up, server still alive


def test_fault_answer_sends_the_given_status_body_and_headers(http: httpx.Client) -> None:
    fault = {
        "mode": "answer",
        "path_prefix": "/api/",
        "status": 403,
        "body": "Bad_OAuth_Token",
        "headers": {"Content-Type": "text/plain"},
        "times": 1,
    }
    assert http.post("/_sandbox/fault", json=fault).status_code == 200
    answer = http.get("/api/me")
    assert (answer.status_code, answer.text) == (403, "Bad_OAuth_Token")
    assert answer.headers["content-type"] == "text/plain"
    assert http.get("/api/me").status_code == 401  # used up: the real answer again
    bad = {"mode": "answer", "status": 1000}
    assert http.post("/_sandbox/fault", json=bad).status_code == 400


def test_a_client_without_the_refresh_grant_is_refused_unauthorized_client(
    http: httpx.Client, provider: SandboxProvider
) -> None:
    client = {"client_id": "no-refresh", "client_secret": "s3cret-no-refresh"}
    created = http.post("/_sandbox/clients", json={**client, "grant_types": ["authorization_code"]})
    assert created.status_code == 201
    token = provider.issue_token("no-refresh")
    refused = http.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"]},
        auth=("no-refresh", "s3cret-no-refresh"),
    )
    assert (refused.status_code, refused.json()["error"]) == (400, "unauthorized_client")


def test_unknown_fault_mode_is_rejected(provider: SandboxProvider) -> None:
    with pytest.raises(ValueError):
        provider.set_fault("explode")  # type: ignore[arg-type]


# ------------------------------------------------------------ lifecycle / state


def test_restart_on_same_port() -> None:
    server = SandboxServer().start()
    url, port = server.url, server.port
    assert httpx.get(f"{url}/_sandbox/health").status_code == 200
    server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/_sandbox/health")
    server.start()
    try:
        assert server.port == port
        assert httpx.get(f"{url}/_sandbox/health").status_code == 200
    finally:
        server.stop()


def test_state_file_survives_restart(tmp_path: Path) -> None:
    state = tmp_path / "sandbox.json"
    first = SandboxProvider(state_file=state)
    first.register_client(CLIENT_ID, CLIENT_SECRET, [REDIRECT_URI])
    token = first.issue_token(CLIENT_ID, username="dave")
    revoked = first.issue_token(CLIENT_ID, username="erin")
    first.revoke_token(revoked["refresh_token"])

    with SandboxServer(SandboxProvider(state_file=state)) as server:
        me = httpx.get(f"{server.url}/api/me", headers=bearer(token["access_token"]))
        assert me.json()["sub"] == "dave"
        gone = httpx.get(f"{server.url}/api/me", headers=bearer(revoked["access_token"]))
        assert gone.status_code == 401
        refresh = {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]}
        assert httpx.post(f"{server.url}/oauth/token", data=refresh, auth=AUTH).status_code == 200


def test_demo_client_accepts_loopback_callbacks_only() -> None:
    client = seed_demo(SandboxProvider())
    assert client.client_id == DEMO_CLIENT_ID
    for ok in (
        "http://127.0.0.1:8000/oauth/callback",
        "http://127.0.0.1:5173/oauth/callback",
        "http://localhost:3000/oauth/callback",
    ):
        assert client.check_redirect_uri(ok), ok
    for bad in (
        "http://example.com:8000/oauth/callback",
        "http://127.0.0.1:8000/other",
        "https://localhost:8000/oauth/callback",
        "http://user@127.0.0.1:8000/oauth/callback",
        "http://127.0.0.1:8000/oauth/callback#frag",
        "http://127.0.0.1/oauth/callback",
    ):
        assert not client.check_redirect_uri(bad), bad


def test_openid_discovery_names_the_issuer_and_its_public_keys(http: httpx.Client) -> None:
    found = http.get("/.well-known/openid-configuration").json()
    assert found["issuer"] == str(http.base_url).rstrip("/")
    keys = http.get("/oauth/jwks").json()["keys"]
    assert [k["kty"] for k in keys] == ["RSA"]
    assert not {"d", "p", "q"} & set(keys[0])  # public only
