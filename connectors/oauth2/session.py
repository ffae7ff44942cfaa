"""The HTTP side of the OAuth connector, through Authlib's `AsyncOAuth2Client` on httpx
0.28: building the client of a plan (`make_client`: shared TLS context, no cookies, no
redirects, our own classification of a 429 or 5xx token answer), and awaiting one
exchange (`exchange`), which turns every failure, an OAuth error code included, into a
`CheckError`. Why Authlib's httpx2 warning is silenced: docs/connectors.md."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Awaitable
from datetime import datetime
from typing import Any

import httpx
from authlib.deprecate import AuthlibDeprecationWarning
from authlib.oauth2.client import OAuth2Client as ProtocolClient

from connectors.base import CheckContext, CheckError, Unreachable
from connectors.http import (
    POOL_LIMITS,
    classify_exception,
    classify_response,
    no_cookies,
    safe_code,
    tls_context,
    where,
)
from connectors.oauth2.errors import refused
from connectors.oauth2.plan import OAuthPlan

with warnings.catch_warnings():
    # Authlib 1.9.10 warns on import that its httpx integration is deprecated in favour
    # of httpx2. Staying on httpx 0.28 is a decision (docs/connectors.md, "Authlib and
    # httpx"): ignore exactly that message of that category from that package, nothing else.
    warnings.filterwarnings(
        "ignore",
        message=r"The httpx module is deprecated; please use httpx2 instead\.",
        category=AuthlibDeprecationWarning,
        module=r"authlib\.integrations\.httpx_client",
    )
    from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError

__all__ = [
    "AsyncOAuth2Client",
    "OAuthError",
    "ProtocolClient",
    "exchange",
    "make_client",
    "token_endpoint",
]


def token_endpoint(plan: OAuthPlan) -> str:
    """How messages name the token endpoint: by its host."""
    return f"the token endpoint ({where(plan.token_url or '')})"


def make_client(plan: OAuthPlan, ctx: CheckContext) -> AsyncOAuth2Client:
    """Authlib's client for `plan.client_key`; safe to share between connections.

    Each call passes its connection's token explicitly (`refresh_token=`, `token=`,
    `withhold_token=True` with our own header), so the token Authlib keeps on the
    client (set by a grant and returned without an await in between) is never read.
    """
    client = AsyncOAuth2Client(
        client_id=plan.client_id,
        client_secret=plan.client_secret,
        token_endpoint_auth_method=plan.effective_auth_method,
        revocation_endpoint_auth_method=plan.effective_auth_method,
        timeout=httpx.Timeout(ctx.timeout),
        verify=tls_context(),
        follow_redirects=False,
        cookies=no_cookies(),
        limits=POOL_LIMITS,
    )
    hook = token_response_hook(token_endpoint(plan), ctx.now)
    client.register_compliance_hook("access_token_response", hook)
    client.register_compliance_hook("refresh_token_response", hook)
    return client


async def exchange(
    call: Awaitable[Any], at: str, ctx: CheckContext, plan: OAuthPlan, action: str = "the request"
) -> Any:
    """Await one HTTP exchange (Authlib or httpx); every failure becomes a CheckError."""
    backstop = max(ctx.timeout * 3, ctx.timeout + 5)  # for what httpx's timeouts miss
    try:
        async with asyncio.timeout(backstop):  # no task of its own, unlike wait_for
            return await call
    except CheckError:
        raise
    except OAuthError as exc:
        code = safe_code(exc.error) or "oauth_error"
        detail = f" ({str(exc.description)[:200]})" if exc.description else ""
        raise refused(code, at, action, plan, detail) from None
    except httpx.HTTPStatusError as exc:  # Authlib: a 5xx or a non-JSON error answer
        status = exc.response.status_code
        problem = classify_response(exc.response, at, now=ctx.now, provider=plan.provider)
        raise (problem or Unreachable(f"http_{status}", at)) from None
    except Exception as exc:  # noqa: BLE001 - validate never raises: unknown errors by class
        raise classify_exception(exc, at) from None


def token_response_hook(at: str, now: datetime) -> Any:
    """Authlib parses a 429's JSON body as an OAuth error: classify by status first."""

    def hook(response: httpx.Response) -> httpx.Response:
        status = response.status_code
        if status == 429 or status >= 500:
            problem = classify_response(response, at, now=now)
            raise problem or Unreachable(f"http_{status}", at)
        return response

    return hook
