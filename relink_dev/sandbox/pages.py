"""The sandbox's pages for people, styled with Relink's own stylesheet: the root page
(the URL `make run` prints), which says what this server is and lists its endpoints and
clients (never a secret), and the layout the consent page shares."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, render_template_string, send_file

import relink

from .models import ADMIN_PREFIX

if TYPE_CHECKING:
    from .provider import SandboxProvider

# Relink's stylesheet, so the consent page looks like the pages that send people to it
STATIC = Path(relink.__file__).resolve().parent / "templates" / "web" / "static"

LAYOUT = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{{ title }} · Relink sandbox</title>
  <link rel="stylesheet" href="/static/relink.css">
  <link rel="icon" href="/favicon.ico" type="image/svg+xml">
</head>
<body>
  <header class="topbar">
    <nav class="nav" aria-label="Sandbox">
      <a class="brand" href="/">Relink sandbox</a>
      <span class="tab">a local OAuth 2.0 provider for the demo and tests</span>
    </nav>
  </header>
  <main class="page">
{{ body }}
  </main>
</body>
</html>
"""

ENDPOINTS = (
    ("/oauth/authorize", "the consent page: authorization code with PKCE (S256)"),
    ("/oauth/token", "the token endpoint: authorization_code and refresh_token grants"),
    ("/oauth/introspect", "token introspection (RFC 7662)"),
    ("/oauth/revoke", "token revocation (RFC 7009)"),
    ("/api/me, /api/records", "the demo API, behind a bearer token"),
    ("/apikey/me, /apikey/records", "the demo API, behind an API key"),
    (ADMIN_PREFIX + "…", "the admin API for tests (clients, tokens, faults): loopback only"),
)

HOME = """
<div class="heading">
  <h1 id="what">Relink's sandbox OAuth 2.0 provider</h1>
  <p class="muted">A stand-in for Salesforce, Google and the other providers Relink
  reconnects, for the demo of <span class="mono">make run</span> and for Relink's tests.
  It runs on this machine only: its clients, users and tokens are made up, and nothing
  it is sent leaves it. Relink's own pages are elsewhere (<span class="mono">make run</span>
  prints their address).</p>
</div>
<section class="card">
  <h2>Endpoints</h2>
  <div class="scroll">
  <table class="table compact" id="endpoints">
    <thead><tr><th>Path</th><th>What it is</th></tr></thead>
    <tbody>
    {% for path, what in endpoints %}
      <tr><td class="mono">{{ path }}</td><td>{{ what }}</td></tr>
    {% endfor %}
    </tbody>
  </table>
  </div>
</section>
<section class="card">
  <h2>Clients</h2>
  {% if clients %}
  <div class="scroll">
  <table class="table compact" id="clients">
    <thead><tr><th>Client id</th><th>Scope it may be granted</th><th>Redirects to</th></tr></thead>
    <tbody>
    {% for c in clients %}
      <tr>
        <td class="mono">{{ c.client_id }}</td>
        <td class="mono">{{ c.scope }}</td>
        <td class="mono">{{ c.redirect_uris | join(", ") }}
          {%- if c.allow_loopback_redirects %}{{ ", " if c.redirect_uris }}any loopback
          callback{% endif %}</td>
      </tr>
    {% endfor %}
    </tbody>
  </table>
  </div>
  {% else %}
  <p class="muted">None registered yet.</p>
  {% endif %}
</section>
"""


def page(title: str, body: str, **context: Any) -> str:
    """`body` (a template) rendered with `context`, inside the sandbox's layout."""
    inner = render_template_string(body, **context)
    return render_template_string(LAYOUT, title=title, body=_Markup(inner))


class _Markup(str):
    """Already rendered HTML: the layout inserts it as it is."""

    def __html__(self) -> str:
        return self


def add_page_routes(app: Flask, provider: SandboxProvider) -> None:
    @app.get("/")
    def home() -> Any:
        return page("What this is", HOME, endpoints=ENDPOINTS, clients=provider.clients())

    @app.get("/static/relink.css")
    def stylesheet() -> Response:
        return send_file(STATIC / "relink.css", mimetype="text/css")

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return send_file(STATIC / "favicon.svg", mimetype="image/svg+xml")
