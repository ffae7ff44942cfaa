"""HTTP APIs authenticated with a static key (a header, or ``Authorization: Bearer``):
validate is a GET of `base_url + probe_path` judged as every HTTP answer is
(`connectors.http`), whose JSON body, when it names an account (a who-am-I endpoint's
`sub`/`id` and `email`/`name`), is the connection's identity; fetch runs a dataset query
(`connectors.http_query`) relative to `base_url`, never sending the key to another
origin. Missing or unusable settings are `AuthFailed("invalid_settings")`; the key never
appears in a message."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from connectors.base import (
    AuthFailed,
    CheckContext,
    CheckError,
    CheckResult,
    ConnectionSpec,
    Connector,
    FetchResult,
    Field,
)
from connectors.http import (
    POOL_LIMITS,
    classify_exception,
    classify_response,
    json_body,
    no_cookies,
    safe_error,
    tls_context,
    url_problem,
    where,
)
from connectors.http_query import parse_query, records_to_result, resolve_url
from connectors.outcomes import INVALID_SETTINGS
from connectors.registry import register
from relink.domain.identity import Identity, from_claims
from relink.domain.words import AuthKind

FIELDS = (
    Field("base_url", "Base URL", help="e.g. https://api.example.com", reconnect=True),
    Field(
        "probe_path",
        "Probe path",
        required=False,
        default="/me",
        help="A cheap authenticated GET used to validate the key",
    ),
    Field(
        "header",
        "Header",
        required=False,
        default="Authorization",
        help="Header carrying the key; 'Authorization' sends 'Bearer <key>'",
    ),
    Field("api_key", "API key", secret=True, help="The key itself", reconnect=True),
)


class ApiKeyConnector(Connector):
    type = "api_key"
    display_name = "HTTP API (API key)"
    auth_kind = AuthKind.API_KEY
    provider = "api_key"
    fields = FIELDS
    needs = "a base URL and an API key (sent in a header of your choice)"
    checked = "GET the base URL + probe path with the key"
    breaks = "401; a 403 naming invalid_token"

    async def validate(self, conn: ConnectionSpec, ctx: CheckContext) -> CheckResult:
        key = _key(conn)
        try:
            target = _target(conn)
            probe = target.base_url.rstrip("/") + "/" + target.probe_path.lstrip("/")
            response = await _get(target, probe, ctx)
        except CheckError as err:
            return CheckResult.from_error(safe_error(err, [key]))
        return CheckResult.ok(identity=_whoami(response, key))

    async def fetch(self, conn: ConnectionSpec, query: str, ctx: CheckContext) -> FetchResult:
        key = _key(conn)
        try:
            target = _target(conn)
            path, records_path = parse_query(query)
            url = resolve_url(target.base_url, path)
            body = json_body(await _get(target, url, ctx), where(url))
            return records_to_result(body, records_path)
        except CheckError as err:
            raise safe_error(err, [key]) from None

    def settings_problem(self, settings: Mapping[str, Any]) -> str | None:
        try:
            _endpoint(settings)
        except AuthFailed as err:
            return err.message
        return url_problem("base_url", settings.get("base_url"))


# RFC 9110 token characters: what a header name may be made of.
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


@dataclass(frozen=True, slots=True)
class _Target:
    base_url: str
    probe_path: str
    header: str
    key: str = field(repr=False)

    @property
    def headers(self) -> dict[str, str]:
        value = f"Bearer {self.key}" if self.header.lower() == "authorization" else self.key
        return {self.header: value, "Accept": "application/json"}


def _key(conn: ConnectionSpec) -> str:
    return str((conn.credentials or {}).get("api_key") or "")


def _endpoint(settings: Mapping[str, Any]) -> tuple[str, str, str]:
    """base_url, probe_path and header from the settings (AuthFailed when unusable)."""

    def text(name: str, default: str = "") -> str:
        value = settings.get(name)
        return (str(value).strip() if value is not None else "") or default

    base_url = text("base_url")
    if not base_url:
        raise AuthFailed(INVALID_SETTINGS, "the connection has no base_url; edit it and set one")
    header = text("header", "Authorization")
    if not _HEADER_NAME.match(header):
        raise AuthFailed(INVALID_SETTINGS, f"header {header[:40]!r} is not a valid header name")
    return base_url, text("probe_path", "/me"), header


def _target(conn: ConnectionSpec) -> _Target:
    base_url, probe_path, header = _endpoint(conn.settings or {})
    key = _key(conn).strip()
    if not key:
        raise AuthFailed(INVALID_SETTINGS, "the connection has no API key")
    if any(c in key for c in "\r\n\0"):
        raise AuthFailed(INVALID_SETTINGS, "the API key holds a line break")
    return _Target(base_url, probe_path, header, key)


def _whoami(response: httpx.Response, key: str) -> Identity | None:
    """The account a who-am-I answer names; None when the probe is no such endpoint."""
    try:
        body = response.json()
    except ValueError:
        return None
    return from_claims(body, secrets=[key])


def _client(ctx: CheckContext) -> httpx.AsyncClient:
    """No state between requests: the key goes in each request's headers, no cookies."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(ctx.timeout),
        verify=tls_context(),
        cookies=no_cookies(),
        limits=POOL_LIMITS,
    )


async def _get(target: _Target, url: str, ctx: CheckContext) -> httpx.Response:
    """GET with the key; any answer but 2xx, and any failure, raises a CheckError."""
    at = where(url)
    try:
        if ctx.clients is not None:
            client = ctx.clients.get(("api_key", ctx.timeout), lambda: _client(ctx))
            response = await client.get(url, headers=target.headers)
        else:
            async with _client(ctx) as client:
                response = await client.get(url, headers=target.headers)
    except Exception as exc:  # noqa: BLE001 - validate never raises: unknown errors by class
        raise classify_exception(exc, at) from None
    problem = classify_response(response, at, now=ctx.now)
    if problem is not None:
        raise problem
    return response


register(ApiKeyConnector())
