"""What can go wrong in a reconnect, named as the user meets it: the source refused the new
credentials (`CredentialsRefused`), could not be asked (`SourceUnreachable`), Relink's own
setup is wrong (`InstallationMisconfigured`), an OAuth callback's state is unknown,
foreign, used or expired (`OAuthStateRefused`), or the new credentials belong to another
account than the connection's and the replacement is not confirmed yet
(`AccountReplacement`). Each carries a one-line message that says nothing was changed."""

from __future__ import annotations

from connectors.base import CheckError, CheckResult
from relink.domain.identity import Identity, replacement_line
from relink.domain.words import Outcome
from relink.errors import RelinkError

NOTHING_CHANGED = "nothing was changed"


class ReconnectFailed(RelinkError):
    """The new credentials did not work; nothing was changed."""

    outcome: Outcome

    def __init__(self, message: str, *, code: str | None) -> None:
        super().__init__(message)
        self.code = code


class CredentialsRefused(ReconnectFailed):
    """The source refused the new credentials (wrong password, revoked key, invalid_grant)."""

    outcome = Outcome.AUTH_FAILED


class SourceUnreachable(ReconnectFailed):
    """The source could not be asked whether the new credentials work (an outage)."""

    outcome = Outcome.UNREACHABLE


class InstallationMisconfigured(ReconnectFailed):
    """The installation is wrong (the OAuth app refused): no credentials can help."""

    outcome = Outcome.MISCONFIGURED


class OAuthStateRefused(RelinkError):
    """An OAuth callback whose state is unknown, foreign, already used or expired."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class AccountReplacement(RelinkError):
    """The new credentials work but are another account's: "This replaces max@acme.test with
    ann@acme.test" waits for the user's confirmation. `token` confirms it later
    (`confirm.confirm_replacement`) when the reconnect was held for that; None otherwise."""

    def __init__(
        self, connection_id: int, before: Identity, after: Identity, *, token: str | None = None
    ) -> None:
        self.connection_id = connection_id
        self.before = before
        self.after = after
        self.token = token
        self.line = replacement_line(before, after)
        super().__init__(
            f"connection {connection_id}: {self.line}; confirm to replace the account, "
            f"{NOTHING_CHANGED} until then"
        )


def as_failure(error: CheckError | CheckResult, connection_id: int) -> ReconnectFailed:
    code = error.code
    if error.outcome is Outcome.AUTH_FAILED:
        return CredentialsRefused(
            f"connection {connection_id}: the source refused the new credentials "
            f"({error.message}); nothing was changed",
            code=code,
        )
    if error.outcome is Outcome.MISCONFIGURED:
        return InstallationMisconfigured(
            f"connection {connection_id}: Relink's own setup for this source is wrong "
            f"({error.message}); nothing was changed",
            code=code,
        )
    return SourceUnreachable(
        f"connection {connection_id}: could not reach the source to validate the new "
        f"credentials ({error.message}); nothing was changed, try again later",
        code=code,
    )
