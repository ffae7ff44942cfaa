"""The sandbox provider's records: users, confidential clients, single-use authorization
codes, token sets (`SandboxToken`) and a token as presented to introspection or revocation
(`TokenHandle`), each with the methods Authlib's server components call on it; plus the
words and addresses the other modules share (scopes, grant types, the admin prefix, what
counts as a loopback callback)."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749 import AuthorizationCodeMixin, ClientMixin, TokenMixin

TokenKind = Literal["access_token", "refresh_token"]
# When an authorization-code grant includes a refresh token: always; only when the
# authorization request asked for offline access (``access_type=offline``, as Google
# does); never (a provider whose access tokens last).
RefreshTokens = Literal["always", "offline", "never"]

DEFAULT_SCOPE = "api profile"
ADMIN_PREFIX = "/_sandbox/"
LOOPBACK_CALLBACK_PATH = "/oauth/callback"
CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
GRANT_TYPES = ["authorization_code", "refresh_token"]
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True)
class SandboxUser:
    """Resource owner; the consent page only asks for a username."""

    username: str

    def get_user_id(self) -> str:
        """Authlib hook: stable user id."""
        return self.username

    @property
    def email(self) -> str:
        """The user's email (ID token, ``/api/me``, introspection): the username when it is
        one, else at ``sandbox.relink.test``."""
        return self.username if "@" in self.username else f"{self.username}@sandbox.relink.test"

    @property
    def display_name(self) -> str:
        """Human name shown by ``/api/me``."""
        if self.username == "demo":
            return "Demo User"
        local = self.username.split("@")[0]
        return local.replace(".", " ").replace("_", " ").title()


@dataclass
class SandboxClient(ClientMixin):
    """Confidential OAuth client (client_secret_basic / client_secret_post)."""

    client_id: str
    client_secret: str
    redirect_uris: list[str]
    scope: str = DEFAULT_SCOPE
    allow_loopback_redirects: bool = False
    # the grants the client may use; one left out answers unauthorized_client
    grant_types: list[str] = field(default_factory=lambda: list(GRANT_TYPES))
    refresh_tokens: RefreshTokens = "always"
    # The access token of an authorization-code grant is inactive from the start (as after
    # a slow callback or under clock skew); its refresh token works.
    inactive_code_tokens: bool = False
    # Reuse detection: a retired (rotated) refresh token presented again revokes its grant.
    revoke_on_reuse: bool = False
    # A hard cap on the grant (Intuit's): its refresh tokens end this many seconds after
    # consent, however they rotate, and every token response says how long is left
    # (`refresh_token_expires_in`). None: no cap, nothing said.
    refresh_token_expires_in: int | None = None

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
        return method in CLIENT_AUTH_METHODS

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
class TokenHandle(TokenMixin):
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
