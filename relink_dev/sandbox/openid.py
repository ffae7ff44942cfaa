"""OpenID Connect in the sandbox, through Authlib's `OpenIDCode` extension: an
authorization-code grant whose scope has ``openid`` also answers a signed ID token (RS256,
the provider's key; `sub` the username, `email`, `name`), and the provider publishes its
keys (``/oauth/jwks``) and discovery document (``/.well-known/openid-configuration``).
The issuer is the URL the sandbox is reached at. For tests, `IdTokenFault` makes the next
ID tokens forged (signed by another key) or tampered (claims changed after signing)."""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import TYPE_CHECKING, Any, Literal

from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from flask import Flask, jsonify, request
from joserfc.jwk import KeySet, RSAKey

from .models import SandboxAuthorizationCode, SandboxClient, SandboxUser

if TYPE_CHECKING:
    from .provider import SandboxProvider

IdTokenFault = Literal["forged", "tampered"]
ID_TOKEN_LIFETIME = 300
ALGORITHM = "RS256"


def issuer() -> str:
    """The sandbox's URL as the current request reached it (``http://127.0.0.1:8765``)."""
    return request.host_url.rstrip("/")


class SigningKeys:
    """The provider's RSA key (made on first use) and the ID-token fault, if any."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: RSAKey | None = None
        self._fault: IdTokenFault | None = None
        self._fault_times: int | None = None

    @property
    def key(self) -> RSAKey:
        with self._lock:
            if self._key is None:
                self._key = RSAKey.generate_key(2048, parameters={"kid": "sandbox-1"})
            return self._key

    def public(self) -> dict[str, Any]:
        return KeySet([self.key]).as_dict(private=False)

    def set_fault(self, fault: IdTokenFault | None, times: int | None = None) -> None:
        with self._lock:
            self._fault, self._fault_times = fault, times

    def take_fault(self) -> IdTokenFault | None:
        with self._lock:
            fault = self._fault
            if fault is not None and self._fault_times is not None:
                self._fault_times -= 1
                if self._fault_times <= 0:
                    self._fault, self._fault_times = None, None
            return fault


class SandboxOpenIDCode(OpenIDCode):
    """Authlib's OpenID extension of the code grant, keyed and claimed by the provider."""

    def __init__(self, keys: SigningKeys) -> None:
        super().__init__(require_nonce=False)
        self.keys = keys

    def resolve_client_private_key(self, client: SandboxClient) -> RSAKey:
        return self.keys.key

    def get_client_algorithm(self, client: SandboxClient) -> str:
        return ALGORITHM

    def get_encode_header(self, client: SandboxClient) -> dict[str, str]:
        return {"alg": ALGORITHM, "kid": str(self.keys.key.kid)}

    def get_client_claims(self, client: SandboxClient) -> dict[str, Any]:
        now = int(time.time())
        return {
            "iss": issuer(),
            "aud": client.get_client_id(),
            "iat": now,
            "exp": now + ID_TOKEN_LIFETIME,
        }

    def get_authorization_code_claims(self, code: SandboxAuthorizationCode) -> dict[str, Any]:
        return {}  # no nonce, auth_time or acr is kept with a sandbox code

    def exists_nonce(self, nonce: str, request: Any) -> bool:
        return False

    def generate_user_info(self, user: SandboxUser, scope: str) -> UserInfo:
        return UserInfo(sub=user.username, name=user.display_name, email=user.email)

    def encode_id_token(self, token: dict[str, Any], request: Any) -> str:
        signed = super().encode_id_token(token, request)
        fault = self.keys.take_fault()
        if fault == "forged":  # the same claims, signed by a key the JWKS does not hold
            impostor = SandboxOpenIDCode(SigningKeys())
            return impostor.encode_id_token_with(token, request)
        if fault == "tampered":  # another account's claims under the real signature
            return _tampered(signed, sub="intruder", email="intruder@sandbox.relink.test")
        return signed

    def encode_id_token_with(self, token: dict[str, Any], request: Any) -> str:
        return super().encode_id_token(token, request)


def _tampered(signed: str, **claims: str) -> str:
    header, payload, signature = signed.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(claims)
    changed = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{header}.{changed}.{signature}"


def add_openid_routes(app: Flask, provider: SandboxProvider) -> None:
    @app.get("/oauth/jwks")
    def jwks() -> Any:
        return jsonify(provider.signing_keys.public())

    @app.get("/.well-known/openid-configuration")
    def discovery() -> Any:
        base = issuer()
        return jsonify(
            issuer=base,
            authorization_endpoint=f"{base}/oauth/authorize",
            token_endpoint=f"{base}/oauth/token",
            introspection_endpoint=f"{base}/oauth/introspect",
            revocation_endpoint=f"{base}/oauth/revoke",
            userinfo_endpoint=f"{base}/api/me",
            jwks_uri=f"{base}/oauth/jwks",
            response_types_supported=["code"],
            subject_types_supported=["public"],
            id_token_signing_alg_values_supported=[ALGORITHM],
            scopes_supported=["openid", "email", "profile", "api"],
            code_challenge_methods_supported=["S256"],
        )
