"""The web pages' follow-ups, kept in the `followups` table so that none is lost: `submit`
writes one before it starts, `handed_over` records the reconnect-connection flow run that
took it over, `run_pending` runs one in this process (plain steps, one ask per source,
audited as `connection.followup` when it ends), and `unfinished` lists the ones a
stopped web process left, to be run again when it starts."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from relink import audit
from relink.app import Relink
from relink.errors import RelinkError
from relink.followup.run import FollowupReport, FollowupSteps, plain_steps, run_followup
from relink.models import Connection, Followup, User
from relink.sweep.validate import CheckPolicy
from relink.timeutil import utcnow


def submit(app: Relink, connection_id: int, requested_by_id: int, *, now: datetime) -> int:
    """Write a follow-up to run; its id."""
    with app.transaction() as session:
        row = Followup(connection_id=connection_id, requested_by_id=requested_by_id, created_at=now)
        session.add(row)
        session.flush()
        return row.id


def handed_over(app: Relink, followup_id: int, flow_run_id: str) -> None:
    """A flow run took the follow-up over: it is no longer this process's to run."""
    with app.transaction() as session:
        session.execute(
            sa.update(Followup).where(Followup.id == followup_id).values(flow_run_id=flow_run_id)
        )


def unfinished(app: Relink) -> list[int]:
    """The follow-ups no process finished and no flow run took over, oldest first."""
    with app.sessions() as session:
        return list(
            session.scalars(
                sa.select(Followup.id)
                .where(Followup.finished_at.is_(None), Followup.flow_run_id.is_(None))
                .order_by(Followup.id)
            )
        )


@dataclass(frozen=True)
class _Asked:
    connection_id: int
    requested_by: str


def asked(app: Relink, followup_id: int) -> tuple[int, str] | None:
    """The connection and the requester's email of a follow-up still to run."""
    with app.sessions() as session:
        row = session.get(Followup, followup_id)
        if row is None or row.finished_at is not None or row.flow_run_id is not None:
            return None
        requester = session.get(User, row.requested_by_id)
        assert requester is not None
        return row.connection_id, requester.email


def _start(app: Relink, followup_id: int, now: datetime) -> _Asked | None:
    """Claim the follow-up for this process: a conditional UPDATE on the start time read,
    so of two processes resuming it at once only one runs it."""
    with app.transaction() as session:
        row = session.get(Followup, followup_id)
        if row is None or row.finished_at is not None or row.flow_run_id is not None:
            return None
        seen = (
            Followup.started_at.is_(None)
            if row.started_at is None
            else (Followup.started_at == row.started_at)
        )
        claimed = session.execute(
            sa.update(Followup)
            .where(Followup.id == followup_id, Followup.finished_at.is_(None), seen)
            .values(started_at=now)
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:  # another process claimed it between our read and update
            return None
        requester = session.get(User, row.requested_by_id)
        assert requester is not None  # the row goes with its user (ON DELETE CASCADE)
        return _Asked(row.connection_id, requester.email)


def _finish(app: Relink, followup_id: int, verdict: str, now: datetime, **details: object) -> None:
    with app.transaction() as session:
        row = session.get(Followup, followup_id)
        if row is None:  # its connection was deleted meanwhile
            return
        row.finished_at = now
        row.verdict = verdict
        audit.record(
            session,
            "connection.followup",
            at=now,
            connection=session.get(Connection, row.connection_id),
            actor=session.get(User, row.requested_by_id),
            followup_id=row.id,
            verdict=verdict,
            **details,
        )


def web_steps(app: Relink) -> FollowupSteps:
    """The web pages' steps: one ask per source, no retries (the visitor can ask again)."""
    return plain_steps(
        app, check_policy=CheckPolicy(timeout=app.settings.check_timeout, attempts=1)
    )


async def run_pending(
    app: Relink, followup_id: int, *, steps: FollowupSteps | None = None
) -> FollowupReport | None:
    """Run follow-up `followup_id` in this process and record how it ended; None when it
    is not to run here (finished, taken over, deleted) or was refused (the requester may
    no longer reconnect the connection: recorded as `refused`)."""
    asked = await asyncio.to_thread(_start, app, followup_id, utcnow())
    if asked is None:
        return None
    try:
        report = await run_followup(
            asked.connection_id, asked.requested_by, steps=steps or web_steps(app)
        )
    except RelinkError as exc:
        await asyncio.to_thread(
            _finish, app, followup_id, "refused", utcnow(), reason=str(exc)[:300]
        )
        return None
    refreshed = report.refresh or {}
    await asyncio.to_thread(
        _finish,
        app,
        followup_id,
        str(report.verdict),
        utcnow(),
        status=report.checked["status"],
        datasets_refreshed=refreshed.get("ok", 0),
        datasets_failed=refreshed.get("error", 0),
    )
    return report
