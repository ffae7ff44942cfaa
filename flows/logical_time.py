"""The time a flow run decides at, its logical time: the run's scheduled start (what
Prefect calls its expected start time), else the wall clock. A run that starts late, or
after another run scheduled at the same instant, decides exactly as if it had started
on time: the sweep scheduled at T records its checks at T, and the email run scheduled
at T + 24 h emails the disconnections that sweep opened."""

from __future__ import annotations

from datetime import UTC, datetime

from relink.timeutil import utcnow


def logical_now() -> datetime:
    """This flow run's scheduled start in UTC; the wall clock outside a flow run."""
    from prefect.runtime import flow_run

    scheduled = flow_run.scheduled_start_time if flow_run.id else None
    if scheduled is None:
        return utcnow()
    at = scheduled.astimezone(UTC)  # a pendulum DateTime: made a plain datetime
    return datetime(*at.timetuple()[:6], at.microsecond, tzinfo=UTC)
