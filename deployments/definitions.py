"""The one definition of every deployment: name, entrypoint, schedule, time zone,
parameters, tags, concurrency. The embedded `serve` (`relink run`) is built from
`DEPLOYMENTS`; `prefect.yaml` (production: `prefect deploy --all`) declares the same
deployments, and `tests/integration/test_deployments.py` keeps the two in step.

Cron schedules carry their time zone: `flow.to_deployment(cron=...)` would run in UTC.
The email run is at 07:00 in `America/Phoenix` (MST, UTC−07:00 all year, no DST), so it
is 14:00 UTC in January and in July; `America/Denver` would move it to 13:00 UTC in
summer.

A deployment without a schedule runs on demand (the Prefect UI's "Run", `prefect
deployment run`, `run_deployment`): reconnect, refresh, and the check sweep's shards.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from prefect.schedules import Cron, Interval, Schedule

from relink.domain.schedule import EMAIL_CRON, EMAIL_TIME_ZONE

if TYPE_CHECKING:
    from prefect import Flow
    from prefect.deployments.runner import RunnerDeployment

INTERVAL_ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)
"""Interval schedules count from here, so runs land on round times (:00, :15, ...)."""

WORK_POOL = "relink"
"""The process work pool of production (`prefect worker start --pool relink`)."""

DEFAULT_CHECK_INTERVAL_MINUTES = 15
SHARD_SIZE = 2000
"""Connections per shard when a sweep fans out over the pool's workers."""


def check_interval_minutes() -> int:
    """`RELINK_CHECK_INTERVAL_MINUTES` (default 15): how often the sweep runs."""
    raw = os.environ.get("RELINK_CHECK_INTERVAL_MINUTES", "").strip()
    if not raw:
        return DEFAULT_CHECK_INTERVAL_MINUTES
    try:
        minutes = int(raw)
    except ValueError:
        raise ValueError(f"RELINK_CHECK_INTERVAL_MINUTES={raw!r}: expected whole minutes") from None
    if minutes < 1:
        raise ValueError(f"RELINK_CHECK_INTERVAL_MINUTES={raw!r}: must be at least 1")
    return minutes


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    entrypoint: str  # "path/to/flow.py:function", relative to the repository root
    purpose: str  # what a run does; `description` puts the schedule in front
    cron: str | None = None
    timezone: str = "UTC"
    interval_minutes: int | None = None  # neither cron nor interval: on demand only
    parameters: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    concurrency_limit: int | None = None
    # what happens to a run that finds the limit taken: ENQUEUE (wait) or CANCEL_NEW
    collision_strategy: str = "ENQUEUE"

    def __post_init__(self) -> None:
        if self.cron is not None and self.interval_minutes is not None:
            raise ValueError(
                f"deployment {self.name!r}: a schedule is exactly one of cron, interval "
                "(or neither, for an on-demand deployment)"
            )

    @property
    def flow_name(self) -> str:
        return self.entrypoint.rpartition(":")[2].replace("_", "-")

    @property
    def full_name(self) -> str:
        """`flow/deployment`, as `prefect deployment run` and `run_deployment` take it."""
        return f"{self.flow_name}/{self.name}"

    @property
    def scheduled(self) -> bool:
        return self.cron is not None or self.interval_minutes is not None

    @property
    def description(self) -> str:
        """What the Prefect UI shows: when it runs, in words with the time zone, and what."""
        return f"{schedule_words(self)}: {self.purpose}"


def schedule_words(spec: DeploymentSpec) -> str:
    """The schedule as a person reads it, derived from the schedule itself.

    The Prefect UI shows a cron as "At 07:00 AM every day", without its time zone, so the
    description says it: "Daily at 07:00 MST (14:00 UTC)".
    """
    if spec.interval_minutes is not None:
        return f"Every {spec.interval_minutes} minutes from {INTERVAL_ANCHOR:%H:%M} UTC"
    if spec.cron is None:
        return "On demand"
    minute, hour, *days = spec.cron.split()
    if days != ["*", "*", "*"] or not (minute.isdigit() and hour.isdigit()):
        return f"Cron {spec.cron!r} ({spec.timezone})"
    zone = ZoneInfo(spec.timezone)
    local = [
        datetime(2026, month, 1, int(hour), int(minute), tzinfo=zone) for month in (1, 7)
    ]  # winter and summer: a zone with daylight saving time has two UTC times
    utc = sorted({f"{t.astimezone(UTC):%H:%M}" for t in local})
    return f"Daily at {local[0]:%H:%M %Z} ({' or '.join(utc)} UTC)"


DEPLOYMENTS: tuple[DeploymentSpec, ...] = (
    DeploymentSpec(
        name="check-connections",
        entrypoint="flows/check_connections.py:check_connections",
        purpose="check every connection's credentials and record what broke. "
        "Large sweeps fan out as check-connections-shard runs over the pool's workers.",
        interval_minutes=check_interval_minutes(),
        tags=("relink", "checks"),
        concurrency_limit=1,
        # a sweep still running when the next is due: skip the next, never queue sweeps up
        collision_strategy="CANCEL_NEW",
    ),
    DeploymentSpec(
        name="check-connections-shard",
        entrypoint="flows/check_connections_shard.py:check_connections_shard",
        purpose="one shard (an id range) of a check-connections sweep; started by "
        "check-connections, claimed in the database so it is checked once.",
        tags=("relink", "checks"),
    ),
    DeploymentSpec(
        name="send-disconnection-emails",
        entrypoint="flows/send_disconnection_emails.py:send_disconnection_emails",
        purpose="email the owner of every connection disconnected for 24 hours, once per "
        "disconnection.",
        cron=EMAIL_CRON,
        timezone=EMAIL_TIME_ZONE,
        tags=("relink", "emails"),
        concurrency_limit=1,
    ),
    DeploymentSpec(
        name="reconnect-connection",
        entrypoint="flows/reconnect_connection.py:reconnect_connection",
        purpose="re-check one connection's stored credentials; refresh its "
        "datasets when they work, else publish (and optionally email) the reconnect link.",
        tags=("relink", "reconnect"),
    ),
    DeploymentSpec(
        name="refresh-datasets",
        entrypoint="flows/refresh_datasets.py:refresh_datasets",
        purpose="refresh a connection's datasets (or the given datasets).",
        tags=("relink", "datasets"),
    ),
)


def by_name(name: str) -> DeploymentSpec:
    for spec in DEPLOYMENTS:
        if spec.name == name:
            return spec
    known = ", ".join(s.name for s in DEPLOYMENTS)
    raise KeyError(f"no deployment {name!r}; known: {known}")


def schedule_of(spec: DeploymentSpec) -> Schedule | None:
    """The Prefect schedule of a deployment (`Cron` or `Interval`); None when on demand."""
    if spec.cron is not None:
        return Cron(spec.cron, timezone=spec.timezone)
    if spec.interval_minutes is None:
        return None
    return Interval(
        timedelta(minutes=spec.interval_minutes),
        anchor_date=INTERVAL_ANCHOR,
        timezone=spec.timezone,
    )


def load_flow(spec: DeploymentSpec) -> Flow[..., Any]:
    """Import the flow an entrypoint names (the repository root must be importable)."""
    path, _, function = spec.entrypoint.partition(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return getattr(module, function)


def _deployment_options(spec: DeploymentSpec) -> dict[str, Any]:
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    schedule = schedule_of(spec)
    limit: ConcurrencyLimitConfig | None = None
    if spec.concurrency_limit is not None:
        limit = ConcurrencyLimitConfig(
            limit=spec.concurrency_limit,
            collision_strategy=ConcurrencyLimitStrategy(spec.collision_strategy),
        )
    return {
        "name": spec.name,
        "schedules": [schedule] if schedule is not None else None,
        "parameters": dict(spec.parameters),
        "description": spec.description,
        "tags": list(spec.tags),
        "concurrency_limit": limit,
    }


def to_deployment(spec: DeploymentSpec) -> RunnerDeployment:
    """The deployment for `prefect.serve` (the embedded run); call it outside an event loop."""
    return load_flow(spec).to_deployment(**_deployment_options(spec), _sync=True)


async def ato_deployment(spec: DeploymentSpec) -> RunnerDeployment:
    """`to_deployment` inside an event loop."""
    return await load_flow(spec).ato_deployment(**_deployment_options(spec))
