"""What the templates show: labels, times, badges; and `render`, which every page uses."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup

import connectors
from relink.domain.schedule import EMAIL_TIME_ZONE
from relink.domain.words import Mode, NotificationState, Status
from relink.timeutil import as_utc
from relink.web.sessions import CSRF_FIELD

STATUS_LABELS = {
    Status.CONNECTED: "Connected",
    Status.DISCONNECTED: "Disconnected",
    Status.MISCONFIGURED: "Needs an admin",
    Status.UNREACHABLE: "Unreachable",
    Status.UNCHECKED: "Unchecked",
}
MODE_LABELS = {Mode.WAREHOUSE: "Warehouse", Mode.DIRECT: "Direct query"}
DATASET_LABELS = {"ok": "OK", "pending": "Not refreshed yet", "error": "Error"}
EMAIL_STATE_LABELS = {
    NotificationState.SENT: "Sent",
    NotificationState.OUTBOX: "In the outbox",
    NotificationState.UNKNOWN: "Unknown",
    NotificationState.FAILED: "Failed",
    NotificationState.RELEASED: "Released",
    NotificationState.CLAIMED: "Sending",
    NotificationState.NO_RECIPIENT: "No recipient",
}

# The list filter: (query value, label), the label the status's own word; a connection
# is listed under one filter (`relink.domain.broken.listed_under`).
FILTERS = (
    (None, "All"),
    *(
        (status, STATUS_LABELS[status])
        for status in (
            Status.DISCONNECTED,
            Status.MISCONFIGURED,
            Status.UNREACHABLE,
            Status.CONNECTED,
            Status.UNCHECKED,
        )
    ),
)

ACTIONS = {
    "connection.created": "Connection created",
    "connection.shared": "Shared",
    "connection.status_changed": "Status changed",
    "connection.reconnected": "Reconnected",
    "connection.reconnect_failed": "Reconnect failed",
    "connection.owner_changed": "Created By changed",
    "connection.account_seen": "Account seen",
    "dataset.created": "Dataset created",
    "dataset.refreshed": "Dataset refreshed",
    "dataset.refresh_failed": "Dataset refresh failed",
    "notification.sent": "Email sent",
}


def _moment(value: str | datetime | None) -> datetime | None:
    if value is None or value == "":
        return None
    return as_utc(datetime.fromisoformat(value) if isinstance(value, str) else value)


def when(value: str | datetime | None) -> str:
    """'2026-11-02 02:00 MST' (the account's time zone, the emails' clock), or '—'."""
    moment = _moment(value)
    if moment is None:
        return "—"
    local = moment.astimezone(ZoneInfo(EMAIL_TIME_ZONE))
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()}"


def utc(value: str | datetime | None) -> str:
    """'2026-11-02 09:00 UTC', or '—'."""
    moment = _moment(value)
    return "—" if moment is None else f"{moment:%Y-%m-%d %H:%M} UTC"


def iso(value: str | datetime | None) -> str:
    """'2026-11-02T09:00:00+00:00' (to the second), or ''."""
    moment = _moment(value)
    return "" if moment is None else moment.replace(microsecond=0).isoformat()


def time_tag(value: str | datetime | None) -> Markup:
    """A `<time>`: the local time shown, the UTC time on hover; '—' without a time."""
    if _moment(value) is None:
        return Markup("—")
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        iso(value), utc(value), when(value)
    )


_ISO_IN_TEXT = re.compile(
    r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?\b"
)


def times_in(text: Any) -> str:
    """Free text with every ISO time in it shown as `when` shows times (no seconds)."""
    return _ISO_IN_TEXT.sub(_local_match, str(text))


def _local_match(match: re.Match[str]) -> str:
    try:
        return when(match.group(0).replace("Z", "+00:00"))
    except ValueError:
        return match.group(0)


def status_label(row: dict[str, Any]) -> str:
    """The badge text: 'Disconnected since …' for a broken connection."""
    status = row["status"]
    if status == Status.DISCONNECTED and row.get("invalid_since"):
        return f"Disconnected since {when(row['invalid_since'])}"
    return STATUS_LABELS.get(status, status)


def type_label(type_: str) -> str:
    try:
        return connectors.get(type_).display_name
    except connectors.UnknownConnector:
        return type_


def action_label(action: str) -> str:
    return ACTIONS.get(action, action.replace(".", " ").replace("_", " ").capitalize())


def describe_details(details: dict[str, Any]) -> str:
    """Audit details as 'key: value' pairs (they never hold secrets); a change of settings
    ({name: [old, new]}) as 'name old → new'."""
    parts = []
    for key, value in details.items():
        if value is None or value == "" or value == [] or value == {}:
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{name} {_change(change)}" for name, change in value.items())
        elif isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        parts.append(f"{key.replace('_', ' ')}: {times_in(value)}")
    return "; ".join(parts)


def _change(change: Any) -> str:
    if isinstance(change, list) and len(change) == 2:
        old, new = ("—" if v in (None, "") else v for v in change)
        return f"{old} → {new}"
    return str(change)


def origin(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


def install_filters(env: jinja2.Environment) -> None:
    env.filters["when"] = when
    env.filters["iso"] = iso
    env.filters["utc"] = utc
    env.filters["time_tag"] = time_tag
    env.filters["times_in"] = times_in
    env.filters["status_label"] = status_label
    env.filters["type_label"] = type_label
    env.filters["action_label"] = action_label
    env.filters["details"] = describe_details
    env.globals["MODE_LABELS"] = MODE_LABELS
    env.globals["STATUS_LABELS"] = STATUS_LABELS
    env.globals["DATASET_LABELS"] = DATASET_LABELS
    env.globals["EMAIL_STATE_LABELS"] = EMAIL_STATE_LABELS
    env.globals["CSRF_FIELD"] = CSRF_FIELD


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
    user: Any = None,
) -> HTMLResponse:
    session = request.state.web_session
    base = {
        "user": user,
        "csrf_token": session.csrf,
        "flash": session.pop_flash() if user is not None else None,
        "nav": getattr(request.state, "nav", None),
    }
    templates = request.app.state.templates
    return templates.TemplateResponse(
        request, template, {**base, **(context or {})}, status_code=status_code
    )
