"""The 24-hour rule, pure (`now` passed in): which disconnections are due for their one
email at `now`. Due: still open, started at or before `now` − 24 h (`DUE_AFTER`,
configurable), and no notification yet, or only a `released` one (handed back to the
next run by a transient SendGrid error or an admin's decision). Any other notification
state means never again. relink/emailing/due.py is the same rule in SQL."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from relink.domain.words import NotificationState

DUE_AFTER = timedelta(hours=24)
"""How long a disconnection stays open before its email is due."""

NOT_YET = frozenset({NotificationState.RELEASED})
"""Notification states that leave a disconnection due (handed back to the next run)."""


@dataclass(frozen=True, slots=True)
class Episode:
    """A disconnection as the rule sees it."""

    id: int
    started_at: datetime
    ended_at: datetime | None = None
    notification: str | None = None  # the state of its notification, None if it has none


def cutoff(now: datetime, due_after: timedelta = DUE_AFTER) -> datetime:
    """Disconnections that started at or before this are due at `now`."""
    return now - due_after


def awaiting_email(notification: str | None) -> bool:
    """No notification, or one handed back to the next run: the email is still to send."""
    return notification is None or notification in NOT_YET


def is_due(episode: Episode, now: datetime, due_after: timedelta = DUE_AFTER) -> bool:
    return (
        episode.ended_at is None
        and episode.started_at <= cutoff(now, due_after)
        and awaiting_email(episode.notification)
    )


def due(
    episodes: Iterable[Episode], now: datetime, due_after: timedelta = DUE_AFTER
) -> list[Episode]:
    """The episodes to email at `now`, by id."""
    return sorted((e for e in episodes if is_due(e, now, due_after)), key=lambda e: e.id)
