"""OAuth 2.0 sources through Authlib: one generic connector (`connector`) and a catalogue
of providers (`providers`). A connection's plan (`plan`) says which endpoints and client
it uses; `tokens` spends a refresh token through the core's token store; `check`
verifies a token; `errors` names the providers' error codes as the RFCs do and says who
fixes each; `session` builds Authlib's client. Importing this package registers one
connector per provider. Settings, the check step by step and the reconnect:
docs/connectors.md."""

from connectors.oauth2.connector import OAuth2Connector
from connectors.oauth2.plan import (
    AUTH_METHODS,
    TOKEN_FIELDS,
    URL_SETTINGS,
    OAuthPlan,
    parse_authorize_params,
)
from connectors.oauth2.providers import PROVIDERS, ProviderEndpoints
from connectors.oauth2.tokens import expires_at, needs_refresh, token_credentials
from connectors.registry import register

__all__ = [
    "AUTH_METHODS",
    "PROVIDERS",
    "TOKEN_FIELDS",
    "URL_SETTINGS",
    "OAuth2Connector",
    "OAuthPlan",
    "ProviderEndpoints",
    "expires_at",
    "needs_refresh",
    "parse_authorize_params",
    "token_credentials",
]

for _type, (_name, _endpoints) in PROVIDERS.items():
    register(OAuth2Connector(_type, _name, _endpoints))
