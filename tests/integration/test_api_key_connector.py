# ruff: noqa: F811 - pytest fixtures imported from oauth_fixtures are parameters here
"""The API-key connector against the sandbox's /apikey endpoints over loopback HTTP."""

from __future__ import annotations

import asyncio
import http.server
import secrets
import socket
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

import connectors
from connectors.base import CheckResult, ConnectionSpec, Unreachable
from relink.domain.health import dataset_error
from relink.domain.words import Outcome
from relink.sweep.validate import CheckPolicy, validate_all
from relink_dev.sandbox import demo_records
from tests.integration.oauth_fixtures import (  # noqa: F401 - fixtures
    RecordedWaits,
    assert_no_secret,
    context,
    provider,
    sandbox,
    sandbox_server,
)

API_KEY = connectors.get("api_key")


@pytest.fixture
def good_key(provider) -> str:
    key = f"good-{secrets.token_urlsafe(12)}"
    provider.add_api_key(key)
    return key


def spec(base_url: str, key: str, header: str = "Authorization", **settings: str):
    return ConnectionSpec(
        1,
        "api_key",
        {"base_url": base_url, "probe_path": "/apikey/me", "header": header, **settings},
        {"api_key": key},
    )


def check(conn: ConnectionSpec, **ctx) -> CheckResult:
    result = asyncio.run(API_KEY.validate(conn, context(**ctx)))
    assert_no_secret(result, [conn.credentials["api_key"]])
    return result


@pytest.mark.parametrize("header", ["Authorization", "X-API-Key"])
def test_a_valid_key_is_ok_as_bearer_or_in_its_own_header(sandbox, good_key, header):
    result = check(spec(sandbox.url, good_key, header))
    assert result.outcome is Outcome.OK
    # the who-am-I answer names the key's account, never the key
    assert result.identity is not None and good_key not in repr(result.identity)


def test_an_unknown_key_is_auth_failed_401(sandbox):
    result = check(spec(sandbox.url, f"unknown-{secrets.token_urlsafe(12)}"))
    assert (result.outcome, result.code) == (Outcome.AUTH_FAILED, "401")


def test_a_bare_403_is_unreachable_not_proof_the_key_is_bad(sandbox, provider):
    """A WAF, an IP allow-list or a secondary rate limit answers 403 as well."""
    key = f"forbidden-{secrets.token_urlsafe(12)}"
    provider.forbid_api_key(key)
    result = check(spec(sandbox.url, key, "X-API-Key"))
    assert (result.outcome, result.code) == (Outcome.UNREACHABLE, "http_403")


def test_a_403_that_says_the_token_is_invalid_is_auth_failed(sandbox, provider, good_key):
    provider.set_fault(
        "answer",
        path_prefix="/apikey/",
        status=403,
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )
    result = check(spec(sandbox.url, good_key))
    assert (result.outcome, result.code) == (Outcome.AUTH_FAILED, "invalid_token")


def test_a_closed_port_is_unreachable_connection_refused(good_key):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = check(spec(f"http://127.0.0.1:{port}", good_key))
    assert (result.outcome, result.code) == (Outcome.UNREACHABLE, "connection_refused")


@pytest.mark.parametrize(
    ("mode", "options", "code"),
    [
        ("error500", {}, "http_500"),
        ("rate_limit", {}, "http_429"),
        ("slow", {"delay": 1.5}, "timeout"),
        ("drop", {}, "connection_lost"),
    ],
)
def test_source_faults_are_unreachable(sandbox, provider, good_key, mode, options, code):
    provider.set_fault(mode, path_prefix="/apikey/", **options)
    result = check(spec(sandbox.url, good_key), timeout=0.5)
    assert (result.outcome, result.code) == (Outcome.UNREACHABLE, code)


# --- Retry-After -------------------------------------------------------------------------


def check_with_retries(conn: ConnectionSpec, waits: RecordedWaits, **policy) -> CheckResult:
    """The sweep's check of one connection: attempts, waits and budget of `CheckPolicy`."""
    checked = asyncio.run(
        validate_all(
            [conn],
            lambda: context(),
            CheckPolicy(**policy),
            sleep=waits.sleep,
            clock=waits.clock,
        )
    )
    return checked[0].result


def in_seconds(seconds: int) -> str:
    """An HTTP-date that many seconds from now (the sandbox sends its own Date)."""
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds), usegmt=True)


@pytest.mark.parametrize(
    ("status", "retry_after", "wait"),
    [
        (429, lambda: "7", 7.0),
        (503, lambda: in_seconds(20), pytest.approx(20, abs=1)),  # dated when the test runs
    ],
    ids=["429-seconds", "503-http-date"],
)
def test_a_source_asking_to_wait_is_asked_again_after_that_wait(
    sandbox, provider, good_key, status, retry_after, wait
):
    headers = {"Retry-After": retry_after()}
    provider.set_fault("answer", path_prefix="/apikey/", status=status, headers=headers, times=1)
    waits = RecordedWaits()

    result = check_with_retries(spec(sandbox.url, good_key), waits)

    assert result.outcome is Outcome.OK
    assert waits.asked == [wait]  # the wait it asked for, not the backoff


def test_a_wait_past_the_checks_budget_is_not_waited_and_the_check_is_unreachable(
    sandbox, provider, good_key
):
    provider.set_fault("answer", path_prefix="/apikey/", status=429, headers={"Retry-After": "120"})
    waits = RecordedWaits()

    result = check_with_retries(spec(sandbox.url, good_key), waits, budget=60.0)

    assert (result.outcome, result.code) == (Outcome.UNREACHABLE, "http_429")
    assert waits.asked == []
    assert "120 s" in result.message and "60 s" in result.message


def test_the_waits_of_one_check_add_up_to_its_budget_at_most(sandbox, provider, good_key):
    provider.set_fault("answer", path_prefix="/apikey/", status=503, headers={"Retry-After": "25"})
    waits = RecordedWaits()

    result = check_with_retries(spec(sandbox.url, good_key), waits, attempts=5, budget=60.0)

    assert (result.outcome, result.code) == (Outcome.UNREACHABLE, "http_503")
    assert waits.asked == [25.0, 25.0]  # a third wait would end past 60 s


def test_without_a_retry_after_an_outage_is_asked_again_after_the_backoff(
    sandbox, provider, good_key
):
    provider.set_fault("error500", path_prefix="/apikey/")
    waits = RecordedWaits()

    result = check_with_retries(spec(sandbox.url, good_key), waits, attempts=3, backoff=0.5)

    assert (result.outcome, result.code) == (Outcome.UNREACHABLE, "http_500")
    assert waits.asked == [0.5, 1.0]


def test_a_bad_base_url_is_auth_failed_invalid_settings(good_key):
    result = check(spec("127.0.0.1:9/no-scheme", good_key))
    assert (result.outcome, result.code) == (Outcome.AUTH_FAILED, "invalid_settings")


def test_a_missing_key_says_what_is_wrong_and_the_dataset_adds_the_advice_once(sandbox):
    """A connector says what is wrong; the message a dataset shows adds "reconnect" once."""
    result = asyncio.run(API_KEY.validate(spec(sandbox.url, ""), context()))
    assert (result.outcome, result.code) == (Outcome.AUTH_FAILED, "invalid_settings")
    message = dataset_error(
        dataset_status="ok",
        dataset_error=None,
        connection_name="Billing",
        connection_status="disconnected",
        connection_error=result.message,
    )
    assert "no API key" in (message or "") and (message or "").count("reconnect") == 1


def test_fetch_returns_columns_and_rows(sandbox, good_key):
    conn = spec(sandbox.url, good_key, "X-API-Key")
    result = asyncio.run(
        API_KEY.fetch(conn, "/apikey/records?path=payments&limit=4 | data.records", context())
    )
    expected = demo_records("payments", 4)
    assert sorted(result.columns) == sorted(expected[0])
    assert result.rows == [tuple(r[c] for c in result.columns) for r in expected]


def test_fetch_never_sends_the_key_to_another_host(sandbox, good_key):
    conn = spec(sandbox.url, good_key)
    with pytest.raises(Unreachable) as caught:
        asyncio.run(API_KEY.fetch(conn, "http://other.example/apikey/records", context()))
    assert caught.value.code == "invalid_query"
    assert_no_secret(caught.value.message, [good_key])


# --- the checks of a batch share their clients ---------------------------------------------


class _CookieSetter(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1 (connections kept alive); sets a cookie on every answer and notes, per
    request, the client's port, the key and any Cookie header it was sent."""

    protocol_version = "HTTP/1.1"
    server: _KeepAliveSource

    def do_GET(self) -> None:
        key = self.headers.get("X-API-Key", "")
        self.server.seen.append((self.client_address[1], key, self.headers["Cookie"]))
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Set-Cookie", f"sid={key}; Path=/")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _KeepAliveSource(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        self.seen: list[tuple[int, str, str | None]] = []
        super().__init__(("127.0.0.1", 0), _CookieSetter)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def test_a_batch_reuses_connections_and_carries_no_cookie_or_key_between_checks():
    source = _KeepAliveSource()
    threading.Thread(target=source.serve_forever, daemon=True).start()
    try:
        keys = [f"key-{i}-{secrets.token_hex(4)}" for i in range(40)]
        specs = [
            ConnectionSpec(
                i, "api_key", dict(spec(source.url, k, "X-API-Key").settings), {"api_key": k}
            )
            for i, k in enumerate(keys)
        ]
        policy = CheckPolicy(concurrency=4, per_provider=4, attempts=1)
        checked = asyncio.run(validate_all(specs, lambda: context(), policy))
    finally:
        source.shutdown()
        source.server_close()

    assert [c.result.outcome for c in checked] == [Outcome.OK] * 40
    assert sorted(key for _, key, _ in source.seen) == sorted(keys)  # each its own key, once
    assert [cookie for _, _, cookie in source.seen if cookie] == []  # no cookie came back
    assert len({port for port, _, _ in source.seen}) <= 4  # 4 in flight: 4 connections
