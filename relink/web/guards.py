"""Who is asking: the signed-in user of a request, CSRF checks, the errors routes raise."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import Path, Request
from sqlalchemy.orm import Session

from relink.app import Relink
from relink.models import MAX_ID, User
from relink.passwords import fingerprint
from relink.web.sessions import CSRF_FIELD, WebSession

# An id in a URL: a larger number names nothing and SQLite cannot even be asked about it;
# like any id that is not a number, it is a 404.
ConnectionId = Annotated[int, Path(ge=1, le=MAX_ID)]


class LoginRequired(Exception):
    """No valid session: pages redirect to sign-in (back to `next_path`), the API says 401."""

    def __init__(self, next_path: str | None = None) -> None:
        super().__init__("sign in first")
        self.next_path = next_path


class CsrfFailed(Exception):
    """A form post without the session's CSRF token: 403, nothing changes."""


class BadRequest(Exception):
    """A request that cannot be acted on (400); the message is shown as is."""


def relink_of(request: Request) -> Relink:
    return request.app.state.relink


def web_session(request: Request) -> WebSession:
    return request.state.web_session


def current_user(request: Request, db: Session, *, next_path: str | None = None) -> User:
    """The active user of this request's session, or LoginRequired.

    A session of a user who was deactivated, removed or changed their password since
    is ended here.
    """
    session = web_session(request)
    if session.user_id is not None:
        user = db.get(User, session.user_id)
        if (
            user is not None
            and user.active
            and user.password_hash
            and fingerprint(user.password_hash) == session.password_fingerprint
        ):
            return user
        session.sign_out()
    raise LoginRequired(next_path)


def here(request: Request) -> str:
    """The path and query of this request, for the `next` of a sign-in redirect."""
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


@contextmanager
def signed_in(request: Request, *, back_here: bool = True) -> Iterator[tuple[Session, User]]:
    """One transaction of the app database, and the user it runs for."""
    with relink_of(request).transaction() as db:
        user = current_user(request, db, next_path=here(request) if back_here else None)
        yield db, user


def check_csrf(request: Request, form: Mapping[str, Any]) -> None:
    token = form.get(CSRF_FIELD)
    if not isinstance(token, str) or not web_session(request).csrf_matches(token):
        raise CsrfFailed()
