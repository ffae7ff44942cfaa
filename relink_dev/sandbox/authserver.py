"""Authlib's authorization-server components wired to one `SandboxProvider`: the
authorization-code grant (PKCE limited to S256; a refresh token only when the client's
policy grants one), the rotating refresh-token grant, token introspection (RFC 7662),
revocation (RFC 7009), the bearer-token check of the demo API (RFC 6750), and an ID token
for a scope with ``openid`` (`openid`)."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2 import OAuth2Request
from authlib.oauth2.rfc6749 import InvalidGrantError, InvalidRequestError, grants
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge, create_s256_code_challenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from flask import Flask

from .models import (
    CLIENT_AUTH_METHODS,
    SandboxAuthorizationCode,
    SandboxClient,
    SandboxToken,
    SandboxUser,
    TokenHandle,
)
from .openid import SandboxOpenIDCode

if TYPE_CHECKING:
    from .provider import SandboxProvider


class SandboxAuthorizationServer(AuthorizationServer):
    """Authlib's Flask AuthorizationServer wired to one :class:`SandboxProvider`."""

    def __init__(self, app: Flask, provider: SandboxProvider) -> None:
        self.provider = provider
        super().__init__(
            app, query_client=provider.get_client, save_token=provider.tokens.save_issued
        )
        # Replace the config-driven default generator: always issue refresh tokens and
        # read the access-token lifetime from the provider at issue time.
        self.register_token_generator("default", provider.token_generator)
        self.register_grant(
            AuthorizationCodeGrant,
            [S256CodeChallenge(required=False), SandboxOpenIDCode(provider.signing_keys)],
        )
        self.register_grant(RefreshTokenGrant)
        self.register_endpoint(SandboxIntrospectionEndpoint)
        self.register_endpoint(SandboxRevocationEndpoint)


def _provider_of(server: Any) -> SandboxProvider:
    return server.provider  # type: ignore[no-any-return]


class S256CodeChallenge(CodeChallenge):
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


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        _provider_of(self.server).tokens.store_code(code, request)

    def query_authorization_code(
        self, code: str, client: SandboxClient
    ) -> SandboxAuthorizationCode | None:
        return _provider_of(self.server).tokens.find_code(code, client)

    def delete_authorization_code(self, authorization_code: SandboxAuthorizationCode) -> None:
        _provider_of(self.server).tokens.consume_code(authorization_code)

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


class RefreshTokenGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True  # rotation

    def authenticate_refresh_token(self, refresh_token: str) -> SandboxToken | None:
        return _provider_of(self.server).tokens.find_refresh(refresh_token)

    def authenticate_user(self, refresh_token: SandboxToken) -> SandboxUser:
        return refresh_token.get_user()

    def revoke_old_credential(self, refresh_token: SandboxToken) -> None:
        _provider_of(self.server).tokens.retire_refresh(refresh_token)


class SandboxIntrospectionEndpoint(IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = CLIENT_AUTH_METHODS

    def query_token(self, token_string: str, token_type_hint: str | None) -> TokenHandle | None:
        return _provider_of(self.server).tokens.find_handle(token_string, token_type_hint)

    def check_permission(self, token: TokenHandle, client: SandboxClient, request: Any) -> bool:
        return True  # any registered client may act as a resource server here

    def introspect_token(self, token: TokenHandle) -> dict[str, Any]:
        return introspection_payload(token)


class SandboxRevocationEndpoint(RevocationEndpoint):
    CLIENT_AUTH_METHODS = CLIENT_AUTH_METHODS

    def query_token(self, token_string: str, token_type_hint: str | None) -> TokenHandle | None:
        return _provider_of(self.server).tokens.find_handle(token_string, token_type_hint)

    def revoke_token(self, token: TokenHandle, request: Any) -> None:
        _provider_of(self.server).tokens.revoke_handle(token)


class BearerValidator(BearerTokenValidator):
    def __init__(self, provider: SandboxProvider) -> None:
        super().__init__(realm="relink-sandbox")
        self._provider = provider

    def authenticate_token(self, token_string: str) -> SandboxToken | None:
        return self._provider.tokens.find_access(token_string)


def introspection_payload(handle: TokenHandle) -> dict[str, Any]:
    token = handle.token
    payload: dict[str, Any] = {
        "active": True,
        "client_id": token.client_id,
        "username": token.username,
        "sub": token.username,
        "email": token.get_user().email,
        "scope": token.scope,
        "token_type": "Bearer" if handle.kind == "access_token" else "refresh_token",
        "iat": int(token.issued_at),
    }
    exp = handle.expires_at()
    if exp is not None:
        payload["exp"] = int(exp)
    return payload
