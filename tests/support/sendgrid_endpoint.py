"""A local HTTP endpoint that speaks SendGrid's v3 mail-send API, for tests and benchmarks.

Point the official SDK at it with ``SendGridAPIClient(api_key, host=endpoint.url)``.
Every body is validated against the vendored official contract (``sendgrid_spec/``),
adjusted for the places where real SendGrid and its contract disagree (``KNOWN_GAPS``).

Order of checks for ``POST /v3/mail/send``: auth (401), size (413), JSON + contract (400);
only a request that passes all three consumes the next scripted response: first one
scripted for its custom args (``script_for``: a per-email fault plan, whatever order
concurrent senders send in), then the shared queue (``script``), else ``default``
(``Accept()`` unless changed).

Standalone, for crash tests (prints ``ready <url>`` once listening)::

    python -m tests.support.sendgrid_endpoint --port P --api-key K --log FILE
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self
from urllib.parse import urljoin, urlsplit

from jsonschema import Draft202012Validator, ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_DIR = Path(__file__).with_name("sendgrid_spec")
SPEC_ROOT = SPEC_DIR / "mail_send_v3.json"
MAIL_SEND_PATH = "/v3/mail/send"
MAX_BODY_BYTES = 30 * 1024 * 1024
NO_RESPONSE = 0
"""``ReceivedRequest.status`` of a request that was never answered (Hang, AcceptThenHang)."""

KNOWN_GAPS = (
    "personalizations: real SendGrid requires 1..1000 items; the contract allows [].",
    "template_id: real SendGrid accepts a template send without subject/content; "
    "the contract requires both.",
    "custom_args (message level): the SDK sends an object of strings, which real SendGrid "
    "accepts; the contract says type string.",
)
_GAP_SCHEMA: dict[str, Any] = {
    "properties": {
        "personalizations": {"minItems": 1},  # maxItems 1000 is in the contract
        "custom_args": {"additionalProperties": {"type": "string"}},
    }
}
_MAX_MESSAGE = 300
_TEMPLATE_OPTIONAL = frozenset({"subject", "content"})
_REQUEST_SCHEMA_POINTER = "/post/requestBody/content/application~1json/schema"


# ---------------------------------------------------------------- contract validation


def _spec_registry() -> Registry:
    """Every vendored spec file as a resource under its ``file://`` URI."""
    resources = [
        (path.as_uri(), Resource.from_contents(json.loads(path.read_text("utf-8")), DRAFT202012))
        for path in sorted(SPEC_DIR.rglob("*.json"))
    ]
    return Registry().with_resources(resources)


def _request_schema_uri() -> str:
    """URI of the request-body schema of POST /v3/mail/send, found from the root document."""
    root = json.loads(SPEC_ROOT.read_text("utf-8"))
    path_item_ref = root["paths"][MAIL_SEND_PATH]["$ref"]
    return urljoin(SPEC_ROOT.as_uri(), path_item_ref) + _REQUEST_SCHEMA_POINTER


@cache
def request_validator() -> Draft202012Validator:
    """The (cached, thread-safe) validator: official request schema + ``_GAP_SCHEMA``."""
    schema = {"allOf": [{"$ref": _request_schema_uri()}, _GAP_SCHEMA]}
    return Draft202012Validator(
        schema, registry=_spec_registry(), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def _missing_property(error: ValidationError) -> str | None:
    """The property a ``required`` error is about."""
    names = error.validator_value if isinstance(error.validator_value, list) else []
    return next((n for n in names if error.message.startswith(repr(n))), None)


def _is_known_gap(error: ValidationError, body: Any) -> bool:
    """True for a contract error that real SendGrid does not raise."""
    path = tuple(error.absolute_path)
    if path == ("custom_args",) and error.validator == "type":
        return isinstance(error.instance, dict)
    if path == () and error.validator == "required" and isinstance(body, dict):
        return "template_id" in body and _missing_property(error) in _TEMPLATE_OPTIONAL
    return False


def _error_field(error: ValidationError) -> str:
    """JSON path of the offending value (of the missing property, for ``required``)."""
    missing = _missing_property(error) if error.validator == "required" else None
    return f"{error.json_path}.{missing}" if missing else error.json_path


def _error_message(error: ValidationError) -> str:
    """A short message: jsonschema's embeds the whole instance, which can be huge."""
    value, instance = error.validator_value, error.instance
    if error.validator == "minItems" and tuple(error.absolute_path) == ("personalizations",):
        return "The personalizations field is required and must have at least one personalization."
    if error.validator in {"minItems", "maxItems"} and isinstance(instance, list):
        bound = "at least" if error.validator == "minItems" else "at most"
        return f"must hold {bound} {value} items, got {len(instance)}"
    if len(error.message) > _MAX_MESSAGE:
        return error.message[: _MAX_MESSAGE - 3] + "..."
    return error.message


def error_item(message: str, field: str | None = None) -> dict[str, Any]:
    """One entry of a SendGrid ``errors`` array."""
    return {"message": message, "field": field, "help": None}


def mail_send_errors(body: Any) -> list[dict[str, Any]]:
    """SendGrid-style error items for a parsed body; empty when SendGrid would accept it."""
    errors = [e for e in request_validator().iter_errors(body) if not _is_known_gap(e, body)]
    errors.sort(key=lambda e: (e.json_path, e.message))
    return [error_item(_error_message(e), _error_field(e)) for e in errors]


def _parse_and_check(raw: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(body, errors) for raw request bytes; body is ``{}`` unless it is a JSON object."""
    try:
        body = json.loads(raw)
    except ValueError as exc:  # UnicodeDecodeError is a ValueError too
        return {}, [error_item(f"Bad Request: the body is not valid JSON ({exc})")]
    return (body if isinstance(body, dict) else {}), mail_send_errors(body)


def recipients_of(body: dict[str, Any]) -> list[str]:
    """The ``to`` addresses of every personalization in a mail-send body."""
    return [
        to["email"]
        for personalization in body.get("personalizations", [])
        for to in personalization.get("to", [])
    ]


def new_message_id() -> str:
    """A random id shaped like SendGrid's 22-character ``X-Message-Id``."""
    return secrets.token_urlsafe(16)


# ------------------------------------------------------------------------ responses


@dataclass(frozen=True)
class Accept:
    """202, empty body, ``X-Message-Id``; counts as delivered."""


@dataclass(frozen=True)
class BadRequest:
    """400 with a SendGrid error body."""

    message: str = "Bad Request"
    field: str | None = None


@dataclass(frozen=True)
class Unauthorized:
    """401 with SendGrid's invalid-grant body."""


@dataclass(frozen=True)
class TooLarge:
    """413 with a SendGrid error body."""


@dataclass(frozen=True)
class RateLimited:
    """429 with ``Retry-After`` (seconds) and SendGrid's rate-limit headers."""

    retry_after: int = 1


@dataclass(frozen=True)
class ServerError:
    """500 with a SendGrid error body."""


@dataclass(frozen=True)
class Hang:
    """Read the body, answer nothing for ``seconds``, then close the connection."""

    seconds: float = 30.0


@dataclass(frozen=True)
class AcceptThenHang:
    """Deliver (record) the email, then behave like ``Hang``: the reply is lost."""

    seconds: float = 30.0


@dataclass(frozen=True)
class Held:
    """Hold the request until ``release_hangs()`` (or ``seconds``), then answer as ``then``:
    a slow SendGrid, for tests that act while a request is in flight (``waiting``)."""

    then: Response = Accept()
    seconds: float = 30.0


Response = (
    Accept
    | BadRequest
    | Unauthorized
    | TooLarge
    | RateLimited
    | ServerError
    | Hang
    | AcceptThenHang
    | Held
)

UNAUTHORIZED_BODY = {
    "errors": [error_item("The provided authorization grant is invalid, expired, or revoked")]
}
TOO_LARGE_BODY = {"errors": [error_item("The request body is larger than the 30 MB limit.")]}
RATE_LIMITED_BODY = {"errors": [error_item("too many requests")]}
SERVER_ERROR_BODY = {"errors": [error_item("internal error")]}
NOT_FOUND_BODY = {"errors": [error_item("resource not found")]}


def _error_reply(response: Response) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, JSON body, extra headers) for a response kind that answers with an error."""
    match response:
        case BadRequest(message=message, field=field):
            return 400, {"errors": [error_item(message, field)]}, {}
        case Unauthorized():
            return 401, UNAUTHORIZED_BODY, {}
        case TooLarge():
            return 413, TOO_LARGE_BODY, {}
        case RateLimited(retry_after=after):
            reset = str(int(time.time()) + after)
            headers = {
                "Retry-After": str(after),
                "X-RateLimit-Limit": "600",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": reset,
            }
            return 429, RATE_LIMITED_BODY, headers
        case ServerError():
            return 500, SERVER_ERROR_BODY, {}
    raise TypeError(f"not an error response: {response!r}")


# ------------------------------------------------------------------------- records


@dataclass(frozen=True)
class ReceivedRequest:
    """One mail-send request as the endpoint saw it.

    ``headers`` have lower-case names; ``body`` is ``{}`` when it was not read as a JSON object
    (401, 413, unparsable); ``status`` is ``NO_RESPONSE`` when no reply was sent.
    """

    body: dict[str, Any]
    headers: dict[str, str]
    status: int
    message_id: str | None
    at: float
    delivered: bool = False


# -------------------------------------------------------------------------- server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], endpoint: SendGridEndpoint) -> None:
        self.endpoint = endpoint
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore clients that went away (timeouts in tests); report real bugs."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Count the connection as open from the moment it is accepted (``wait_idle``)."""
        self.endpoint.connection_opened()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.endpoint.connection_closed()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.endpoint.connection_closed()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "relink-sendgrid-endpoint"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr line."""

    def do_POST(self) -> None:
        raw = self._read_body()
        if urlsplit(self.path).path != MAIL_SEND_PATH:
            self._send(404, NOT_FOUND_BODY)
        else:
            if self.server.endpoint.delay:
                time.sleep(self.server.endpoint.delay)  # the real service's latency, simulated
            self._mail_send(raw)

    def _not_found(self) -> None:
        self._read_body()
        self._send(404, NOT_FOUND_BODY)

    do_GET = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _not_found

    def _read_body(self) -> bytes | None:
        """The request body, or None (after draining it) when it exceeds the size limit."""
        if "Transfer-Encoding" in self.headers:  # unsupported: do not reuse the connection
            self.close_connection = True
        try:
            length = max(0, int(self.headers.get("Content-Length") or 0))
        except ValueError:
            self.close_connection = True
            return b""
        if length <= self.server.endpoint.max_body_bytes:
            return self.rfile.read(length)
        while length > 0:  # drain, so the client gets to read the 413
            chunk = self.rfile.read(min(length, 1 << 20))
            if not chunk:
                break
            length -= len(chunk)
        return None

    def _mail_send(self, raw: bytes | None) -> None:
        endpoint = self.server.endpoint
        headers = {name.lower(): value for name, value in self.headers.items()}
        if not endpoint.authorized(self.headers.get("Authorization")):
            self._reject(headers, {}, 401, UNAUTHORIZED_BODY)
        elif raw is None:
            self._reject(headers, {}, 413, TOO_LARGE_BODY)
        else:
            body, errors = _parse_and_check(raw)
            if errors:
                self._reject(headers, body, 400, {"errors": errors})
            else:
                self._answer(endpoint.next_response(body), body, headers)

    def _reject(
        self, headers: dict[str, str], body: dict[str, Any], status: int, payload: dict[str, Any]
    ) -> None:
        self.server.endpoint.record(body, headers, status)
        self._send(status, payload)

    def _answer(self, response: Response, body: dict[str, Any], headers: dict[str, str]) -> None:
        """Carry out a response kind for a valid request."""
        endpoint = self.server.endpoint
        match response:
            case Accept():
                record = endpoint.record(body, headers, 202, delivered=True)
                self._send(202, None, {"X-Message-Id": record.message_id or ""})
            case AcceptThenHang(seconds=seconds):
                endpoint.record(body, headers, NO_RESPONSE, delivered=True)
                self._hang(seconds)
            case Hang(seconds=seconds):
                endpoint.record(body, headers, NO_RESPONSE)
                self._hang(seconds)
            case Held(then=then, seconds=seconds):
                endpoint.wait_hang(seconds)
                self._answer(then, body, headers)
            case _:
                status, payload, extra = _error_reply(response)
                endpoint.record(body, headers, status)
                self._send(status, payload, extra)

    def _hang(self, seconds: float) -> None:
        """Block this request's thread, then drop the connection without a response."""
        self.server.endpoint.wait_hang(seconds)
        self.close_connection = True

    def _send(
        self, status: int, payload: dict[str, Any] | None, headers: dict[str, str] | None = None
    ) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


# ------------------------------------------------------------------------ endpoint


class SendGridEndpoint:
    """A threaded local stand-in for ``POST https://api.sendgrid.com/v3/mail/send``."""

    def __init__(
        self,
        api_key: str = "SG.test-key",
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
        log_path: str | os.PathLike[str] | None = None,
        delay: float = 0.0,
    ) -> None:
        self.api_key = api_key
        self.delay = delay  # seconds before each answer to mail/send (the real one: 100-300 ms)
        self.host = host
        self.port = port
        self.max_body_bytes = max_body_bytes
        self.log_path = Path(log_path) if log_path is not None else None
        self.default: Response = Accept()
        self._lock = threading.Lock()
        self._script: deque[Response] = deque()
        self._scripts_for: dict[tuple[str, str], deque[Response]] = {}
        self._requests: list[ReceivedRequest] = []
        self._hangs: set[threading.Event] = set()
        self._open_connections = 0
        self._idle = threading.Condition(self._lock)
        self._stopping = False
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._log: IO[str] | None = None

    # lifecycle

    def start(self) -> Self:
        """Build the validator, bind, and serve on a daemon thread."""
        request_validator()
        if self.log_path is not None:
            self._log = self.log_path.open("a", encoding="utf-8")
        self._stopping = False
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"sendgrid-endpoint-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Wake hanging requests, stop serving and close the socket (idempotent)."""
        self._stopping = True
        self.release_hangs()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            log, self._log = self._log, None
        if log is not None:
            log.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL to give the SDK as ``host``, e.g. ``http://127.0.0.1:PORT``."""
        if self._server is None:
            raise RuntimeError("SendGridEndpoint is not started")
        return f"http://{self.host}:{self.port}"

    # scripting

    def script(self, *responses: Response) -> None:
        """Queue responses for the next valid requests, one each, first in first out."""
        with self._lock:
            self._script.extend(responses)

    def script_for(self, custom_arg: str, value: str, *responses: Response) -> None:
        """Queue responses for the next valid requests whose message-level custom arg
        ``custom_arg`` is ``value`` (one email's fault plan); they come before ``script``."""
        with self._lock:
            self._scripts_for.setdefault((custom_arg, value), deque()).extend(responses)

    def next_response(self, body: dict[str, Any] | None = None) -> Response:
        """The next response scripted for one of the body's custom args, else the next of
        the shared script, else ``default``."""
        custom_args = (body or {}).get("custom_args")
        keys = custom_args.items() if isinstance(custom_args, dict) else ()
        with self._lock:
            for key in keys:
                queue = self._scripts_for.get(key)
                if queue:
                    return queue.popleft()
            return self._script.popleft() if self._script else self.default

    def clear_scripts(self) -> None:
        """Drop every scripted response (shared and per custom arg); keep the records."""
        with self._lock:
            self._script.clear()
            self._scripts_for.clear()

    def reset(self) -> None:
        """Forget records and scripts, restore ``default = Accept()``, wake hangs."""
        self.clear_scripts()
        with self._lock:
            self._requests.clear()
            self.default = Accept()
        self.release_hangs()

    # hangs

    def wait_hang(self, seconds: float) -> None:
        """Block the calling thread for ``seconds`` or until ``release_hangs``/``stop``."""
        event = threading.Event()
        with self._lock:
            if self._stopping:
                return
            self._hangs.add(event)
        try:
            event.wait(seconds)
        finally:
            with self._lock:
                self._hangs.discard(event)

    def release_hangs(self) -> None:
        """Wake every request that is hanging now (they close without a response) or held
        (they are answered)."""
        with self._lock:
            for event in self._hangs:
                event.set()

    @property
    def waiting(self) -> int:
        """How many requests are hanging or held right now."""
        with self._lock:
            return len(self._hangs)

    # connections

    def connection_opened(self) -> None:
        with self._lock:
            self._open_connections += 1

    def connection_closed(self) -> None:
        with self._lock:
            self._open_connections -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Block until no connection is being served: every request accepted so far is
        recorded. Raises ``TimeoutError``.

        A sender killed mid-request may leave a request that the server reads, and
        delivers, after the sender died. Connections are accepted in order, so once a
        later request has been answered, waiting for idle leaves nothing out.
        """
        with self._idle:
            if not self._idle.wait_for(lambda: self._open_connections == 0, timeout):
                raise TimeoutError(
                    f"{self._open_connections} connection(s) still open after {timeout} s"
                )

    # records

    def authorized(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries this endpoint's key."""
        return secrets.compare_digest(header or "", f"Bearer {self.api_key}")

    def record(
        self, body: dict[str, Any], headers: dict[str, str], status: int, *, delivered: bool = False
    ) -> ReceivedRequest:
        """Append a request (and log it if delivered and logging); returns the record."""
        message_id = new_message_id() if delivered else None
        received = ReceivedRequest(body, headers, status, message_id, time.time(), delivered)
        with self._lock:
            self._requests.append(received)
            if delivered and self._log is not None:
                self._append_log(received)
        return received

    def _append_log(self, received: ReceivedRequest) -> None:
        """One durable JSON line per delivered email (caller holds the lock)."""
        assert self._log is not None
        line = {
            "message_id": received.message_id,
            "at": received.at,
            "to": recipients_of(received.body),
            "body": received.body,
        }
        self._log.write(json.dumps(line) + "\n")
        self._log.flush()
        os.fsync(self._log.fileno())

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Snapshot of every mail-send request received, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def delivered(self) -> list[ReceivedRequest]:
        """The requests SendGrid would have accepted (202 and AcceptThenHang)."""
        return [r for r in self.requests if r.delivered]

    def recipients(self) -> list[str]:
        """``to`` addresses across every delivered personalization."""
        return [email for r in self.delivered for email in recipients_of(r.body)]


# ---------------------------------------------------------------------- standalone

REPO = Path(__file__).resolve().parents[2]


class EndpointProcess:
    """This endpoint in a process of its own (its own GIL; a process that a test may
    outlive or kill), started with `--port 0`; `url` once it says it is ready."""

    def __init__(
        self, api_key: str, log: Path | None = None, timeout: float = 20, delay: float = 0.0
    ) -> None:
        module = "tests.support.sendgrid_endpoint"
        args = [sys.executable, "-m", module, "--port", "0", "--api-key", api_key]
        if delay:
            args += ["--delay", str(delay)]
        if log is not None:
            args += ["--log", str(log)]
        self.log = log
        self.proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                self.proc.kill()
                raise RuntimeError(f"the SendGrid endpoint process said nothing in {timeout} s")
        ready, _, self.url = self.proc.stdout.readline().strip().partition(" ")
        if ready != "ready":
            self.stop()
            raise RuntimeError(f"the SendGrid endpoint process said {ready!r}, not ready")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default="SG.test-key")
    parser.add_argument(
        "--delay", type=float, default=0.0, help="seconds before each mail/send answer"
    )
    parser.add_argument(
        "--log",
        type=Path,
        default=None,
        help="append each delivered email as one JSON line (fsynced)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; prints ``ready <url>`` once listening."""
    args = _parse_args(argv)
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    with SendGridEndpoint(
        args.api_key, args.host, args.port, log_path=args.log, delay=args.delay
    ) as endpoint:
        print(f"ready {endpoint.url}", flush=True)
        while not done.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
