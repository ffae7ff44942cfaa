"""The knobs of an email run: when an email is due, how long a claim lives, the batch
size, the emails in flight at once, retries and backoff, and when SendGrid's answers
stop the run. Plain JSON values in and out, for a Prefect task parameter."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from relink.domain.due import DUE_AFTER
from relink.emailing.ledger import CLAIM_LEASE

if TYPE_CHECKING:
    from relink.settings import Settings


@dataclass(frozen=True)
class NotifyPolicy:
    due_after: timedelta = DUE_AFTER
    lease: timedelta = CLAIM_LEASE
    batch_size: int = 100  # due disconnections per batch (one Prefect task run each)
    concurrency: int = 4  # emails in flight at once within a batch (RELINK_EMAIL_CONCURRENCY)
    attempts: int = 3  # requests per email in one run while SendGrid says "not now"
    backoff: float = 1.0  # seconds before the 2nd request, doubled after each
    retry_after_cap: float = 60.0  # never wait longer than this, whatever Retry-After says
    breaker_threshold: int = 3  # consecutive undelivered emails that stop the run

    def as_params(self) -> dict[str, Any]:
        """Plain JSON values (a Prefect task parameter)."""
        params = asdict(self)
        params["due_after"] = self.due_after.total_seconds()
        params["lease"] = self.lease.total_seconds()
        return params

    @classmethod
    def from_settings(cls, settings: Settings) -> NotifyPolicy:
        """The defaults, with the emails in flight from RELINK_EMAIL_CONCURRENCY."""
        return cls.in_flight(settings.email_concurrency)

    @classmethod
    def in_flight(cls, concurrency: int) -> NotifyPolicy:
        """The defaults with `concurrency` emails in flight, and a batch of whole rounds
        of them (at least the default size): a batch waits for its last email before the
        next one starts, so 100 at 16 in flight would leave 12 of 16 senders idle for
        the last request of every batch."""
        size = cls.batch_size
        return cls(concurrency=concurrency, batch_size=-(-size // concurrency) * concurrency)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> NotifyPolicy:
        values = dict(params)
        values["due_after"] = timedelta(seconds=values["due_after"])
        values["lease"] = timedelta(seconds=values["lease"])
        return cls(**values)
