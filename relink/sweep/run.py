"""The sweep, written once as it reads: plan which connections to check (in batches, or
in shards when it fans out over workers), check them batch by batch as of `now` (a few
batches at a time), add up what happened, and record the sweep. Its I/O steps come in
as `SweepSteps`: `relink check`, the tests and the benchmark pass `plain_steps()`,
plain calls in this process; the check-connections flow passes Prefect tasks and the
shard runs (tasks/checks.py). A shard run of a fanned-out sweep runs `run_shard`."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from relink.app import Relink
from relink.sweep.incidents import record_incidents
from relink.sweep.plan import Range, connections_in, plan_batches, plan_window
from relink.sweep.record import record_sweep
from relink.sweep.shards import claim_shard, create_shards, finish_shard, shards_of
from relink.sweep.summary import SweepSummary, merge_batches
from relink.sweep.validate import CheckPolicy

DEFAULT_SHARD_SIZE = 2000
DEFAULT_SHARD_START_TIMEOUT = 600.0


@dataclass(frozen=True)
class SweepPolicy:
    """How a sweep is cut and paced. `check` holds the caps of the whole sweep; each of
    the `parallel_batches` batches in flight gets its share of them."""

    check: CheckPolicy = field(default_factory=CheckPolicy)
    parallel_batches: int = 1
    fan_out: bool | None = False  # None: when there is more than one shard
    shard_size: int = DEFAULT_SHARD_SIZE
    shard_start_timeout: float = DEFAULT_SHARD_START_TIMEOUT  # seconds; then it is cancelled

    def per_batch(self) -> CheckPolicy:
        """The caps of one batch: the sweep's, split over the batches in flight."""
        share = max(1, self.parallel_batches)
        return dataclasses.replace(
            self.check,
            concurrency=max(1, math.ceil(self.check.concurrency / share)),
            per_provider=max(1, math.ceil(self.check.per_provider / share)),
        )

    def shard_parameters(self) -> dict[str, Any]:
        """What a shard run is given: the sweep's own caps (it splits them likewise)."""
        return {
            "batch_size": self.check.batch_size,
            "concurrency": self.check.concurrency,
            "per_provider": self.check.per_provider,
        }


@dataclass(frozen=True)
class ShardRuns:
    """How the shard runs of a fanned-out sweep ended, by shard number (whether a shard
    finished is read from its row)."""

    not_started: list[int] = field(default_factory=list)  # cancelled before they started


@dataclass(frozen=True)
class SweepSteps:
    """The sweep's I/O steps. They take and return times, ids and counts: no name or
    secret (a Prefect task's inputs and result are stored)."""

    check_batch: Callable[
        [datetime, int, int | None, dict[str, Any], list[int] | None], Awaitable[dict[str, Any]]
    ]
    """(now, after_id, upto_id, `CheckPolicy` as a dict, only these ids) -> the batch's
    `BatchSummary.as_dict()`: check the connections in (after_id, upto_id] as of now."""
    run_shards: (
        Callable[[datetime, str, list[int], dict[str, Any], float], Awaitable[ShardRuns]] | None
    ) = None
    """(now, sweep id, shard numbers, shard run parameters, start timeout in seconds) ->
    how the runs ended. Starts one shard run per shard, each checking as of `now`, and
    waits for them; one not started within the timeout is withdrawn and cancelled.
    None: this sweep cannot fan out."""


@dataclass
class SweepReport:
    """A whole sweep: its summary, and how its shards went when it fanned out."""

    summary: SweepSummary
    sweep_id: str
    shards: int = 0
    failed_shards: list[int] = field(default_factory=list)
    not_started_shards: list[int] = field(default_factory=list)
    shard_start_timeout: float = DEFAULT_SHARD_START_TIMEOUT

    @property
    def failed(self) -> bool:
        return bool(self.failed_shards or self.not_started_shards)

    def failure(self) -> str:
        """Why the sweep failed, in a line; empty when it did not."""
        parts = []
        if self.not_started_shards:
            parts.append(
                f"shard(s) {_numbers(self.not_started_shards)} did not start within "
                f"{self.shard_start_timeout:g} s and were cancelled: their "
                f"{sum(self.summary.not_checked.values())} connection(s) were not checked "
                "in this sweep; the next sweep checks them"
            )
        if self.failed_shards:
            parts.append(f"shard(s) {_numbers(self.failed_shards)} did not finish")
        return f"sweep {self.sweep_id}: " + "; ".join(parts) if parts else ""

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.summary.as_dict(),
            "sweep_id": self.sweep_id,
            "shards": self.shards,
            "failed_shards": self.failed_shards,
            "not_started_shards": self.not_started_shards,
        }

    def markdown(self, shard_size: int) -> str:
        text = self.summary.markdown()
        if self.shards:
            text += f"\nFanned out over {self.shards} shard(s) of {shard_size} connections.\n"
        if self.failed:
            text += f"\n**Failed:** {self.failure()}.\n"
        return text


def _numbers(shards: Sequence[int]) -> str:
    return ", ".join(map(str, shards))


async def run_sweep(
    app: Relink,
    *,
    now: datetime,
    steps: SweepSteps,
    policy: SweepPolicy,
    source: str | None,
    sweep_id: str | None = None,
    connection_ids: Sequence[int] | None = None,
    details: dict[str, Any] | None = None,
) -> SweepReport:
    """Check every connection (or only `connection_ids`) as of `now`, and record the
    sweep as `source` with `details` (`relink status` shows the last one; None: not
    recorded) with the provider incidents it opened, updated or ended.

    A connection's check, its disconnection's start and the sweep's record all carry
    `now`, the sweep's logical time, however long the sweep takes.
    """
    started = time.perf_counter()
    sweep_id = sweep_id or str(uuid.uuid4())
    shards: list[Range] = []
    if steps.run_shards is not None and policy.fan_out is not False and not connection_ids:
        with app.sessions() as session:
            shards = plan_window(session, max(1, policy.shard_size))
    if bool(shards) and (policy.fan_out is True or len(shards) > 1):
        done = await _fan_out(app, now, steps, policy, sweep_id, shards)
    else:
        with app.sessions() as session:
            ranges = plan_batches(session, policy.check.batch_size, connection_ids)
        done = _Done(await check_batches(steps, now, ranges, policy, connection_ids))
    report = SweepReport(
        SweepSummary.combine(
            done.batches, duration_s=time.perf_counter() - started, not_checked=done.not_checked
        ),
        sweep_id,
        shards=done.shards,
        failed_shards=done.failed_shards,
        not_started_shards=done.not_started_shards,
        shard_start_timeout=policy.shard_start_timeout,
    )
    if source is not None:
        with app.transaction() as session:
            record_incidents(session, report.summary, now=now)
            record_sweep(
                session,
                report.as_dict(),
                now=now,
                source=source,
                outcome="failed" if report.failed else "completed",
                **(details or {}),
            )
    return report


async def check_batches(
    steps: SweepSteps,
    now: datetime,
    ranges: Sequence[Range],
    policy: SweepPolicy,
    connection_ids: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """One check-batch step per range, `policy.parallel_batches` at a time."""
    in_flight = asyncio.Semaphore(max(1, policy.parallel_batches))
    params = dataclasses.asdict(policy.per_batch())
    only = list(connection_ids) if connection_ids else None

    async def one(after_id: int, upto_id: int | None) -> dict[str, Any]:
        async with in_flight:
            return await steps.check_batch(now, after_id, upto_id, params, only)

    return list(await asyncio.gather(*(one(a, b) for a, b in ranges)))


@dataclass
class _Done:
    """What the checking part of a sweep leaves: its batches' summaries, and its shards."""

    batches: list[dict[str, Any]]
    shards: int = 0
    failed_shards: list[int] = field(default_factory=list)
    not_started_shards: list[int] = field(default_factory=list)
    not_checked: dict[str, int] = field(default_factory=dict)


async def _fan_out(
    app: Relink,
    now: datetime,
    steps: SweepSteps,
    policy: SweepPolicy,
    sweep_id: str,
    shards: Sequence[Range],
) -> _Done:
    """One shard run per shard; the finished shards' summaries and what went unchecked."""
    assert steps.run_shards is not None
    with app.transaction() as session:
        numbers = create_shards(session, sweep_id, shards, now=now)
    runs = await steps.run_shards(
        now, sweep_id, numbers, policy.shard_parameters(), policy.shard_start_timeout
    )
    with app.sessions() as session:
        rows = shards_of(session, sweep_id)
        withdrawn = [row for row in rows if row.shard in runs.not_started]
        not_started = sum(connections_in(session, r.after_id, r.upto_id) for r in withdrawn)
    batches = [row.summary for row in rows if row.summary is not None]
    return _Done(
        [merge_batches(batches)] if batches else [],
        shards=len(numbers),
        failed_shards=[
            r.shard for r in rows if r.finished_at is None and r.shard not in runs.not_started
        ],
        not_started_shards=sorted(runs.not_started),
        not_checked={"not_started": not_started} if withdrawn else {},
    )


@dataclass(frozen=True)
class ShardDone:
    """One shard checked: its id range, how many batches, its merged batch summary."""

    after_id: int
    upto_id: int | None
    batches: int
    summary: dict[str, Any]


async def run_shard(
    app: Relink,
    *,
    now: datetime,
    steps: SweepSteps,
    policy: SweepPolicy,
    sweep_id: str,
    shard: int,
    claimant: str,
) -> ShardDone | None:
    """Claim one shard of a fanned-out sweep and check its connections as of `now`; None
    when someone else has it."""
    claim = await asyncio.to_thread(claim_shard, app, sweep_id, shard, claimant=claimant, now=now)
    if claim is None:
        return None
    with app.sessions() as session:
        ranges = plan_window(
            session, max(1, policy.check.batch_size), claim.after_id, claim.upto_id
        )
    summary = merge_batches(await check_batches(steps, now, ranges, policy))
    await asyncio.to_thread(finish_shard, app, sweep_id, shard, summary, now=now)
    return ShardDone(claim.after_id, claim.upto_id, len(ranges), summary)


# --- the steps as plain calls in this process ----------------------------------------------


def plain_steps(app: Relink) -> SweepSteps:
    """Every batch checked here, one after another or `parallel_batches` at a time; no
    fan-out (that needs a pool of workers)."""
    from relink.checks import check_range

    async def check_batch(
        now: datetime,
        after_id: int,
        upto_id: int | None,
        policy: dict[str, Any],
        only: list[int] | None,
    ) -> dict[str, Any]:
        summary = await check_range(
            app, after_id, upto_id, now=now, policy=CheckPolicy(**policy), only=only
        )
        return summary.as_dict()

    return SweepSteps(check_batch=check_batch)


async def sweep(
    app: Relink,
    *,
    now: datetime,
    policy: CheckPolicy | None = None,
    connection_ids: Sequence[int] | None = None,
) -> SweepSummary:
    """One whole sweep in this process with the plain steps, batches one after another,
    not recorded (the tests, the benchmark); its summary."""
    policy = policy or CheckPolicy(timeout=app.settings.check_timeout)
    report = await run_sweep(
        app,
        now=now,
        steps=plain_steps(app),
        policy=SweepPolicy(check=policy),
        source=None,
        connection_ids=connection_ids,
    )
    return report.summary
