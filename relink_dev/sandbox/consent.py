"""The consent page at ``/oauth/authorize``: GET shows which client asks for which scopes
(each one requested, and whether this client may be granted it) and a username field;
POST with Allow signs that user in and redirects back with a code, with Deny back with
``access_denied`` (Authlib's authorization-code flow)."""

from __future__ import annotations

from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2 import OAuth2Error
from flask import Flask, request

from .models import SandboxUser
from .pages import page

CONSENT = """
<section class="card narrow">
  <h1>Authorize <code id="client-id">{{ client_id }}</code></h1>
  {% if requested %}
  <p>The application requests access to:</p>
  <ul id="scopes">
    {% for scope, granted in requested %}
    <li><code>{{ scope }}</code>{% if not granted %}
      <span class="muted">(not allowed for this client: it will not be granted)</span>
    {%- endif %}</li>
    {% endfor %}
  </ul>
  {% else %}
  <p id="scopes">The application names no scope: it gets this client's default,
  {% for scope in default %}<code>{{ scope }}</code>{{ ", " if not loop.last }}{% endfor %}.</p>
  {% endif %}
  <form method="post" action="{{ action }}" class="stack">
    <label for="username">Sign in to the sandbox as</label>
    <input type="text" id="username" name="username" value="demo" autocomplete="off">
    <p class="hint">Any name works: the sandbox has no passwords.</p>
    <div class="actions">
      <button type="submit" class="primary" id="allow" name="decision" value="allow">Allow</button>
      <button type="submit" id="deny" name="decision" value="deny">Deny</button>
    </div>
  </form>
</section>
"""


def add_consent_routes(app: Flask, server: AuthorizationServer) -> None:
    @app.get("/oauth/authorize")
    def authorize_page() -> Any:
        try:
            grant = server.get_consent_grant(end_user=None)
        except OAuth2Error as error:
            return server.handle_error_response(None, error)
        client = grant.client
        allowed = set(client.scope.split())
        # as the client asked (Authlib's grant keeps only the scopes it will grant)
        requested = [(s, s in allowed) for s in request.args.get("scope", "").split()]
        return page(
            f"Authorize {client.get_client_id()}",
            CONSENT,
            client_id=client.get_client_id(),
            requested=requested,
            default=client.scope.split(),
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
