"""Token spend: what the SQLite lock file adds to a refresh of one connection's tokens.

`DbTokenStore.refresh` on a SQLite file database, as a check makes it (take the
connection's lock file, read the row, the refresh-token grant at the sandbox provider
in its own process, write the rotated set), against the same store with the lock file
left out (`store.locks = None`, the code before issue 15). Once with the provider
answering at once, once with a 100 ms grant (the sandbox's "slow" fault). Interleaved
pairs; the ratio is taken per pair.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from bench._common import Report, make_app, table
from bench.sweep import CLIENT_ID, Sandbox, seed

TITLE = "Token spend: a refresh with the SQLite lock file against one without"
GRANTS = {"instant": 0.0, "100 ms": 0.1}  # the provider's answer time
PAIRS = 9
REFRESHES = {"instant": 200, "100 ms": 20}  # per variant and pair
LOCK_ALONE = 2000


async def _refreshes(store: Any, n: int, grant: Callable[..., Awaitable[Any]]) -> float:
    """Seconds per refresh over `n` refreshes, each from the set the last one stored."""
    from connectors.base import ConnectionSpec

    spent = 0.0
    for _ in range(n):
        creds, version = await store.reload(1)
        spec = ConnectionSpec(1, "oauth2", {}, creds, version)
        started = time.perf_counter()
        await store.refresh(spec, grant, usable=lambda _: False)
        spent += time.perf_counter() - started
    return spent / n


def _grant(client: httpx.AsyncClient, secret: str) -> Callable[..., Awaitable[Any]]:
    async def grant(stored: Mapping[str, str]) -> dict[str, str]:
        answer = await client.post(
            "/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": stored["refresh_token"]},
            auth=(CLIENT_ID, secret),
        )
        answer.raise_for_status()
        token = answer.json()
        return {**stored, **{k: token[k] for k in ("access_token", "refresh_token")}}

    return grant


async def _measure(app: Any, sandbox: Sandbox) -> dict[str, list[tuple[float, float]]]:
    """Per grant speed: (locked, unlocked) seconds per refresh, one tuple a pair."""
    from relink.tokens import DbTokenStore

    locked = DbTokenStore(app)
    unlocked = DbTokenStore(app)
    unlocked.locks = None
    assert locked.locks is not None, "the bench's app database must be a SQLite file"
    pairs: dict[str, list[tuple[float, float]]] = {}
    async with httpx.AsyncClient(base_url=sandbox.url, timeout=30) as client:
        grant = _grant(client, sandbox.client_secret)
        await _refreshes(locked, 5, grant)  # warm up: pool, lock folder, HTTP connection
        for name, delay in GRANTS.items():
            fault = {"mode": "slow", "path_prefix": "/oauth/token", "delay": delay}
            await client.post("/_sandbox/fault", json=fault if delay else {"mode": "ok"})
            pairs[name] = []
            for index in range(PAIRS):
                # alternate which goes first, so neither always meets a warmer machine
                order = [(locked, 0), (unlocked, 1)][:: 1 if index % 2 == 0 else -1]
                seconds = [0.0, 0.0]
                for store, slot in order:
                    seconds[slot] = await _refreshes(store, REFRESHES[name], grant)
                pairs[name].append((seconds[0], seconds[1]))
        await client.post("/_sandbox/fault", json={"mode": "ok"})
    return pairs


async def _lock_alone(directory: Path) -> float:
    """Seconds per take and release of an uncontended lock file."""
    from relink.locks import ConnectionLocks

    locks = ConnectionLocks(directory)
    started = time.perf_counter()
    for _ in range(LOCK_ALONE):
        (await locks.acquire(1)).release_now()
    return (time.perf_counter() - started) / LOCK_ALONE


def run(large: bool, cache: dict[str, Any]) -> Report:
    report = Report("token_spend", TITLE)
    with tempfile.TemporaryDirectory(prefix="relink-bench-") as tmp:
        workdir = Path(tmp)
        app = make_app(f"sqlite:///{workdir / 'relink.db'}", workdir / "data")
        sandbox = Sandbox(1, workdir)
        try:
            seed(app, sandbox, 1)
            pairs = asyncio.run(_measure(app, sandbox))
            alone = asyncio.run(_lock_alone(workdir / "relink.db-locks"))
        finally:
            sandbox.close()
            app.close()

    rows = []
    for name, measured in pairs.items():
        ratios = [lock / bare for lock, bare in measured]
        ratio = statistics.median(ratios)
        with_lock = statistics.median(m[0] for m in measured) * 1000
        without = statistics.median(m[1] for m in measured) * 1000
        report.figure(
            f"ratio_{name.replace(' ', '_')}",
            f"{name} grant: refresh with the lock file / without (median of {PAIRS} pairs)",
            round(ratio, 3),
        )
        rows.append(
            (
                name,
                REFRESHES[name],
                round(without, 2),
                round(with_lock, 2),
                f"{ratio:.3f} ({min(ratios):.3f} to {max(ratios):.3f})",
            )
        )
    report.figure("lock_alone_us", "an uncontended lock file: take and release", alone * 1e6, "µs")
    report.markdown = [
        f"One connection on a SQLite file, refreshed one refresh after another in {PAIRS} "
        "interleaved pairs of runs per grant speed: `DbTokenStore.refresh` (read the row, the "
        "refresh-token grant over loopback HTTP at the sandbox in its own process, write the "
        "rotated set) with the connection's lock file (`relink.locks`, `flock`) and "
        "without it. Milliseconds per refresh are the median over the pairs; the ratio is "
        "per pair (lowest to highest in brackets).",
        "",
        *table(["grant", "refreshes per pair", "ms without lock", "ms with lock", "ratio"], rows),
        "",
        f"The lock file alone (open, `flock`, close; {LOCK_ALONE:,} times, uncontended): "
        f"{alone * 1e6:.0f} µs.",
    ]
    report.note(
        "the lock file alone costs tens of microseconds; a ratio a few per cent either "
        "side of 1 is the run-to-run noise of this shared machine, not the lock."
    )
    report.details = {"pairs": pairs, "lock_alone_s": alone}
    return report
