"""The sandbox's Flask app (`create_app`): the OAuth endpoints (consent, token,
introspection, revocation; OpenID's keys and discovery: `openid`), the demo API behind a
bearer token (``/api/me``, its userinfo, and ``/api/records``) and behind an API key
(``/apikey/me``, ``/apikey/records``), and the loopback-only admin API under
``/_sandbox/``; the pages for people (`pages`): the root page saying what this server is,
Relink's stylesheet and icon."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from flask import Flask, Response, jsonify, request

from .admin import add_admin_routes
from .authserver import (
    BearerValidator,
    SandboxAuthorizationServer,
    SandboxIntrospectionEndpoint,
    SandboxRevocationEndpoint,
)
from .consent import add_consent_routes
from .demo import demo_records
from .faults import json_response
from .openid import add_openid_routes
from .pages import add_page_routes

if TYPE_CHECKING:
    from .provider import SandboxProvider


def create_app(provider: SandboxProvider) -> Flask:
    app = Flask(__name__)
    server = SandboxAuthorizationServer(app, provider)
    protector = ResourceProtector()
    protector.register_token_validator(BearerValidator(provider))
    add_consent_routes(app, server)
    _add_token_routes(app, server, provider)
    _add_api_routes(app, provider, protector)
    add_admin_routes(app, provider)
    add_openid_routes(app, provider)
    add_page_routes(app, provider)
    return app


def _add_token_routes(app: Flask, server: AuthorizationServer, provider: SandboxProvider) -> None:
    @app.post("/oauth/token")
    def token() -> Any:
        # One exchange at a time: makes code single-use and refresh rotation atomic.
        with provider.exclusive():
            return server.create_token_response()

    @app.post("/oauth/introspect")
    def introspect() -> Any:
        return server.create_endpoint_response(SandboxIntrospectionEndpoint.ENDPOINT_NAME)

    @app.post("/oauth/revoke")
    def revoke() -> Any:
        return server.create_endpoint_response(SandboxRevocationEndpoint.ENDPOINT_NAME)


def _add_api_routes(app: Flask, provider: SandboxProvider, protector: ResourceProtector) -> None:
    @app.get("/api/me")
    def api_me() -> Any:
        with protector.acquire() as token:
            user = token.get_user()
            return jsonify(sub=user.username, name=user.display_name, email=user.email)

    @app.get("/api/records")
    def api_records() -> Any:
        with protector.acquire():
            return _records_response(provider)

    @app.get("/apikey/me")
    def apikey_me() -> Any:
        key, denied = _check_api_key(provider)
        if denied is not None:
            return denied
        fingerprint = hashlib.sha256(key.encode()).hexdigest()[:12]
        return jsonify(sub="api-key", name="Sandbox API key", key_id=fingerprint)

    @app.get("/apikey/records")
    def apikey_records() -> Any:
        _, denied = _check_api_key(provider)
        return denied if denied is not None else _records_response(provider)


def _presented_api_key() -> str | None:
    key = request.headers.get("X-API-Key")
    if key:
        return key
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def _check_api_key(provider: SandboxProvider) -> tuple[str, Response | None]:
    key = _presented_api_key()
    status = provider.api_key_status(key)
    if status == "unknown":
        return "", json_response({"error": "invalid_api_key"}, 401)
    if status == "forbidden":
        return "", json_response({"error": "forbidden"}, 403)
    return key or "", None


def _records_response(provider: SandboxProvider) -> Response:
    name = request.args.get("path") or "records"
    limit_arg = request.args.get("limit")
    try:
        limit = int(limit_arg) if limit_arg is not None else None
    except ValueError:
        return json_response({"error": "invalid_request", "error_description": "limit"}, 400)
    rows = demo_records(name, limit, provider.records_per_path)
    return jsonify(data={"records": rows})
