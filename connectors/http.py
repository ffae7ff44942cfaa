"""What the HTTP connectors (`oauth2`, `api_key`) share: their clients (one verifying TLS
context, no cookies, `SharedClients` per batch of checks), how an answer or an httpx
exception becomes a `CheckError` (`classify_status`, `classify_response`,
`classify_exception`; network failures in the words of `connectors.network`), the error
an answer names, and scrubbing secrets out of messages. Messages name the host
(`where`), never the URL. The table of statuses is in docs/connectors.md."""

from __future__ import annotations

import re
import ssl
import threading
from collections.abc import Callable, Hashable, Iterable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http.cookiejar import CookieJar, DefaultCookiePolicy
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit

import httpx

from connectors.base import AuthFailed, CheckError, Unreachable, one_line
from connectors.network import (
    NetworkFailure,
    classify_network_error,
    network_error,
    other_network_error,
)
from connectors.outcomes import (
    BAD_RESPONSE,
    INVALID_SETTINGS,
    UNEXPECTED,
    forbidden,
    http_status,
)
from relink.domain.words import Outcome

# Statuses whose Retry-After we honour (RFC 9110 §10.2.3; 3xx ones are not followed).
RETRY_AFTER_STATUSES = frozenset({429, 503})
_ONE_WORD = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{2,63}$")

_CODE_CHARS = re.compile(r"[^a-z0-9_.\-]")
_HEADER_ERROR = re.compile(r"""\berror\s*=\s*(?:"([^"]*)"|([^\s,]+))""", re.IGNORECASE)


# --- clients ------------------------------------------------------------------------------

_tls_lock = threading.Lock()
_tls_context: ssl.SSLContext | None = None


def tls_context() -> ssl.SSLContext:
    """One verifying SSL context for every client of the process.

    httpx builds (and loads the CA bundle into) a new context for every client that is
    not given one: about 30 ms of CPU each, i.e. half a minute per 1,000 checks.
    A context is safe to share between clients, threads and event loops.
    """
    global _tls_context
    with _tls_lock:
        if _tls_context is None:
            _tls_context = httpx.create_ssl_context()
        return _tls_context


def no_cookies() -> CookieJar:
    """A cookie jar that keeps nothing: a provider's cookies never reach another request
    (a shared client serves many connections), and a check needs none. A client's
    `cookies=` must be the jar itself: httpx copies an `httpx.Cookies` into a new jar
    that keeps everything."""
    return CookieJar(DefaultCookiePolicy(allowed_domains=[]))


_C = TypeVar("_C", bound=httpx.AsyncClient)


class SharedClients:
    """The HTTP clients of one batch of checks, one per key (kind, client credentials,
    timeout), closed together when the batch ends.

    A client per check costs more CPU than the check's own request (its setup, the
    proxy environment read again, a fresh connection pool), and sends every request on a
    new connection: a new TLS handshake with the same provider each time. Sharing one
    keeps connections alive between the checks of a batch. What a shared client must not
    carry from one connection to the next: cookies (`no_cookies`) and credentials (every
    request passes its own; see `connectors.oauth2.session` for Authlib's token attribute).
    Concurrency is bounded by the caller's semaphores, not by the pool.
    """

    def __init__(self) -> None:
        self._clients: dict[Hashable, Any] = {}

    def get(self, key: Hashable, make: Callable[[], _C]) -> _C:
        """The client under `key`, made by `make()` the first time."""
        client: _C | None = self._clients.get(key)
        if client is None:
            client = self._clients[key] = make()
        return client

    def __repr__(self) -> str:  # the keys hold client secrets
        return f"<SharedClients: {len(self._clients)}>"

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


POOL_LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=20)


# --- classification -------------------------------------------------------------------


def where(url: str | httpx.URL) -> str:
    """How messages name an endpoint: its host (and port when not the default)."""
    try:
        parts = urlsplit(str(url))
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "the server"
    if not host:
        return "the server"
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return f"{host}:{port}" if port and port != default else host


def url_problem(name: str, value: object) -> str | None:
    """Why the setting `name` is not an http(s) URL with a host and a usable port, or None."""
    text = "" if value is None else str(value).strip()
    try:
        url = httpx.URL(text)
        usable = url.scheme in ("http", "https") and bool(url.host)
        usable = usable and (url.port is None or 1 <= url.port <= 65535)
    except (httpx.InvalidURL, ValueError):
        usable = False
    if usable:
        return None
    return f"{name} must be an http(s) URL such as https://api.example.com, got {text[:60]!r}"


def classify_exception(exc: BaseException, where: str) -> CheckError:
    """Pure: an httpx exception (or a builtin network error) -> AuthFailed / Unreachable."""
    if isinstance(exc, CheckError):
        return exc
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        # anyio's connect raises a group (e.g. OverflowError for port 99999)
        return classify_exception(exc.exceptions[0], where)
    if isinstance(exc, httpx.TimeoutException):
        return network_error(NetworkFailure.TIMEOUT, where)
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return AuthFailed(INVALID_SETTINGS, f"{where}: the URL is not a usable http(s) URL")
    found = classify_network_error(exc, where)
    if found is not None:
        return found
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return network_error(NetworkFailure.CONNECTION_LOST, where)
    if isinstance(exc, httpx.TransportError):
        return other_network_error(where, exc)
    if isinstance(exc, httpx.DecodingError | ValueError):
        return Unreachable(BAD_RESPONSE, f"{where}: the answer could not be read")
    # Never the exception's text: it may hold a URL with a key in its query string.
    return Unreachable(UNEXPECTED, f"{where}: unexpected error ({type(exc).__name__})")


def classify_status(
    status: int,
    where: str,
    error: str | None = None,
    *,
    provider: str = "*",
    retry_after: float | None = None,
) -> CheckError | None:
    """Pure: a response status -> None for 2xx, else the `CheckError` its row says.

    `error`: the error the answer names (RFC 6750 / the provider's body); `provider`
    picks the row of `FORBIDDEN_BODIES` a 403 is judged by."""
    if 200 <= status < 300:
        return None
    code = safe_code(error)
    judgment = forbidden(provider, code) if status == 403 else http_status(status)
    message = f"{where} answered HTTP {status} ({judgment.meaning})"
    if judgment.outcome is Outcome.AUTH_FAILED:  # reported under the error it names
        code = code or str(status)
        return judgment.error(code, message if code == str(status) else f"{message}: {code}")
    return judgment.error(f"http_{status}", message, retry_after=retry_after)


def classify_response(
    response: httpx.Response,
    where: str,
    *,
    now: datetime,
    provider: str = "*",
    error: str | None = None,
) -> CheckError | None:
    """`classify_status` of a response, with what it says itself: the error a 403 names
    (unless `error` is given) and the Retry-After of a 429 or 503."""
    status = response.status_code
    if status == 403 and error is None:
        error = forbidden_error(response)
    wait = retry_after(response, now) if status in RETRY_AFTER_STATUSES else None
    return classify_status(status, where, error, provider=provider, retry_after=wait)


def retry_after(response: httpx.Response, now: datetime) -> float | None:
    """The seconds a ``Retry-After`` asks to wait: delay-seconds, or an HTTP-date taken
    against the response's ``Date`` (the server's clock), else against `now`; None when
    absent or unreadable."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    when = _http_date(value)
    if when is None:
        return None
    reference = _http_date(response.headers.get("date", "")) or now
    return max(0.0, (when - reference).total_seconds())


def _http_date(value: str) -> datetime | None:
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def forbidden_error(response: httpx.Response) -> str | None:
    """The error a 403 names: `response_error`, else a JSON ``error.code`` (Microsoft),
    ``errorCode`` (Salesforce's REST list), or a one-word text body (Salesforce's
    ``Bad_OAuth_Token``)."""
    named = response_error(response)
    if named:
        return named
    body = json_or_none(response)
    if isinstance(body, list) and body and isinstance(body[0], Mapping):
        body = body[0]
    if isinstance(body, Mapping):
        inner = body.get("error")
        if isinstance(inner, Mapping):
            return safe_code(inner.get("code"))
        return safe_code(body.get("errorCode"))
    text = response.text.strip() if body is None and len(response.content) <= 64 else ""
    return safe_code(text) if _ONE_WORD.match(text) else None


def safe_code(text: object) -> str | None:
    """A source's error code as we store it: short, lower case, [a-z0-9_.-] only."""
    if not isinstance(text, str):
        return None
    code = _CODE_CHARS.sub("_", text.strip().lower())[:64].strip("_")
    return code or None


def response_error(response: httpx.Response) -> str | None:
    """The `error` a response names: WWW-Authenticate (RFC 6750) first, then a JSON body."""
    header = response.headers.get("www-authenticate", "")
    match = _HEADER_ERROR.search(header)
    if match:
        return safe_code(match.group(1) or match.group(2))
    body = json_or_none(response)
    if isinstance(body, Mapping):
        return safe_code(body.get("error"))
    return None


def json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return None


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every (non-trivial) secret value by ***."""
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def safe_error(err: CheckError, secrets: Iterable[str | None]) -> CheckError:
    """The same error with a one-line, scrubbed message (and code)."""
    secrets = list(secrets)
    message = one_line(scrub(err.message, secrets))
    code = scrub(err.code, secrets)
    if message == err.message and code == err.code:
        return err
    return type(err)(code, message, retry_after=err.retry_after)


def json_body(response: httpx.Response, where: str) -> Any:
    """The JSON of a successful answer, or Unreachable(bad_response)."""
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        raise Unreachable(BAD_RESPONSE, f"{where} did not answer with JSON") from None


__all__ = [
    "BAD_RESPONSE",
    "INVALID_SETTINGS",
    "classify_exception",
    "classify_response",
    "classify_status",
    "forbidden_error",
    "json_body",
    "json_or_none",
    "response_error",
    "retry_after",
    "safe_code",
    "safe_error",
    "scrub",
    "tls_context",
    "url_problem",
    "where",
]
