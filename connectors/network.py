"""The network-failure vocabulary every connector reports in: the codes (`NetworkFailure`),
what each means and why it is `unreachable` (`NETWORK`), and `classify_network_error`,
which turns a socket-level exception (timeout, DNS, refused, TLS, reset) into the same
`Unreachable` whichever connector met it. The HTTP connectors (`connectors.http`) and the
SQL connectors (`connectors.sql`) add only what their own libraries raise."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from enum import StrEnum

from connectors.base import CheckError, Judgment
from relink.domain.words import Outcome


class NetworkFailure(StrEnum):
    """The code of a failure below the source's protocol: no answer to judge."""

    TIMEOUT = "timeout"
    DNS = "dns"
    CONNECTION_REFUSED = "connection_refused"
    TLS = "tls"
    CONNECTION_LOST = "connection_lost"
    NETWORK = "network"


OUTAGE = "an outage or overload of the source: asking again later works"


def _unreachable(meaning: str, reason: str = OUTAGE) -> Judgment:
    return Judgment(Outcome.UNREACHABLE, meaning, reason)


NETWORK: dict[NetworkFailure, Judgment] = {
    NetworkFailure.TIMEOUT: _unreachable("no answer within the timeout"),
    NetworkFailure.DNS: _unreachable(
        "the host name could not be resolved", "DNS can fail for a while"
    ),
    NetworkFailure.CONNECTION_REFUSED: _unreachable(
        "connection refused; is the server running and is the port correct?",
        "a server restarting refuses too; a wrong port shows as a lasting outage, never as "
        "broken credentials",
    ),
    NetworkFailure.TLS: _unreachable("TLS negotiation failed", "certificates and proxies change"),
    NetworkFailure.CONNECTION_LOST: _unreachable(
        "the server closed the connection without an answer"
    ),
    NetworkFailure.NETWORK: _unreachable("the network could not reach the server"),
}


def network_error(code: NetworkFailure | str, where: str, detail: str | None = None) -> CheckError:
    """A network failure at `where`, in its row's words (or `detail`)."""
    row = NETWORK[NetworkFailure(code)]
    return row.error(code, f"{where}: {detail or row.meaning}")


def causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what it was raised from or during, outermost first (each once)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def classify_network_error(exc: BaseException, where: str) -> CheckError | None:
    """Pure: a builtin network exception (or one raised from one) -> its `Unreachable`;
    None when `exc` is not one. A library wraps the socket's error (httpx: `ConnectError`
    from httpcore from `ConnectionRefusedError`; PyMySQL: `OperationalError` 2003), so the
    cause chain is walked for the error that names what happened."""
    for cause in causes(exc):
        if isinstance(cause, TimeoutError):
            return network_error(NetworkFailure.TIMEOUT, where)
        if isinstance(cause, socket.gaierror):
            return network_error(NetworkFailure.DNS, where)
        if isinstance(cause, ConnectionRefusedError):
            return network_error(NetworkFailure.CONNECTION_REFUSED, where)
        if isinstance(cause, ssl.SSLError):
            return tls_error(where, type(cause).__name__)
    if any(isinstance(cause, ConnectionError) for cause in causes(exc)):
        return network_error(NetworkFailure.CONNECTION_LOST, where)
    os_error = next((cause for cause in causes(exc) if isinstance(cause, OSError)), None)
    return None if os_error is None else other_network_error(where, os_error)


def tls_error(where: str, reason: str) -> CheckError:
    """TLS failed at `where`; `reason`: the error's class, or the driver's own words."""
    return network_error(NetworkFailure.TLS, where, f"TLS failed ({reason})")


def other_network_error(where: str, exc: BaseException) -> CheckError:
    """A network error with no more precise code, named by class (never its text)."""
    return network_error(NetworkFailure.NETWORK, where, f"network error ({type(exc).__name__})")
