"""The web pages and JSON API of Relink: `create_app(relink)` builds the FastAPI app.

Server-rendered (Jinja2), no scripts of its own. Every response gets the security
headers; pages and API answers with data are `no-store`. Requests are logged as
method, path and status: never the query string (the OAuth callback carries a code).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from relink.app import Relink
from relink.errors import NotFound, PermissionDenied, VaultError
from relink.web import api, checking, docs, emails, followups, pages, views
from relink.web.guards import BadRequest, CsrfFailed, LoginRequired, current_user, relink_of
from relink.web.sessions import COOKIE_NAME, SessionCodec, WebSession, session_secret

log = logging.getLogger("relink.web")

TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "web"

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'{extra}{frames}"
)
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


def create_app(relink: Relink) -> FastAPI:
    app = FastAPI(
        title="Relink",
        summary="Data connections: status, datasets and metrics, reconnect.",
        version="0.1.0",
        docs_url=None,  # served by relink.web.docs without inline scripts
        redoc_url=None,
        lifespan=_lifespan,
    )
    app.state.relink = relink
    app.state.codec = SessionCodec(session_secret(relink.settings))
    app.state.secure_cookies = relink.settings.base_url.startswith("https://")
    app.state.background = set()  # follow-ups that outlive their request
    templates = Jinja2Templates(directory=str(TEMPLATES))
    views.install_filters(templates.env)
    app.state.templates = templates

    app.middleware("http")(_session_and_headers)
    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(PermissionDenied, _forbidden)
    app.add_exception_handler(CsrfFailed, _csrf_failed)
    app.add_exception_handler(BadRequest, _bad_request)
    app.add_exception_handler(VaultError, _vault_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(StarletteHTTPException, _http_error)

    app.include_router(pages.router)
    app.include_router(emails.router)
    app.include_router(checking.router)
    app.include_router(api.router)
    app.include_router(docs.router)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """At start, the reconnect follow-ups a stopped web process left unfinished go on."""
    await followups.resume(app.state.relink, app.state.background)
    yield


# --- middleware -------------------------------------------------------------------------


async def _session_and_headers(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    started = time.perf_counter()
    codec: SessionCodec = request.app.state.codec
    raw = request.cookies.get(COOKIE_NAME)
    session = codec.loads(raw)
    if session is None:
        session = WebSession(cleared=raw is not None)  # a bad cookie is dropped
    request.state.web_session = session
    request.state.csp_form_action = ()
    request.state.csp_frames = False  # a page that frames one of ours (an email's HTML)
    request.state.csp = None  # a response's own policy (an email's HTML)

    response = await call_next(request)

    if session.modified and not session.cleared:
        response.set_cookie(
            COOKIE_NAME,
            codec.dumps(session),
            httponly=True,
            samesite="lax",
            secure=request.app.state.secure_cookies,
            path="/",
        )
    elif session.cleared:
        response.delete_cookie(
            COOKIE_NAME,
            httponly=True,
            samesite="lax",
            secure=request.app.state.secure_cookies,
            path="/",
        )
    _security_headers(request, response)
    log.info(
        "%s %s %s %.0fms",
        request.method,
        request.url.path,  # path only: query strings may carry OAuth codes
        response.status_code,
        (time.perf_counter() - started) * 1000,
    )
    return response


def _security_headers(request: Request, response: Response) -> None:
    headers = response.headers
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    headers["Referrer-Policy"] = "same-origin"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    path = request.url.path
    if request.state.csp is not None:
        headers["Content-Security-Policy"] = request.state.csp
        headers["X-Frame-Options"] = "SAMEORIGIN"
    elif path == "/docs" or path.startswith("/static/docs"):
        headers["Content-Security-Policy"] = DOCS_CSP
    else:
        extra = "".join(f" {origin}" for origin in request.state.csp_form_action)
        frames = "; frame-src 'self'" if request.state.csp_frames else ""
        headers["Content-Security-Policy"] = CSP.format(extra=extra, frames=frames)
    if path.startswith("/static/"):
        headers.setdefault("Cache-Control", "public, max-age=3600")
    else:
        headers["Cache-Control"] = "no-store"


# --- errors -----------------------------------------------------------------------------


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/") or request.url.path == "/api"


def _error(request: Request, status: int, title: str, message: str) -> Response:
    if _is_api(request):
        return JSONResponse({"detail": message}, status_code=status)
    return views.render(
        request,
        "error.html",
        {"title": title, "message": message},
        status_code=status,
        user=_viewer(request),
    )


def _viewer(request: Request) -> SimpleNamespace | None:
    """Who is signed in, for the error page's header (None when nobody is): a signed-in
    visitor who mistypes an address keeps their navigation."""
    if getattr(request.state, "web_session", None) is None:
        return None
    try:
        with relink_of(request).sessions() as db:
            user = current_user(request, db)
            return SimpleNamespace(name=user.name, role=user.role)
    except LoginRequired:
        return None


async def _login_required(request: Request, exc: Exception) -> Response:
    if _is_api(request):
        return JSONResponse(
            {"detail": "sign in first"},
            status_code=401,
            headers={"WWW-Authenticate": 'Cookie realm="relink"'},
        )
    target = "/login"
    if isinstance(exc, LoginRequired) and exc.next_path:
        from urllib.parse import urlencode

        target += "?" + urlencode({"next": exc.next_path})
    return RedirectResponse(target, status_code=303)


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error(request, 404, "Not found", "There is nothing here, or you may not see it.")


async def _forbidden(request: Request, exc: Exception) -> Response:
    return _error(request, 403, "Not allowed", str(exc) or "You may not do that.")


async def _csrf_failed(request: Request, exc: Exception) -> Response:
    return _error(
        request,
        403,
        "Form expired",
        "The form was missing its security token or it did not match; nothing was changed. "
        "Go back, reload the page and try again.",
    )


async def _bad_request(request: Request, exc: Exception) -> Response:
    return _error(request, 400, "Cannot continue", str(exc))


async def _vault_error(request: Request, exc: Exception) -> Response:
    # The installation's keys, not the visitor's doing; the message names the connection,
    # never a key or ciphertext (relink.vault).
    return _error(request, 500, "Credentials unreadable", str(exc))


async def _invalid_request(request: Request, exc: Exception) -> Response:
    # Never echo submitted values (they may be secrets): name the fields only.
    assert isinstance(exc, RequestValidationError)
    if any(err.get("loc", ("",))[0] == "path" for err in exc.errors()):
        return await _not_found(request, exc)
    fields = sorted({".".join(str(p) for p in err.get("loc", ())[1:]) for err in exc.errors()})
    return _error(request, 400, "Bad request", f"invalid value for: {', '.join(fields)}")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        return await _not_found(request, exc)
    if exc.status_code == 405:
        return _error(request, 405, "Method not allowed", "That address does not take this method.")
    return _error(request, exc.status_code, "Error", str(exc.detail))
