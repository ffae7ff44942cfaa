"""What can go wrong in a reconnect, named as the user meets it: the source refused the new
credentials (`CredentialsRefused`), could not be asked (`SourceUnreachable`), Relink's own
setup is wrong (`InstallationMisconfigured`), or an OAuth callback's state is unknown,
foreign, used or expired (`OAuthStateRefused`). Each carries a one-line message that says
nothing was changed."""

from __future__ import annotations

from connectors.base import CheckError, CheckResult
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
