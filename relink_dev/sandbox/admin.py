"""The sandbox's admin API under ``/_sandbox/``, answered on loopback only: health and
request counts, and what tests, benchmarks and a second process use to set the provider
up or break it: register clients and API keys, mint, revoke and expire tokens, inject a
fault."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, jsonify, request

from .faults import json_response
from .models import ADMIN_PREFIX, DEFAULT_SCOPE, GRANT_TYPES

if TYPE_CHECKING:
    from .provider import SandboxProvider


def _is_loopback_addr(addr: str | None) -> bool:
    try:
        return addr is not None and ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


class _BadAdminRequest(ValueError):
    pass


def _admin_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise _BadAdminRequest("JSON object expected")
    return body


def add_admin_routes(app: Flask, provider: SandboxProvider) -> None:
    @app.before_request
    def admin_loopback_only() -> Any:
        if request.path.startswith(ADMIN_PREFIX) and not _is_loopback_addr(request.remote_addr):
            return json_response({"error": "forbidden"}, 403)
        return None

    @app.errorhandler(_BadAdminRequest)
    def bad_admin_request(exc: _BadAdminRequest) -> Response:
        return json_response({"error": "invalid_request", "error_description": str(exc)}, 400)

    @app.get(ADMIN_PREFIX + "health")
    def admin_health() -> Any:
        return jsonify(ok=True)

    @app.get(ADMIN_PREFIX + "stats")
    def admin_stats() -> Any:
        return jsonify(provider.stats())

    @app.post(ADMIN_PREFIX + "clients")
    def admin_clients() -> Any:
        body = _admin_body()
        try:
            client = provider.register_client(
                str(body["client_id"]),
                str(body["client_secret"]),
                [str(u) for u in body.get("redirect_uris", [])],
                str(body.get("scope", DEFAULT_SCOPE)),
                allow_loopback_redirects=bool(body.get("allow_loopback_redirects", False)),
                grant_types=[str(g) for g in body.get("grant_types", GRANT_TYPES)],
                revoke_on_reuse=bool(body.get("revoke_on_reuse", False)),
            )
        except KeyError as exc:
            raise _BadAdminRequest(f"missing {exc.args[0]}") from exc
        return jsonify(client_id=client.client_id), 201

    @app.post(ADMIN_PREFIX + "api-keys")
    def admin_api_keys() -> Any:
        body = _admin_body()
        key = str(body.get("key") or "")
        if not key:
            raise _BadAdminRequest("missing key")
        if body.get("forbidden"):
            provider.forbid_api_key(key)
        else:
            provider.add_api_key(key)
        return jsonify(ok=True)

    @app.post(ADMIN_PREFIX + "tokens")
    def admin_tokens() -> Any:
        body = _admin_body()
        expires_in = body.get("expires_in")
        try:
            token = provider.issue_token(
                str(body["client_id"]),
                str(body.get("username", "demo")),
                str(body.get("scope", "api")),
                int(expires_in) if expires_in is not None else None,
            )
        except (KeyError, ValueError) as exc:
            raise _BadAdminRequest(str(exc)) from exc
        return jsonify(token)

    @app.post(ADMIN_PREFIX + "revoke")
    def admin_revoke() -> Any:
        body = _admin_body()
        if body.get("username"):
            return jsonify(revoked=provider.revoke_user_tokens(str(body["username"])))
        if body.get("token"):
            return jsonify(revoked=int(provider.revoke_token(str(body["token"]))))
        raise _BadAdminRequest("give token or username")

    @app.post(ADMIN_PREFIX + "expire")
    def admin_expire() -> Any:
        body = _admin_body()
        return jsonify(expired=provider.expire_access_token(str(body.get("access_token", ""))))

    @app.post(ADMIN_PREFIX + "fault")
    def admin_fault() -> Any:
        body = _admin_body()
        times = body.get("times")
        headers = body.get("headers") or {}
        try:
            if not isinstance(headers, dict):
                raise ValueError("headers must be an object")
            provider.set_fault(
                body.get("mode", "ok"),
                path_prefix=str(body.get("path_prefix", "/")),
                delay=float(body.get("delay", 0.0)),
                times=int(times) if times is not None else None,
                status=int(body.get("status", 200)),
                body=str(body.get("body", "")),
                headers={str(k): str(v) for k, v in headers.items()},
            )
        except (TypeError, ValueError) as exc:
            raise _BadAdminRequest(str(exc)) from exc
        return jsonify(mode=body.get("mode", "ok"))

    @app.post(ADMIN_PREFIX + "id-token-fault")
    def admin_id_token_fault() -> Any:
        body = _admin_body()
        fault = body.get("fault")
        if fault not in (None, "forged", "tampered"):
            raise _BadAdminRequest("fault must be forged, tampered or null")
        times = body.get("times")
        provider.set_id_token_fault(fault, int(times) if times is not None else None)
        return jsonify(fault=fault)
