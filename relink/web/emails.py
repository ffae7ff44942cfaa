"""The Emails page (admins): every disconnection email of the account with its state,
recipients and disconnection, and below them the expiry heads-ups; one email as its
recipients read it (the HTML in a sandboxed frame, the plain text beside it); `release`
for an `unknown` one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from relink.domain.words import NotificationState, Role
from relink.emailing import ledger
from relink.emailing.copies import copy_of
from relink.emailing.headsup import list_heads_ups
from relink.emailing.outbox import NotificationView, get_notification, list_notifications
from relink.errors import Conflict, PermissionDenied
from relink.models import MAX_ID, User
from relink.timeutil import utcnow
from relink.web import views
from relink.web.guards import check_csrf, relink_of, signed_in, web_session

router = APIRouter(include_in_schema=False)

NotificationId = Annotated[int, Path(ge=1, le=MAX_ID)]
PAGE_SIZE = 200
STATES = tuple(NotificationState)

EMAIL_CSP = (
    "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'"
)
"""The email's HTML runs nothing and reaches nothing, shown only inside our own page."""


def _admin(user: User) -> None:
    if user.role != Role.ADMIN:
        raise PermissionDenied("Only an administrator of the account sees its emails.")


def _email(db: Session, user: User, notification_id: int) -> NotificationView:
    _admin(user)
    return get_notification(db, notification_id, account_id=user.account_id)


@router.get("/emails")
def emails_page(request: Request, state: str | None = None) -> Response:
    request.state.nav = "emails"
    with signed_in(request) as (db, user):
        _admin(user)
        unknown_filter = state is not None and state not in STATES
        rows = list_notifications(
            db,
            state=None if unknown_filter else state,
            account_id=user.account_id,
            limit=PAGE_SIZE,
            newest_first=True,
        )
        return views.render(
            request,
            "emails.html",
            {
                "rows": rows,
                "state": None if unknown_filter else state,
                "states": STATES,
                "unknown_filter": state if unknown_filter else None,
                "page_size": PAGE_SIZE,
                "heads_ups": list_heads_ups(
                    db, account_id=user.account_id, limit=PAGE_SIZE, newest_first=True
                ),
            },
            user=user,
        )


@router.get("/emails/{notification_id}")
def email_page(request: Request, notification_id: NotificationId) -> Response:
    request.state.nav = "emails"
    with signed_in(request) as (db, user):
        view = _email(db, user, notification_id)
        copy = copy_of(relink_of(request), view)
        request.state.csp_frames = True
        return views.render(request, "email.html", {"email": view, "copy": copy}, user=user)


@router.get("/emails/{notification_id}/html")
def email_html(request: Request, notification_id: NotificationId) -> Response:
    """The email's HTML alone, for the frame of the email page."""
    with signed_in(request) as (db, user):
        view = _email(db, user, notification_id)
        copy = copy_of(relink_of(request), view)
    request.state.csp = EMAIL_CSP
    return HTMLResponse(copy.html)


@router.post("/emails/{notification_id}/release")
async def release_email(request: Request, notification_id: NotificationId) -> Response:
    """An admin's decision on an `unknown` email: the next run sends it again."""
    form = await request.form()

    def release() -> None:
        with signed_in(request) as (db, user):
            _email(db, user, notification_id)
            check_csrf(request, form)
            try:
                view = ledger.release(db, notification_id, now=utcnow(), actor=user)
            except Conflict as exc:
                web_session(request).set_flash(str(exc), "error")
                return
            web_session(request).set_flash(
                f"Released: the next email run sends it again to {', '.join(view.to)}."
                if view.disconnection_open
                else "Released; its disconnection is closed, so no email will go out."
            )

    await run_in_threadpool(release)
    return RedirectResponse(f"/emails/{notification_id}", status_code=303)
