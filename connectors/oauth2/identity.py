"""Whose account an OAuth grant is. A token response's ID token is believed only once it
is verified (OpenID Connect Core 1.0 §3.1.3.7, with joserfc): signed by a key of the
provider's JWKS with an asymmetric algorithm, issued by the provider's issuer, for our
client id, not expired; its `sub` and `email` are the identity. Without an ID token, or
without an issuer and JWKS to verify it against, Salesforce's identity URL (`id` in the
token response) is the subject; a check's userinfo or introspection answer tells the rest
(`check`). A forged, tampered or expired ID token refuses the grant (`invalid_id_token`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from connectors.base import AuthFailed, CheckContext, Unreachable
from connectors.http import (
    POOL_LIMITS,
    classify_exception,
    classify_response,
    json_body,
    no_cookies,
    tls_context,
    where,
)
from connectors.oauth2.plan import OAuthPlan
from connectors.outcomes import BAD_RESPONSE, INVALID_ID_TOKEN
from relink.domain.identity import Identity, from_claims, identity

# Asymmetric only: an HS256 token would be signed with our own client secret.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
CLOCK_SKEW = 120  # seconds of leeway on exp / iat / nbf


async def grant_identity(
    token: Mapping[str, Any], plan: OAuthPlan, ctx: CheckContext
) -> Identity | None:
    """The identity a token response tells, verified; None when it tells none we can trust.
    Raises `AuthFailed(invalid_id_token)` for an ID token that fails verification and
    `Unreachable` when the JWKS cannot be fetched."""
    id_token = token.get("id_token")
    if isinstance(id_token, str) and id_token and plan.issuer and plan.jwks_uri and plan.client_id:
        claims = await verify_id_token(id_token, plan, ctx)
        return from_claims(claims)
    instance = token.get("id")  # Salesforce: https://login.salesforce.com/id/<org>/<user>
    if isinstance(instance, str) and instance.startswith("https://"):
        return identity(instance)
    return None


async def verify_id_token(id_token: str, plan: OAuthPlan, ctx: CheckContext) -> dict[str, Any]:
    """The claims of an ID token that passes every check; AuthFailed otherwise."""
    assert plan.issuer and plan.jwks_uri and plan.client_id
    keys = await fetch_jwks(plan.jwks_uri, ctx)
    try:
        token = jwt.decode(id_token, keys, algorithms=list(ALGORITHMS))
        jwt.JWTClaimsRegistry(
            now=int(ctx.now.timestamp()),
            leeway=CLOCK_SKEW,
            iss={"essential": True, "value": plan.issuer},
            aud={"essential": True, "value": plan.client_id},
            sub={"essential": True},
            exp={"essential": True},
        ).validate(token.claims)
    except (JoseError, ValueError) as exc:
        raise AuthFailed(
            INVALID_ID_TOKEN,
            f"the ID token from {where(plan.token_url or plan.issuer)} failed verification "
            f"({_reason(exc)}); the sign-in was refused",
        ) from None
    return dict(token.claims)


async def fetch_jwks(url: str, ctx: CheckContext) -> KeySet:
    """The provider's signing keys (RFC 7517 JWK Set)."""
    at = f"the JWKS endpoint ({where(url)})"
    try:
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(ctx.timeout),
            verify=tls_context(),
            cookies=no_cookies(),
            limits=POOL_LIMITS,
            follow_redirects=False,
        ) as client:
            response = await client.get(url, headers={"Accept": "application/json"})
    except Exception as exc:  # noqa: BLE001 - unknown errors by class, never a traceback
        raise classify_exception(exc, at) from None
    problem = classify_response(response, at, now=ctx.now)
    if problem is not None:
        raise Unreachable(problem.code, problem.message)  # the keys, not the grant, failed
    try:
        return KeySet.import_key_set(json_body(response, at))
    except (JoseError, ValueError, TypeError, KeyError):
        raise Unreachable(BAD_RESPONSE, f"{at} answered no usable key set") from None


def _reason(exc: Exception) -> str:
    """Why, in joserfc's words (never the token)."""
    text = getattr(exc, "description", None) or getattr(exc, "error", None) or ""
    return " ".join(f"{type(exc).__name__}: {text}".split())[:200]
