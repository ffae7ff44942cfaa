"""Loopback OAuth 2.0 sandbox provider built on Authlib's Flask server components.

Everything lives in memory behind one re-entrant lock (the WSGI server is threaded);
an optional JSON ``state_file`` keeps clients, tokens and API keys across restarts.

Refresh tokens rotate: a refresh grant retires the token it used. A client registered
with ``revoke_on_reuse`` gets reuse detection, as providers with rotating refresh tokens
do it: a retired refresh token presented again revokes the whole grant (every token set
descended from the same consent) and is counted by `SandboxProvider.reuses`. A slow
provider is the ``"slow"`` fault with a ``delay`` (e.g. on ``/oauth/token``).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import secrets
import socket
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from authlib.common.security import generate_token
from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.oauth2 import OAuth2Error, OAuth2Request
from authlib.oauth2.rfc6749 import (
    AuthorizationCodeMixin,
    ClientMixin,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    TokenMixin,
    grants,
)
from authlib.oauth2.rfc6750 import BearerTokenGenerator, BearerTokenValidator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge, create_s256_code_challenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from flask import Flask, Response, jsonify, render_template_string, request

__all__ = [
    "ADMIN_PREFIX",
    "DEFAULT_SCOPE",
    "DEMO_API_KEY",
    "DEMO_CLIENT_ID",
    "DEMO_CLIENT_SECRET",
    "DEMO_REDIRECT_URI",
    "FaultMode",
    "SandboxClient",
    "SandboxProvider",
    "SandboxToken",
    "SandboxUser",
    "demo_records",
    "is_loopback_callback",
    "seed_demo",
]

FaultMode = Literal["ok", "error500", "rate_limit", "slow", "drop", "answer"]
FAULT_MODES: frozenset[str] = frozenset(get_args(FaultMode))
TokenKind = Literal["access_token", "refresh_token"]
# When an authorization-code grant includes a refresh token: always; only when the
# authorization request asked for offline access (``access_type=offline``, as Google
# does); never (a provider whose access tokens last).
RefreshTokens = Literal["always", "offline", "never"]

DEFAULT_SCOPE = "api profile"
ADMIN_PREFIX = "/_sandbox/"
DEMO_CLIENT_ID = "relink-demo"
DEMO_CLIENT_SECRET = "relink-demo-secret"  # public demo credential, not a secret
DEMO_REDIRECT_URI = "http://127.0.0.1:8000/oauth/callback"
DEMO_API_KEY = "demo-api-key"
LOOPBACK_CALLBACK_PATH = "/oauth/callback"
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_STATE_VERSION = 1
_RECORDS_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
_CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
_GRANT_TYPES = ["authorization_code", "refresh_token"]

# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class SandboxUser:
    """Resource owner; the consent page only asks for a username."""

    username: str

    def get_user_id(self) -> str:
        """Authlib hook: stable user id."""
        return self.username

    @property
    def display_name(self) -> str:
        """Human name shown by ``/api/me``."""
        if self.username == "demo":
            return "Demo User"
        return self.username.replace(".", " ").replace("_", " ").title()


@dataclass
class SandboxClient(ClientMixin):
    """Confidential OAuth client (client_secret_basic / client_secret_post)."""

    client_id: str
    client_secret: str
    redirect_uris: list[str]
    scope: str = DEFAULT_SCOPE
    allow_loopback_redirects: bool = False
    # the grants the client may use; one left out answers unauthorized_client
    grant_types: list[str] = field(default_factory=lambda: list(_GRANT_TYPES))
    refresh_tokens: RefreshTokens = "always"
    # The access token of an authorization-code grant is inactive from the start (as after
    # a slow callback or under clock skew); its refresh token works.
    inactive_code_tokens: bool = False
    # Reuse detection: a retired (rotated) refresh token presented again revokes its grant.
    revoke_on_reuse: bool = False

    def grants_refresh_token(self, offline: bool) -> bool:
        return self.refresh_tokens == "always" or (self.refresh_tokens == "offline" and offline)

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.redirect_uris[0] if self.redirect_uris else None

    def get_allowed_scope(self, scope: str | None) -> str | None:
        """Default to the full client scope; ``None`` (invalid_scope) if nothing fits."""
        if not scope:
            return self.scope
        allowed = set(self.scope.split())
        granted = [s for s in scope.split() if s in allowed]
        return " ".join(granted) if granted else None

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        if redirect_uri in self.redirect_uris:
            return True
        return self.allow_loopback_redirects and is_loopback_callback(redirect_uri)

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(self.client_secret.encode(), client_secret.encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in _CLIENT_AUTH_METHODS

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types


@dataclass
class SandboxAuthorizationCode(AuthorizationCodeMixin):
    """A single-use, short-lived authorization code."""

    code: str
    client_id: str
    username: str
    scope: str
    redirect_uri: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    expires_at: float
    offline: bool = False  # the authorization request asked access_type=offline

    def get_redirect_uri(self) -> str | None:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def is_expired(self) -> bool:
        return time.time() >= self.expires_at


@dataclass
class SandboxToken(TokenMixin):
    """One token set (access + refresh); the Authlib model methods speak for the access token."""

    access_token: str
    refresh_token: str | None
    client_id: str
    username: str
    scope: str
    issued_at: float
    expires_at: float
    refresh_expires_at: float | None = None
    access_revoked: bool = False
    refresh_revoked: bool = False
    grant_id: str = ""  # shared by every token set descended from one consent
    rotated: bool = False  # the refresh token was spent by a refresh grant

    def check_client(self, client: ClientMixin) -> bool:
        return self.client_id == client.get_client_id()

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return int(self.expires_at - self.issued_at)

    def is_expired(self) -> bool:
        return time.time() >= self.expires_at

    def is_revoked(self) -> bool:
        return self.access_revoked

    def get_user(self) -> SandboxUser:
        return SandboxUser(self.username)

    def refresh_expired(self) -> bool:
        """True once the refresh token passed its (optional) lifetime."""
        return self.refresh_expires_at is not None and time.time() >= self.refresh_expires_at

    def is_dead(self) -> bool:
        """Neither half can ever be used again (safe to drop from the state file)."""
        access_dead = self.access_revoked or self.is_expired()
        refresh_dead = not self.refresh_token or self.refresh_revoked or self.refresh_expired()
        return access_dead and refresh_dead


@dataclass(frozen=True)
class _TokenHandle(TokenMixin):
    """A token string as presented to introspection/revocation: access or refresh half."""

    token: SandboxToken
    kind: TokenKind

    def check_client(self, client: ClientMixin) -> bool:
        return self.token.check_client(client)

    def get_scope(self) -> str:
        return self.token.scope

    def is_expired(self) -> bool:
        if self.kind == "refresh_token":
            return self.token.refresh_expired()
        return self.token.is_expired()

    def is_revoked(self) -> bool:
        if self.kind == "refresh_token":
            return self.token.refresh_revoked
        return self.token.access_revoked

    def expires_at(self) -> float | None:
        if self.kind == "refresh_token":
            return self.token.refresh_expires_at
        return self.token.expires_at


@dataclass
class _Fault:
    mode: FaultMode
    path_prefix: str = "/"
    delay: float = 0.0
    times: int | None = None
    # mode "answer": this status, body and headers instead of the real answer
    status: int = 200
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    def matches(self, path: str) -> bool:
        return path.startswith(self.path_prefix) and not path.startswith(ADMIN_PREFIX)


def is_loopback_callback(uri: str) -> bool:
    """``http://127.0.0.1:<port>/oauth/callback`` (or localhost / [::1]), nothing else."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return False
    return (
        parts.scheme == "http"
        and parts.hostname in _LOOPBACK_NAMES
        and port is not None
        and parts.username is None
        and parts.password is None
        and parts.path == LOOPBACK_CALLBACK_PATH
        and not parts.fragment
    )


def demo_records(name: str, limit: int | None = None, total: int = 25) -> list[dict[str, Any]]:
    """Deterministic demo rows for dataset refresh, ``total`` per ``name``."""
    count = total if limit is None else max(0, min(limit, total))
    return [_demo_record(name, i) for i in range(1, count + 1)]


def _demo_record(name: str, index: int) -> dict[str, Any]:
    seed = zlib.crc32(f"{name}:{index}".encode())
    created = _RECORDS_EPOCH + timedelta(hours=index * 7, minutes=seed % 60)
    return {
        "id": index,
        "name": f"{name} #{index}",
        "amount": round((seed % 100_000) / 100, 2),
        "created_at": created.isoformat().replace("+00:00", "Z"),
    }


# ------------------------------------------------------------------ Authlib plumbing


class _SandboxAuthorizationServer(AuthorizationServer):
    """Authlib's Flask AuthorizationServer wired to one :class:`SandboxProvider`."""

    def __init__(self, app: Flask, provider: SandboxProvider) -> None:
        self.provider = provider
        super().__init__(app, query_client=provider.get_client, save_token=provider._save_token)
        # Replace the config-driven default generator: always issue refresh tokens and
        # read the access-token lifetime from the provider at issue time.
        self.register_token_generator("default", provider._token_generator)


def _provider_of(server: Any) -> SandboxProvider:
    return server.provider  # type: ignore[no-any-return]


class _S256CodeChallenge(CodeChallenge):
    """PKCE limited to S256; with a stored challenge every verifier failure is invalid_grant."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    CODE_CHALLENGE_METHODS = {
        "S256": lambda verifier, challenge: secrets.compare_digest(
            create_s256_code_challenge(verifier), challenge
        )
    }

    def validate_code_verifier(self, grant: grants.AuthorizationCodeGrant, result: Any) -> None:
        challenge = self.get_authorization_code_challenge(grant.request.authorization_code)
        try:
            super().validate_code_verifier(grant, result)
        except InvalidRequestError as exc:
            if not challenge:
                raise
            raise InvalidGrantError(description=exc.description) from exc


class _AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = _CLIENT_AUTH_METHODS

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        _provider_of(self.server)._store_code(code, request)

    def query_authorization_code(
        self, code: str, client: SandboxClient
    ) -> SandboxAuthorizationCode | None:
        return _provider_of(self.server)._find_code(code, client)

    def delete_authorization_code(self, authorization_code: SandboxAuthorizationCode) -> None:
        _provider_of(self.server)._consume_code(authorization_code)

    def authenticate_user(self, authorization_code: SandboxAuthorizationCode) -> SandboxUser:
        return SandboxUser(authorization_code.username)

    def generate_token(
        self,
        user: Any = None,
        scope: str | None = None,
        grant_type: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        """A refresh token only when the client's `refresh_tokens` policy grants one."""
        client: SandboxClient = self.request.client
        offline = self.request.authorization_code.offline
        return super().generate_token(
            user=user,
            scope=scope,
            grant_type=grant_type,
            expires_in=expires_in,
            include_refresh_token=include_refresh_token and client.grants_refresh_token(offline),
        )


class _RefreshTokenGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = _CLIENT_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True  # rotation

    def authenticate_refresh_token(self, refresh_token: str) -> SandboxToken | None:
        return _provider_of(self.server)._find_refresh(refresh_token)

    def authenticate_user(self, refresh_token: SandboxToken) -> SandboxUser:
        return refresh_token.get_user()

    def revoke_old_credential(self, refresh_token: SandboxToken) -> None:
        _provider_of(self.server)._retire_refresh(refresh_token)


class _IntrospectionEndpoint(IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = _CLIENT_AUTH_METHODS

    def query_token(self, token_string: str, token_type_hint: str | None) -> _TokenHandle | None:
        return _provider_of(self.server)._find_handle(token_string, token_type_hint)

    def check_permission(self, token: _TokenHandle, client: SandboxClient, request: Any) -> bool:
        return True  # any registered client may act as a resource server here

    def introspect_token(self, token: _TokenHandle) -> dict[str, Any]:
        return _introspection_payload(token)


class _RevocationEndpoint(RevocationEndpoint):
    CLIENT_AUTH_METHODS = _CLIENT_AUTH_METHODS

    def query_token(self, token_string: str, token_type_hint: str | None) -> _TokenHandle | None:
        return _provider_of(self.server)._find_handle(token_string, token_type_hint)

    def revoke_token(self, token: _TokenHandle, request: Any) -> None:
        _provider_of(self.server)._revoke_handle(token)


class _BearerValidator(BearerTokenValidator):
    def __init__(self, provider: SandboxProvider) -> None:
        super().__init__(realm="relink-sandbox")
        self._provider = provider

    def authenticate_token(self, token_string: str) -> SandboxToken | None:
        return self._provider._find_access(token_string)


def _introspection_payload(handle: _TokenHandle) -> dict[str, Any]:
    token = handle.token
    payload: dict[str, Any] = {
        "active": True,
        "client_id": token.client_id,
        "username": token.username,
        "sub": token.username,
        "scope": token.scope,
        "token_type": "Bearer" if handle.kind == "access_token" else "refresh_token",
        "iat": int(token.issued_at),
    }
    exp = handle.expires_at()
    if exp is not None:
        payload["exp"] = int(exp)
    return payload


def _random_access_token(**_: Any) -> str:
    return generate_token(42)


def _random_refresh_token(**_: Any) -> str:
    return generate_token(48)


# ------------------------------------------------------------------------ provider


class SandboxProvider:
    """In-memory OAuth provider + demo API; ``wsgi_app`` is what the server runs."""

    def __init__(
        self,
        state_file: Path | str | None = None,
        *,
        access_token_lifetime: int = 3600,
        refresh_token_lifetime: int | None = None,
        code_lifetime: int = 300,
        records_per_path: int = 25,
    ) -> None:
        self.access_token_lifetime = access_token_lifetime
        self.refresh_token_lifetime = refresh_token_lifetime
        self.code_lifetime = code_lifetime
        self.records_per_path = records_per_path
        self.state_file = Path(state_file) if state_file is not None else None
        self._lock = threading.RLock()
        self._clients: dict[str, SandboxClient] = {}
        self._codes: dict[str, SandboxAuthorizationCode] = {}
        self._code_tokens: dict[str, str] = {}  # used code -> access token it produced
        self._by_access: dict[str, SandboxToken] = {}
        self._by_refresh: dict[str, SandboxToken] = {}
        self._api_keys: dict[str, bool] = {}  # key -> forbidden
        self._fault: _Fault | None = None
        self._stats: Counter[str] = Counter()
        self._reuses = 0
        self._token_generator = BearerTokenGenerator(
            _random_access_token, _random_refresh_token, self._expires_in
        )
        if self.state_file is not None and self.state_file.exists():
            self._load()
        self.app = _create_app(self)
        self.wsgi_app = _FaultMiddleware(self, self.app.wsgi_app)

    # -- clients / api keys ---------------------------------------------------------

    def register_client(
        self,
        client_id: str,
        client_secret: str,
        redirect_uris: list[str],
        scope: str = DEFAULT_SCOPE,
        *,
        allow_loopback_redirects: bool = False,
        grant_types: Iterable[str] = _GRANT_TYPES,
        refresh_tokens: RefreshTokens = "always",
        inactive_code_tokens: bool = False,
        revoke_on_reuse: bool = False,
    ) -> SandboxClient:
        """Register (or replace: a new secret refuses the old one) a confidential client."""
        client = SandboxClient(
            client_id,
            client_secret,
            list(redirect_uris),
            scope,
            allow_loopback_redirects,
            list(grant_types),
            refresh_tokens,
            inactive_code_tokens,
            revoke_on_reuse,
        )
        with self._lock:
            self._clients[client_id] = client
            self._persist()
        return client

    def get_client(self, client_id: str) -> SandboxClient | None:
        """Look a client up by id (Authlib's ``query_client``)."""
        with self._lock:
            return self._clients.get(client_id)

    def add_api_key(self, key: str) -> None:
        """Accept ``key`` at ``/apikey/*``."""
        self._set_api_key(key, forbidden=False)

    def forbid_api_key(self, key: str) -> None:
        """Known key that answers 403 (e.g. lost permission)."""
        self._set_api_key(key, forbidden=True)

    def remove_api_key(self, key: str) -> None:
        """Forget ``key`` (it answers 401 afterwards)."""
        with self._lock:
            self._api_keys.pop(key, None)
            self._persist()

    def api_key_status(self, key: str | None) -> Literal["ok", "unknown", "forbidden"]:
        """Classify a presented API key."""
        with self._lock:
            forbidden = self._api_keys.get(key) if key else None
        if forbidden is None:
            return "unknown"
        return "forbidden" if forbidden else "ok"

    def _set_api_key(self, key: str, *, forbidden: bool) -> None:
        if not key:
            raise ValueError("API key must not be empty")
        with self._lock:
            self._api_keys[key] = forbidden
            self._persist()

    # -- admin token helpers ----------------------------------------------------------

    def issue_token(
        self,
        client_id: str,
        username: str = "demo",
        scope: str = "api",
        expires_in: int | None = None,
    ) -> dict[str, Any]:
        """Mint a full token set as if from an authorization-code exchange."""
        with self._lock:
            client = self._clients.get(client_id)
            if client is None:
                raise KeyError(f"unknown client {client_id!r}")
            try:
                token = self._token_generator.generate(
                    "authorization_code", client, SandboxUser(username), scope, expires_in
                )
            except InvalidScopeError as exc:
                raise ValueError(f"scope {scope!r} not allowed for {client_id!r}") from exc
            if expires_in is not None:
                token["expires_in"] = expires_in
            self._store_token(token, client_id, username)
            return dict(token)

    def revoke_token(self, token: str) -> bool:
        """Revoke an access token (that half only) or a refresh token (whole set)."""
        with self._lock:
            handle = self._find_handle(token, None)
            if handle is not None:
                self._revoke_handle(handle)
            return handle is not None

    def revoke_user_tokens(self, username: str) -> int:
        """Revoke every token set of ``username``; returns how many."""
        with self._lock:
            victims = [t for t in self._by_access.values() if t.username == username]
            for token in victims:
                token.access_revoked = token.refresh_revoked = True
            self._persist()
            return len(victims)

    def expire_access_token(self, access_token: str) -> bool:
        """Make an access token expired now; its refresh token stays valid."""
        with self._lock:
            token = self._by_access.get(access_token)
            if token is None:
                return False
            token.expires_at = min(token.expires_at, time.time() - 1)
            self._persist()
            return True

    # -- faults & stats -------------------------------------------------------------

    def set_fault(
        self,
        mode: FaultMode,
        *,
        path_prefix: str = "/",
        delay: float = 0.0,
        times: int | None = None,
        status: int = 200,
        body: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Inject a fault for requests under ``path_prefix`` (``"ok"`` clears).

        ``"answer"`` answers with `status`, `body` and `headers` (a 403 with a provider's
        body, a 429 with a Retry-After ...) instead of the real answer."""
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}; expected one of {sorted(FAULT_MODES)}")
        if delay < 0 or (times is not None and times < 1):
            raise ValueError("delay must be >= 0 and times >= 1 (or None)")
        if not 100 <= status <= 599:
            raise ValueError("status must be an HTTP status (100-599)")
        fault = _Fault(mode, path_prefix, delay, times, status, body, dict(headers or {}))
        with self._lock:
            self._fault = None if mode == "ok" else fault

    def clear_fault(self) -> None:
        """Back to normal answers."""
        self.set_fault("ok")

    def stats(self) -> dict[str, int]:
        """Requests seen per path (faulted ones included)."""
        with self._lock:
            return dict(self._stats)

    def reset_stats(self) -> None:
        """Zero the request counters."""
        with self._lock:
            self._stats.clear()

    def reuses(self) -> int:
        """How many times a spent refresh token was presented again (each one revoked its
        grant when the client has ``revoke_on_reuse``)."""
        with self._lock:
            return self._reuses

    def _count(self, path: str) -> None:
        with self._lock:
            self._stats[path] += 1

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            fault = self._fault
            if fault is None or not fault.matches(path):
                return None
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self._fault = None
            return fault

    # -- storage used by the Authlib classes ----------------------------------------

    def _expires_in(self, client: ClientMixin, grant_type: str) -> int:
        return self.access_token_lifetime

    def _save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        with self._lock:
            spent = request.refresh_token  # a refresh grant: the new set continues its grant
            grant_id = spent.grant_id if isinstance(spent, SandboxToken) else None
            self._store_token(
                token, request.client.get_client_id(), request.user.username, grant_id
            )
            code = request.authorization_code
            if code is not None:
                self._code_tokens[code.code] = token["access_token"]
                if request.client.inactive_code_tokens:
                    self._by_access[token["access_token"]].expires_at = time.time() - 1
                    self._persist()

    def _store_token(
        self, token: dict[str, Any], client_id: str, username: str, grant_id: str | None = None
    ) -> None:
        now = time.time()
        lifetime = token.get("expires_in", self.access_token_lifetime)
        refresh_exp = now + self.refresh_token_lifetime if self.refresh_token_lifetime else None
        record = SandboxToken(
            access_token=token["access_token"],
            refresh_token=token.get("refresh_token"),
            client_id=client_id,
            username=username,
            scope=token.get("scope", ""),
            issued_at=now,
            expires_at=now + lifetime,
            refresh_expires_at=refresh_exp,
            grant_id=grant_id or generate_token(16),
        )
        self._index(record)
        self._persist()

    def _index(self, token: SandboxToken) -> None:
        self._by_access[token.access_token] = token
        if token.refresh_token:
            self._by_refresh[token.refresh_token] = token

    def _store_code(self, code: str, request: OAuth2Request) -> None:
        data = request.payload.data
        record = SandboxAuthorizationCode(
            code=code,
            client_id=request.client.get_client_id(),
            username=request.user.username,
            scope=request.scope or "",
            redirect_uri=request.payload.redirect_uri,
            code_challenge=data.get("code_challenge"),
            code_challenge_method=data.get("code_challenge_method"),
            expires_at=time.time() + self.code_lifetime,
            offline=data.get("access_type") == "offline",
        )
        with self._lock:
            self._drop_expired_codes()
            self._codes[code] = record

    def _find_code(self, code: str, client: SandboxClient) -> SandboxAuthorizationCode | None:
        with self._lock:
            if code in self._code_tokens:  # replay: RFC 6749 4.1.2 says revoke what it issued
                self._revoke_code_tokens(code)
                return None
            record = self._codes.get(code)
            if record is None or record.is_expired() or record.client_id != client.client_id:
                return None
            return record

    def _consume_code(self, record: SandboxAuthorizationCode) -> None:
        with self._lock:
            self._codes.pop(record.code, None)
            self._code_tokens.setdefault(record.code, "")

    def _revoke_code_tokens(self, code: str) -> None:
        token = self._by_access.get(self._code_tokens[code])
        if token is not None and not (token.access_revoked and token.refresh_revoked):
            token.access_revoked = token.refresh_revoked = True
            self._persist()

    def _drop_expired_codes(self) -> None:
        for code in [c for c, rec in self._codes.items() if rec.is_expired()]:
            del self._codes[code]

    def _find_access(self, access_token: str) -> SandboxToken | None:
        with self._lock:
            return self._by_access.get(access_token)

    def _find_refresh(self, refresh_token: str) -> SandboxToken | None:
        with self._lock:
            token = self._by_refresh.get(refresh_token)
            if token is not None and token.rotated:
                self._reused(token)
                return None
            if token is None or token.refresh_revoked or token.refresh_expired():
                return None
            return token

    def _reused(self, token: SandboxToken) -> None:
        """A spent refresh token came back: count it, and with reuse detection revoke
        every token set of its grant (the one a concurrent refresh just got included)."""
        self._reuses += 1
        client = self._clients.get(token.client_id)
        if client is None or not client.revoke_on_reuse:
            return
        for other in self._by_access.values():
            if other is token or (token.grant_id and other.grant_id == token.grant_id):
                other.access_revoked = other.refresh_revoked = True
        self._persist()

    def _retire_refresh(self, token: SandboxToken) -> None:
        with self._lock:
            token.refresh_revoked = token.rotated = True
            self._persist()

    def _find_handle(self, value: str, hint: str | None) -> _TokenHandle | None:
        order: tuple[TokenKind, ...] = ("access_token", "refresh_token")
        if hint == "refresh_token":
            order = ("refresh_token", "access_token")
        with self._lock:
            for kind in order:
                index = self._by_access if kind == "access_token" else self._by_refresh
                token = index.get(value)
                if token is not None:
                    return _TokenHandle(token, kind)
        return None

    def _revoke_handle(self, handle: _TokenHandle) -> None:
        with self._lock:
            handle.token.access_revoked = True
            if handle.kind == "refresh_token":
                handle.token.refresh_revoked = True
            self._persist()

    # -- persistence ----------------------------------------------------------------

    def _persist(self) -> None:
        if self.state_file is None:
            return
        with self._lock:
            text = json.dumps(self._snapshot(), indent=1, sort_keys=True)
            _write_private(self.state_file, text)

    def _snapshot(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "clients": [asdict(c) for c in self._clients.values()],
            "tokens": [asdict(t) for t in self._by_access.values() if not t.is_dead()],
            "api_keys": dict(self._api_keys),
        }

    def _load(self) -> None:
        assert self.state_file is not None
        data = json.loads(self.state_file.read_text(encoding="utf-8"))
        if data.get("version") != _STATE_VERSION:
            raise ValueError(f"{self.state_file}: unsupported sandbox state version")
        with self._lock:
            for raw in data.get("clients", []):
                client = SandboxClient(**raw)
                self._clients[client.client_id] = client
            for raw in data.get("tokens", []):
                self._index(SandboxToken(**raw))
            self._api_keys.update({str(k): bool(v) for k, v in data.get("api_keys", {}).items()})


def _write_private(path: Path, text: str) -> None:
    """Atomic write, owner-only (the file holds demo secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def seed_demo(provider: SandboxProvider) -> SandboxClient:
    """Register the ``relink-demo`` client (any loopback callback) and ``demo-api-key``."""
    provider.add_api_key(DEMO_API_KEY)
    return provider.register_client(
        DEMO_CLIENT_ID,
        DEMO_CLIENT_SECRET,
        [DEMO_REDIRECT_URI],
        allow_loopback_redirects=True,
    )


# --------------------------------------------------------------------- fault layer

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _FaultMiddleware:
    """Counts requests and applies the active fault before Flask sees the request."""

    def __init__(self, provider: SandboxProvider, app: WSGIApp) -> None:
        self._provider = provider
        self._app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        self._provider._count(path)
        fault = self._provider._take_fault(path)
        if fault is None:
            return self._app(environ, start_response)
        if fault.delay:
            time.sleep(fault.delay)
        if fault.mode == "drop":
            _drop_connection(environ)
        if fault.mode == "error500":
            return _json_response({"error": "server_error"}, 500)(environ, start_response)
        if fault.mode == "rate_limit":
            resp = _json_response({"error": "rate_limited"}, 429, {"Retry-After": "1"})
            return resp(environ, start_response)
        if fault.mode == "answer":
            answer = Response(fault.body, status=fault.status, headers=fault.headers)
            return answer(environ, start_response)
        return self._app(environ, start_response)  # "slow": answer normally


def _drop_connection(environ: dict[str, Any]) -> None:
    """Close the client socket without a response (werkzeug treats it as a dropped peer)."""
    sock = environ.get("werkzeug.socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    raise ConnectionAbortedError("sandbox fault: drop")


def _json_response(
    body: dict[str, Any], status: int, headers: dict[str, str] | None = None
) -> Response:
    return Response(json.dumps(body), status=status, headers=headers, mimetype="application/json")


# ------------------------------------------------------------------------ flask app

CONSENT_TEMPLATE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Relink sandbox – authorize {{ client_id }}</title></head>
<body>
  <h1>Authorize <code id="client-id">{{ client_id }}</code></h1>
  <p>The application requests access to: <code id="scope">{{ scope }}</code></p>
  <form method="post" action="{{ action }}">
    <label for="username">Username</label>
    <input type="text" id="username" name="username" value="demo" autocomplete="off">
    <button type="submit" id="allow" name="decision" value="allow">Allow</button>
    <button type="submit" id="deny" name="decision" value="deny">Deny</button>
  </form>
</body>
</html>
"""


def _create_app(provider: SandboxProvider) -> Flask:
    app = Flask(__name__)
    server = _SandboxAuthorizationServer(app, provider)
    server.register_grant(_AuthorizationCodeGrant, [_S256CodeChallenge(required=False)])
    server.register_grant(_RefreshTokenGrant)
    server.register_endpoint(_IntrospectionEndpoint)
    server.register_endpoint(_RevocationEndpoint)
    protector = ResourceProtector()
    protector.register_token_validator(_BearerValidator(provider))
    _add_oauth_routes(app, server, provider)
    _add_api_routes(app, provider, protector)
    _add_admin_routes(app, provider)
    return app


def _add_oauth_routes(app: Flask, server: AuthorizationServer, provider: SandboxProvider) -> None:
    @app.get("/oauth/authorize")
    def authorize_page() -> Any:
        try:
            grant = server.get_consent_grant(end_user=None)
        except OAuth2Error as error:
            return server.handle_error_response(None, error)
        return render_template_string(
            CONSENT_TEMPLATE,
            client_id=grant.client.get_client_id(),
            scope=grant.request.scope,
            action=request.full_path,
        )

    @app.post("/oauth/authorize")
    def authorize_decision() -> Any:
        user = None
        if request.form.get("decision") == "allow":
            user = SandboxUser(request.form.get("username", "").strip() or "demo")
        try:
            grant = server.get_consent_grant(end_user=user)
        except OAuth2Error as error:
            return server.handle_error_response(None, error)
        return server.create_authorization_response(grant_user=user, grant=grant)

    @app.post("/oauth/token")
    def token() -> Any:
        # One exchange at a time: makes code single-use and refresh rotation atomic.
        with provider._lock:
            return server.create_token_response()

    @app.post("/oauth/introspect")
    def introspect() -> Any:
        return server.create_endpoint_response(_IntrospectionEndpoint.ENDPOINT_NAME)

    @app.post("/oauth/revoke")
    def revoke() -> Any:
        return server.create_endpoint_response(_RevocationEndpoint.ENDPOINT_NAME)


def _add_api_routes(app: Flask, provider: SandboxProvider, protector: ResourceProtector) -> None:
    @app.get("/api/me")
    def api_me() -> Any:
        with protector.acquire() as token:
            user = token.get_user()
            return jsonify(sub=user.username, name=user.display_name)

    @app.get("/api/records")
    def api_records() -> Any:
        with protector.acquire():
            return _records_response(provider)

    @app.get("/apikey/me")
    def apikey_me() -> Any:
        key, denied = _check_api_key(provider)
        if denied is not None:
            return denied
        fingerprint = hashlib.sha256(key.encode()).hexdigest()[:12]
        return jsonify(sub="api-key", name="Sandbox API key", key_id=fingerprint)

    @app.get("/apikey/records")
    def apikey_records() -> Any:
        _, denied = _check_api_key(provider)
        return denied if denied is not None else _records_response(provider)


def _presented_api_key() -> str | None:
    key = request.headers.get("X-API-Key")
    if key:
        return key
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def _check_api_key(provider: SandboxProvider) -> tuple[str, Response | None]:
    key = _presented_api_key()
    status = provider.api_key_status(key)
    if status == "unknown":
        return "", _json_response({"error": "invalid_api_key"}, 401)
    if status == "forbidden":
        return "", _json_response({"error": "forbidden"}, 403)
    return key or "", None


def _records_response(provider: SandboxProvider) -> Response:
    name = request.args.get("path") or "records"
    limit_arg = request.args.get("limit")
    try:
        limit = int(limit_arg) if limit_arg is not None else None
    except ValueError:
        return _json_response({"error": "invalid_request", "error_description": "limit"}, 400)
    rows = demo_records(name, limit, provider.records_per_path)
    return jsonify(data={"records": rows})


def _is_loopback_addr(addr: str | None) -> bool:
    try:
        return addr is not None and ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


class _BadAdminRequest(ValueError):
    pass


def _admin_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise _BadAdminRequest("JSON object expected")
    return body


def _add_admin_routes(app: Flask, provider: SandboxProvider) -> None:
    @app.before_request
    def admin_loopback_only() -> Any:
        if request.path.startswith(ADMIN_PREFIX) and not _is_loopback_addr(request.remote_addr):
            return _json_response({"error": "forbidden"}, 403)
        return None

    @app.errorhandler(_BadAdminRequest)
    def bad_admin_request(exc: _BadAdminRequest) -> Response:
        return _json_response({"error": "invalid_request", "error_description": str(exc)}, 400)

    @app.get(ADMIN_PREFIX + "health")
    def admin_health() -> Any:
        return jsonify(ok=True)

    @app.get(ADMIN_PREFIX + "stats")
    def admin_stats() -> Any:
        return jsonify(provider.stats())

    @app.post(ADMIN_PREFIX + "clients")
    def admin_clients() -> Any:
        body = _admin_body()
        try:
            client = provider.register_client(
                str(body["client_id"]),
                str(body["client_secret"]),
                [str(u) for u in body.get("redirect_uris", [])],
                str(body.get("scope", DEFAULT_SCOPE)),
                allow_loopback_redirects=bool(body.get("allow_loopback_redirects", False)),
                grant_types=[str(g) for g in body.get("grant_types", _GRANT_TYPES)],
                revoke_on_reuse=bool(body.get("revoke_on_reuse", False)),
            )
        except KeyError as exc:
            raise _BadAdminRequest(f"missing {exc.args[0]}") from exc
        return jsonify(client_id=client.client_id), 201

    @app.post(ADMIN_PREFIX + "api-keys")
    def admin_api_keys() -> Any:
        body = _admin_body()
        key = str(body.get("key") or "")
        if not key:
            raise _BadAdminRequest("missing key")
        if body.get("forbidden"):
            provider.forbid_api_key(key)
        else:
            provider.add_api_key(key)
        return jsonify(ok=True)

    @app.post(ADMIN_PREFIX + "tokens")
    def admin_tokens() -> Any:
        body = _admin_body()
        expires_in = body.get("expires_in")
        try:
            token = provider.issue_token(
                str(body["client_id"]),
                str(body.get("username", "demo")),
                str(body.get("scope", "api")),
                int(expires_in) if expires_in is not None else None,
            )
        except (KeyError, ValueError) as exc:
            raise _BadAdminRequest(str(exc)) from exc
        return jsonify(token)

    @app.post(ADMIN_PREFIX + "revoke")
    def admin_revoke() -> Any:
        body = _admin_body()
        if body.get("username"):
            return jsonify(revoked=provider.revoke_user_tokens(str(body["username"])))
        if body.get("token"):
            return jsonify(revoked=int(provider.revoke_token(str(body["token"]))))
        raise _BadAdminRequest("give token or username")

    @app.post(ADMIN_PREFIX + "expire")
    def admin_expire() -> Any:
        body = _admin_body()
        return jsonify(expired=provider.expire_access_token(str(body.get("access_token", ""))))

    @app.post(ADMIN_PREFIX + "fault")
    def admin_fault() -> Any:
        body = _admin_body()
        times = body.get("times")
        headers = body.get("headers") or {}
        try:
            if not isinstance(headers, dict):
                raise ValueError("headers must be an object")
            provider.set_fault(
                body.get("mode", "ok"),
                path_prefix=str(body.get("path_prefix", "/")),
                delay=float(body.get("delay", 0.0)),
                times=int(times) if times is not None else None,
                status=int(body.get("status", 200)),
                body=str(body.get("body", "")),
                headers={str(k): str(v) for k, v in headers.items()},
            )
        except (TypeError, ValueError) as exc:
            raise _BadAdminRequest(str(exc)) from exc
        return jsonify(mode=body.get("mode", "ok"))
