"""The consent page at ``/oauth/authorize``: GET shows which client asks for which scope
and a username field; POST with Allow signs that user in and redirects back with a code,
with Deny back with ``access_denied`` (Authlib's authorization-code flow)."""

from __future__ import annotations

from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2 import OAuth2Error
from flask import Flask, render_template_string, request

from .models import SandboxUser

CONSENT_TEMPLATE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Relink sandbox – authorize {{ client_id }}</title></head>
<body>
  <h1>Authorize <code id="client-id">{{ client_id }}</code></h1>
  <p>The application requests access to: <code id="scope">{{ scope }}</code></p>
  <form method="post" action="{{ action }}">
    <label for="username">Username</label>
    <input type="text" id="username" name="username" value="demo" autocomplete="off">
    <button type="submit" id="allow" name="decision" value="allow">Allow</button>
    <button type="submit" id="deny" name="decision" value="deny">Deny</button>
  </form>
</body>
</html>
"""


def add_consent_routes(app: Flask, server: AuthorizationServer) -> None:
    @app.get("/oauth/authorize")
    def authorize_page() -> Any:
        try:
            grant = server.get_consent_grant(end_user=None)
        except OAuth2Error as error:
            return server.handle_error_response(None, error)
        return render_template_string(
            CONSENT_TEMPLATE,
            client_id=grant.client.get_client_id(),
            scope=grant.request.scope,
            action=request.full_path,
        )

    @app.post("/oauth/authorize")
    def authorize_decision() -> Any:
        user = None
        if request.form.get("decision") == "allow":
            user = SandboxUser(request.form.get("username", "").strip() or "demo")
        try:
            grant = server.get_consent_grant(end_user=user)
        except OAuth2Error as error:
            return server.handle_error_response(None, error)
        return server.create_authorization_response(grant_user=user, grant=grant)
