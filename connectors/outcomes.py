"""Which answer of a source is which outcome of a check, and why: the one table (its
network rows in `connectors.network`), and the codes it is keyed by as enums. Every
connector classifies what it meets through these rows. The rule they follow: only proof
breaks a connection; `auth_failed` is what the owner fixes by reconnecting,
`misconfigured` what only an admin can fix, `unreachable` everything that is not proof.
Codes are the source's own (``invalid_grant``, ``28P01``, ``1045``), so that an engineer
on call can look them up; our own findings have plain names. docs/connectors.md."""

from __future__ import annotations

import dataclasses
from enum import StrEnum

from connectors.base import Judgment
from connectors.network import NETWORK, OUTAGE, NetworkFailure
from relink.domain.words import CHECK_ERROR, Outcome

AUTH_FAILED, MISCONFIGURED, UNREACHABLE = (
    Outcome.AUTH_FAILED,
    Outcome.MISCONFIGURED,
    Outcome.UNREACHABLE,
)


def _row(outcome: Outcome, meaning: str, reason: str, code: str | None = None) -> Judgment:
    return Judgment(outcome, meaning, reason, code)


_OUTAGE = OUTAGE
_TIMEOUT = NetworkFailure.TIMEOUT


def _network(code: NetworkFailure) -> Judgment:
    """A source's own code for a network failure, reported as that failure (2005 -> dns)."""
    return dataclasses.replace(NETWORK[code], code=code)


# --- codes: what a connector finds itself, and OAuth's errors as the RFCs name them ------


class Finding(StrEnum):
    """Codes of what a connector finds itself, without an answer of the source to quote."""

    INVALID_SETTINGS = "invalid_settings"
    INVALID_QUERY = "invalid_query"
    BAD_RESPONSE = "bad_response"
    # An error we do not classify: the domain's word for a connection that could not be
    # checked, and the sweep records such a result so (`relink.checks`).
    UNEXPECTED = CHECK_ERROR
    TOKEN_REFRESH_BUSY = "token_refresh_busy"


INVALID_SETTINGS = Finding.INVALID_SETTINGS
INVALID_QUERY = Finding.INVALID_QUERY
BAD_RESPONSE = Finding.BAD_RESPONSE
UNEXPECTED = Finding.UNEXPECTED
TOKEN_REFRESH_BUSY = Finding.TOKEN_REFRESH_BUSY


class TokenEndpointError(StrEnum):
    """The errors a token endpoint answers, as RFC 6749 §5.2 names them."""

    INVALID_REQUEST = "invalid_request"
    INVALID_CLIENT = "invalid_client"
    INVALID_GRANT = "invalid_grant"
    UNAUTHORIZED_CLIENT = "unauthorized_client"
    UNSUPPORTED_GRANT_TYPE = "unsupported_grant_type"
    INVALID_SCOPE = "invalid_scope"


class BearerTokenError(StrEnum):
    """The errors a resource server names for a bearer token, as RFC 6750 §3.1 names them."""

    INVALID_REQUEST = "invalid_request"
    INVALID_TOKEN = "invalid_token"
    INSUFFICIENT_SCOPE = "insufficient_scope"


class OAuthFinding(StrEnum):
    """What the OAuth connector finds itself about a grant or the installation."""

    NO_REFRESH_TOKEN = "no_refresh_token"
    INACTIVE_TOKEN = "inactive_token"  # RFC 7662 introspection: `active: false`
    OAUTH_APP_NOT_CONFIGURED = "oauth_app_not_configured"
    # An ID token that fails verification (signature, issuer, audience, expiry)
    INVALID_ID_TOKEN = "invalid_id_token"


# --- what any connector finds itself (network failures: `connectors.network`) ----------

FINDINGS: dict[Finding, Judgment] = {
    INVALID_SETTINGS: _row(
        AUTH_FAILED,
        "the connection's settings cannot work (no host, port 'abc', no token URL)",
        "no answer of the source will make them work; the owner fixes them when reconnecting",
    ),
    INVALID_QUERY: _row(
        UNREACHABLE,
        "the dataset's query cannot be answered as written",
        "a dataset's problem, never the credentials'",
    ),
    BAD_RESPONSE: _row(UNREACHABLE, "the answer could not be read", "not proof of anything"),
    UNEXPECTED: _row(
        UNREACHABLE,
        "an error we do not classify",
        "only proof breaks a connection, so whatever we cannot classify does not",
    ),
    TOKEN_REFRESH_BUSY: _row(
        UNREACHABLE,
        "another check of this connection was refreshing its OAuth token for longer than "
        "RELINK_REFRESH_LOCK_TIMEOUT",
        "the other process may be spending the refresh token right now; spending it "
        "again would make a provider that detects reuse revoke the grant, so this check "
        "waits for the next sweep instead: the source was not asked",
    ),
}

# --- HTTP (the oauth2 and api_key connectors) ------------------------------------------

HTTP_STATUSES: dict[int, Judgment] = {
    401: _row(
        AUTH_FAILED,
        "the credentials were refused",
        "RFC 9110: the request lacks valid credentials for the resource",
    ),
    403: _row(
        UNREACHABLE,
        "forbidden",
        "a bare 403 is also what a WAF, a CDN challenge, an IP allow-list or a secondary "
        "rate limit answers; it breaks a connection only when the body says the token is "
        "invalid (FORBIDDEN_BODIES)",
    ),
    404: _row(
        UNREACHABLE,
        "not found; check the URL settings",
        "the settings point at the wrong place, which is not proof the credentials are bad",
    ),
    408: _row(UNREACHABLE, "the server timed out waiting for the request", _OUTAGE),
    429: _row(
        UNREACHABLE,
        "rate limited; the source asks to slow down",
        "asked again after the Retry-After the source sends",
    ),
    503: _row(
        UNREACHABLE,
        "the service is unavailable",
        "asked again after the Retry-After the source sends",
    ),
}
_SERVER_ERROR = _row(UNREACHABLE, "server error", _OUTAGE)
_OTHER_STATUS = _row(
    UNREACHABLE,
    "unexpected answer",
    "a redirect or another 4xx says the settings point at the wrong place; not proof",
)


def http_status(status: int) -> Judgment:
    """The row of an HTTP status that is not 2xx."""
    found = HTTP_STATUSES.get(status)
    if found is not None:
        return found
    return _SERVER_ERROR if status >= 500 else _OTHER_STATUS


# The 403 answers that do prove the token is bad: by provider, keyed by the error the
# response names (RFC 6750 WWW-Authenticate `error`, a JSON `error` / `error.code` /
# `errorCode`, or a one-word text body), lower case. "*" applies to every provider.
FORBIDDEN_BODIES: dict[str, dict[str, Judgment]] = {
    "*": {
        BearerTokenError.INVALID_TOKEN: _row(
            AUTH_FAILED,
            "the access token is invalid (expired, revoked or malformed)",
            "RFC 6750 §3.1: the provider says so itself",
        ),
        BearerTokenError.INSUFFICIENT_SCOPE: _row(
            AUTH_FAILED,
            "the token lacks a scope the check needs",
            "RFC 6750 §3.1: the grant as given cannot work; a new consent grants the scope",
        ),
    },
    "salesforce": {
        "bad_oauth_token": _row(
            AUTH_FAILED,
            "the access token is not valid",
            "Salesforce's identity and userinfo URLs answer 403 Bad_OAuth_Token for an "
            "expired or revoked token",
        ),
    },
    "microsoft_graph": {
        "insufficient_claims": _row(
            AUTH_FAILED,
            "a conditional access policy requires signing in again",
            "Microsoft Graph answers 403 error=insufficient_claims when the token does not "
            "satisfy the tenant's conditional access; only a new sign-in does",
        ),
    },
}


def forbidden(provider: str, named: str | None) -> Judgment:
    """A 403 naming the error `named`: proof only when the table says so."""
    if named:
        for key in (provider, "*"):
            found = FORBIDDEN_BODIES.get(key, {}).get(named)
            if found is not None:
                return found
    return HTTP_STATUSES[403]


# --- OAuth 2.0: the token and introspection endpoints ------------------------------------


NO_REFRESH_TOKEN = OAuthFinding.NO_REFRESH_TOKEN
INACTIVE_TOKEN = OAuthFinding.INACTIVE_TOKEN
OAUTH_APP_NOT_CONFIGURED = OAuthFinding.OAUTH_APP_NOT_CONFIGURED
INVALID_ID_TOKEN = OAuthFinding.INVALID_ID_TOKEN

OAUTH_ERRORS: dict[str, Judgment] = {
    TokenEndpointError.INVALID_GRANT: _row(
        AUTH_FAILED,
        "the refresh token is expired or revoked",
        "RFC 6749 §5.2: the grant itself is refused; a new consent makes a new one",
    ),
    TokenEndpointError.INVALID_CLIENT: _row(
        MISCONFIGURED,
        "the provider refused the installation's OAuth app",
        "the app's credentials are wrong, e.g. a rotated secret not yet in the settings; "
        "every connection through the app fails alike and a reconnect through the same "
        "app cannot help",
    ),
    TokenEndpointError.UNAUTHORIZED_CLIENT: _row(
        MISCONFIGURED,
        "the installation's OAuth app is not allowed this grant",
        "an app setting at the provider (allowed grant types, refresh tokens) only its "
        "admin can change",
    ),
    OAUTH_APP_NOT_CONFIGURED: _row(
        MISCONFIGURED,
        "no OAuth app is configured for this provider",
        "a missing installation setting; no reconnect can supply it",
    ),
    NO_REFRESH_TOKEN: _row(
        AUTH_FAILED,
        "the access token is missing or expired and there is no refresh token",
        "nothing left to renew the grant with; a new consent makes one",
    ),
    INACTIVE_TOKEN: _row(
        AUTH_FAILED,
        "the provider reports the access token as inactive (expired or revoked)",
        "RFC 7662 introspection `active: false`, after one refresh",
    ),
}

# A connection that carries its own OAuth client (its `client_id` setting) entered that
# client itself, and the reconnect form changes it: its refusal is the owner's to fix.
OWN_CLIENT_ERRORS: dict[str, Judgment] = {
    TokenEndpointError.INVALID_CLIENT: _row(
        AUTH_FAILED,
        "the provider refused the connection's own OAuth client (client id or secret)",
        "the connection's own client, not the installation's: the owner reconnects with "
        "the right one",
    ),
    TokenEndpointError.UNAUTHORIZED_CLIENT: _row(
        AUTH_FAILED,
        "the connection's own OAuth client is not allowed this grant",
        "the connection's own client, not the installation's: the owner fixes it",
    ),
}
_OTHER_OAUTH_ERROR = _row(
    UNREACHABLE,
    "the token endpoint could not answer",
    "invalid_request, temporarily_unavailable and the rest are not proof the grant is gone",
)


# The codes by which the provider refuses the OAuth client itself (not the grant).
CLIENT_REFUSALS = frozenset(OWN_CLIENT_ERRORS)


def oauth_error(code: str, *, own_client: bool = False) -> Judgment:
    """The row of an OAuth error code (RFC 6749 §5.2, or one of our own findings)."""
    if own_client and code in OWN_CLIENT_ERRORS:
        return OWN_CLIENT_ERRORS[code]
    return OAUTH_ERRORS.get(code, _OTHER_OAUTH_ERROR)


# --- PostgreSQL: SQLSTATE --------------------------------------------------------------

_OWNER_SETTING = (
    "the server answered no to this connection's settings; waiting will not fix it, the "
    "owner does on the reconnect form"
)

POSTGRES_SQLSTATES: dict[str, Judgment] = {
    "28P01": _row(
        AUTH_FAILED,
        "password authentication failed",
        "the password is wrong or was changed; the owner enters the current one",
    ),
    "28000": _row(
        AUTH_FAILED,
        "the server does not accept this user from here",
        "the role is missing, may not log in, or has no pg_hba.conf entry: " + _OWNER_SETTING,
    ),
    "3D000": _row(AUTH_FAILED, "the database does not exist", _OWNER_SETTING),
    "42501": _row(
        AUTH_FAILED,
        "permission denied",
        "the user lacks a privilege (CONNECT on the database, SELECT on a table): "
        + _OWNER_SETTING,
    ),
    "53300": _row(UNREACHABLE, "too many connections, try again later", _OUTAGE),
    "57P01": _row(UNREACHABLE, "the server is shutting down", _OUTAGE),
    "57P02": _row(UNREACHABLE, "the server is restarting after a crash", _OUTAGE),
    "57P03": _row(UNREACHABLE, "the server is not accepting connections now", _OUTAGE),
    "57014": _row(
        UNREACHABLE, "the query was cancelled (statement timeout)", _OUTAGE, code=_TIMEOUT
    ),
}
POSTGRES_CLASSES: dict[str, Judgment] = {
    "28": _row(AUTH_FAILED, "the server refused the login", "class 28: invalid authorization"),
    **{
        cls: _row(UNREACHABLE, "the server could not serve the request", _OUTAGE)
        for cls in ("08", "53", "57", "58")  # connection, resources, operator, system
    },
}


def postgres_sqlstate(sqlstate: str) -> Judgment | None:
    """The row of a SQLSTATE; None for a server error we do not classify (42P01 ...)."""
    return POSTGRES_SQLSTATES.get(sqlstate) or POSTGRES_CLASSES.get(sqlstate[:2])


# --- MySQL / MariaDB: errno ------------------------------------------------------------

_LOGIN = "the server refused this login; the owner reconnects with one it accepts"

# One refusal, two errnos: MariaDB answers 1698 when the last authentication plugin it
# tried takes no password (unix_socket), 1045 otherwise; and for a user that does not
# exist it fakes the login of a real account chosen by a hash of the name, plugins and
# all, so as not to tell that the user is missing. The same connection can meet 1045 on
# one attempt and 1698 on the next; both are said alike, with the errno the server sent.
MYSQL_LOGIN_REFUSED = _row(AUTH_FAILED, "access denied for this user name and password", _LOGIN)
MYSQL_LOGIN_ERRNOS = frozenset({1045, 1698})
MYSQL_LOGIN_NOTE = (
    "MariaDB sends 1045 or 1698 for the same refusal and does not say whether the user exists"
)

MYSQL_ERRNOS: dict[int, Judgment] = {
    **dict.fromkeys(MYSQL_LOGIN_ERRNOS, MYSQL_LOGIN_REFUSED),
    1130: _row(AUTH_FAILED, "this host is not allowed to connect", _LOGIN),
    1820: _row(AUTH_FAILED, "the password has expired and must be reset", _LOGIN),
    1862: _row(AUTH_FAILED, "the password has expired", _LOGIN),
    3118: _row(AUTH_FAILED, "the account is locked", _LOGIN),
    4151: _row(AUTH_FAILED, "the account is locked", _LOGIN),
    # MariaDB answers 1044, not 1049, for a missing database the user has no rights on
    1044: _row(AUTH_FAILED, "access denied to the database", _OWNER_SETTING),
    1049: _row(AUTH_FAILED, "the database does not exist", _OWNER_SETTING),
    1142: _row(AUTH_FAILED, "access denied to a table", _OWNER_SETTING),
    1143: _row(AUTH_FAILED, "access denied to a column", _OWNER_SETTING),
    1040: _row(UNREACHABLE, "too many connections, try again later", _OUTAGE),
    1203: _row(UNREACHABLE, "the user has too many connections, try again later", _OUTAGE),
    1226: _row(UNREACHABLE, "the user has exceeded a resource limit, try again later", _OUTAGE),
    1053: _row(UNREACHABLE, "the server is shutting down", _OUTAGE),
    1077: _row(UNREACHABLE, "the server is shutting down", _OUTAGE),
    1129: _row(UNREACHABLE, "the host is blocked after too many connection errors", _OUTAGE),
    1152: _row(UNREACHABLE, "the connection was aborted", _OUTAGE),
    1159: _row(UNREACHABLE, "timeout reading from the network", _OUTAGE, code=_TIMEOUT),
    1161: _row(UNREACHABLE, "timeout writing to the network", _OUTAGE, code=_TIMEOUT),
    1969: _row(UNREACHABLE, "the query exceeded max_statement_time", _OUTAGE, code=_TIMEOUT),
    3024: _row(UNREACHABLE, "the query exceeded max_execution_time", _OUTAGE, code=_TIMEOUT),
    2002: _row(UNREACHABLE, "could not connect", _OUTAGE),
    2003: _row(UNREACHABLE, "could not connect", _OUTAGE),
    2005: _network(NetworkFailure.DNS),
    2006: _row(UNREACHABLE, "the server has gone away", _OUTAGE),
    2013: _row(UNREACHABLE, "lost the connection to the server", _OUTAGE),
    2026: _network(NetworkFailure.TLS),
    2055: _row(UNREACHABLE, "lost the connection to the server", _OUTAGE),
}
