"""What every connector declares and what a check can meet.

A connector knows one kind of source: which fields a connection needs (its
*connection requirements*) and which of them a reconnect may change, how to
validate credentials against the source and how to fetch a dataset through it.
Connectors only report outcomes; the core's state rules decide what an outcome
does to a connection.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from relink.domain.expiry import UNKNOWN, Expiry
from relink.domain.identity import Identity
from relink.domain.words import AuthKind, Outcome

if TYPE_CHECKING:
    from connectors.http import SharedClients


def one_line(text: str, limit: int = 300) -> str:
    """Whitespace (driver messages span lines) collapsed to single spaces, cut to `limit`.

    Cut after a message is scrubbed of secrets, never before: a secret straddling the
    cut would leave its first part behind."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class Field:
    """One connection requirement: a value the user supplies when connecting."""

    name: str
    label: str
    secret: bool = False
    required: bool = True
    default: str | None = None
    help: str = ""
    # A reconnect asks for it: a setting shown with its current value, or a secret entered
    # anew. What the connection's owner can fix (a user name, a moved host), never what
    # only an admin can (the installation's OAuth app).
    reconnect: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "secret": self.secret,
            "required": self.required,
            "default": self.default,
            "help": self.help,
            "reconnect": self.reconnect,
        }


# --- what can go wrong during a check ------------------------------------------------


class CheckError(Exception):
    """Base of everything a validation can meet; carries the source's own code.

    `retry_after`: the seconds the source asked us to wait before asking again
    (an HTTP ``Retry-After``), when it said."""

    outcome: Outcome

    def __init__(self, code: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = str(code)  # a plain string, also when given one of the codes' enums
        self.message = message
        self.retry_after = retry_after


class AuthFailed(CheckError):
    """The source refused the credentials (invalid_grant, 28P01, 1045, 401 ...)."""

    outcome = Outcome.AUTH_FAILED


class Misconfigured(CheckError):
    """The installation is wrong (the OAuth app's client refused, a missing app setting)."""

    outcome = Outcome.MISCONFIGURED


class Unreachable(CheckError):
    """The source could not be asked (refused, DNS, TLS, timeout, 5xx, 429, a bare 403)."""

    outcome = Outcome.UNREACHABLE


ERRORS: dict[Outcome, type[CheckError]] = {
    Outcome.AUTH_FAILED: AuthFailed,
    Outcome.MISCONFIGURED: Misconfigured,
    Outcome.UNREACHABLE: Unreachable,
}


@dataclass(frozen=True, slots=True)
class Judgment:
    """One row of a table of answers (`connectors.outcomes`, `connectors.network`): the
    outcome, what the answer means, and why it is that outcome."""

    outcome: Outcome
    meaning: str
    reason: str
    code: str | None = None  # report under this code instead of the source's (57014 -> timeout)

    def error(self, code: str, message: str, *, retry_after: float | None = None) -> CheckError:
        """The `CheckError` of this outcome, under `self.code` when the row names one."""
        return ERRORS[self.outcome](self.code or code, message, retry_after=retry_after)


@dataclass(frozen=True, slots=True)
class CheckResult:
    outcome: Outcome
    code: str | None = None
    message: str = ""
    # The connection's version after the connector itself stored rotated credentials
    # (through the TokenStore); None when it stored nothing.
    stored_version: int | None = None
    # Seconds the source asked us to wait before asking again (HTTP Retry-After)
    retry_after: float | None = None
    # Credentials the validation obtained and could not store (no TokenStore: the dry
    # validation of a reconnect) because it spent the ones it was given (an OAuth refresh
    # rotates the refresh token): the caller stores these instead. None otherwise.
    credentials: Mapping[str, str] | None = field(default=None, repr=False)
    # Whose account the credentials use, when the source said (an ok check only)
    identity: Identity | None = None

    @classmethod
    def ok(cls, message: str = "credentials valid", **kw: Any) -> CheckResult:
        return cls(Outcome.OK, None, message, **kw)

    @classmethod
    def from_error(cls, error: CheckError, **kw: Any) -> CheckResult:
        return cls(error.outcome, error.code, error.message, retry_after=error.retry_after, **kw)


@dataclass(frozen=True, slots=True)
class ConnectionSpec:
    """Plain data a connector works on: no ORM object crosses into connectors."""

    id: int
    type: str
    settings: Mapping[str, Any]
    credentials: Mapping[str, str]
    version: int = 0
    # spend the refresh token even if the access token is fresh: it would lapse unused
    # soon (relink.domain.expiry.keep_alive_due)
    keep_alive: bool = False


@dataclass(frozen=True, slots=True)
class FetchResult:
    columns: list[str]
    rows: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def row_count(self) -> int:
        return len(self.rows)


Credentials = Mapping[str, str]


class TokenStore(Protocol):
    """Where a connector persists rotated credentials, serialized per connection.

    Implemented by the core over the app database (row lock on PostgreSQL, version
    check everywhere), so two checks, or a check and a reconnect, never lose a
    rotated refresh token.
    """

    async def refresh(
        self,
        conn: ConnectionSpec,
        refresh: Callable[[Credentials], Awaitable[Credentials]],
        *,
        usable: Callable[[Credentials], bool],
    ) -> tuple[Credentials, int]:
        """Lock the connection and re-read its credentials. When the stored ones differ
        from `conn.credentials` and are `usable`, return them (another run refreshed
        already). Otherwise call `refresh(stored)` and store its result. Returns the
        credentials to use and the connection's version after the call."""
        ...

    async def reload(self, connection_id: int) -> tuple[Credentials, int]:
        """The credentials stored now, and the version."""
        ...


@dataclass(slots=True)
class CheckContext:
    """What a validation may use besides the connection itself."""

    now: datetime
    timeout: float = 10.0
    # installation-wide values a connector may need (OAuth app credentials per provider ...)
    app_settings: Mapping[str, Any] = field(default_factory=dict)
    # where rotated OAuth tokens are stored; None means "do not persist" (a dry validation
    # of new credentials before a reconnect)
    token_store: TokenStore | None = None
    # refresh an OAuth access token that expires within this many seconds
    refresh_window: float = 300.0
    # HTTP clients shared by the checks of one batch (`relink.sweep.validate.validate_all`);
    # None: an HTTP connector makes a client for the call and closes it afterwards
    clients: SharedClients | None = None


class Connector(abc.ABC):
    """One kind of data source."""

    type: str
    display_name: str
    auth_kind: AuthKind
    fields: tuple[Field, ...]
    # connections are grouped by provider for per-provider concurrency and incident detection
    provider: str
    description: str = ""
    # one line each for the Connectors page's summary: what a connection of this kind
    # needs, how a check asks the source whether it still works, and which answers break it
    needs: str = ""
    checked: str = ""
    breaks: str = ""

    @property
    def secret_fields(self) -> frozenset[str]:
        return frozenset(f.name for f in self.fields if f.secret)

    @property
    def setting_fields(self) -> frozenset[str]:
        return frozenset(f.name for f in self.fields if not f.secret)

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)

    def reconnect_fields(self, settings: Mapping[str, Any]) -> tuple[Field, ...]:
        """What a reconnect of a connection with these settings asks for: the settings it
        may change (shown with their current values) and the secrets entered anew."""
        return tuple(f for f in self.fields if f.reconnect)

    def describe(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "display_name": self.display_name,
            "auth_kind": str(self.auth_kind),
            "provider": self.provider,
            "description": self.description,
            "needs": self.needs,
            "checked": self.checked,
            "breaks": self.breaks,
            "fields": [f.as_dict() for f in self.fields],
        }

    def settings_problem(self, settings: Mapping[str, Any]) -> str | None:
        """What makes these settings unusable whatever the credentials (a port that is not
        a number, a URL that is not http(s)), found without asking the source; None when
        nothing does. Adding a connection refuses such settings: stored, every check of
        them would end `auth_failed` with `invalid_settings`."""
        return None

    def credentials_expiry(
        self,
        settings: Mapping[str, Any],
        credentials: Credentials,
        *,
        now: datetime,
        new_refresh_token: bool = True,
        previous: Expiry = UNKNOWN,
    ) -> Expiry:
        """When credentials granted at `now` stop working on their own: unknown unless
        the source says (OAuth refresh tokens, `connectors.oauth2`)."""
        return UNKNOWN

    @abc.abstractmethod
    async def validate(self, conn: ConnectionSpec, ctx: CheckContext) -> CheckResult:
        """Ask the source whether the credentials work. Never raises for a source problem."""

    @abc.abstractmethod
    async def fetch(self, conn: ConnectionSpec, query: str, ctx: CheckContext) -> FetchResult:
        """Run a dataset's query through this source (raises CheckError on failure)."""
