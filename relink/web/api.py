"""The JSON API: the same data as the pages (`connections.summary` / `detail`).

Signed in with the same session cookie as the pages; without one every route
answers 401. A connection the user may not see is a 404, as if it did not exist.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from relink import connections as svc
from relink.directory import viewer_of
from relink.domain.words import Status
from relink.models import MAX_ID
from relink.web.guards import ConnectionId, relink_of, signed_in

router = APIRouter(prefix="/api", tags=["connections"])

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Not signed in (no or expired session cookie)."},
}


class ConnectionSummary(BaseModel):
    id: int
    name: str
    type: str
    mode: str
    status: str
    broken: bool
    """Its credentials are known to fail (an open disconnection): it shows Disconnected
    whatever the last check met."""
    last_outcome: str | None
    """What the last check found: ok, auth_failed, misconfigured, unreachable, or error
    (not checkable); null before the first check."""
    last_outcome_code: str | None
    unreachable_now: bool
    """The last check could not reach the source (for a broken connection, a second fact)."""
    created_by: str
    created_by_email: str
    connected_as: str | None
    """Whose account at the source the credentials use (an email, user@host), as the source
    told it at the last check or reconnect; null when it does not say."""
    connected_as_subject: str | None
    """The source's stable name of that account (an OpenID `sub`, Salesforce's identity URL)."""
    invalid_since: str | None
    last_checked_at: str | None
    last_error_code: str | None
    last_error_message: str | None
    credentials_expire_at: str | None
    """When the credentials stop working on their own; null when unknown (issue 19)."""
    credentials_expiry_kind: str | None
    """hard (only a reconnect renews it) or idle (Relink keeps it alive by using it)."""
    credentials_expire_in_days: int | None
    credentials_expiry: str
    """In words: 'expires in 5 days', 'renewed by use; ...', 'unknown'."""
    expires_soon: bool
    """A hard end within the heads-up window (RELINK_HEADS_UP_DAYS): the list's badge."""


class ConnectionPage(BaseModel):
    connections: list[ConnectionSummary]
    next_after: int | None
    """Pass as `after` to get the next page; null on the last page."""


class DatasetView(BaseModel):
    id: int
    name: str
    query: str
    status: str
    last_refreshed_at: str | None
    row_count: int | None
    error: str | None


class MetricView(BaseModel):
    id: int
    name: str
    datasets: list[str]
    error: str | None


class ConnectionDetail(ConnectionSummary):
    settings: dict[str, Any]
    shared_with: list[str]
    datasets: list[DatasetView]
    metrics: list[MetricView]


@router.get("/connections", response_model=ConnectionPage, responses=ERRORS)
def list_connections(
    request: Request,
    status: Annotated[
        Status | None,
        Query(description="Only connections listed under this status (as the page's filters)."),
    ] = None,
    after: Annotated[
        int, Query(ge=0, le=MAX_ID, description="The last id of the previous page.")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """The connections you may see: all of your account's (admins), else yours and shared ones."""
    with signed_in(request) as (db, user):
        found = svc.list_visible(
            db, viewer_of(user), status=status, after_id=after, limit=limit + 1
        )
        ahead = relink_of(request).settings.heads_up_ahead
        rows = [svc.summary(conn, ahead=ahead) for conn in found[:limit]]
        return {
            "connections": rows,
            "next_after": rows[-1]["id"] if len(found) > limit else None,
        }


@router.get(
    "/connections/{connection_id}",
    response_model=ConnectionDetail,
    responses={**ERRORS, 404: {"description": "No such connection, or not visible to you."}},
)
def get_connection(request: Request, connection_id: ConnectionId) -> dict[str, Any]:
    """One connection with its datasets and metrics and their error state."""
    with signed_in(request) as (db, user):
        conn = svc.get_visible(db, viewer_of(user), connection_id)
        return svc.detail(db, conn, ahead=relink_of(request).settings.heads_up_ahead)
