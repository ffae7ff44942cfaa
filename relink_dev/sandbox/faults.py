"""Faults the sandbox can be told to inject (a 500, a 429 with Retry-After, a slow answer,
a dropped connection, or any given answer) and the request counters: `FaultSwitch` holds
the active fault and the counts, `FaultMiddleware` applies them in front of the Flask app,
so a fault hits a request before any OAuth or API code sees it."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from flask import Response

from .models import ADMIN_PREFIX

FaultMode = Literal["ok", "error500", "rate_limit", "slow", "drop", "answer"]
FAULT_MODES: frozenset[str] = frozenset(get_args(FaultMode))

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


@dataclass
class Fault:
    """What to do to requests under `path_prefix`: ``"answer"`` answers with `status`,
    `body` and `headers` (a 403 with a provider's body, a 429 with a Retry-After ...)
    instead of the real answer; ``"slow"`` with a `delay` is a slow provider."""

    mode: FaultMode
    path_prefix: str = "/"
    delay: float = 0.0
    times: int | None = None
    # mode "answer": this status, body and headers instead of the real answer
    status: int = 200
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in FAULT_MODES:
            raise ValueError(
                f"unknown fault mode {self.mode!r}; expected one of {sorted(FAULT_MODES)}"
            )
        if self.delay < 0 or (self.times is not None and self.times < 1):
            raise ValueError("delay must be >= 0 and times >= 1 (or None)")
        if not 100 <= self.status <= 599:
            raise ValueError("status must be an HTTP status (100-599)")

    def matches(self, path: str) -> bool:
        return path.startswith(self.path_prefix) and not path.startswith(ADMIN_PREFIX)


class FaultSwitch:
    """The active fault (at most one) and the requests seen per path."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._fault: Fault | None = None
        self._stats: Counter[str] = Counter()

    def set(self, fault: Fault) -> None:
        """Apply `fault` from the next request on (mode ``"ok"`` clears)."""
        with self._lock:
            self._fault = None if fault.mode == "ok" else fault

    def take(self, path: str) -> Fault | None:
        """The fault for this request, if any (one use of a fault given `times`)."""
        with self._lock:
            fault = self._fault
            if fault is None or not fault.matches(path):
                return None
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self._fault = None
            return fault

    def count(self, path: str) -> None:
        with self._lock:
            self._stats[path] += 1

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._stats)

    def reset_stats(self) -> None:
        with self._lock:
            self._stats.clear()


class FaultMiddleware:
    """Counts requests and applies the active fault before Flask sees the request."""

    def __init__(self, faults: FaultSwitch, app: WSGIApp) -> None:
        self._faults = faults
        self._app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        self._faults.count(path)
        fault = self._faults.take(path)
        if fault is None:
            return self._app(environ, start_response)
        if fault.delay:
            time.sleep(fault.delay)
        if fault.mode == "drop":
            _drop_connection(environ)
        if fault.mode == "error500":
            return json_response({"error": "server_error"}, 500)(environ, start_response)
        if fault.mode == "rate_limit":
            resp = json_response({"error": "rate_limited"}, 429, {"Retry-After": "1"})
            return resp(environ, start_response)
        if fault.mode == "answer":
            answer = Response(fault.body, status=fault.status, headers=fault.headers)
            return answer(environ, start_response)
        return self._app(environ, start_response)  # "slow": answer normally


def _drop_connection(environ: dict[str, Any]) -> None:
    """Close the client socket without a response (werkzeug treats it as a dropped peer)."""
    sock = environ.get("werkzeug.socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    raise ConnectionAbortedError("sandbox fault: drop")


def json_response(
    body: dict[str, Any], status: int, headers: dict[str, str] | None = None
) -> Response:
    return Response(json.dumps(body), status=status, headers=headers, mimetype="application/json")
