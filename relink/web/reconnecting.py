"""The pages' side of a reconnect: which form to show, and the calls to `relink.reconnecting`.

Secrets pass through here on their way to the service and go nowhere else: they are
never put back into a form, a URL, a flash message or a log line.

After a successful reconnect its follow-up (re-check, refresh the datasets) starts
(`relink.web.followups`): a flow run when Prefect is configured, else in this process,
where the page waits for it a few seconds and says when it goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any

import connectors
from relink.app import Relink
from relink.errors import Conflict, InvalidInput
from relink.followup.run import Verdict
from relink.models import Connection
from relink.reconnecting import oauth
from relink.reconnecting.confirm import confirm_replacement
from relink.reconnecting.errors import (
    AccountReplacement,
    CredentialsRefused,
    InstallationMisconfigured,
    OAuthStateRefused,
    ReconnectFailed,
)
from relink.reconnecting.form import Changes, ReconnectForm
from relink.reconnecting.replace import Reconnected, reconnect_with_secrets
from relink.web import followups, views

log = logging.getLogger("relink.web")

CALLBACK_PATH = "/oauth/callback"


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str
    kind: str = "ok"  # ok | auth_failed | unreachable | invalid | conflict | state | confirm
    connection_id: int | None = None
    # kind "confirm": the replacement to confirm (never a secret; the token is single use)
    replacement: AccountReplacement | None = None


def _confirm(exc: AccountReplacement) -> Outcome:
    return Outcome(False, exc.line, "confirm", exc.connection_id, replacement=exc)


def oauth_origin(conn: Connection) -> str | None:
    """Where the consent page of an OAuth connection lives (the CSP's form-action)."""
    connector = connectors.get(conn.type)
    endpoints = getattr(connector, "endpoints", None)
    current = conn.settings or {}
    default = endpoints.authorize_url if endpoints else None
    return views.origin(current.get("authorize_url") or default)


def submitted_changes(form: ReconnectForm, submitted: Mapping[str, Any]) -> Changes:
    """The settings and secrets a form post proposes. A setting missing from the post is
    kept; a secret left empty is left out (an OAuth client secret: kept)."""
    settings = {
        spec.name: value
        for spec, _ in form.settings
        if isinstance(value := submitted.get(spec.name), str)
    }
    secrets = {
        spec.name: value
        for spec in form.secrets
        if isinstance(value := submitted.get(spec.name), str) and value
    }
    return Changes(settings, secrets)


def callback_url(relink: Relink) -> str:
    return relink.settings.base_url.rstrip("/") + CALLBACK_PATH


def start_oauth(relink: Relink, connection_id: int, *, actor: str, changes: Changes) -> str:
    """The provider's authorization URL (a pending state is stored by the service)."""
    started = oauth.start_oauth(
        relink,
        connection_id,
        actor=actor,
        redirect_uri=callback_url(relink),
        settings=changes.settings,
        secrets=changes.secrets,
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
    changes = submitted_changes(form, submitted)
    attempt = reconnect_with_secrets(
        relink,
        connection_id,
        actor=actor,
        secrets=changes.secrets,
        settings=changes.settings,
        refresh=False,
        hold=True,  # another account's credentials wait for the user's confirmation
    )
    return await _reconnected(
        relink, attempt, actor=actor, actor_id=actor_id, background=background
    )


async def finish_oauth(
    relink: Relink,
    *,
    actor: str,
    actor_id: int,
    state: str,
    code: str,
    background: set[asyncio.Task[Any]],
) -> Outcome:
    attempt = oauth.finish_oauth(
        relink, state=state, code=code, actor=actor, refresh=False, hold=True
    )
    return await _reconnected(
        relink, attempt, actor=actor, actor_id=actor_id, background=background
    )


async def confirm(
    relink: Relink,
    connection_id: int,
    *,
    actor: str,
    actor_id: int,
    token: str,
    background: set[asyncio.Task[Any]],
) -> Outcome:
    """The user confirmed "This replaces … with …": commit the held reconnect."""
    attempt = confirm_replacement(
        relink, token, actor=actor, connection_id=connection_id, refresh=False
    )
    return await _reconnected(
        relink, attempt, actor=actor, actor_id=actor_id, background=background
    )


async def _reconnected(
    relink: Relink,
    attempt: Awaitable[Reconnected],
    *,
    actor: str,
    actor_id: int,
    background: set[asyncio.Task[Any]],
) -> Outcome:
    """The outcome of a reconnect `attempt` (with secrets, OAuth, or a confirmation) as the
    page says it; a successful one starts its follow-up."""
    try:
        done = await attempt
    except AccountReplacement as exc:
        return _confirm(exc)
    except OAuthStateRefused as exc:
        return Outcome(False, str(exc), "state")
    except ReconnectFailed as exc:
        return _failed(exc)
    except (InvalidInput, Conflict) as exc:
        return Outcome(False, str(exc), "conflict" if isinstance(exc, Conflict) else "invalid")
    return await _refreshed(relink, done, actor=actor, actor_id=actor_id, background=background)


def _failed(exc: ReconnectFailed) -> Outcome:
    kind = "unreachable"
    if isinstance(exc, CredentialsRefused):
        kind = "auth_failed"
    elif isinstance(exc, InstallationMisconfigured):
        kind = "misconfigured"
    return Outcome(False, str(exc), kind)


async def _refreshed(
    relink: Relink,
    done: Reconnected,
    *,
    actor: str,
    actor_id: int,
    background: set[asyncio.Task[Any]],
) -> Outcome:
    owner = "" if done.owner == done.previous_owner else " You are now its Created By."
    account = f" Connected as {done.account}." if done.account else ""
    head = f"Reconnected {done.connection!r}: the new credentials work.{account}{owner}"
    line = await follow_up(relink, done.connection_id, actor, actor_id, background)
    return Outcome(True, f"{head} {line}", connection_id=done.connection_id)


async def follow_up(
    relink: Relink,
    connection_id: int,
    actor: str,
    actor_id: int,
    background: set[asyncio.Task[Any]],
) -> str:
    """Start the reconnect's follow-up (re-check, refresh the datasets) for the actor; the
    line that says how it went, or that it goes on (here, or in a flow run)."""
    started = await followups.start(
        relink,
        connection_id,
        requested_by=actor,
        requested_by_id=actor_id,
        background=background,
    )
    if started.flow_run is not None:
        return f"Its datasets are refreshed by the flow run {started.flow_run}."
    if started.report is None:
        return "Refreshing its datasets…"
    if started.report.verdict is not Verdict.WORKS:
        status = started.report.checked["status"]
        return f"Its datasets were not refreshed: checked again, it is {status}."
    return refresh_line(started.report.refresh)


def refresh_line(refreshed: Mapping[str, Any] | None) -> str:
    """How the refresh of a connection's datasets went (`RefreshSummary.as_dict()`)."""
    if refreshed is None:
        return "Refreshing its datasets failed; see the datasets below."
    total = refreshed["datasets"]
    if total == 0:
        return "No datasets to refresh."
    failed = refreshed["error"]
    if failed:
        return f"Datasets refreshed: {total - failed} of {total}; {failed} failed (see below)."
    return f"Datasets refreshed: {total} of {total}."
