"""The codes and token sets the sandbox has issued, and what Authlib's grants and endpoints
ask of them: an authorization code is single-use (a replayed code revokes what it
produced, RFC 6749 4.1.2); refresh tokens rotate (a refresh grant retires the token it
used, and the new set continues its grant); a client registered with ``revoke_on_reuse``
gets reuse detection, as providers with rotating refresh tokens do it: a retired refresh
token presented again revokes every token set descended from the same consent, and is
counted in `reuses`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from authlib.common.security import generate_token
from authlib.oauth2 import OAuth2Request

from .models import SandboxAuthorizationCode, SandboxClient, SandboxToken, TokenHandle, TokenKind


def random_access_token(**_: Any) -> str:
    return generate_token(42)


def random_refresh_token(**_: Any) -> str:
    return generate_token(48)


class TokenStore:
    """Codes and token sets, indexed by access and by refresh token, behind the provider's
    lock; `changed` is called after every change that the state file keeps."""

    def __init__(
        self,
        lock: threading.RLock,
        clients: Mapping[str, SandboxClient],
        changed: Callable[[], None],
        *,
        access_token_lifetime: int,
        refresh_token_lifetime: int | None,
        code_lifetime: int,
    ) -> None:
        self._lock = lock
        self._clients = clients
        self._changed = changed
        self.access_token_lifetime = access_token_lifetime
        self.refresh_token_lifetime = refresh_token_lifetime
        self.code_lifetime = code_lifetime
        self._codes: dict[str, SandboxAuthorizationCode] = {}
        self._code_tokens: dict[str, str] = {}  # used code -> access token it produced
        self._by_access: dict[str, SandboxToken] = {}
        self._by_refresh: dict[str, SandboxToken] = {}
        self._reuses = 0

    # -- token sets -------------------------------------------------------------------

    def live(self) -> list[SandboxToken]:
        """Every token set with a half still usable (what the state file keeps)."""
        return [t for t in self._by_access.values() if not t.is_dead()]

    def index(self, token: SandboxToken) -> None:
        self._by_access[token.access_token] = token
        if token.refresh_token:
            self._by_refresh[token.refresh_token] = token

    def store(
        self,
        token: dict[str, Any],
        client_id: str,
        username: str,
        grant_id: str | None = None,
        grant_ends: float | None = None,
    ) -> None:
        """Keep a newly issued token set (a new grant unless `grant_id` continues one,
        whose hard cap `grant_ends` it keeps). Under a client's cap the response says
        what is left of it (`refresh_token_expires_in`: `token` is the response)."""
        now = time.time()
        lifetime = token.get("expires_in", self.access_token_lifetime)
        refresh_exp = now + self.refresh_token_lifetime if self.refresh_token_lifetime else None
        client = self._clients.get(client_id)
        if client is not None and client.refresh_token_expires_in and token.get("refresh_token"):
            refresh_exp = grant_ends or now + client.refresh_token_expires_in
            token["refresh_token_expires_in"] = max(0, int(refresh_exp - now))
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
        self.index(record)
        self._changed()

    def save_issued(self, token: dict[str, Any], request: OAuth2Request) -> None:
        """Authlib's ``save_token``: keep what a token request issued."""
        with self._lock:
            spent = request.refresh_token  # a refresh grant: the new set continues its grant
            grant_id = spent.grant_id if isinstance(spent, SandboxToken) else None
            ends = spent.refresh_expires_at if isinstance(spent, SandboxToken) else None
            self.store(token, request.client.get_client_id(), request.user.username, grant_id, ends)
            code = request.authorization_code
            if code is not None:
                self._code_tokens[code.code] = token["access_token"]
                if request.client.inactive_code_tokens:
                    self._by_access[token["access_token"]].expires_at = time.time() - 1
                    self._changed()

    def find_access(self, access_token: str) -> SandboxToken | None:
        with self._lock:
            return self._by_access.get(access_token)

    def find_refresh(self, refresh_token: str) -> SandboxToken | None:
        """A usable refresh token's set; a spent one presented again is a reuse."""
        with self._lock:
            token = self._by_refresh.get(refresh_token)
            if token is not None and token.rotated:
                self._reused(token)
                return None
            if token is None or token.refresh_revoked or token.refresh_expired():
                return None
            return token

    def retire_refresh(self, token: SandboxToken) -> None:
        """A refresh grant spent this set's refresh token (rotation)."""
        with self._lock:
            token.refresh_revoked = token.rotated = True
            self._changed()

    def reuses(self) -> int:
        with self._lock:
            return self._reuses

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
        self._changed()

    # -- handles: a token string as introspection and revocation see it ------------------

    def find_handle(self, value: str, hint: str | None) -> TokenHandle | None:
        order: tuple[TokenKind, ...] = ("access_token", "refresh_token")
        if hint == "refresh_token":
            order = ("refresh_token", "access_token")
        with self._lock:
            for kind in order:
                index = self._by_access if kind == "access_token" else self._by_refresh
                token = index.get(value)
                if token is not None:
                    return TokenHandle(token, kind)
        return None

    def revoke_handle(self, handle: TokenHandle) -> None:
        """Revoke an access token (that half only) or a refresh token (the whole set)."""
        with self._lock:
            handle.token.access_revoked = True
            if handle.kind == "refresh_token":
                handle.token.refresh_revoked = True
            self._changed()

    def revoke_user(self, username: str) -> int:
        with self._lock:
            victims = [t for t in self._by_access.values() if t.username == username]
            for token in victims:
                token.access_revoked = token.refresh_revoked = True
            self._changed()
            return len(victims)

    def expire_access(self, access_token: str) -> bool:
        with self._lock:
            token = self._by_access.get(access_token)
            if token is None:
                return False
            token.expires_at = min(token.expires_at, time.time() - 1)
            self._changed()
            return True

    # -- authorization codes ----------------------------------------------------------

    def store_code(self, code: str, request: OAuth2Request) -> None:
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

    def find_code(self, code: str, client: SandboxClient) -> SandboxAuthorizationCode | None:
        with self._lock:
            if code in self._code_tokens:  # replay: RFC 6749 4.1.2 says revoke what it issued
                self._revoke_code_tokens(code)
                return None
            record = self._codes.get(code)
            if record is None or record.is_expired() or record.client_id != client.client_id:
                return None
            return record

    def consume_code(self, record: SandboxAuthorizationCode) -> None:
        with self._lock:
            self._codes.pop(record.code, None)
            self._code_tokens.setdefault(record.code, "")

    def _revoke_code_tokens(self, code: str) -> None:
        token = self._by_access.get(self._code_tokens[code])
        if token is not None and not (token.access_revoked and token.refresh_revoked):
            token.access_revoked = token.refresh_revoked = True
            self._changed()

    def _drop_expired_codes(self) -> None:
        for code in [c for c, rec in self._codes.items() if rec.is_expired()]:
            del self._codes[code]
