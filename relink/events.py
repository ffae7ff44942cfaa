"""Prefect events for Relink's changes of state, so that data engineers route alerts with
Prefect Automations (Slack, PagerDuty, a webhook) instead of code in Relink.

A change queues its event on the SQLAlchemy session that makes it (`queue`); the events
go to Prefect after that session commits, and a rolled-back change emits nothing. They
are emitted only when a Prefect API is configured (`PREFECT_API_URL`): without one,
Prefect would start a temporary server of its own, so nothing is sent at all. Emitting
never fails the change: Prefect's events worker sends them from a thread of its own.

    relink.connection.disconnected   a check proved the credentials broken (opened)
    relink.connection.recovered      a check found it working again (was broken or misconfigured)
    relink.connection.misconfigured  the installation is wrong: only an admin can fix it
    relink.connection.reconnected    someone replaced the credentials (a reconnect)
    relink.email.sent / .failed / .unknown   the one email of a disconnection
    relink.provider.incident         most connections of a provider fail alike (opened, closed)

The resource is the connection (`relink.connection.<id>`), the email
(`relink.email.<id>`) or the provider (`relink.provider.<name>`); the related resources
name the connection, the account and the provider with their roles. Payloads hold ids,
names, states and codes: never a credential, a token or an address (docs/automations.md).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from relink.domain.state import Change
from relink.timeutil import utcnow

if TYPE_CHECKING:
    from relink.models import Connection, ProviderIncident

log = logging.getLogger("relink.events")

CONNECTION_DISCONNECTED = Change.DISCONNECTED.value
CONNECTION_RECONNECTED = Change.RECONNECTED.value
CONNECTION_RECOVERED = Change.RECOVERED.value
CONNECTION_MISCONFIGURED = Change.MISCONFIGURED.value
EMAIL_SENT = "relink.email.sent"
EMAIL_FAILED = "relink.email.failed"
EMAIL_UNKNOWN = "relink.email.unknown"
PROVIDER_INCIDENT = "relink.provider.incident"

_QUEUE = "relink.events"  # the key of a session's queued events in `Session.info`


@dataclass(frozen=True)
class Event:
    """One Prefect event, as `prefect.events.emit_event` takes it."""

    event: str
    resource: dict[str, str]
    related: list[dict[str, str]] = field(default_factory=list)
    payload: dict[str, Any] = field(default_factory=dict)
    occurred: datetime = field(default_factory=utcnow)  # when it was recorded, not `now`


def enabled() -> bool:
    """Whether a Prefect API is configured: the environment's `PREFECT_API_URL`, or
    Prefect's own settings when this process already runs Prefect (a flow, a test
    server). Never imports Prefect to find out."""
    if os.environ.get("PREFECT_API_URL"):
        return True
    if "prefect.settings" not in sys.modules:
        return False
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def queue(session: Session, event: Event) -> None:
    """Emit `event` once `session` commits; a rollback drops it. A reconnect supersedes a
    recovery of the same connection queued in the same transaction."""
    queued: list[Event] = session.info.setdefault(_QUEUE, [])
    if event.event == CONNECTION_RECONNECTED:
        same = event.resource["prefect.resource.id"]
        queued[:] = [
            e
            for e in queued
            if not (e.event == CONNECTION_RECOVERED and e.resource["prefect.resource.id"] == same)
        ]
    queued.append(event)


def emit(events: list[Event]) -> None:
    """Hand events to Prefect's events worker (no-op without a Prefect API)."""
    if not events or not enabled():
        return
    try:
        from prefect.events import emit_event

        for e in events:
            emit_event(
                event=e.event,
                resource=e.resource,
                related=e.related,
                payload=e.payload,
                occurred=e.occurred,
            )
    except Exception:  # an event never undoes or fails a committed change
        log.warning("could not emit %d Prefect event(s)", len(events), exc_info=True)


def flush(timeout: float = 10.0) -> None:
    """Wait until the events emitted so far have gone out (a short-lived command's end;
    Prefect drains its worker at exit too)."""
    if "prefect.events.worker" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all(timeout=timeout, at_exit=False)


@sa.event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    emit(session.info.pop(_QUEUE, []))


@sa.event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_QUEUE, None)


# --- the resources ------------------------------------------------------------------------


def provider_name(provider: str) -> str:
    """The provider's display name ("Salesforce"), or its key when no connector has it."""
    import connectors

    try:
        return connectors.get(provider).display_name
    except connectors.UnknownConnector:
        return provider


def provider_of(conn: Connection) -> str:
    import connectors

    try:
        return connectors.get(conn.type).provider
    except connectors.UnknownConnector:
        return conn.type


def connection_resource(conn: Connection, provider: str, role: str | None = None) -> dict[str, str]:
    resource = {
        "prefect.resource.id": f"relink.connection.{conn.id}",
        "prefect.resource.name": conn.name,
        "relink.provider": provider,
        "relink.account": str(conn.account_id),
    }
    if role:
        resource["prefect.resource.role"] = role
    return resource


def account_resource(account_id: int, name: str | None) -> dict[str, str]:
    resource = {
        "prefect.resource.id": f"relink.account.{account_id}",
        "prefect.resource.role": "account",
    }
    if name:
        resource["prefect.resource.name"] = name
    return resource


def provider_resource(provider: str, role: str | None = "provider") -> dict[str, str]:
    resource = {
        "prefect.resource.id": f"relink.provider.{provider}",
        "prefect.resource.name": provider_name(provider),
    }
    if role:
        resource["prefect.resource.role"] = role
    return resource


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


# --- the events -------------------------------------------------------------------------


def connection_changed(
    session: Session,
    name: str,
    conn: Connection,
    *,
    provider: str | None = None,
    at: datetime,
    **payload: Any,
) -> None:
    """Queue a connection's event (`payload`: plain, non-secret values)."""
    if not enabled():
        return
    provider = provider or provider_of(conn)
    account = conn.account
    queue(
        session,
        Event(
            name,
            resource=connection_resource(conn, provider),
            related=[
                account_resource(conn.account_id, account.name if account else None),
                provider_resource(provider),
            ],
            payload={
                "connection_id": conn.id,
                "connection": conn.name,
                "account_id": conn.account_id,
                "provider": provider,
                "at": _iso(at),
                **payload,
            },
        ),
    )


# an email's final states and their events: written to the outbox (no SendGrid key, the
# demo) is sent as far as Relink goes; `released` and `no_recipient` make none
EMAIL_EVENTS = {
    "sent": EMAIL_SENT,
    "outbox": EMAIL_SENT,
    "failed": EMAIL_FAILED,
    "unknown": EMAIL_UNKNOWN,
}


def email_changed(
    session: Session,
    notification_id: int,
    disconnection_id: int,
    state: str,
    *,
    at: datetime,
    attempts: int | None = None,
    error: str | None = None,
) -> None:
    """Queue the event of a disconnection email's final state (sent, written to the
    outbox, failed, unknown); other states make none."""
    name = EMAIL_EVENTS.get(str(state))
    if name is None or not enabled():
        return
    from relink.models import Disconnection

    disconnection = session.get(Disconnection, disconnection_id)
    if disconnection is None:
        return
    _queue_email(
        session,
        name,
        f"relink.email.{notification_id}",
        f"disconnection email of {disconnection.connection.name}",
        disconnection.connection,
        kind="disconnection",
        notification_id=notification_id,
        disconnection_id=disconnection_id,
        state=str(state),
        attempts=attempts,
        error=error,
        disconnected_since=_iso(disconnection.started_at),
        at=_iso(at),
    )


def heads_up_changed(
    session: Session,
    heads_up_id: int,
    connection_id: int,
    state: str,
    *,
    at: datetime,
    attempts: int | None = None,
    error: str | None = None,
) -> None:
    """Queue the event of an expiry heads-up email's final state, as `email_changed`
    does for a disconnection email (resource `relink.email.heads-up.<id>`)."""
    name = EMAIL_EVENTS.get(str(state))
    if name is None or not enabled():
        return
    from relink.models import Connection, HeadsUp

    conn, heads_up = session.get(Connection, connection_id), session.get(HeadsUp, heads_up_id)
    if conn is None or heads_up is None:
        return
    _queue_email(
        session,
        name,
        f"relink.email.heads-up.{heads_up_id}",
        f"expiry heads-up of {conn.name}",
        conn,
        kind="heads_up",
        heads_up_id=heads_up_id,
        state=str(state),
        attempts=attempts,
        error=error,
        expires_at=_iso(heads_up.expires_at),
        at=_iso(at),
    )


def _queue_email(
    session: Session,
    name: str,
    resource_id: str,
    title: str,
    conn: Connection,
    **payload: Any,
) -> None:
    provider = provider_of(conn)
    account = conn.account
    queue(
        session,
        Event(
            name,
            resource={
                "prefect.resource.id": resource_id,
                "prefect.resource.name": title,
                "relink.provider": provider,
                "relink.account": str(conn.account_id),
            },
            related=[
                connection_resource(conn, provider, role="connection"),
                account_resource(conn.account_id, account.name if account else None),
                provider_resource(provider),
            ],
            payload={
                "connection_id": conn.id,
                "connection": conn.name,
                "account_id": conn.account_id,
                "provider": provider,
                **payload,
            },
        ),
    )


def provider_incident(
    session: Session, incident: ProviderIncident, state: str, text: str, *, at: datetime
) -> None:
    """Queue `relink.provider.incident` for an incident `state` ("opened" or "closed").
    The state is a label of the resource, so that an Automation can match on it."""
    if not enabled():
        return
    resource = provider_resource(incident.provider, role=None)
    resource["relink.incident.state"] = state
    resource["relink.incident.outcome"] = incident.outcome
    if incident.code:
        resource["relink.incident.code"] = incident.code
    queue(
        session,
        Event(
            PROVIDER_INCIDENT,
            resource=resource,
            related=[
                {
                    "prefect.resource.id": f"relink.provider-incident.{incident.id}",
                    "prefect.resource.role": "incident",
                }
            ],
            payload={
                "incident_id": incident.id,
                "provider": incident.provider,
                "state": state,
                "outcome": incident.outcome,
                "code": incident.code,
                "failed": incident.failed,
                "checked": incident.checked,
                "started_at": _iso(incident.started_at),
                "ended_at": _iso(incident.ended_at),
                "text": text,
                "at": _iso(at),
            },
        ),
    )
