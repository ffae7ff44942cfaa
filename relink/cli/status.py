"""`relink status`: how the connections are, the providers' incidents (outages), what only
an admin can fix (installation problems), what the next email run will send, and how the
last check sweep went."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

import sqlalchemy as sa
import typer
from sqlalchemy.orm import Session

import connectors
from relink.cli._common import (
    WideOpt,
    app,
    console,
    handle_errors,
    print_json,
    print_table,
    transaction,
)
from relink.cli.tables import cell
from relink.connections import broken_clause, expiry_view, listed_counts
from relink.domain.expiry import HEADS_UP_AHEAD, ExpiryKind
from relink.domain.schedule import next_email_run
from relink.domain.words import Outcome, Status
from relink.emailing.due import due_ids
from relink.emailing.headsup import due_query as heads_up_query
from relink.models import Connection, Disconnection
from relink.sweep.incidents import open_incidents
from relink.sweep.record import last_sweep
from relink.sweep.summary import InstallationProblem
from relink.timeutil import utcnow


def register(root: typer.Typer) -> None:
    root.command("status")(status)


def installation_problems(session: Session) -> list[InstallationProblem]:
    """The connections whose last check met a misconfigured installation, by provider and
    code, with what an admin fixes: as the sweep reports them, so a connection broken
    before (listed Disconnected, its error the one that broke it) is counted too."""
    # the fix is the check's message, which only a connection not broken keeps as its error
    fix = sa.case((Connection.status == Status.MISCONFIGURED, Connection.last_error_message))
    rows = session.execute(
        sa.select(
            Connection.type,
            Connection.last_outcome_code,
            sa.func.count(Connection.id),
            sa.func.min(fix),
        )
        .where(Connection.last_outcome == Outcome.MISCONFIGURED)
        .group_by(Connection.type, Connection.last_outcome_code)
        .order_by(Connection.type, Connection.last_outcome_code)
    ).all()
    return [
        InstallationProblem(_provider(type_), code, count, fix or "")
        for type_, code, count, fix in rows
    ]


def _provider(type_: str) -> str:
    try:
        return connectors.get(type_).provider
    except connectors.UnknownConnector:
        return type_


def expiring(session: Session, now: datetime, ahead: timedelta) -> list[dict[str, Any]]:
    """Connections (not broken) whose credentials end for good within `ahead`: only a
    reconnect renews them (relink.domain.expiry.shown_soon, in SQL)."""
    rows = session.scalars(
        sa.select(Connection)
        .where(
            Connection.credentials_expiry_kind == str(ExpiryKind.HARD),
            Connection.credentials_expire_at <= now + ahead,
            sa.not_(broken_clause()),
        )
        .order_by(Connection.credentials_expire_at, Connection.id)
    )
    return [
        {"id": c.id, "name": c.name, "type": c.type, **expiry_view(c, now, ahead)} for c in rows
    ]


def collect(session: Session, now: datetime, ahead: timedelta = HEADS_UP_AHEAD) -> dict[str, Any]:
    by_status = listed_counts(session, sa.true())  # as the pages' filters count
    open_count = session.scalar(
        sa.select(sa.func.count(Disconnection.id)).where(Disconnection.ended_at.is_(None))
    )
    run_at = next_email_run(now)
    return {
        "at": now.isoformat(),
        "connections": {"total": sum(by_status.values()), "by_status": by_status},
        "open_disconnections": int(open_count or 0),
        "provider_incidents": [i.as_dict() for i in open_incidents(session, sa.true(), now=now)],
        "installation_problems": [p.as_dict() for p in installation_problems(session)],
        "credentials_expiring": expiring(session, now, ahead),
        "emails": {
            "next_run": run_at.isoformat(),
            "due": len(due_ids(session, now=run_at)),
            "heads_ups_due": len(session.scalars(heads_up_query(run_at, ahead)).all()),
        },
        "last_sweep": last_sweep(session),
    }


@handle_errors
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
    wide: WideOpt = False,
) -> None:
    """Connections by status, open disconnections, provider incidents (most connections
    of a provider failing alike: likely an outage), installation problems (what only an
    admin can fix, and how), emails due at the next 07:00 MST run, and the last check
    sweep."""
    now = utcnow()
    with transaction() as session:
        data = collect(session, now, app().settings.heads_up_ahead)
    if as_json:
        print_json(data)
        return
    print_table(
        f"{data['connections']['total']} connection(s)",
        ["status", "connections"],
        list(data["connections"]["by_status"].items()),
    )
    console.print(f"open disconnections: {data['open_disconnections']}", highlight=False)
    for incident in data["provider_incidents"]:
        console.print(incident["text"], style="bold yellow", highlight=False, soft_wrap=True)
    problems = data["installation_problems"]
    if not problems:
        console.print("installation problems: none", highlight=False)
    else:
        console.print(
            "installation problems (only an admin can fix these; they disconnect no "
            "connection and email no owner):",
            style="bold yellow",
            highlight=False,
        )
        for problem in problems:
            console.print(
                f"  {problem['provider']}: {problem['connections']} connection(s), "
                f"{problem['code']}: {problem['fix']}",
                highlight=False,
                soft_wrap=True,
            )
    soon = data["credentials_expiring"]
    if soon:
        console.print(
            f"credentials expiring (a reconnect renews them): {len(soon)}", highlight=False
        )
        for item in soon:
            console.print(
                f"  {item['name']} (id {item['id']}, {item['type']}): "
                f"{item['credentials_expiry']}, at {cell(item['credentials_expire_at'])}",
                highlight=False,
                soft_wrap=True,
            )
    else:
        console.print("credentials expiring: none", highlight=False)
    console.print(
        f"emails due at the next run ({cell(data['emails']['next_run'])}, 07:00 MST): "
        f"{data['emails']['due']} disconnection email(s), "
        f"{data['emails']['heads_ups_due']} expiry heads-up(s)",
        highlight=False,
        soft_wrap=True,
    )
    sweep = data["last_sweep"]
    if sweep is None:
        console.print("last sweep: none yet (`relink check` or the check-connections flow)")
        return
    summary = sweep.get("summary", {})
    outcomes = ", ".join(f"{v} {k}" for k, v in summary.get("outcomes", {}).items() if v)
    not_checked = sum(summary.get("not_checked", {}).values())
    console.print(
        f"last sweep: {cell(sweep['at'])} by {sweep.get('source', '?')}, "
        f"{sweep.get('outcome', 'completed')}: {summary.get('checked', 0)} checked"
        + (f" ({outcomes})" if outcomes else "")
        + f", {summary.get('opened', 0)} disconnection(s) opened, "
        f"{summary.get('closed', 0)} closed"
        + (f", {not_checked} not checked (the next sweep checks them)" if not_checked else ""),
        highlight=False,
        soft_wrap=True,
    )
