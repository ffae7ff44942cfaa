"""The domain's words as string enums: what a check found, the status it gives a
connection, a dataset's state, a connection's mode and kind of credentials, a user's role,
and the states of a disconnection's one email. The ORM models, the connectors and every
other layer import them from here."""

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


CHECK_ERROR = "error"
"""Not an outcome of the source: the connection could not be checked at all (its stored
credentials do not decrypt, its connector is unknown)."""


class Outcome(StrEnum):
    """What one check of a connection found (which answer is which: `connectors.outcomes`)."""

    OK = "ok"
    AUTH_FAILED = "auth_failed"  # credentials expired, revoked or changed: the owner reconnects
    MISCONFIGURED = "misconfigured"  # the installation is wrong: only an admin can fix it
    UNREACHABLE = "unreachable"  # the source could not be asked: never breaks a connection


class Status(StrEnum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"  # an open disconnection: the owner reconnects
    MISCONFIGURED = "misconfigured"  # the installation is wrong: an admin fixes it
    UNREACHABLE = "unreachable"
    UNCHECKED = "unchecked"


class DatasetStatus(StrEnum):
    PENDING = "pending"  # never refreshed
    OK = "ok"
    ERROR = "error"


class Mode(StrEnum):
    """The seed's "data sources with warehouse available" vs "direct query"."""

    WAREHOUSE = "warehouse"
    DIRECT = "direct"


class AuthKind(StrEnum):
    PASSWORD = "password"
    OAUTH2 = "oauth2"
    API_KEY = "api_key"
