"""What an OAuth provider's refusal means and says: the error codes as RFC 6749 §5.2 (token
endpoint) and RFC 6750 §3.1 (bearer tokens) name them, and the `CheckError` an error
code becomes (`refused`), whose message says who fixes it: an admin for the
installation's OAuth app (which RELINK_OAUTH__ settings, never their values), the
owner by reconnecting for the grant or the connection's own client. The rows that
judge each code are in `connectors.outcomes`."""

from __future__ import annotations

from connectors.base import AuthFailed, CheckError, Misconfigured
from connectors.oauth2.plan import OAuthPlan
from connectors.outcomes import (
    CLIENT_REFUSALS,
    INACTIVE_TOKEN,
    INVALID_SETTINGS,
    OAUTH_APP_NOT_CONFIGURED,
    BearerTokenError,
    OAuthFinding,
    TokenEndpointError,
    oauth_error,
)
from relink.domain.words import Outcome

__all__ = [
    "CLIENT_REFUSALS",
    "TOKEN_REJECTED",
    "BearerTokenError",
    "OAuthFinding",
    "TokenEndpointError",
    "app_settings_fix",
    "not_configured",
    "refused",
    "require_token_client",
]

# Verification answers after which one refresh is worth a try.
TOKEN_REJECTED = frozenset({BearerTokenError.INVALID_TOKEN, INACTIVE_TOKEN})


def app_settings_fix(provider: str) -> str:
    """Where an admin fixes the installation's OAuth app of `provider` (never its values)."""
    name = f"RELINK_OAUTH__{provider.upper()}"
    return f"set {name}__CLIENT_ID and {name}__CLIENT_SECRET to the app's current values"


_INSTALLATION_FIXES = {
    TokenEndpointError.UNAUTHORIZED_CLIENT: (
        "allow the app the refresh-token grant at the provider, or {settings}"
    ),
}


def refused(code: str, at: str, action: str, plan: OAuthPlan, detail: str = "") -> CheckError:
    """An OAuth error code from the provider as its `connectors.outcomes` row judges it."""
    judgment = oauth_error(code, own_client=plan.own_client)
    if judgment.outcome is Outcome.MISCONFIGURED:
        settings = app_settings_fix(plan.provider)
        fix = _INSTALLATION_FIXES.get(code, "{settings}").format(settings=settings)
        # the fix before the provider's own description, which may be cut off
        return judgment.error(
            code,
            f"{at} answered {code}: {judgment.meaning}. An admin must {fix}; reconnecting "
            f"cannot help.{detail}",
        )
    if judgment.outcome is Outcome.AUTH_FAILED:
        # what is wrong, not what to do: whoever shows it adds "reconnect" once (a
        # dataset's error, the connection page's button, the CLI's reconnect line)
        whose = " (the connection's own OAuth client)" if code in CLIENT_REFUSALS else ""
        return judgment.error(code, f"{at} refused {action}{whose}: {code}{detail}")
    return judgment.error(code, f"{at} could not answer {action}: {code}{detail}")


def require_token_client(plan: OAuthPlan) -> str:
    """The token URL of `plan`, when it has one and a client to call it with."""
    if not plan.token_url:
        raise AuthFailed(INVALID_SETTINGS, "the connection has no token_url")
    if not plan.client_id:
        raise not_configured(plan)
    return plan.token_url


def not_configured(plan: OAuthPlan) -> Misconfigured:
    """No client id for this provider: an admin sets the installation's app."""
    return Misconfigured(
        OAUTH_APP_NOT_CONFIGURED,
        f"no OAuth app is configured for {plan.provider}: an admin must "
        f"{app_settings_fix(plan.provider)}; reconnecting cannot help",
    )
