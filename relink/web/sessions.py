"""Web sessions: a signed cookie, the CSRF token it carries, and safe `next` targets.

The cookie holds a signed (itsdangerous, HMAC-SHA1 over a key derived from
`RELINK_SESSION_SECRET`) JSON object: the user id, a fingerprint of their password
hash (a password change ends older sessions), the CSRF token, a one-shot flash
message and the reconnect waiting for this user's confirmation (its connection and
single-use token: `relink.reconnecting.confirm`). Nothing in it is secret to its holder;
the signature makes it tamper-proof and the timestamp limits its age.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from itsdangerous import BadSignature, URLSafeTimedSerializer

from relink.settings import Settings

COOKIE_NAME = "relink_session"
MAX_AGE_SECONDS = 12 * 3600
SALT = "relink.web.session"
CSRF_FIELD = "csrf_token"


@dataclass
class WebSession:
    user_id: int | None = None
    password_fingerprint: str = ""
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    flash: str | None = None
    flash_kind: str = "success"  # success | error
    pending: tuple[int, str] | None = None  # (connection id, token) of a held reconnect
    modified: bool = False  # the response must (re)set the cookie
    cleared: bool = False  # the response must delete the cookie

    def as_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"c": self.csrf}
        if self.user_id is not None:
            payload |= {"u": self.user_id, "p": self.password_fingerprint}
        if self.flash:
            payload |= {"f": self.flash[:500], "fk": self.flash_kind}
        if self.pending:
            payload |= {"k": list(self.pending)}
        return payload

    def csrf_matches(self, submitted: str | None) -> bool:
        """Constant-time comparison of the submitted token with this session's."""
        if not submitted or not self.csrf:
            return False
        return hmac.compare_digest(submitted.encode(), self.csrf.encode())

    def sign_in(self, user_id: int, password_fingerprint: str) -> None:
        """A fresh session (new CSRF token): nothing from before sign-in carries over."""
        self.user_id = user_id
        self.password_fingerprint = password_fingerprint
        self.csrf = secrets.token_urlsafe(32)
        self.flash = None
        self.pending = None
        self.modified = True

    def sign_out(self) -> None:
        self.user_id = None
        self.password_fingerprint = ""
        self.csrf = secrets.token_urlsafe(32)
        self.flash = None
        self.pending = None
        self.cleared = True

    def hold(self, connection_id: int, token: str) -> None:
        """Remember the reconnect held for this user's confirmation (one at a time)."""
        self.pending = (connection_id, token)
        self.modified = True

    def pending_token(self, connection_id: int) -> str | None:
        """The token of the reconnect of `connection_id` held for confirmation, if any."""
        if self.pending is None or self.pending[0] != connection_id:
            return None
        return self.pending[1]

    def release(self) -> None:
        if self.pending is not None:
            self.pending = None
            self.modified = True

    def set_flash(self, message: str, kind: str = "success") -> None:
        """A message for the next page (never a secret: it travels in the cookie)."""
        self.flash, self.flash_kind = message, kind
        self.modified = True

    def pop_flash(self) -> tuple[str, str] | None:
        """(kind, message) once, then gone."""
        message, self.flash = self.flash, None
        if not message:
            return None
        self.modified = True
        return self.flash_kind, message


class SessionCodec:
    def __init__(self, secret: str, *, max_age: int = MAX_AGE_SECONDS) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt=SALT)
        self.max_age = max_age

    def dumps(self, session: WebSession) -> str:
        return self._serializer.dumps(session.as_payload())

    def loads(self, cookie: str | None) -> WebSession | None:
        """The session in a cookie, or None when it is missing, tampered with or too old."""
        if not cookie or len(cookie) > 4096:
            return None
        try:
            data = self._serializer.loads(cookie, max_age=self.max_age)
        except BadSignature:  # SignatureExpired is a BadSignature
            return None
        if not isinstance(data, dict) or not isinstance(data.get("c"), str):
            return None
        user_id = data.get("u")
        if user_id is not None and not isinstance(user_id, int):
            return None
        flash = data.get("f")
        pending = data.get("k")
        held = None
        if (
            isinstance(pending, list)
            and len(pending) == 2
            and isinstance(pending[0], int)
            and isinstance(pending[1], str)
        ):
            held = (pending[0], pending[1])
        return WebSession(
            user_id=user_id,
            password_fingerprint=str(data.get("p", "")),
            csrf=data["c"],
            flash=flash if isinstance(flash, str) else None,
            flash_kind="error" if data.get("fk") == "error" else "success",
            pending=held,
        )


def session_secret(settings: Settings) -> str:
    """RELINK_SESSION_SECRET, or a key file in the data folder created once (0600)."""
    configured = settings.session_secret.get_secret_value().strip()
    if configured:
        return configured
    return load_or_create_secret_file(settings.session_key_file)


def load_or_create_secret_file(path: Path) -> str:
    if path.exists():
        value = path.read_text().strip()
        if value:
            return value
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value


# --- where to go after sign-in ---------------------------------------------------------

_UNSAFE_CHARS = re.compile(r"[\x00-\x20\x7f\\]")


def safe_next(target: str | None, default: str = "/connections") -> str:
    """`target` when it is a same-site relative path, else `default`.

    Rejected: absolute URLs (`https://evil`), scheme-relative ones (`//evil`),
    backslashes (browsers read `/\\evil` as `//evil`), whitespace and control
    characters, and anything not starting with a single `/`.
    """
    if not target or len(target) > 2000:
        return default
    if not target.startswith("/") or target.startswith("//"):
        return default
    if _UNSAFE_CHARS.search(target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target
