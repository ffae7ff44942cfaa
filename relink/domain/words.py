"""The domain's words as string enums: a user's role, and the states of a disconnection's
one email. The ORM models and every other layer import them from here."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    MEMBER = "member"


class NotificationState(StrEnum):
    CLAIMED = "claimed"  # committed before the request goes out
    SENT = "sent"
    FAILED = "failed"  # SendGrid refused it (4xx): not retried
    UNKNOWN = "unknown"  # the request went out, the answer was lost: never resent automatically
    RELEASED = "released"  # handed back to the next run (retryable error, or an admin's decision)
    OUTBOX = "outbox"  # no API key: written to the outbox instead of sent
    NO_RECIPIENT = "no_recipient"
