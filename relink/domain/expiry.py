"""When a connection's OAuth credentials stop working on their own, pure (`now` passed
in): a provider's refresh tokens end either a fixed time after they were granted
(`HARD`: only a new consent helps) or after a time unused (`IDLE`: any refresh renews
them). `credentials_expiry` combines the provider's `Lifetime` (the connector
catalogue's table, or the connection's own setting) with what the token response said
(`refresh_token_expires_in`, Intuit's `x_refresh_token_expires_in`) into an `Expiry`,
known or unknown. `keep_alive_due` says when the sweep must spend an idle token before
it lapses; `heads_up_due` when the owner is told of a hard end ahead; `days_left` and
`describe` are what the pages, the CLI and the JSON show."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

DAY = timedelta(days=1)

KEEP_ALIVE_MARGIN = timedelta(days=7)
"""An idle token is refreshed once it is this close to lapsing (RELINK_KEEP_ALIVE_DAYS)."""

HEADS_UP_AHEAD = timedelta(days=7)
"""The owner's heads-up is due this long before a hard end (RELINK_HEADS_UP_DAYS)."""


class ExpiryKind(StrEnum):
    HARD = "hard"  # a fixed time after the consent: only a reconnect renews it
    IDLE = "idle"  # a time after its last use: every refresh renews it


@dataclass(frozen=True, slots=True)
class Lifetime:
    """How long a provider's refresh token lives. `length` None: only the token
    response says (Intuit), else it is unknown."""

    kind: ExpiryKind
    length: timedelta | None
    grace: timedelta = timedelta(0)  # the replaced token still works this long (Xero)


@dataclass(frozen=True, slots=True)
class Expiry:
    """When a connection's credentials expire: `at` None when nobody can say."""

    at: datetime | None = None
    kind: ExpiryKind | None = None

    @property
    def known(self) -> bool:
        return self.at is not None


UNKNOWN = Expiry()

_LIFETIME = re.compile(r"\s*(\d{1,5})\s*(d|days?)(\s+unused)?\s*", re.IGNORECASE)


def parse_lifetime(text: str) -> Lifetime | None:
    """A connection's own setting: "30 days unused" (idle), "7 days" (hard), "never"
    (None). ValueError with a one-line reason otherwise."""
    if text.strip().lower() in ("never", "none", ""):
        return None
    match = _LIFETIME.fullmatch(text)
    if match is None or int(match.group(1)) == 0:
        raise ValueError(
            f"refresh token lifetime {text[:40]!r}: write '7 days', '30 days unused' or 'never'"
        )
    kind = ExpiryKind.IDLE if match.group(3) else ExpiryKind.HARD
    return Lifetime(kind, int(match.group(1)) * DAY)


def credentials_expiry(
    lifetime: Lifetime | None,
    *,
    granted_at: datetime,
    response_seconds: float | None = None,
    new_refresh_token: bool = True,
    previous: Expiry = UNKNOWN,
) -> Expiry:
    """The expiry after a token response received at `granted_at`.

    The response's own lifetime wins (a hard cap unless the provider's tokens are idle
    ones). Otherwise: an idle token lives `length` from this use; a hard one `length`
    from its grant, so a refresh that kept the same refresh token keeps its end.
    """
    kind = lifetime.kind if lifetime is not None else ExpiryKind.HARD
    if response_seconds is not None and response_seconds > 0:
        return Expiry(granted_at + timedelta(seconds=response_seconds), kind)
    if lifetime is None:
        return UNKNOWN
    if kind is ExpiryKind.HARD and not new_refresh_token:
        return previous  # the same token keeps the end it was granted with
    if lifetime.length is None:
        return UNKNOWN
    return Expiry(granted_at + lifetime.length, kind)


def keep_alive_due(expiry: Expiry, now: datetime, margin: timedelta = KEEP_ALIVE_MARGIN) -> bool:
    """An idle token within `margin` of lapsing (or past it: trying tells) is spent now."""
    return expiry.kind is ExpiryKind.IDLE and expiry.at is not None and now >= expiry.at - margin


def heads_up_due(expiry: Expiry, now: datetime, ahead: timedelta = HEADS_UP_AHEAD) -> bool:
    """A hard end within `ahead` of `now` and not yet past: the owner is told now."""
    if expiry.kind is not ExpiryKind.HARD or expiry.at is None:
        return False
    return expiry.at - ahead <= now < expiry.at


def days_left(expiry: Expiry, now: datetime) -> int | None:
    """Whole days until the end (0: less than a day; negative: past), None when unknown."""
    if expiry.at is None:
        return None
    return (expiry.at - now) // DAY


def shown_soon(expiry: Expiry, now: datetime, ahead: timedelta = HEADS_UP_AHEAD) -> bool:
    """Worth a badge: a hard end within `ahead` (or past)."""
    return expiry.kind is ExpiryKind.HARD and expiry.at is not None and expiry.at - ahead <= now


def describe(expiry: Expiry, now: datetime) -> str:
    """'expires in 5 days', 'expires within a day', 'expired', 'renewed by use; lapses
    if unused 80 days', 'unknown'."""
    left = days_left(expiry, now)
    if left is None:
        return "unknown"
    if expiry.kind is ExpiryKind.IDLE:
        return "lapsed unused" if left < 0 else f"renewed by use; lapses if unused {left} days"
    if expiry.at is not None and expiry.at <= now:
        return "expired"
    if left == 0:
        return "expires within a day"
    return f"expires in {left} day{'s' if left != 1 else ''}"
