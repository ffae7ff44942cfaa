"""Asking the sources: every connection of a batch validated concurrently under a
global cap and a per-provider cap (`CheckPolicy`), the HTTP clients shared between the
checks, an unreachable source asked again with backoff (or after the wait it asks for
with Retry-After) within each check's time budget. A connector that raises never stops
the batch: its connection is recorded as `ERROR`."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import connectors
from connectors.base import CheckContext, CheckResult, ConnectionSpec, TokenStore
from connectors.http import SharedClients
from relink.app import Relink
from relink.domain.words import CHECK_ERROR, Outcome

ERROR = CHECK_ERROR  # not an outcome of the source: the connection could not be checked


@dataclass(frozen=True)
class CheckPolicy:
    batch_size: int = 200
    concurrency: int = 50  # checks in flight at once within a batch
    per_provider: int = 20  # of which at most this many against one provider
    attempts: int = 3  # an unreachable source is asked this many times
    backoff: float = 0.5  # seconds before the first retry, doubled after each
    timeout: float = 10.0  # seconds per request to a source
    refresh_window: float = 300.0
    # seconds one check may last in all, waits included: a source asking (Retry-After)
    # for a longer wait than is left is not asked again, and the check is unreachable
    budget: float = 30.0


Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Checked:
    connection_id: int
    provider: str
    result: CheckResult
    version: int  # the version the result was obtained against


async def validate_all(
    specs: Sequence[ConnectionSpec],
    make_ctx: Callable[[], CheckContext],
    policy: CheckPolicy,
    *,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
) -> list[Checked]:
    """Validate concurrently under the global and per-provider caps, the HTTP clients
    shared between the checks (`connectors.http.SharedClients`). `sleep` and `clock`
    are how a check waits between attempts and measures its budget."""
    everything = asyncio.Semaphore(policy.concurrency)
    providers: dict[str, asyncio.Semaphore] = {}

    async def one(spec: ConnectionSpec, clients: SharedClients) -> Checked:
        connector = connectors.get(spec.type)
        provider_cap = providers.setdefault(
            connector.provider, asyncio.Semaphore(policy.per_provider)
        )

        def make_shared_ctx() -> CheckContext:
            return dataclasses.replace(make_ctx(), clients=clients)

        async with provider_cap, everything:
            result = await _validate_with_retries(
                connector, spec, make_shared_ctx, policy, sleep=sleep, clock=clock
            )
        return Checked(spec.id, connector.provider, result, result.stored_version or spec.version)

    async with SharedClients() as clients:
        return list(await asyncio.gather(*(one(s, clients) for s in specs)))


async def _validate_with_retries(
    connector: connectors.Connector,
    spec: ConnectionSpec,
    make_ctx: Callable[[], CheckContext],
    policy: CheckPolicy,
    *,
    sleep: Sleep,
    clock: Clock,
) -> CheckResult:
    """Ask again while the source is unreachable: after the wait it asked for (its
    Retry-After), else after the backoff; never past the check's time budget."""
    started = clock()
    delay = policy.backoff
    result = CheckResult(Outcome.UNREACHABLE, "not_checked", "")
    stored_version: int | None = None
    for attempt in range(policy.attempts):
        if attempt:
            asked = result.retry_after
            wait = delay if asked is None else asked
            if clock() - started + wait > policy.budget:
                if asked is not None:
                    result = dataclasses.replace(
                        result,
                        message=f"{result.message}; it asked for {asked:g} s before the next "
                        f"request, more than is left of this check's {policy.budget:g} s",
                    )
                break
            await sleep(wait)
            delay *= 2
        try:
            result = await connector.validate(spec, make_ctx())
        except Exception as exc:  # noqa: BLE001 - one broken connector never stops the sweep
            return CheckResult(
                Outcome.UNREACHABLE,
                ERROR,
                f"the {spec.type} connector failed: {type(exc).__name__}",
            )
        stored_version = result.stored_version or stored_version
        if result.outcome is not Outcome.UNREACHABLE:
            break
    if stored_version and not result.stored_version:
        result = dataclasses.replace(result, stored_version=stored_version)
    return result


def make_context_factory(
    app: Relink, policy: CheckPolicy, *, now: datetime, token_store: TokenStore | None
) -> Callable[[], CheckContext]:
    oauth = {
        name: {
            "client_id": entry.client_id,
            "client_secret": entry.client_secret.get_secret_value(),
        }
        for name, entry in app.settings.oauth.items()
    }

    def make() -> CheckContext:
        return CheckContext(
            now=now,
            timeout=policy.timeout,
            app_settings={"oauth": oauth},
            token_store=token_store,
            refresh_window=policy.refresh_window,
        )

    return make
