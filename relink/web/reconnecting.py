"""The pages' side of a reconnect: which form to show, and the calls to `relink.reconnect`.

Secrets pass through here on their way to the service and go nowhere else: they are
never put back into a form, a URL, a flash message or a log line.

After a successful reconnect the connection's datasets are refreshed. The page waits
for that refresh up to `REFRESH_WAIT` seconds; a longer one goes on in the background
and the page says it is under way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import connectors
from connectors.base import AuthKind, Field
from relink import reconnect as service
from relink.app import Relink
from relink.errors import Conflict, InvalidInput
from relink.models import Connection
from relink.refresh import RefreshSummary
from relink.web import views

log = logging.getLogger("relink.web")

REFRESH_WAIT = 10.0  # seconds a page waits for the datasets' refresh
CALLBACK_PATH = "/oauth/callback"


@dataclass(frozen=True)
class ReconnectForm:
    oauth: bool
    provider_name: str
    fields: tuple[Field, ...] = ()  # the secrets to enter (password inputs, never pre-filled)
    settings: tuple[tuple[str, str], ...] = ()  # (label, value) of the current settings
    oauth_origin: str | None = None  # where the consent page lives (CSP form-action)


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str
    kind: str = "ok"  # ok | auth_failed | unreachable | invalid | conflict | state
    connection_id: int | None = None


def form_for(conn: Connection) -> ReconnectForm:
    try:
        connector = connectors.get(conn.type)
    except connectors.UnknownConnector:
        return ReconnectForm(oauth=False, provider_name=conn.type)
    current = conn.settings or {}
    if connector.auth_kind == AuthKind.OAUTH2:
        endpoints = getattr(connector, "endpoints", None)
        authorize_url = current.get("authorize_url") or (
            endpoints.authorize_url if endpoints else None
        )
        return ReconnectForm(
            oauth=True,
            provider_name=connector.display_name,
            oauth_origin=views.origin(authorize_url),
        )
    settings = tuple(
        (f.label, str(current[f.name]))
        for f in connector.fields
        if not f.secret and current.get(f.name) not in (None, "")
    )
    return ReconnectForm(
        oauth=False,
        provider_name=connector.display_name,
        fields=tuple(f for f in connector.fields if f.secret),
        settings=settings,
    )


def callback_url(relink: Relink) -> str:
    return relink.settings.base_url.rstrip("/") + CALLBACK_PATH


def start_oauth(relink: Relink, connection_id: int, *, actor: str) -> str:
    """The provider's authorization URL (a pending state is stored by the service)."""
    started = service.start_oauth(
        relink, connection_id, actor=actor, redirect_uri=callback_url(relink)
    )
    return started.url


async def with_secrets(
    relink: Relink,
    connection_id: int,
    *,
    actor: str,
    actor_id: int,
    form: ReconnectForm,
    submitted: Mapping[str, Any],
    background: set[asyncio.Task[Any]],
) -> Outcome:
    secrets: dict[str, str] = {}
    for spec in form.fields:
        value = submitted.get(spec.name)
        if isinstance(value, str) and value:
            secrets[spec.name] = value
        elif spec.required:
            return Outcome(False, f"Enter the {spec.label.lower()}.", "invalid")
    try:
        done = await service.reconnect_with_secrets(
            relink, connection_id, actor=actor, secrets=secrets, refresh=False
        )
    except service.ReconnectFailed as exc:
        return _failed(exc)
    except (InvalidInput, Conflict) as exc:
        return Outcome(False, str(exc), "conflict" if isinstance(exc, Conflict) else "invalid")
    return await _refreshed(relink, done, actor_id=actor_id, background=background)


async def finish_oauth(
    relink: Relink,
    *,
    actor: str,
    actor_id: int,
    state: str,
    code: str,
    background: set[asyncio.Task[Any]],
) -> Outcome:
    try:
        done = await service.finish_oauth(
            relink, state=state, code=code, actor=actor, refresh=False
        )
    except service.OAuthStateRefused as exc:
        return Outcome(False, str(exc), "state")
    except service.ReconnectFailed as exc:
        return _failed(exc)
    except (InvalidInput, Conflict) as exc:
        return Outcome(False, str(exc), "conflict" if isinstance(exc, Conflict) else "invalid")
    return await _refreshed(relink, done, actor_id=actor_id, background=background)


def _failed(exc: service.ReconnectFailed) -> Outcome:
    kind = "unreachable"
    if isinstance(exc, service.CredentialsRefused):
        kind = "auth_failed"
    elif isinstance(exc, service.InstallationMisconfigured):
        kind = "misconfigured"
    return Outcome(False, str(exc), kind)


async def _refreshed(
    relink: Relink,
    done: service.Reconnected,
    *,
    actor_id: int,
    background: set[asyncio.Task[Any]],
) -> Outcome:
    task = asyncio.create_task(
        service.refresh_connection(relink, done.connection_id, actor_id=actor_id)
    )
    background.add(task)
    task.add_done_callback(_forget(background, done.connection_id))
    finished, _ = await asyncio.wait({task}, timeout=REFRESH_WAIT)
    owner = "" if done.owner == done.previous_owner else " You are now its Created By."
    head = f"Reconnected {done.connection!r}: the new credentials work.{owner}"
    if not finished:
        return Outcome(True, f"{head} Refreshing its datasets…", connection_id=done.connection_id)
    summary = task.result() if not task.exception() else None
    return Outcome(True, f"{head} {_refresh_line(summary)}", connection_id=done.connection_id)


def _refresh_line(summary: RefreshSummary | None) -> str:
    if summary is None:
        return "Refreshing its datasets failed; see the datasets below."
    total = len(summary.results)
    if total == 0:
        return "No datasets to refresh."
    failed = summary.count("error")
    if failed:
        return f"Datasets refreshed: {total - failed} of {total}; {failed} failed (see below)."
    return f"Datasets refreshed: {total} of {total}."


def _forget(background: set[asyncio.Task[Any]], connection_id: int) -> Any:
    def done(task: asyncio.Task[Any]) -> None:
        background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning(
                "refresh after reconnect of connection %s failed: %s",
                connection_id,
                type(task.exception()).__name__,
            )

    return done
