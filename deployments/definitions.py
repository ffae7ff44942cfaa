"""The one definition of every deployment: name, entrypoint, schedule, time zone,
parameters. `prefect.yaml` and the embedded `serve` are built from `DEPLOYMENTS`.

Cron schedules carry their time zone: `flow.to_deployment(cron=...)` would run in UTC.
The email run is at 07:00 in `America/Phoenix` (MST, UTC−07:00 all year, no DST), so it
is 14:00 UTC in January and in July; `America/Denver` would move it to 13:00 UTC in
summer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect.schedules import Cron, Interval, Schedule

from relink.notify import EMAIL_TIME_ZONE

INTERVAL_ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)
"""Interval schedules count from here, so runs land on round times (:00, :15, ...)."""


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    entrypoint: str  # "path/to/flow.py:function"
    description: str
    cron: str | None = None
    timezone: str = "UTC"
    interval_minutes: int | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    concurrency_limit: int | None = None

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.interval_minutes is None):
            raise ValueError(f"deployment {self.name!r}: give exactly one of cron, interval")

    @property
    def flow_name(self) -> str:
        return self.entrypoint.rpartition(":")[2].replace("_", "-")


DEPLOYMENTS: tuple[DeploymentSpec, ...] = (
    DeploymentSpec(
        name="check-connections",
        entrypoint="flows/check_connections.py:check_connections",
        description="Check every connection's credentials and record what broke.",
        interval_minutes=15,
        tags=("relink", "checks"),
        concurrency_limit=1,
    ),
    DeploymentSpec(
        name="send-disconnection-emails",
        entrypoint="flows/send_disconnection_emails.py:send_disconnection_emails",
        description="07:00 MST daily: email the owner of every connection disconnected "
        "for 24 hours, once per disconnection.",
        cron="0 7 * * *",
        timezone=EMAIL_TIME_ZONE,
        tags=("relink", "emails"),
        concurrency_limit=1,
    ),
)


def by_name(name: str) -> DeploymentSpec:
    for spec in DEPLOYMENTS:
        if spec.name == name:
            return spec
    known = ", ".join(s.name for s in DEPLOYMENTS)
    raise KeyError(f"no deployment {name!r}; known: {known}")


def schedule_of(spec: DeploymentSpec) -> Schedule:
    """The Prefect schedule of a deployment (`prefect.schedules.Cron` or `Interval`)."""
    if spec.cron is not None:
        return Cron(spec.cron, timezone=spec.timezone)
    assert spec.interval_minutes is not None
    return Interval(
        timedelta(minutes=spec.interval_minutes),
        anchor_date=INTERVAL_ANCHOR,
        timezone=spec.timezone,
    )
