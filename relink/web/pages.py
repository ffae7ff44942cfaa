"""The HTML pages: sign-in, the Data tab (connections), a connection, reconnect, connectors."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session, selectinload
from starlette.concurrency import run_in_threadpool

import connectors
from relink import connections as svc
from relink.directory import viewer_of
from relink.domain.access import can_reconnect
from relink.domain.expiry import HEADS_UP_AHEAD
from relink.domain.words import Mode, Status
from relink.errors import InvalidInput, PermissionDenied
from relink.models import MAX_ID, AuditEvent, Connection, User
from relink.passwords import authenticate, fingerprint
from relink.reconnecting.confirm import held_replacement
from relink.reconnecting.form import ReconnectForm, form_of
from relink.sweep.incidents import open_incidents
from relink.timeutil import utcnow
from relink.web import reconnecting, views
from relink.web.guards import (
    BadRequest,
    ConnectionId,
    LoginRequired,
    check_csrf,
    current_user,
    relink_of,
    signed_in,
    web_session,
)
from relink.web.sessions import safe_next

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).resolve().parent.parent / "templates" / "web" / "static"
PAGE_SIZE = 100
HISTORY_LIMIT = 100
SIGN_IN_FAILED = "Wrong email or password."


# --- sign-in --------------------------------------------------------------------------


@router.get("/")
def home() -> Response:
    return RedirectResponse("/connections", status_code=303)


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> Response:
    target = safe_next(next)
    with relink_of(request).transaction() as db:
        try:
            current_user(request, db)
        except LoginRequired:
            pass  # show the form
        else:
            return RedirectResponse(target, status_code=303)
    session = web_session(request)
    session.modified = True  # the form's CSRF token must come back with the cookie
    return _login_form(request, target)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    check_csrf(request, form)
    target = safe_next(_text(form, "next"))
    email, password = _text(form, "email"), _text(form, "password")

    def check() -> tuple[int, str] | None:
        with relink_of(request).transaction() as db:
            user = authenticate(db, email, password) if email and password else None
            return None if user is None else (user.id, fingerprint(user.password_hash))

    found = await run_in_threadpool(check)  # argon2 takes a while: not on the event loop
    if found is None:
        return _login_form(request, target, error=SIGN_IN_FAILED, email=email, status=400)
    web_session(request).sign_in(*found)
    return RedirectResponse(target, status_code=303)


def _login_form(
    request: Request, target: str, *, error: str | None = None, email: str = "", status: int = 200
) -> HTMLResponse:
    return views.render(
        request,
        "login.html",
        {"next": target, "error": error, "email": email[:320]},
        status_code=status,
    )


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = await request.form()
    check_csrf(request, form)
    web_session(request).sign_out()
    return RedirectResponse("/login", status_code=303)


# --- the Data tab ---------------------------------------------------------------------


@router.get("/connections")
def connections_page(
    request: Request, status: str | None = None, after: Annotated[int, Query(le=MAX_ID)] = 0
) -> Response:
    request.state.nav = "data"
    with signed_in(request) as (db, user):
        unknown_status = None
        if status is not None and status not in set(Status):
            unknown_status, status = status, None  # every connection, and a notice (as /emails)
        viewer = viewer_of(user)
        found = svc.list_visible(
            db, viewer, status=status, after_id=max(after, 0), limit=PAGE_SIZE + 1
        )
        ahead = relink_of(request).settings.heads_up_ahead
        rows = [svc.summary(conn, ahead=ahead) for conn in found[:PAGE_SIZE]]
        next_after = rows[-1]["id"] if len(found) > PAGE_SIZE else None
        visible = svc.visible_filter(viewer)
        counts: dict[str | None, int] = {**svc.listed_counts(db, visible)}
        counts[None] = sum(counts.values())
        return views.render(
            request,
            "connections.html",
            {
                "incidents": open_incidents(db, visible, now=utcnow()),
                "rows": rows,
                "status": status,
                "unknown_status": unknown_status,
                "filters": views.FILTERS,
                "counts": counts,
                "next_page": _page_link(status, next_after) if next_after else None,
                "first_page": _page_link(status, None) if after else None,
            },
            user=user,
        )


def _page_link(status: str | None, after: int | None) -> str:
    params: dict[str, Any] = {"status": status, "after": after}
    query = urlencode({k: v for k, v in params.items() if v})
    return "/connections" + (f"?{query}" if query else "")


@router.get("/connections/{connection_id}")
def connection_page(request: Request, connection_id: ConnectionId) -> Response:
    request.state.nav = "data"
    with signed_in(request) as (db, user):
        conn = svc.get_visible(db, viewer_of(user), connection_id)
        details = _details(db, user, conn, relink_of(request).settings.heads_up_ahead)
        return views.render(request, "connection.html", details, user=user)


def _details(
    db: Session, user: User, conn: Connection, ahead: timedelta = HEADS_UP_AHEAD
) -> dict[str, Any]:
    events = db.scalars(
        sa.select(AuditEvent)
        .where(AuditEvent.connection_id == conn.id)
        .options(selectinload(AuditEvent.actor))
        .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
        .limit(HISTORY_LIMIT)
    )
    history = [
        {
            "at": event.at,
            "action": event.action,
            "actor": event.actor.name if event.actor else "Relink",
            "details": event.details or {},
        }
        for event in events
    ]
    return {
        "conn": svc.detail(db, conn, ahead=ahead),
        "history": history,
        # misconfigured: the installation is wrong, which a reconnect cannot fix (the
        # notice says what an admin fixes), so no button offers one
        "can_reconnect": conn.status != Status.MISCONFIGURED
        and can_reconnect(viewer_of(user), svc.ref_of(conn)),
        "action_label": action_label(conn),
        "auth_kind": _auth_kind(conn.type),
    }


def action_label(conn: Connection) -> str:
    """The seed's two buttons: warehouse sources are managed, direct-query ones reconnected."""
    return "Manage Connection" if conn.mode == Mode.WAREHOUSE else "Reconnect"


def _auth_kind(type_: str) -> str | None:
    try:
        return str(connectors.get(type_).auth_kind)
    except connectors.UnknownConnector:
        return None


# --- reconnect ------------------------------------------------------------------------


def _reconnectable(db: Session, user: User, connection_id: int) -> Connection:
    conn = svc.get_visible(db, viewer_of(user), connection_id)  # 404 when hidden
    if not can_reconnect(viewer_of(user), svc.ref_of(conn)):
        raise PermissionDenied("you may see this connection but not reconnect it")
    return conn


def _form(conn: Connection) -> ReconnectForm:
    try:
        return form_of(conn)
    except InvalidInput as exc:  # a connection of a connector this installation lacks
        raise BadRequest(str(exc)) from None


@router.get("/connections/{connection_id}/reconnect")
def reconnect_page(request: Request, connection_id: ConnectionId) -> Response:
    with signed_in(request) as (db, user):
        conn = _reconnectable(db, user, connection_id)
        return _reconnect_form(request, user, conn)


def _reconnect_form(
    request: Request,
    user: User,
    conn: Connection,
    *,
    error: str | None = None,
    error_kind: str | None = None,
    submitted: Mapping[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    request.state.nav = "data"
    form = _form(conn)
    consent_origin = reconnecting.oauth_origin(conn) if form.oauth else None
    if consent_origin:
        request.state.csp_form_action = (consent_origin,)
    return views.render(
        request,
        "reconnect.html",
        {
            "conn": svc.summary(conn),
            "form": form,
            "error": error,
            "error_kind": error_kind,
            "title": action_label(conn),
            "submitted": submitted or {},
        },
        status_code=status_code,
        user=user,
    )


@router.post("/connections/{connection_id}/reconnect")
async def reconnect(request: Request, connection_id: ConnectionId) -> Response:
    form_data = await request.form()
    relink = relink_of(request)

    def load() -> tuple[str, int, ReconnectForm, str | None]:
        with signed_in(request) as (db, user):
            conn = _reconnectable(db, user, connection_id)
            check_csrf(request, form_data)
            form = _form(conn)
            origin = reconnecting.oauth_origin(conn) if form.oauth else None
            return user.email, user.id, form, origin

    email, user_id, form, consent_origin = await run_in_threadpool(load)
    changes = reconnecting.submitted_changes(form, form_data)
    if form.oauth:
        try:
            url = await run_in_threadpool(
                reconnecting.start_oauth, relink, connection_id, actor=email, changes=changes
            )
        except InvalidInput as exc:
            return await _reconnect_failed(
                request, connection_id, str(exc), "invalid", changes.settings
            )
        if views.origin(url) != consent_origin:
            # A new authorize URL elsewhere: this page's CSP (form-action) would block the
            # redirect, so the user follows a link to it instead.
            return await _continue_elsewhere(request, connection_id, url)
        return RedirectResponse(url, status_code=303)
    outcome = await reconnecting.with_secrets(
        relink,
        connection_id,
        actor=email,
        actor_id=user_id,
        form=form,
        submitted=form_data,
        background=request.app.state.background,
    )
    if outcome.kind == "confirm":
        return _to_confirm(request, outcome)
    if not outcome.ok:
        return await _reconnect_failed(
            request, connection_id, outcome.message, outcome.kind, changes.settings
        )
    web_session(request).set_flash(outcome.message)
    return RedirectResponse(f"/connections/{connection_id}", status_code=303)


def _to_confirm(request: Request, outcome: reconnecting.Outcome) -> RedirectResponse:
    """New credentials of another account: the session remembers the held reconnect and
    the confirm page asks (a page of its own: reloading it asks again)."""
    held = outcome.replacement
    assert held is not None and held.token is not None
    web_session(request).hold(held.connection_id, held.token)
    return RedirectResponse(f"/connections/{held.connection_id}/reconnect/confirm", 303)


@router.get("/connections/{connection_id}/reconnect/confirm")
def reconnect_confirm_page(request: Request, connection_id: ConnectionId) -> Response:
    """ "This replaces … with …": confirmed or not before anything changes."""
    relink = relink_of(request)
    with signed_in(request) as (db, user):
        conn = _reconnectable(db, user, connection_id)
        token = web_session(request).pending_token(connection_id) or ""
        held = held_replacement(relink, token, actor=user.email, connection_id=connection_id)
        if held is None:
            web_session(request).set_flash(
                "Nothing is waiting for your confirmation here (it may have expired); "
                "nothing was changed.",
                "error",
            )
            return RedirectResponse(f"/connections/{connection_id}", status_code=303)
        request.state.nav = "data"
        return views.render(
            request,
            "reconnect_confirm.html",
            {"conn": svc.summary(conn), "held": held},
            user=user,
        )


@router.post("/connections/{connection_id}/reconnect/confirm")
async def reconnect_confirm(request: Request, connection_id: ConnectionId) -> Response:
    """The user confirmed the account replacement shown on the confirm page."""
    form_data = await request.form()

    def load() -> tuple[str, int]:
        with signed_in(request) as (db, user):
            _reconnectable(db, user, connection_id)
            check_csrf(request, form_data)
            return user.email, user.id

    email, user_id = await run_in_threadpool(load)
    session = web_session(request)
    outcome = await reconnecting.confirm(
        relink_of(request),
        connection_id,
        actor=email,
        actor_id=user_id,
        token=session.pending_token(connection_id) or "",
        background=request.app.state.background,
    )
    session.release()  # used, or refused for good: never tried again
    if not outcome.ok:
        return await _reconnect_failed(request, connection_id, outcome.message, outcome.kind, {})
    web_session(request).set_flash(outcome.message)
    return RedirectResponse(f"/connections/{connection_id}", status_code=303)


async def _reconnect_failed(
    request: Request,
    connection_id: int,
    message: str,
    kind: str,
    submitted: Mapping[str, str],
) -> HTMLResponse:
    """The form again with the reason (wrong credentials vs unreachable) and the settings
    as they were typed (never a secret); nothing changed."""

    def page() -> HTMLResponse:
        with signed_in(request) as (db, user):
            conn = _reconnectable(db, user, connection_id)
            status = 400 if kind in {"auth_failed", "invalid"} else 502
            if kind == "conflict":
                status = 409
            return _reconnect_form(
                request,
                user,
                conn,
                error=message,
                error_kind=kind,
                submitted=submitted,
                status_code=status,
            )

    return await run_in_threadpool(page)


async def _continue_elsewhere(request: Request, connection_id: int, url: str) -> HTMLResponse:
    def page() -> HTMLResponse:
        with signed_in(request) as (db, user):
            conn = _reconnectable(db, user, connection_id)
            request.state.nav = "data"
            return views.render(
                request,
                "reconnect_continue.html",
                {"conn": svc.summary(conn), "url": url, "origin": views.origin(url)},
                user=user,
            )

    return await run_in_threadpool(page)


@router.get("/oauth/callback")
async def oauth_callback(
    request: Request,
    state: str | None = None,
    code: str | None = None,
    error: str | None = None,
) -> Response:
    """Where the provider sends the user back. The state must be one this user started."""

    def who() -> tuple[str, int]:
        with signed_in(request, back_here=False) as (_db, user):  # no code in a `next`
            return user.email, user.id

    email, user_id = await run_in_threadpool(who)
    if error or not state or not code:
        reason = (
            f"the provider answered {error!r}"
            if error
            else f"the answer had no {'code' if state else 'state'}"
        )
        raise BadRequest(
            f"The sign-in at the provider did not complete ({reason[:80]}); nothing was "
            "changed. Open the connection and reconnect again."
        )
    outcome = await reconnecting.finish_oauth(
        relink_of(request),
        actor=email,
        actor_id=user_id,
        state=state,
        code=code,
        background=request.app.state.background,
    )
    if outcome.kind == "state":
        raise BadRequest(f"This sign-in cannot be used: {outcome.message}. Nothing was changed.")
    if outcome.kind == "confirm":
        return _to_confirm(request, outcome)
    if outcome.connection_id is None:
        raise BadRequest(f"Could not reconnect: {outcome.message}")
    web_session(request).set_flash(outcome.message, "success" if outcome.ok else "error")
    return RedirectResponse(f"/connections/{outcome.connection_id}", status_code=303)


# --- the catalog ----------------------------------------------------------------------


@router.get("/connectors")
def connectors_page(request: Request, kind: str | None = None) -> Response:
    """The catalog is public (it holds no account data); signed-in users get their nav.
    A summary row per kind, each kind's fields folded below; `?kind=TYPE` opens one."""
    request.state.nav = "connectors"
    with relink_of(request).transaction() as db:
        try:
            user: User | None = current_user(request, db)
        except LoginRequired:
            user = None
        catalog = [c.describe() for c in connectors.all_connectors()]
        unknown = kind if kind and kind not in {c["type"] for c in catalog} else None
        context = {"catalog": catalog, "open_kind": kind, "unknown_kind": unknown}
        return views.render(request, "connectors.html", context, user=user)


@router.get("/static/relink.css")
def stylesheet() -> Response:
    return FileResponse(STATIC / "relink.css", media_type="text/css")


@router.get("/favicon.ico")
@router.get("/static/favicon.svg")
def favicon() -> Response:
    # browsers ask for /favicon.ico whatever the page says; both names serve the SVG
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")


def _text(form: Any, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""
