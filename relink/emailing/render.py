"""Renders the disconnection email and the expiry heads-up (subject, plain text and
HTML) from the Jinja2 templates in relink/templates/email, with the same blue button.
Connection names and error messages are user or provider input: the HTML template is
autoescaped, the subject is flattened to one line. Nothing here sees a credential."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from connectors.base import one_line
from relink.domain.schedule import EMAIL_TIME_ZONE
from relink.timeutil import as_utc

MINUS = "\u2212"  # the typographic minus of "UTC−07:00"
BUTTON_COLOR = "#1a73e8"


@dataclass(frozen=True, slots=True)
class DisconnectionFacts:
    """What the email says about one disconnection."""

    connection_id: int
    connection_name: str
    source_type: str  # the connector's display name, e.g. "PostgreSQL"
    invalid_since: datetime  # the disconnection's started_at: the failing check's time
    last_error: str | None


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


def format_local(moment: datetime, zone: str = EMAIL_TIME_ZONE) -> str:
    """'2026-03-01 09:30 MST (UTC−07:00)'."""
    local = as_utc(moment).astimezone(ZoneInfo(zone))
    offset = local.utcoffset()
    assert offset is not None
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else MINUS
    hours, mins = divmod(abs(minutes), 60)
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()} (UTC{sign}{hours:02d}:{mins:02d})"


def connection_url(base_url: str, connection_id: int) -> str:
    return f"{base_url.rstrip('/')}/connections/{connection_id}"


@cache
def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("relink", "templates/email"),
        autoescape=select_autoescape(enabled_extensions=("html",), default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_disconnection_email(facts: DisconnectionFacts, *, base_url: str) -> RenderedEmail:
    env = _environment()
    context = {
        "name": facts.connection_name,
        "source_type": facts.source_type,
        "since": format_local(facts.invalid_since),
        "last_error": facts.last_error or "no error message was recorded",
        "url": connection_url(base_url, facts.connection_id),
        "button_color": BUTTON_COLOR,
    }
    subject = one_line(env.get_template("disconnection_subject.txt").render(context), 400)
    return RenderedEmail(
        subject=subject,
        text=env.get_template("disconnection.txt").render(context),
        html=env.get_template("disconnection.html").render(context),
    )


@dataclass(frozen=True, slots=True)
class HeadsUpFacts:
    """What the heads-up says about one connection's coming hard expiry."""

    connection_id: int
    connection_name: str
    source_type: str
    expires_at: datetime
    now: datetime  # when it is written: "in 7 days" counts from here


def time_left(until: datetime, now: datetime) -> str:
    """'7 days', '1 day', 'less than a day'."""
    days = (as_utc(until) - as_utc(now)).days
    if days < 1:
        return "less than a day"
    return f"{days} day{'s' if days != 1 else ''}"


def render_heads_up_email(facts: HeadsUpFacts, *, base_url: str) -> RenderedEmail:
    env = _environment()
    context = {
        "name": facts.connection_name,
        "source_type": facts.source_type,
        "until": format_local(facts.expires_at),
        "left": time_left(facts.expires_at, facts.now),
        "url": connection_url(base_url, facts.connection_id),
        "button_color": BUTTON_COLOR,
    }
    subject = one_line(env.get_template("heads_up_subject.txt").render(context), 400)
    return RenderedEmail(
        subject=subject,
        text=env.get_template("heads_up.txt").render(context),
        html=env.get_template("heads_up.html").render(context),
    )
