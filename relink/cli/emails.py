"""`relink notify` (the disconnection emails, now, in this process) and `relink outbox`
(every email's record: list, show, release an unknown one)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from relink.cli._common import (
    WideOpt,
    app,
    console,
    fail,
    handle_errors,
    print_json,
    print_table,
    transaction,
)
from relink.directory import get_user
from relink.emailing.due import email_reference, plan
from relink.emailing.headsup import list_heads_ups
from relink.emailing.ledger import release
from relink.emailing.mailer import OutboxMailer, mailer_for, outbox_folder
from relink.emailing.outbox import get_notification, list_notifications
from relink.emailing.render import format_local
from relink.emailing.run import send_due
from relink.errors import PermissionDenied
from relink.models import MAX_ID, NotificationState, Role
from relink.timeutil import as_utc, utcnow

outbox_app = typer.Typer(
    help="Every disconnection email's record (sent, outbox, unknown, ...): list, show, "
    "release; and the expiry heads-ups' (heads-ups).",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def register(root: typer.Typer) -> None:
    root.command("notify")(notify)
    root.add_typer(outbox_app, name="outbox")


# The rule looks a few days around --as-of: keep clear of the calendar's ends.
EARLIEST_AS_OF = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_AS_OF = datetime(9999, 1, 1, tzinfo=UTC)


def parse_as_of(value: str) -> datetime:
    """An ISO 8601 time; without an offset it is taken as UTC."""
    try:
        moment = as_utc(datetime.fromisoformat(value.strip()))
    except (ValueError, OverflowError):  # OverflowError: 0001-01-01T00:00+01:00 in UTC
        moment = None
    if moment is None or not EARLIEST_AS_OF <= moment < LATEST_AS_OF:
        raise fail(
            f"--as-of {value!r} is not an ISO 8601 time from 1970 to 9998; use e.g. "
            "2026-03-02T07:00-07:00 or 2026-03-02T14:00Z"
        )
    return moment


@handle_errors
def notify(
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Only show who would be emailed; claim and send nothing."),
    ] = False,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            metavar="ISO8601",
            help="Decide as the run scheduled at this time would (e.g. 2026-03-02T07:00-07:00): "
            "with --dry-run any time (tomorrow's run, say), without it a past one, to "
            "catch up a missed run. Without an offset: UTC.",
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Email at most this many disconnections.")
    ] = None,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """Email every disconnection open for 24 hours that was never emailed, and every
    owner whose credentials expire for good within RELINK_HEADS_UP_DAYS their one
    heads-up (the send-disconnection-emails flow's run, here without Prefect). Without an API key
    (RELINK_SENDGRID_API_KEY) the emails go to the outbox instead, RELINK_EMAIL_CONCURRENCY
    at a time. With --as-of it decides exactly as the run scheduled at that time does."""
    now = utcnow()
    moment = parse_as_of(as_of) if as_of is not None else now
    if moment > now and not dry_run:
        raise fail(
            f"--as-of {as_of!r} is in the future: a run can only catch up a time that has "
            "passed (add --dry-run to see what that run will send)"
        )
    relink = app()
    relink.ensure_schema()
    if dry_run:
        _dry_run(moment, limit, as_json)
        return
    summary = send_due(relink, now=moment, mailer=mailer_for(relink.settings), limit=limit)
    if as_json:
        print_json(summary.as_dict())
        return
    mailer = "the outbox" if not relink.settings.sendgrid_api_key.get_secret_value() else "SendGrid"
    console.print(f"Disconnection emails at {_when(moment)} through {mailer}", highlight=False)
    print_table(
        "",
        ["result", "disconnection emails", "expiry heads-ups"],
        [(k, v, summary.heads_ups.get(k, "")) for k, v in summary.counts.items()],
    )
    if summary.stopped:
        console.print(f"stopped early: {summary.stopped}", style="bold red", highlight=False)
    if summary.failures:
        print_table(
            f"{len(summary.failures)} email(s) failed on the way (the run went on)",
            ["disconnection", "now", "error"],
            [(f["disconnection_id"], f["state"], f["error"]) for f in summary.failures],
        )
    if summary.awaiting_decision:
        console.print(
            f"{len(summary.awaiting_decision)} email(s) in state unknown may have been sent: "
            "see `relink outbox list --state unknown`",
            style="bold yellow",
            highlight=False,
        )


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC ({format_local(moment)})"


def _dry_run(moment: datetime, limit: int | None, as_json: bool) -> None:
    due = plan(app(), now=moment, limit=limit)
    if as_json:
        print_json({"as_of": moment.isoformat(), "emails": [d.describe() for d in due]})
        return
    print_table(
        f"Dry run at {_when(moment)}: {len(due)} email(s) due; nothing sent or changed",
        ["disconnection", "connection", "type", "invalid since", "to", "why"],
        [
            (
                d.disconnection_id,
                f"{d.connection_name} (#{d.connection_id})",
                d.source_type,
                format_local(d.started_at),
                ", ".join(d.recipients.to) or "nobody",
                d.recipients.why,
            )
            for d in due
        ],
    )


# --- outbox ------------------------------------------------------------------------------


@outbox_app.command("list")
@handle_errors
def outbox_list(
    state: Annotated[
        str | None,
        typer.Option(
            help="Only this state: " + ", ".join(s.value for s in NotificationState) + "."
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, oldest first.")] = 500,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """The disconnection emails Relink has recorded, one per disconnection."""
    if state is not None and state not in set(NotificationState):
        known = ", ".join(s.value for s in NotificationState)
        raise fail(f"unknown state {state!r}; use one of {known}")
    with transaction() as session:
        views = list_notifications(session, state=state, limit=limit)
    if as_json:
        print_json([v.as_dict() for v in views])
        return
    print_table(
        f"{len(views)} email(s)" + (f" in state {state}" if state else ""),
        ["id", "state", "disconnection", "connection", "to", "claimed", "sent", "note"],
        [
            (
                v.id,
                v.state,
                v.disconnection_id,
                v.connection,
                ", ".join(v.to),
                f"{v.claimed_at:%Y-%m-%d %H:%M}",
                v.sent_at and f"{v.sent_at:%Y-%m-%d %H:%M}",
                v.last_error or v.provider_message_id,
            )
            for v in views
        ],
    )


@outbox_app.command("show")
@handle_errors
def outbox_show(
    notification_id: Annotated[int, typer.Argument(min=1, max=MAX_ID, help="Notification id.")],
) -> None:
    """Print one email: the .eml file for the outbox, the record for the others."""
    relink = app()
    with transaction() as session:
        view = get_notification(session, notification_id)
    for key, value in view.as_dict().items():
        console.print(f"{key}: {value}", markup=False, highlight=False)
    eml = OutboxMailer(outbox_folder(relink.settings)).path_of(
        email_reference(view.disconnection_id)
    )
    console.print("", highlight=False)
    if eml.exists():
        console.print(f"--- {eml}", markup=False, highlight=False)
        typer.echo(eml.read_text("utf-8", errors="replace"))
    elif view.state == NotificationState.SENT:
        console.print(
            "(sent through SendGrid; its body is not kept here: look it up in SendGrid's "
            f"activity feed by message id {view.provider_message_id})",
            markup=False,
            highlight=False,
        )
    else:
        console.print("(no email file: nothing was written to the outbox)", highlight=False)


@outbox_app.command("release")
@handle_errors
def outbox_release(
    notification_id: Annotated[int, typer.Argument(min=1, max=MAX_ID, help="Notification id.")],
    as_user: Annotated[
        str | None,
        typer.Option("--as", help="The admin deciding (recorded in the audit trail)."),
    ] = None,
) -> None:
    """Hand an `unknown` email back to the next run, which sends it again. Only for one
    that was certainly not delivered (check SendGrid's activity feed first)."""
    with transaction() as session:
        actor = None
        if as_user is not None:
            actor = get_user(session, as_user)
            if actor.role != Role.ADMIN or not actor.active:
                raise PermissionDenied(f"{actor.email} is not an active admin")
        view = release(session, notification_id, now=utcnow(), actor=actor)
    console.print(
        f"notification {view.id} released: the next run emails {view.connection!r} again",
        highlight=False,
    )
    if not view.disconnection_open:
        console.print(
            "note: its disconnection is closed (reconnected), so no email will go out",
            highlight=False,
        )


@outbox_app.command("heads-ups")
@handle_errors
def outbox_heads_ups(
    limit: Annotated[int, typer.Option(min=1, help="At most this many, oldest first.")] = 500,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """The expiry heads-ups Relink has recorded, one per connection and expiry."""
    with transaction() as session:
        views = list_heads_ups(session, limit=limit)
    if as_json:
        print_json([v.as_dict() for v in views])
        return
    print_table(
        f"{len(views)} heads-up(s)",
        ["id", "state", "connection", "expires", "to", "claimed", "sent", "note"],
        [
            (
                v.id,
                v.state,
                v.connection,
                f"{v.expires_at:%Y-%m-%d %H:%M}",
                ", ".join(v.to),
                f"{v.claimed_at:%Y-%m-%d %H:%M}",
                v.sent_at and f"{v.sent_at:%Y-%m-%d %H:%M}",
                v.last_error,
            )
            for v in views
        ],
    )
