"""What "broken" means, the one definition the pages, the JSON API, the CLI, refresh and
reconnect use (pure). A connection is broken while its credentials are known to fail: it
has an open disconnection, so its status is `disconnected` or, on a row written before
that rule, `invalid_since` is set. It stays broken whatever outage or installation
problem comes after; the outcome of its last check is a second fact beside it
(`unreachable_now`). Each connection falls under exactly one filter of the list
(`listed_under`): Disconnected when broken, else its status. relink/connections.py holds
the same rules in SQL (`broken_clause`, `listed_under_clause`, `listed_as`)."""

from __future__ import annotations

from datetime import datetime

from relink.domain.words import Outcome, Status


def is_broken(status: str, invalid_since: datetime | None) -> bool:
    """Its credentials are known to fail until an `ok` check or a reconnect."""
    return status == Status.DISCONNECTED or invalid_since is not None


def listed_under(status: str, invalid_since: datetime | None) -> Status:
    """The one filter (and status word) a connection is listed under."""
    return Status.DISCONNECTED if is_broken(status, invalid_since) else Status(status)


def unreachable_now(last_outcome: str | None) -> bool:
    """The last check could not ask the source (an outage): the second fact of a broken
    connection, the whole story of one that is not."""
    return last_outcome == Outcome.UNREACHABLE
