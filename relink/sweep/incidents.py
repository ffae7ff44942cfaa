"""Provider incidents, kept as one thing: a sweep that finds most connections of one
provider failing alike (`relink.domain.state.detect_incidents`) opens a `provider_incidents`
row, the next sweeps that find it update its counts, and the first sweep that checks
enough of the provider's connections and finds no incident ends it
(`relink.domain.state.plan_incidents`). Opening and ending are Prefect events
(`relink.provider.incident`). What the Connections page and `relink status` show of an
open incident (`open_incidents`) is counted over the connections the viewer may see."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from relink import events
from relink.domain.schedule import EMAIL_TIME_ZONE
from relink.domain.state import IncidentPlan, plan_incidents
from relink.domain.words import CHECK_ERROR, Outcome
from relink.models import Connection, ProviderIncident
from relink.sweep.summary import SweepSummary


def record_incidents(session: Session, summary: SweepSummary, *, now: datetime) -> IncidentPlan:
    """Open, update and end the providers' incidents after a sweep, in the caller's
    transaction (the one that records the sweep)."""
    ongoing = {
        row.provider: row
        for row in session.scalars(
            sa.select(ProviderIncident)
            .where(ProviderIncident.ended_at.is_(None))
            .order_by(ProviderIncident.id)
            .with_for_update()
        )
    }
    plan = plan_incidents(summary.incidents, ongoing, summary.checked_by_provider)
    for found in plan.open:
        row = ProviderIncident(
            provider=found.provider,
            outcome=found.outcome,
            code=found.code,
            failed=found.failed,
            checked=found.checked,
            started_at=now,
            updated_at=now,
        )
        session.add(row)
        session.flush()
        events.provider_incident(session, row, "opened", describe(row, now=now), at=now)
    for found in plan.update:
        row = ongoing[found.provider]
        row.outcome, row.code = found.outcome, found.code
        row.failed, row.checked, row.updated_at = found.failed, found.checked, now
    for provider in plan.close:
        row = ongoing[provider]
        row.ended_at = now
        events.provider_incident(session, row, "closed", describe(row, now=now), at=now)
    return plan


@dataclass(frozen=True)
class IncidentView:
    """An open incident as one viewer sees it: counted over their connections."""

    provider: str
    name: str  # the provider's display name
    outcome: str
    code: str | None
    failed: int  # the viewer's connections of the provider whose last check failed so
    connections: int  # the viewer's connections of the provider
    since: datetime
    text: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "name": self.name,
            "outcome": self.outcome,
            "code": self.code,
            "failed": self.failed,
            "connections": self.connections,
            "since": self.since.isoformat(),
            "text": self.text,
        }


def open_incidents(
    session: Session, visible: sa.ColumnElement[bool], *, now: datetime
) -> list[IncidentView]:
    """The open incidents that the viewer's connections meet (`visible`: the viewer's
    filter on `Connection`), counted over those connections."""
    views = []
    for row in session.scalars(
        sa.select(ProviderIncident)
        .where(ProviderIncident.ended_at.is_(None))
        .order_by(ProviderIncident.provider)
    ):
        types = _types_of(row.provider)
        same = sa.and_(
            Connection.last_outcome == row.outcome,
            Connection.last_outcome_code.is_(None)
            if row.code is None
            else Connection.last_outcome_code == row.code,
        )
        total, failed = session.execute(
            sa.select(
                sa.func.count(Connection.id),
                sa.func.coalesce(sa.func.sum(sa.case((same, 1), else_=0)), 0),
            ).where(Connection.type.in_(types), visible)
        ).one()
        if not failed:  # none of the viewer's connections meets it
            continue
        views.append(
            IncidentView(
                row.provider,
                events.provider_name(row.provider),
                row.outcome,
                row.code,
                int(failed),
                int(total),
                row.started_at,
                describe(row, now=now, failed=int(failed), connections=int(total)),
            )
        )
    return views


def _types_of(provider: str) -> list[str]:
    """The connector types whose connections go to `provider`."""
    import connectors

    types = [c.type for c in connectors.all_connectors() if c.provider == provider]
    return types or [provider]


_WHAT = {
    Outcome.UNREACHABLE: (
        "unreachable",
        "likely a provider outage, no connection was marked broken",
    ),
    Outcome.AUTH_FAILED: (
        "refused their credentials",
        "likely a provider problem; each connection whose check proved it was marked broken",
    ),
    CHECK_ERROR: (
        "could not be checked",
        "a problem of this installation, no connection was marked broken",
    ),
}


def describe(
    row: ProviderIncident,
    *,
    now: datetime,
    failed: int | None = None,
    connections: int | None = None,
) -> str:
    """'Salesforce: 412 of 430 connections unreachable with http_503 since 14:15 MST —
    likely a provider outage, no connection was marked broken' (the sweep's counts unless
    a viewer's are given)."""
    what, meaning = _WHAT.get(row.outcome, (f"failed ({row.outcome})", "likely a provider problem"))
    failed = row.failed if failed is None else failed
    connections = row.checked if connections is None else connections
    code = f" with {row.code}" if row.code else ""
    text = (
        f"{events.provider_name(row.provider)}: {failed} of {connections} connections "
        f"{what}{code} since {_local(row.started_at, now)}"
    )
    if row.ended_at is not None:
        return f"{text}, until {_local(row.ended_at, now)}: over"
    return f"{text} — {meaning}"


def _local(moment: datetime, now: datetime) -> str:
    """'14:15 MST' today (in the account's zone), else '2026-03-01 14:15 MST'."""
    zone = ZoneInfo(EMAIL_TIME_ZONE)
    local, today = moment.astimezone(zone), now.astimezone(zone)
    if local.date() == today.date():
        return f"{local:%H:%M} {local.tzname()}"
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()}"
