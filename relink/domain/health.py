"""Error state of datasets and metrics, derived from their connections (pure).

The seed's "error message at the bottom left of your metrics": a metric shows an
error while any dataset it uses is in error or sits on a connection that is not
working.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from relink.domain.broken import is_broken
from relink.domain.words import DatasetStatus, Status


def dataset_error(
    *,
    dataset_status: str,
    dataset_error: str | None,
    connection_name: str,
    connection_status: str,
    connection_error: str | None,
    connection_invalid_since: datetime | None = None,
) -> str | None:
    """The message a dataset shows, or None when it is fine.

    A connection whose credentials failed stays broken through a later outage
    (`relink.domain.broken`).
    """
    if is_broken(connection_status, connection_invalid_since):
        reason = connection_error or "credentials no longer valid"
        return f"connection {connection_name!r} is disconnected: {reason}; reconnect it"
    if connection_status == Status.MISCONFIGURED:
        return (
            f"connection {connection_name!r} is waiting for an administrator: Relink's setup "
            "for its source needs fixing"
        )
    if dataset_status == DatasetStatus.ERROR:
        return dataset_error or "the last refresh failed"
    return None


def metric_error(dataset_errors: Iterable[str | None]) -> str | None:
    """The first error of the metric's datasets, or None when all are fine."""
    return next((e for e in dataset_errors if e), None)
