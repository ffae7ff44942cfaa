"""`relink check`: one credential sweep, now, in this process."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from relink.checks import CheckPolicy, sweep
from relink.cli._common import app, console, handle_errors, print_json, print_table
from relink.sweeps import record_sweep
from relink.timeutil import utcnow


def register(root: typer.Typer) -> None:
    root.command("check")(check)


@handle_errors
def check(
    connection: Annotated[
        list[int] | None,
        typer.Option("--connection", help="Only this connection id (repeatable)."),
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Checks in flight at once.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Check connections' credentials now and record what broke (the check-connections
    flow's sweep, run here without Prefect)."""
    relink = app()
    relink.ensure_schema()
    policy = CheckPolicy(concurrency=concurrency, timeout=relink.settings.check_timeout)
    summary = asyncio.run(sweep(relink, now=utcnow(), policy=policy, connection_ids=connection))
    with relink.transaction() as session:
        record_sweep(
            session,
            summary.as_dict(),
            now=utcnow(),
            source="relink check",
            outcome="completed",
            connection_ids=connection or None,
        )
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
