"""The state rules: what one check outcome does to a connection (pure, `now` passed in).

Only these rules change a connection's status. Connectors report outcomes; the
rules decide:

- the first `auth_failed` opens a Disconnection and sets `invalid_since` to the
  time of that check; later failures keep it;
- `ok` (or a reconnect) closes the open Disconnection; a failure after that is a
  new Disconnection;
- `unreachable` and `misconfigured` (the installation is wrong) never open, close or
  move anything (an outage never starts the 24-hour clock): the connection shows
  `unreachable` or `misconfigured` (until an admin fixes the installation), except that
  one with an open Disconnection stays `disconnected` with the error that broke it (what
  its owner is told); the outage or the installation problem is a second fact, kept with
  every check as the connection's last outcome (`Decision.last_outcome`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from relink.domain.words import Outcome, Status


class Change(StrEnum):
    """A change of a connection that data engineers hear about (a Prefect event's name)."""

    DISCONNECTED = "relink.connection.disconnected"  # a disconnection opened
    RECOVERED = "relink.connection.recovered"  # working again after broken or misconfigured
    MISCONFIGURED = "relink.connection.misconfigured"  # only an admin can fix it
    RECONNECTED = "relink.connection.reconnected"  # someone replaced the credentials


@dataclass(frozen=True, slots=True)
class ConnState:
    status: str
    invalid_since: datetime | None
    has_open_disconnection: bool
    error_code: str | None = None
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    status: str
    invalid_since: datetime | None
    open_disconnection: bool  # open a new episode that starts now
    close_disconnection: bool  # end the open episode now
    error_code: str | None
    error_message: str | None
    last_outcome: str  # what this check found, whatever the status shows
    last_outcome_code: str | None

    def changes_status(self, before: ConnState) -> bool:
        return self.status != before.status

    def change(self, before: ConnState) -> Change | None:
        """The event this decision makes, if any. Becoming `unreachable` is none: an outage
        is the provider's incident, not news about one connection."""
        if self.open_disconnection:
            return Change.DISCONNECTED
        if self.status == Status.CONNECTED and (
            (self.close_disconnection and before.has_open_disconnection)
            or before.status == Status.MISCONFIGURED
        ):
            return Change.RECOVERED
        if self.status == Status.MISCONFIGURED and before.status != Status.MISCONFIGURED:
            return Change.MISCONFIGURED
        return None


def decide(
    state: ConnState, outcome: Outcome, code: str | None, message: str, *, now: datetime
) -> Decision:
    found = {"last_outcome": str(outcome), "last_outcome_code": code}
    if outcome is Outcome.OK:
        return Decision(
            status=Status.CONNECTED,
            invalid_since=None,
            open_disconnection=False,
            close_disconnection=state.has_open_disconnection,
            error_code=None,
            error_message=None,
            **found,
        )
    if outcome is Outcome.AUTH_FAILED:
        opening = not state.has_open_disconnection
        return Decision(
            status=Status.DISCONNECTED,
            invalid_since=now if opening else (state.invalid_since or now),
            open_disconnection=opening,
            close_disconnection=False,
            error_code=code,
            error_message=message,
            **found,
        )
    if state.has_open_disconnection:  # known broken: an outage does not hide it
        return Decision(
            status=Status.DISCONNECTED,
            invalid_since=state.invalid_since,
            open_disconnection=False,
            close_disconnection=False,
            error_code=state.error_code,
            error_message=state.error_message,
            **found,
        )
    return Decision(
        status=Status.MISCONFIGURED if outcome is Outcome.MISCONFIGURED else Status.UNREACHABLE,
        invalid_since=state.invalid_since,
        open_disconnection=False,
        close_disconnection=False,
        error_code=code,
        error_message=message,
        **found,
    )


# --- provider incidents -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Incident:
    provider: str
    outcome: str
    code: str | None
    failed: int
    checked: int

    def describe(self) -> str:
        return (
            f"{self.provider}: {self.failed} of {self.checked} connections failed with "
            f"{self.outcome} {self.code or ''}".rstrip()
        )


INCIDENT_MIN_CONNECTIONS = 5  # fewer checked connections of a provider tell nothing


def detect_incidents(
    results: Iterable[tuple[str, str, str | None]],
    *,
    min_connections: int = INCIDENT_MIN_CONNECTIONS,
    share: float = 0.5,
) -> list[Incident]:
    """Providers where most connections failed at once with the same code.

    `results` holds (provider, outcome, code) per checked connection. A provider
    with at least `min_connections` checked, more than `share` of which failed with
    one (outcome, code), is flagged; the state rules still apply per connection.
    `misconfigured` results are no incident of the provider: they are the
    installation's problem and reported as such, however few (`installation_problems`).
    """
    checked: Counter[str] = Counter()
    failed: Counter[tuple[str, str, str | None]] = Counter()
    for provider, outcome, code in results:
        checked[provider] += 1
        if outcome not in (Outcome.OK, Outcome.MISCONFIGURED):
            failed[(provider, outcome, code)] += 1
    incidents = [
        Incident(provider, outcome, code, count, checked[provider])
        for (provider, outcome, code), count in failed.items()
        if checked[provider] >= min_connections and count > share * checked[provider]
    ]
    return sorted(incidents, key=lambda i: (i.provider, -i.failed))


@dataclass(frozen=True, slots=True)
class IncidentPlan:
    """What one sweep does to the providers' incidents: `open` the incidents found for a
    provider without an open one, `update` the open ones found again, `close` the open
    ones of providers this sweep checked enough of (`min_connections`) without finding
    one. A provider it checked too little of keeps its incident as it is."""

    open: list[Incident]
    update: list[Incident]
    close: list[str]  # providers


def plan_incidents(
    found: Iterable[Incident],
    open_providers: Iterable[str],
    checked: Mapping[str, int],
    *,
    min_connections: int = INCIDENT_MIN_CONNECTIONS,
) -> IncidentPlan:
    ongoing = set(open_providers)
    first: dict[str, Incident] = {}
    for incident in found:  # one per provider: its most common failure
        if incident.provider not in first or incident.failed > first[incident.provider].failed:
            first[incident.provider] = incident
    return IncidentPlan(
        open=[i for p, i in sorted(first.items()) if p not in ongoing],
        update=[i for p, i in sorted(first.items()) if p in ongoing],
        close=sorted(p for p in ongoing if p not in first and checked.get(p, 0) >= min_connections),
    )
