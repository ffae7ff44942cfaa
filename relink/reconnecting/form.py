"""What a reconnect asks for and may change: the form of a connection (the settings the
connector lets a reconnect change, with their current values; the secrets to enter anew;
the fixed settings it only shows), and `propose`, which applies proposed `Changes` to the
stored settings and refuses, before the source is asked, what a reconnect may not change,
an empty required value or settings the connector calls unusable."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from connectors.base import Connector, Field
from relink.app import Relink
from relink.domain.words import AuthKind
from relink.errors import InvalidInput
from relink.models import Connection
from relink.reconnecting.errors import (
    NOTHING_CHANGED,
)
from relink.reconnecting.target import authorize, connector_of

KIND_LABELS = {
    AuthKind.PASSWORD: "a password",
    AuthKind.API_KEY: "an API key",
    AuthKind.OAUTH2: "OAuth",
}


@dataclass(frozen=True)
class ReconnectForm:
    """What a reconnect of one connection asks for: the settings it may change with their
    current values (pre-filled), the secrets to enter anew (never shown), and the other
    settings, which only show what the connection uses."""

    connection_id: int
    connection: str
    type: str
    provider_name: str
    kind: AuthKind
    settings: tuple[tuple[Field, str], ...]
    secrets: tuple[Field, ...]
    fixed: tuple[tuple[Field, str], ...]

    @property
    def oauth(self) -> bool:
        return self.kind is AuthKind.OAUTH2


def form_of(conn: Connection) -> ReconnectForm:
    """The form of a connection the caller may reconnect (see `reconnect_form`)."""
    connector = connector_of(conn)
    current = conn.settings or {}
    asked = connector.reconnect_fields(current)
    names = {f.name for f in asked}
    return ReconnectForm(
        connection_id=conn.id,
        connection=conn.name,
        type=conn.type,
        provider_name=connector.display_name,
        kind=connector.auth_kind,
        settings=tuple((f, current_value(f, current.get(f.name))) for f in asked if not f.secret),
        secrets=tuple(f for f in asked if f.secret),
        fixed=tuple(
            (f, str(current[f.name]))
            for f in connector.fields
            if not f.secret and f.name not in names and current.get(f.name) not in (None, "")
        ),
    )


def reconnect_form(app: Relink, actor: str, connection_id: int) -> ReconnectForm:
    """What to ask `actor` for (after the access check), for prompts and pages."""
    with app.sessions() as session:
        _, conn = authorize(session, actor, connection_id)
        return form_of(conn)


def current_value(spec: Field, value: Any) -> str:
    """A setting as the connection uses it: its default when it has none."""
    text = "" if value is None else str(value).strip()
    return text or spec.default or ""


@dataclass(frozen=True)
class Changes:
    """What a reconnect proposes besides the credentials the source hands out: new values
    of settings (unchanged ones may be included) and newly entered secrets."""

    settings: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)

    def sealed(self) -> str:
        return json.dumps({"settings": dict(self.settings), "secrets": dict(self.secrets)})

    @classmethod
    def unsealed(cls, text: str | None) -> Changes:
        data = json.loads(text) if text else {}
        return cls(data.get("settings", {}), data.get("secrets", {}))


@dataclass(frozen=True)
class Proposal:
    """The settings after the changes, and what changed: [old, new] per setting."""

    settings: dict[str, str]
    changed: dict[str, list[str | None]]
    secrets: tuple[str, ...]  # the names of the secrets entered


def propose(connector: Connector, current: Mapping[str, Any], changes: Changes) -> Proposal:
    """Apply `changes` to the current settings; InvalidInput for what a reconnect may not
    change, an empty required value or settings the connector calls unusable."""
    allowed = {f.name: f for f in connector.reconnect_fields(current)}
    named = [(name, False) for name in changes.settings] + [(n, True) for n in changes.secrets]
    for name, secret in named:
        spec = allowed.get(name)
        if spec is None or spec.secret != secret:
            may = ", ".join(f.name for f in allowed.values()) or "only the credentials"
            raise InvalidInput(
                f"a reconnect of a {connector.display_name} connection cannot change "
                f"{name!r}; it may change: {may}"
            )
    settings = {k: str(v) for k, v in current.items()}
    changed: dict[str, list[str | None]] = {}
    for name, spec in allowed.items():  # in the connector's order
        if name not in changes.settings:
            continue
        value = str(changes.settings[name]).strip()
        if value == current_value(spec, current.get(name)):
            continue
        if not value and spec.required and spec.default is None:
            raise InvalidInput(f"{spec.label} may not be empty; {NOTHING_CHANGED}")
        if value:
            settings[name] = value
        else:
            settings.pop(name, None)
        changed[name] = [current.get(name), value or None]
    problem = connector.settings_problem(settings) if changed else None
    if problem:
        raise InvalidInput(f"{problem}; {NOTHING_CHANGED}")
    return Proposal(settings, changed, tuple(sorted(n for n, v in changes.secrets.items() if v)))
