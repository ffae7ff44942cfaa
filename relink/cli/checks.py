"""`relink check`: one credential sweep, now, in this process."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Annotated

import sqlalchemy as sa
import typer

from relink.app import Relink
from relink.cli._common import WideOpt, app, console, fail, handle_errors, print_json, print_table
from relink.models import MAX_ID, Connection
from relink.sweep.run import SweepPolicy, plain_steps, run_sweep
from relink.sweep.validate import CheckPolicy
from relink.timeutil import utcnow


def register(root: typer.Typer) -> None:
    root.command("check")(check)


@handle_errors
def check(
    connection: Annotated[
        list[int] | None,
        typer.Option(
            "--connection", min=1, max=MAX_ID, help="Only this connection id (repeatable)."
        ),
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Checks in flight at once.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    wide: WideOpt = False,
) -> None:
    """Check connections' credentials now and record what broke (the check-connections
    flow's sweep, run here without Prefect)."""
    relink = app()
    relink.ensure_schema()
    if connection:
        _require_connections(relink, connection)
    policy = CheckPolicy(concurrency=concurrency, timeout=relink.settings.check_timeout)
    report = asyncio.run(
        run_sweep(
            relink,
            now=utcnow(),
            steps=plain_steps(relink),
            policy=SweepPolicy(check=policy),
            source="relink check",
            connection_ids=connection,
            details={"connection_ids": connection or None},
        )
    )
    summary = report.summary
    if as_json:
        print_json(summary.as_dict())
        return
    print_table(
        f"Checked {summary.checked} connection(s) in {summary.duration_s:.1f} s",
        ["outcome", "connections"],
        list(summary.outcomes.items()),
    )
    console.print(
        f"disconnections opened {summary.opened}, closed {summary.closed}; "
        f"status changes {summary.status_changes}",
        highlight=False,
    )
    for incident in summary.incidents:
        console.print(f"provider incident: {incident.describe()}", style="bold red")
    for problem in summary.installation_problems:
        console.print(
            f"installation problem (an admin fixes it): {problem.describe()}",
            style="bold yellow",
            highlight=False,
            soft_wrap=True,
        )


def _require_connections(relink: Relink, ids: Sequence[int]) -> None:
    """A mistyped id is an error, not a sweep of nothing recorded as done."""
    with relink.sessions() as session:
        found = set(session.scalars(sa.select(Connection.id).where(Connection.id.in_(ids))))
    missing = sorted(set(ids) - found)
    if missing:
        names = ", ".join(map(str, missing))
        raise fail(f"unknown connection {names}; see `relink connections list`")
