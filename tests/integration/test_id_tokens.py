"""ID token verification (connectors.oauth2.identity) against a JWKS served on loopback:
only a token signed by the provider's key, from its issuer, for our client, unexpired
names the account; anything else refuses the sign-in in one line without the token."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, OctKey, RSAKey

from connectors.base import AuthFailed, CheckContext, Unreachable
from connectors.oauth2.identity import grant_identity
from connectors.oauth2.plan import OAuthPlan
from relink.domain.identity import Identity

NOW = datetime(2026, 12, 5, 13, 0, tzinfo=UTC)
ISSUER = "https://id.acme.test"
CLIENT = "relink-app"
KEY = RSAKey.generate_key(2048, parameters={"kid": "k1"})
OTHER_KEY = RSAKey.generate_key(2048, parameters={"kid": "k1"})  # same kid, not the provider's


@pytest.fixture(scope="module")
def jwks_url() -> Iterator[str]:
    body = json.dumps(KeySet([KEY]).as_dict(private=False)).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/jwks" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body if self.path == "/jwks" else b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/jwks"
    server.shutdown()
    server.server_close()


def plan(jwks_uri: str) -> OAuthPlan:
    return OAuthPlan(
        provider="oauth2",
        authorize_url=None,
        token_url="https://id.acme.test/token",
        introspection_url=None,
        revocation_url=None,
        probe_url=None,
        api_base_url=None,
        scope="openid email",
        authorize_params=(),
        client_id=CLIENT,
        client_secret="client-secret",
        auth_method="client_secret_post",
        issuer=ISSUER,
        jwks_uri=jwks_uri,
    )


def id_token(key: Any = KEY, alg: str = "RS256", **claims: Any) -> str:
    now = int(NOW.timestamp())
    payload = {"iss": ISSUER, "aud": CLIENT, "sub": "00u-ann", "email": "ann@acme.test"}
    payload |= {"iat": now, "exp": now + 3600, **claims}
    return jwt.encode({"alg": alg, "kid": "k1"}, payload, key)


def verify(token: str, jwks_uri: str) -> Identity | None:
    ctx = CheckContext(now=NOW, timeout=5.0)
    return asyncio.run(grant_identity({"id_token": token}, plan(jwks_uri), ctx))


def test_a_valid_id_token_names_its_subject_and_email(jwks_url: str) -> None:
    assert verify(id_token(), jwks_url) == Identity("00u-ann", "ann@acme.test")


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(lambda: id_token(OTHER_KEY), id="forged-signature"),
        pytest.param(lambda: tamper(id_token(), sub="00u-max"), id="tampered-claims"),
        pytest.param(lambda: id_token(iss="https://evil.test"), id="other-issuer"),
        pytest.param(lambda: id_token(aud="another-app"), id="other-audience"),
        pytest.param(lambda: id_token(exp=int(NOW.timestamp()) - 3600), id="expired"),
        pytest.param(
            lambda: id_token(OctKey.import_key(b"client-secret" * 3), alg="HS256"),
            id="symmetric",
        ),
    ],
)
def test_an_id_token_that_fails_any_check_refuses_the_sign_in_in_one_line(
    jwks_url: str, token: Any
) -> None:
    value = token()
    with pytest.raises(AuthFailed) as refused:
        verify(value, jwks_url)
    assert refused.value.code == "invalid_id_token"
    assert "\n" not in refused.value.message and value not in refused.value.message


def test_keys_that_cannot_be_fetched_are_an_outage_not_a_refusal(jwks_url: str) -> None:
    with pytest.raises(Unreachable):
        verify(id_token(), jwks_url.replace("/jwks", "/missing"))


def test_without_an_id_token_salesforce_identity_url_is_the_subject(jwks_url: str) -> None:
    url = "https://login.salesforce.com/id/00D000000000001/005000000000001"
    ctx = CheckContext(now=NOW, timeout=5.0)
    found = asyncio.run(grant_identity({"id": url}, plan(jwks_url), ctx))
    assert found == Identity(url, url)


def tamper(token: str, **claims: Any) -> str:
    """The same signature over changed claims."""
    import base64

    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(claims)
    changed = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{header}.{changed}.{signature}"
