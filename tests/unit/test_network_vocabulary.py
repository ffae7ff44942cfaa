"""The HTTP and SQL connectors report the same network failure the same way: the code and
the words of `connectors.network`, whichever library met it; without a server."""

from __future__ import annotations

import socket
import ssl

import httpcore
import httpx
import pymysql
import pytest

from connectors.base import CheckError, Unreachable
from connectors.http import classify_exception
from connectors.mysql import classify_mysql_error
from connectors.network import NETWORK, NetworkFailure, classify_network_error
from connectors.postgres import classify_postgres_error

AT = "db.example.com"

# What the socket raises, and the failure each one is.
FAILURES = [
    (TimeoutError("timed out"), NetworkFailure.TIMEOUT),
    (socket.gaierror(-2, "Name or service not known"), NetworkFailure.DNS),
    (ConnectionRefusedError(111, "Connection refused"), NetworkFailure.CONNECTION_REFUSED),
    (ssl.SSLCertVerificationError("certificate verify failed"), NetworkFailure.TLS),
    (ConnectionResetError(104, "Connection reset by peer"), NetworkFailure.CONNECTION_LOST),
    (OSError(113, "No route to host"), NetworkFailure.NETWORK),
]
IDS = [failure.value for _, failure in FAILURES]


def through_httpx(socket_error: OSError) -> httpx.HTTPError:
    """As httpx raises it: its exception from httpcore's from the socket's."""
    outer = httpx.ConnectError("All connection attempts failed")
    inner = httpcore.ConnectError("All connection attempts failed")
    outer.__cause__, inner.__cause__ = inner, socket_error
    return outer


def through_pymysql(socket_error: OSError) -> pymysql.MySQLError:
    """As PyMySQL raises it: errno 2003, the socket's error kept on the exception."""
    exc = pymysql.err.OperationalError(2003, f"Can't connect to MySQL server ({socket_error})")
    exc.original_exception = socket_error
    return exc


def reported(error: CheckError) -> tuple[type[CheckError], str, str]:
    return type(error), error.code, error.message


@pytest.mark.parametrize(("socket_error", "failure"), FAILURES, ids=IDS)
def test_http_and_sql_connectors_report_a_network_failure_alike(socket_error, failure):
    expected = classify_network_error(socket_error, AT)
    assert expected is not None
    assert (type(expected), expected.code) == (Unreachable, failure)
    assert expected.message.startswith(f"{AT}: ")
    assert reported(classify_exception(through_httpx(socket_error), AT)) == reported(expected)
    assert reported(classify_postgres_error(socket_error, AT)) == reported(expected)
    mysql = classify_mysql_error(through_pymysql(socket_error), AT)
    assert (type(mysql), mysql.code, mysql.message) == (
        Unreachable,
        failure,
        f"{expected.message} (2003)",  # the errno, as MySQL said it, after the same words
    )


@pytest.mark.parametrize("failure", list(NetworkFailure), ids=str)
def test_every_network_failure_is_unreachable_in_one_row(failure):
    """Only proof breaks a connection: no network failure is proof."""
    assert NETWORK[failure].error(failure, "x").outcome == Unreachable.outcome


def test_a_driver_code_for_a_network_failure_uses_the_same_words():
    """MySQL's own errno for an unknown host or a failed TLS: the network rows' meaning."""
    dns = classify_mysql_error(pymysql.err.OperationalError(2005, "Unknown MySQL server host"))
    tls = classify_mysql_error(pymysql.err.OperationalError(2026, "SSL connection error"))
    assert (dns.code, tls.code) == (NetworkFailure.DNS, NetworkFailure.TLS)
    assert NETWORK[NetworkFailure.DNS].meaning in dns.message
    assert NETWORK[NetworkFailure.TLS].meaning in tls.message
