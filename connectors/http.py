"""What the HTTP connectors (`oauth2`, `api_key`) share: classification and dataset queries.

Classification (pure, unit-tested without a server):

* `classify_exception(exc, where)`: an httpx exception -> `CheckError`. httpx 0.28 is the
  HTTP library in use, also under Authlib's client (see `connectors.oauth2`). The cause
  chain is walked, because httpx wraps the socket error (`ConnectError` ->
  httpcore -> `ConnectionRefusedError` / `socket.gaierror` / `ssl.SSLError`):

  ==========================================  ===========================================
  timeouts (connect, read, write, pool)       Unreachable("timeout")
  connection refused                          Unreachable("connection_refused")
  DNS failure                                 Unreachable("dns")
  TLS failure                                 Unreachable("tls")
  peer closed / reset (RemoteProtocolError)   Unreachable("connection_lost")
  other network errors                        Unreachable("network")
  a URL httpx cannot use (no scheme, ftp:)    AuthFailed("invalid_settings")
  anything else                               Unreachable("error"), named by class only
  ==========================================  ===========================================

* `classify_status(status, where, error=None, ...)`: a response status -> `CheckError`
  (None for 2xx), by the rows of `connectors.outcomes`: 401 is `AuthFailed` (code:
  `error` when given, else "401"); a 403 is `AuthFailed` only when the error it names is
  in the provider's row of `FORBIDDEN_BODIES` (``invalid_token``, Salesforce's
  ``Bad_OAuth_Token``...), else `Unreachable("http_403")`: firewalls, CDN challenges,
  IP allow-lists and secondary rate limits answer a bare 403 too. 429, 5xx and every
  other status are `Unreachable("http_<status>")`: a 404 or a redirect says the settings
  point at the wrong place, which waiting will not fix either, but it is not proof that
  the credentials are bad, and only proof may break a connection.
* `classify_response(response, where, now=...)`: the same for a response in hand, with
  what it says itself: the error a 403 names (`forbidden_error`) and, for 429 and 503,
  the wait its ``Retry-After`` asks for (`retry_after`: seconds, or an HTTP-date taken
  against the response's own ``Date``), carried as `CheckError.retry_after`.

Messages name the host (`where(url)`), never the URL (a query string may carry a key),
and `scrub` removes every secret as a last line of defence.

Dataset queries (`parse_query`, `resolve_url`, `records_to_result`), shared by both
connectors::

    <path-or-url> [| <dotted.json.path>]

    /api/records?path=opportunities | data.records

* the part before ``|`` is a path relative to the connection's API base URL (joined by
  plain concatenation, so a base of ``https://graph.microsoft.com/v1.0`` and ``/me``
  give ``.../v1.0/me``), or an absolute URL on the same origin as that base (the
  credentials are never sent to another host); a ``|`` inside the URL must be written
  ``%7C``;
* the optional dotted path picks the records out of the JSON body (``data.records``;
  a number indexes a list: ``items.0.rows``). Without it the body itself is used;
* the records: a list of objects (one row each), a single object (one row), ``null``
  (no rows); a list item or a value that is not an object becomes a row with one
  column ``value``;
* columns are the union of the objects' keys in first-seen order; rows are tuples in
  that order (missing keys are ``None``; nested objects and lists are kept as they are).

A query that cannot be answered as written (bad syntax, missing path, another host) is
`Unreachable("invalid_query")`: it is the dataset's problem, never the credentials'.
"""

from __future__ import annotations

import re
import socket
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

from connectors.base import AuthFailed, CheckError, FetchResult, Unreachable, one_line
from connectors.outcomes import (
    BAD_RESPONSE,
    INVALID_QUERY,
    INVALID_SETTINGS,
    UNEXPECTED,
    forbidden,
    http_status,
    network_error,
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
    request passes its own; see `connectors.oauth2` for Authlib's token attribute).
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


def _causes(exc: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def classify_exception(exc: BaseException, where: str) -> CheckError:
    """Pure: an httpx exception (or a builtin network error) -> AuthFailed / Unreachable."""
    if isinstance(exc, CheckError):
        return exc
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        # anyio's connect raises a group (e.g. OverflowError for port 99999)
        return classify_exception(exc.exceptions[0], where)
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return network_error("timeout", where)
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return AuthFailed(INVALID_SETTINGS, f"{where}: the URL is not a usable http(s) URL")
    for cause in _causes(exc):
        if isinstance(cause, socket.gaierror):
            return network_error("dns", where)
        if isinstance(cause, ConnectionRefusedError):
            return network_error("connection_refused", where)
        if isinstance(cause, ssl.SSLError):
            return network_error("tls", where, f"TLS failed ({type(cause).__name__})")
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return network_error("connection_lost", where)
    if isinstance(exc, ConnectionError):
        return network_error("connection_lost", where)
    if isinstance(exc, httpx.TransportError | OSError):
        return network_error("network", where, f"network error ({type(exc).__name__})")
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


# --- dataset queries ------------------------------------------------------------------


def parse_query(query: str) -> tuple[str, list[str]]:
    """``"<path-or-url> [| <dotted.json.path>]"`` -> (path-or-url, path segments)."""
    target, sep, dotted = query.partition("|")
    target = target.strip()
    if not target:
        raise Unreachable(INVALID_QUERY, "the query names no path; write e.g. '/api/items | data'")
    segments: list[str] = []
    if sep:
        dotted = dotted.strip()
        segments = dotted.split(".") if dotted else []
        if any(not s.strip() for s in segments) or "|" in dotted:
            raise Unreachable(
                INVALID_QUERY, f"the records path {dotted[:80]!r} is not a dotted path like a.b.c"
            )
        segments = [s.strip() for s in segments]
    return target, segments


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def resolve_url(base_url: str | None, target: str) -> str:
    """The URL a dataset path means, relative to `base_url`; other origins are refused."""
    try:
        absolute = bool(urlsplit(target).scheme)
        if absolute:
            if not base_url or _origin(target) != _origin(base_url):
                raise Unreachable(
                    INVALID_QUERY,
                    f"the query's URL is not on the connection's API host "
                    f"({where(base_url) if base_url else 'none configured'}); the "
                    "credentials are only sent there",
                )
            return target
    except ValueError:
        raise Unreachable(INVALID_QUERY, "the query's URL cannot be parsed") from None
    if not base_url:
        raise Unreachable(
            INVALID_QUERY, "the connection has no API base URL to resolve the query's path against"
        )
    return base_url.rstrip("/") + "/" + target.lstrip("/")


def _walk(body: Any, segments: list[str]) -> Any:
    value = body
    for depth, segment in enumerate(segments):
        here = ".".join(segments[:depth]) or "the body"
        if isinstance(value, Mapping):
            if segment not in value:
                keys = ", ".join(sorted(str(k) for k in value)[:10])
                raise Unreachable(
                    INVALID_QUERY, f"no {segment!r} in {here} of the answer (keys: {keys})"
                )
            value = value[segment]
        elif isinstance(value, list) and segment.isdigit():
            index = int(segment)
            if index >= len(value):
                raise Unreachable(INVALID_QUERY, f"{here} has no item {index}")
            value = value[index]
        else:
            raise Unreachable(
                INVALID_QUERY, f"cannot take {segment!r} of {here}: it is a {type(value).__name__}"
            )
    return value


def records_to_result(body: Any, segments: list[str]) -> FetchResult:
    """Columns (union of keys, first-seen order) and rows from a JSON body."""
    value = _walk(body, segments)
    if value is None:
        items: list[Any] = []
    elif isinstance(value, list):
        items = value
    else:
        items = [value]
    records = [item if isinstance(item, Mapping) else {"value": item} for item in items]
    columns: dict[str, None] = {}
    for record in records:
        for key in record:
            columns.setdefault(str(key), None)
    names = list(columns)
    rows = [tuple(record.get(name) for name in names) for record in records]
    return FetchResult(names, rows)


def json_body(response: httpx.Response, where: str) -> Any:
    """The JSON of a successful answer, or Unreachable(bad_response)."""
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        raise Unreachable(BAD_RESPONSE, f"{where} did not answer with JSON") from None


__all__ = [
    "BAD_RESPONSE",
    "INVALID_QUERY",
    "INVALID_SETTINGS",
    "classify_exception",
    "classify_response",
    "classify_status",
    "forbidden_error",
    "json_body",
    "json_or_none",
    "network_error",
    "parse_query",
    "records_to_result",
    "resolve_url",
    "response_error",
    "retry_after",
    "safe_code",
    "safe_error",
    "scrub",
    "tls_context",
    "url_problem",
    "where",
]
