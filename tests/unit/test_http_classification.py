"""Classification of httpx errors and statuses, without a server; plus the facts about
Authlib's httpx integration the OAuth connector relies on."""

from __future__ import annotations

import importlib
import json
import socket
import ssl
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpcore
import httpx
import pytest

from connectors.base import CheckError, Unreachable
from connectors.http import (
    classify_exception,
    classify_response,
    classify_status,
    forbidden_error,
    response_error,
    retry_after,
    safe_code,
    safe_error,
    scrub,
    where,
)
from connectors.outcomes import oauth_error
from relink.domain.words import Outcome

AT = "api.example.com"


def wrapped(outer: Exception, *causes: BaseException) -> Exception:
    """An httpx exception with the cause chain httpx builds (httpcore -> socket error)."""
    current: BaseException = outer
    for cause in causes:
        current.__cause__ = cause
        current = cause
    return outer


def outcome(error: CheckError) -> tuple[Outcome, str]:
    return error.outcome, error.code


# --- exceptions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            wrapped(
                httpx.ConnectError("All connection attempts failed"),
                httpcore.ConnectError("All connection attempts failed"),
                OSError("All connection attempts failed"),
                ConnectionRefusedError(111, "Connect call failed"),
            ),
            (Outcome.UNREACHABLE, "connection_refused"),
        ),
        (
            wrapped(
                httpx.ConnectError("[Errno -2] Name or service not known"),
                httpcore.ConnectError("x"),
                socket.gaierror(-2, "Name or service not known"),
            ),
            (Outcome.UNREACHABLE, "dns"),
        ),
        (
            wrapped(
                httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED]"),
                httpcore.ConnectError("x"),
                ssl.SSLCertVerificationError("certificate verify failed"),
            ),
            (Outcome.UNREACHABLE, "tls"),
        ),
        (httpx.ConnectTimeout("timed out"), (Outcome.UNREACHABLE, "timeout")),
        (httpx.ReadTimeout(""), (Outcome.UNREACHABLE, "timeout")),
        (httpx.PoolTimeout(""), (Outcome.UNREACHABLE, "timeout")),
        (TimeoutError(), (Outcome.UNREACHABLE, "timeout")),
        (
            httpx.RemoteProtocolError("Server disconnected without sending a response."),
            (Outcome.UNREACHABLE, "connection_lost"),
        ),
        (httpx.ReadError("reset"), (Outcome.UNREACHABLE, "connection_lost")),
        (httpx.ConnectError("unknown reason"), (Outcome.UNREACHABLE, "network")),
        (
            httpx.UnsupportedProtocol("Request URL is missing an 'http://' or 'https://'"),
            (Outcome.AUTH_FAILED, "invalid_settings"),
        ),
        (httpx.InvalidURL("Invalid port"), (Outcome.AUTH_FAILED, "invalid_settings")),
        (
            ValueError("Token endpoint response is not a JSON object"),
            (Outcome.UNREACHABLE, "bad_response"),
        ),
        (RuntimeError("https://api.example.com/?key=SECRET"), (Outcome.UNREACHABLE, "error")),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None,
)
def test_exceptions_are_classified(exc, expected):
    error = classify_exception(exc, AT)
    assert outcome(error) == expected
    assert error.message.startswith(AT)
    assert "SECRET" not in error.message  # never the exception's own text


# --- statuses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        (401, None, (Outcome.AUTH_FAILED, "401")),
        (403, None, (Outcome.UNREACHABLE, "http_403")),
        (403, "forbidden", (Outcome.UNREACHABLE, "http_403")),
        (403, "invalid_token", (Outcome.AUTH_FAILED, "invalid_token")),
        (401, "invalid_token", (Outcome.AUTH_FAILED, "invalid_token")),
        (403, "insufficient_scope", (Outcome.AUTH_FAILED, "insufficient_scope")),
        (429, None, (Outcome.UNREACHABLE, "http_429")),
        (500, None, (Outcome.UNREACHABLE, "http_500")),
        (503, "whatever", (Outcome.UNREACHABLE, "http_503")),
        (404, None, (Outcome.UNREACHABLE, "http_404")),
        (302, None, (Outcome.UNREACHABLE, "http_302")),
    ],
)
def test_statuses_are_classified(status, error, expected):
    result = classify_status(status, AT, error)
    assert result is not None
    assert outcome(result) == expected
    assert f"HTTP {status}" in result.message


@pytest.mark.parametrize("status", [200, 201, 204])
def test_success_is_no_error(status):
    assert classify_status(status, AT) is None


@pytest.mark.parametrize(
    ("provider", "named", "expected"),
    [
        ("salesforce", "bad_oauth_token", (Outcome.AUTH_FAILED, "bad_oauth_token")),
        ("hubspot", "bad_oauth_token", (Outcome.UNREACHABLE, "http_403")),
        ("microsoft_graph", "insufficient_claims", (Outcome.AUTH_FAILED, "insufficient_claims")),
        ("salesforce", "request_limit_exceeded", (Outcome.UNREACHABLE, "http_403")),
        ("api_key", "insufficient_scope", (Outcome.AUTH_FAILED, "insufficient_scope")),
    ],
)
def test_a_403_breaks_a_connection_only_when_its_provider_documents_the_body(
    provider, named, expected
):
    """A WAF, a CDN challenge, an IP allow-list or a secondary rate limit answers 403 too."""
    assert outcome(classify_status(403, AT, named, provider=provider)) == expected


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"Content-Type": "text/plain"}, b"Bad_OAuth_Token", "bad_oauth_token"),  # Salesforce
        ({}, b'{"error": {"code": "Authorization_RequestDenied"}}', "authorization_requestdenied"),
        ({}, b'[{"errorCode": "REQUEST_LIMIT_EXCEEDED"}]', "request_limit_exceeded"),
        ({"WWW-Authenticate": 'Bearer error="insufficient_claims"'}, b"", "insufficient_claims"),
        ({"Content-Type": "text/html"}, b"<html><body>Access denied</body></html>", None),
        ({}, b"Attention Required! | Cloudflare", None),
        ({}, b"", None),
    ],
)
def test_the_error_a_403_names(headers, body, expected):
    assert forbidden_error(httpx.Response(403, headers=headers, content=body)) == expected


NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": "0"}, 0.0),
        # an HTTP-date is taken against the server's own clock (its Date header) ...
        (
            {
                "Retry-After": "Mon, 02 Mar 2026 12:00:30 GMT",
                "Date": "Mon, 02 Mar 2026 12:00:00 GMT",
            },
            30.0,
        ),
        # ... else against the check's time
        ({"Retry-After": "Mon, 02 Mar 2026 09:02:00 GMT"}, 120.0),
        ({"Retry-After": "Mon, 02 Mar 2026 08:00:00 GMT"}, 0.0),  # already past
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "-5"}, None),
        ({}, None),
    ],
)
def test_the_wait_a_retry_after_asks_for(headers, expected):
    assert retry_after(httpx.Response(429, headers=headers), NOW) == expected


@pytest.mark.parametrize(("status", "wait"), [(429, 12.0), (503, 12.0), (500, None)])
def test_a_429_or_503_carries_its_retry_after_and_stays_unreachable(status, wait):
    response = httpx.Response(status, headers={"Retry-After": "12"})
    error = classify_response(response, AT, now=NOW)
    assert outcome(error) == (Outcome.UNREACHABLE, f"http_{status}")
    assert error.retry_after == wait


def test_a_403_response_is_judged_by_its_body_and_provider():
    bad_token = httpx.Response(403, content=b"Bad_OAuth_Token")
    assert outcome(classify_response(bad_token, AT, now=NOW, provider="salesforce")) == (
        Outcome.AUTH_FAILED,
        "bad_oauth_token",
    )
    waf = httpx.Response(403, content=b"<html>Request blocked</html>")
    assert outcome(classify_response(waf, AT, now=NOW, provider="salesforce")) == (
        Outcome.UNREACHABLE,
        "http_403",
    )


@pytest.mark.parametrize(
    ("code", "own_client", "expected"),
    [
        ("invalid_grant", False, Outcome.AUTH_FAILED),
        ("invalid_client", False, Outcome.MISCONFIGURED),
        ("unauthorized_client", False, Outcome.MISCONFIGURED),
        ("oauth_app_not_configured", False, Outcome.MISCONFIGURED),
        ("invalid_client", True, Outcome.AUTH_FAILED),  # the owner entered that client
        ("unauthorized_client", True, Outcome.AUTH_FAILED),
        ("invalid_grant", True, Outcome.AUTH_FAILED),
        ("temporarily_unavailable", False, Outcome.UNREACHABLE),
        ("invalid_request", False, Outcome.UNREACHABLE),
    ],
)
def test_token_endpoint_errors_by_whose_client_it_is(code, own_client, expected):
    judgment = oauth_error(code, own_client=own_client)
    assert judgment.outcome is expected
    assert judgment.reason  # every row says why


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"WWW-Authenticate": 'Bearer realm="x", error="invalid_token"'}, b"", "invalid_token"),
        ({"WWW-Authenticate": "Bearer error=insufficient_scope"}, b"", "insufficient_scope"),
        ({"Content-Type": "application/json"}, b'{"error": "Invalid_Grant"}', "invalid_grant"),
        ({}, b"<html>nope</html>", None),
        ({"WWW-Authenticate": 'Bearer realm="x"'}, b"[]", None),
    ],
)
def test_the_error_a_response_names(headers, body, expected):
    assert response_error(httpx.Response(401, headers=headers, content=body)) == expected


def test_codes_are_short_and_plain():
    assert safe_code("Invalid Grant!") == "invalid_grant"
    assert safe_code("x" * 100) == "x" * 64
    assert safe_code(42) is None
    assert safe_code("   ") is None


def test_messages_are_scrubbed_and_one_line():
    error = safe_error(Unreachable("x", "token abcdef-123\nleaked abcdef-123"), ["abcdef-123"])
    assert error.message == "token *** leaked ***"
    assert scrub("short ab", ["ab"]) == "short ab"  # too short to be a secret worth scrubbing


def test_a_secret_at_the_length_cut_leaves_no_part_behind():
    secret = "S3cr3t-" + "k" * 20
    error = safe_error(Unreachable("x", "a" * 280 + secret + " and more"), [secret])
    assert "S3cr3t" not in error.message
    assert error.message.endswith("*** and more")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.example.com/v1?key=SECRET", "api.example.com"),
        ("http://127.0.0.1:8765/api", "127.0.0.1:8765"),
        ("https://h:443/", "h"),
        ("not a url", "the server"),
    ],
)
def test_endpoints_are_named_by_host_only(url, expected):
    assert where(url) == expected


# --- Authlib and httpx -------------------------------------------------------------------------


def test_authlib_runs_on_the_httpx_we_classify():
    importlib.import_module("connectors.oauth2.session")  # Authlib's integration, as we do
    from authlib.integrations.httpx_client import _compat

    assert _compat.httpx2 is httpx, "Authlib switched to httpx2: classify its exceptions"


RECORD_IMPORT_WARNINGS = """
import json, sys, warnings
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    __import__(sys.argv[1])
print(json.dumps([[w.category.__name__, str(w.message), w.filename] for w in seen]))
"""


def deprecations_on_import(module: str) -> list[list[str]]:
    """The DeprecationWarnings a fresh interpreter sees while importing `module`."""
    done = subprocess.run(
        [sys.executable, "-c", RECORD_IMPORT_WARNINGS, module],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    return [w for w in json.loads(done.stdout) if "Deprecation" in w[0]]


def test_authlib_httpx_integration_warns_and_the_connector_silences_only_that():
    bare = deprecations_on_import("authlib.integrations.httpx_client")
    assert [w[:2] for w in bare] == [
        ["AuthlibDeprecationWarning", "The httpx module is deprecated; please use httpx2 instead."]
    ], "Authlib's warning changed: revisit the filter in connectors.oauth2.session"
    assert deprecations_on_import("connectors.oauth2") == []
