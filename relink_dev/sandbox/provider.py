"""`SandboxProvider`: one in-memory OAuth 2.0 provider with a demo API, and its public
API: register clients and API keys, mint, revoke and expire tokens, learn token sets
issued earlier, inject faults, read request counts. Everything sits behind one
re-entrant lock (the WSGI server is threaded); an optional JSON ``state_file`` keeps
clients, tokens and API keys across restarts. ``wsgi_app`` is what the server runs."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from authlib.oauth2.rfc6749 import ClientMixin, InvalidScopeError
from authlib.oauth2.rfc6750 import BearerTokenGenerator

from .endpoints import create_app
from .faults import Fault, FaultMiddleware, FaultMode, FaultSwitch
from .models import (
    DEFAULT_SCOPE,
    GRANT_TYPES,
    RefreshTokens,
    SandboxClient,
    SandboxToken,
    SandboxUser,
)
from .openid import IdTokenFault, SigningKeys
from .state import load_state, save_state
from .tokens import TokenStore, random_access_token, random_refresh_token


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
        self._api_keys: dict[str, bool] = {}  # key -> forbidden
        self.tokens = TokenStore(
            self._lock,
            self._clients,
            self._persist,
            access_token_lifetime=access_token_lifetime,
            refresh_token_lifetime=refresh_token_lifetime,
            code_lifetime=code_lifetime,
        )
        self.faults = FaultSwitch(self._lock)
        self.signing_keys = SigningKeys()  # the ID tokens' key; made anew at each start
        self.token_generator = BearerTokenGenerator(
            random_access_token, random_refresh_token, self._expires_in
        )
        if self.state_file is not None and self.state_file.exists():
            self._load()
        self.app = create_app(self)
        self.wsgi_app = FaultMiddleware(self.faults, self.app.wsgi_app)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the provider's lock (the token endpoint serves one exchange at a time)."""
        with self._lock:
            yield

    # -- clients / api keys ---------------------------------------------------------

    def register_client(
        self,
        client_id: str,
        client_secret: str,
        redirect_uris: list[str],
        scope: str = DEFAULT_SCOPE,
        *,
        allow_loopback_redirects: bool = False,
        grant_types: Iterable[str] = GRANT_TYPES,
        refresh_tokens: RefreshTokens = "always",
        inactive_code_tokens: bool = False,
        revoke_on_reuse: bool = False,
        refresh_token_expires_in: int | None = None,
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
            refresh_token_expires_in,
        )
        with self._lock:
            self._clients[client_id] = client
            self._persist()
        return client

    def get_client(self, client_id: str) -> SandboxClient | None:
        """Look a client up by id (Authlib's ``query_client``)."""
        with self._lock:
            return self._clients.get(client_id)

    def clients(self) -> list[SandboxClient]:
        """Every registered client, by id (the root page lists them, never their secrets)."""
        with self._lock:
            return sorted(self._clients.values(), key=lambda c: c.client_id)

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

    # -- tokens -----------------------------------------------------------------------

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
                token = self.token_generator.generate(
                    "authorization_code", client, SandboxUser(username), scope, expires_in
                )
            except InvalidScopeError as exc:
                raise ValueError(f"scope {scope!r} not allowed for {client_id!r}") from exc
            if expires_in is not None:
                token["expires_in"] = expires_in
            self.tokens.store(token, client_id, username)
            return dict(token)

    def find_token(self, access_token: str) -> SandboxToken | None:
        """The token set of an access token, if the provider knows it."""
        return self.tokens.find_access(access_token)

    def learn_token_set(
        self,
        access_token: str,
        refresh_token: str | None,
        *,
        client_id: str,
        username: str = "demo",
        scope: str = DEFAULT_SCOPE,
    ) -> None:
        """Know a token set issued earlier (e.g. kept by the demo's app database): one
        still usable stays as it is; an unknown or dead one becomes valid from now."""
        with self._lock:
            known = self.tokens.find_access(access_token)
            if known is not None and not known.is_dead():
                return
            now = time.time()
            self.tokens.index(
                SandboxToken(
                    access_token=access_token,
                    refresh_token=refresh_token,
                    client_id=client_id,
                    username=username,
                    scope=scope,
                    issued_at=now,
                    expires_at=now + self.access_token_lifetime,
                )
            )
            self._persist()

    def revoke_token_set(self, access_token: str) -> bool:
        """Revoke both halves of the token set of an access token; False when unknown."""
        with self._lock:
            known = self.tokens.find_access(access_token)
            if known is None:
                return False
            known.access_revoked = known.refresh_revoked = True
            self._persist()
            return True

    def revoke_token(self, token: str) -> bool:
        """Revoke an access token (that half only) or a refresh token (whole set)."""
        with self._lock:
            handle = self.tokens.find_handle(token, None)
            if handle is not None:
                self.tokens.revoke_handle(handle)
            return handle is not None

    def revoke_user_tokens(self, username: str) -> int:
        """Revoke every token set of ``username``; returns how many."""
        return self.tokens.revoke_user(username)

    def expire_access_token(self, access_token: str) -> bool:
        """Make an access token expired now; its refresh token stays valid."""
        return self.tokens.expire_access(access_token)

    def reuses(self) -> int:
        """How many times a spent refresh token was presented again (each one revoked its
        grant when the client has ``revoke_on_reuse``)."""
        return self.tokens.reuses()

    def _expires_in(self, client: ClientMixin, grant_type: str) -> int:
        return self.access_token_lifetime

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
        """Inject a fault for requests under ``path_prefix`` (``"ok"`` clears); what
        each mode does is said on `Fault`."""
        headers = dict(headers or {})
        self.faults.set(Fault(mode, path_prefix, delay, times, status, body, headers))

    def set_id_token_fault(self, fault: IdTokenFault | None, times: int | None = None) -> None:
        """Make the next `times` ID tokens (all: None) forged or tampered; None: valid."""
        self.signing_keys.set_fault(fault, times)

    def clear_fault(self) -> None:
        """Back to normal answers."""
        self.set_fault("ok")

    def stats(self) -> dict[str, int]:
        """Requests seen per path (faulted ones included)."""
        return self.faults.stats()

    def reset_stats(self) -> None:
        """Zero the request counters."""
        self.faults.reset_stats()

    # -- persistence ----------------------------------------------------------------

    def _persist(self) -> None:
        if self.state_file is None:
            return
        with self._lock:
            save_state(self.state_file, self._clients.values(), self.tokens.live(), self._api_keys)

    def _load(self) -> None:
        assert self.state_file is not None
        state = load_state(self.state_file)
        with self._lock:
            for client in state.clients:
                self._clients[client.client_id] = client
            for token in state.tokens:
                self.tokens.index(token)
            self._api_keys.update(state.api_keys)
