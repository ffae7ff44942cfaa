"""The notification rules (pure, `now` passed in): which disconnection is due for its
one email, and who receives it.

- **Due** at run time T: the disconnection is still open, started at or before
  T − 24 h (`DUE_AFTER`, configurable), and has no notification yet. A `released`
  notification counts as "not yet": it was handed back to the next run (a transient
  SendGrid error, or an admin's decision on an ambiguous send).
- **Once, ever**: any other notification state (sent, outbox, failed, unknown,
  claimed, no_recipient) means the disconnection is never emailed again.
- **Recipient**: the connection's current owner ("Created By"); an owner who is
  inactive or has no valid address falls back to the account's active admins with a
  valid address; with nobody left the notification records why (`no_recipient`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from relink.models import NotificationState, Role

DUE_AFTER = timedelta(hours=24)
"""How long a disconnection stays open before its email is due."""

CLAIM_LEASE = timedelta(minutes=15)
"""A `claimed` notification older than this belongs to a run that died: it may have
been sent, so the next run marks it `unknown` (never resends it automatically)."""

EMAIL_TIME_ZONE = "America/Phoenix"
"""MST all year (UTC−07:00): the daily run's time zone and the emails' clock."""

NOT_YET = frozenset({NotificationState.RELEASED})
"""Notification states that leave a disconnection due (handed back to the next run)."""


# --- due ----------------------------------------------------------------------------


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


def is_due(episode: Episode, now: datetime, due_after: timedelta = DUE_AFTER) -> bool:
    return (
        episode.ended_at is None
        and episode.started_at <= cutoff(now, due_after)
        and (episode.notification is None or episode.notification in NOT_YET)
    )


def due(
    episodes: Iterable[Episode], now: datetime, due_after: timedelta = DUE_AFTER
) -> list[Episode]:
    """The episodes to email at `now`, by id."""
    return sorted((e for e in episodes if is_due(e, now, due_after)), key=lambda e: e.id)


# --- recipients -------------------------------------------------------------------------

_ADDRESS = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")


def valid_address(address: str | None) -> bool:
    """A plausible single mailbox: one @, a dotted domain, no spaces or control characters."""
    if not address or len(address) > 320:
        return False
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in address):
        return False
    return _ADDRESS.fullmatch(address) is not None


@dataclass(frozen=True, slots=True)
class Person:
    email: str
    active: bool = True
    role: str = Role.MEMBER
    name: str = ""


@dataclass(frozen=True, slots=True)
class Recipients:
    to: tuple[str, ...]
    why: str  # "owner", "admins: <reason>", or the reason nobody can be emailed

    @property
    def nobody(self) -> bool:
        return not self.to


def owner_problem(owner: Person) -> str | None:
    """Why the owner cannot receive the email, or None."""
    if not owner.active:
        return f"the owner {owner.email} is inactive"
    if not valid_address(owner.email):
        return f"the owner's address {owner.email!r} is not valid"
    return None


def choose_recipients(owner: Person, account_users: Sequence[Person]) -> Recipients:
    """The owner; else the account's active admins with a valid address; else nobody."""
    problem = owner_problem(owner)
    if problem is None:
        return Recipients((owner.email,), "owner")
    admins = sorted(
        {
            p.email
            for p in account_users
            if p.role == Role.ADMIN and p.active and valid_address(p.email)
        }
    )
    if admins:
        return Recipients(tuple(admins), f"admins: {problem}")
    return Recipients((), f"{problem} and the account has no active admin with a valid address")
