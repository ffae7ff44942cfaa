"""Sweep: N OAuth connections checked by the check-connections flow, against raw
asyncio + httpx doing the same validation calls, on the same sandbox, same concurrency.

Every connection is a generic `oauth2` connection to the sandbox provider (running in
its own process) with a valid, unexpired access token and an introspection URL: the
connector's whole check is then one RFC 7662 introspection POST (client_secret_basic),
and the raw side sends exactly that POST. The sandbox's request counters confirm both
sides made the same calls.

Variants at the headline size, to see where the time goes:

- raw: one shared `httpx.AsyncClient` (keep-alive), a semaphore of `concurrency`;
- raw, one client per check: the same, but a new client per check: what the connector
  saves by sharing one `AsyncOAuth2Client` between the checks of a batch
  (`connectors.http.SharedClients`);
- connector: `relink.sweep.validate.validate_all` over the decrypted connections (no database,
  no Prefect);
- core sweep: `relink.sweep.run.sweep` (load, validate, record batch by batch; no Prefect);
- flow: `check_connections` (one task run per batch, 2 batches in flight).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from bench._common import (
    DbClock,
    Peer,
    ProcessClock,
    Report,
    children,
    make_app,
    table,
)
from connectors.http import tls_context

CONCURRENCY = 50
BATCH_SIZE = 200
GOAL_RATIO = 0.8
PAIRS = 3  # raw and flow runs at the headline size, interleaved
CLIENT_ID = "relink-bench"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@dataclass
class Run:
    """One measured pass over n connections."""

    variant: str
    n: int
    seconds: float
    ok: int
    introspections: int
    other_requests: int
    processes: dict[str, dict[str, float]]
    db: dict[str, float] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.n / self.seconds

    @property
    def us_per_connection(self) -> float:
        return self.seconds / self.n * 1e6

    def as_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "n": self.n,
            "seconds": round(self.seconds, 3),
            "connections_per_s": round(self.rate, 1),
            "ms_per_connection": round(self.seconds / self.n * 1000, 3),
            "ok": self.ok,
            "introspections": self.introspections,
            "other_requests": self.other_requests,
            "processes": self.processes,
            "db": self.db,
            "phases": self.phases,
            **self.extra,
        }


# --- the peers and the data ------------------------------------------------------------


class Sandbox:
    """The sandbox provider in its own process with `tokens` token sets minted."""

    def __init__(self, tokens: int, workdir: Path) -> None:
        self.client_secret = secrets.token_urlsafe(24)
        out = workdir / "tokens.json"
        started = time.perf_counter()
        self.peer = Peer(
            [
                "-m",
                "bench._sandbox",
                "--tokens",
                str(tokens),
                "--out",
                str(out),
                "--client-id",
                CLIENT_ID,
                "--client-secret",
                self.client_secret,
            ]
        )
        self.startup_s = time.perf_counter() - started
        self.url = self.peer.url
        self.tokens: list[list[str]] = json.loads(out.read_text("utf-8"))
        self.http = httpx.Client(base_url=self.url, timeout=30)

    @property
    def introspect_url(self) -> str:
        return f"{self.url}/oauth/introspect"

    def stats(self) -> dict[str, int]:
        return dict(self.http.get("/_sandbox/stats").json())

    def close(self) -> None:
        self.http.close()
        self.peer.stop()


def seed(app: Any, sandbox: Sandbox, n: int) -> None:
    """n `oauth2` connections with valid tokens, checked before and still fine."""
    from relink.directory import add_account, add_user
    from relink.models import Connection

    with app.transaction() as session:
        add_account(session, "Bench", now=T0)
        owner = add_user(
            session, email="owner@bench.test", name="Owner", role="member", account="Bench", now=T0
        )
        owner_id = owner.id
    settings = {
        "token_url": f"{sandbox.url}/oauth/token",
        "introspection_url": sandbox.introspect_url,
        "probe_url": f"{sandbox.url}/api/me",
        "client_id": CLIENT_ID,
    }
    expires = str(int((datetime.now(UTC) + timedelta(hours=23)).timestamp()))
    rows = [
        {
            "account_id": 1,
            "type": "oauth2",
            "name": f"c{i}",
            "mode": "direct",
            "settings": settings,
            "credentials": app.vault.encrypt(
                {
                    "access_token": access,
                    "refresh_token": refresh,
                    "expires_at": expires,
                    "client_secret": sandbox.client_secret,
                }
            ),
            "owner_id": owner_id,
            "status": "connected",
            "last_checked_at": T0,
            "version": 1,
            "created_at": T0,
            "updated_at": T0,
        }
        for i, (access, refresh) in enumerate(sandbox.tokens[:n])
    ]
    with app.transaction() as session:
        for start in range(0, n, 5000):
            session.execute(sa.insert(Connection), rows[start : start + 5000])


# --- measuring -------------------------------------------------------------------------


class PhaseClock:
    """Wall time inside the sweep core's phases, by patching its module globals.

    `check_range` intervals (start, end) also show how busy the flow keeps its two
    batch slots: the rest is orchestration (task runs, result handling).
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {"load": 0.0, "record": 0.0, "batch": 0.0}
        self.intervals: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    def _add(self, phase: str, spent: float) -> None:
        with self._lock:
            self.seconds[phase] += spent

    @contextmanager
    def installed(self) -> Iterator[None]:
        import relink.checks as checks
        import tasks.checks as task_module

        originals = (checks.load_batch, checks._record_with_retry, checks.check_range)

        def timed_sync(phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    self._add(phase, time.perf_counter() - started)

            return wrapper

        async def check_range(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await originals[2](*args, **kwargs)
            finally:
                ended = time.perf_counter()
                self._add("batch", ended - started)
                with self._lock:
                    self.intervals.append((started, ended))

        checks.load_batch = timed_sync("load", originals[0])
        checks._record_with_retry = timed_sync("record", originals[1])
        checks.check_range = check_range
        task_module.check_range = check_range  # type: ignore[attr-defined]
        try:
            yield
        finally:
            checks.load_batch, checks._record_with_retry, checks.check_range = originals
            task_module.check_range = originals[2]  # type: ignore[attr-defined]

    def reading(self, wall: float, slots: int) -> dict[str, float]:
        out = {f"{k}_s": round(v, 3) for k, v in self.seconds.items()}
        if self.intervals and wall:
            # share of (slots x wall) during which a batch was inside check_range
            out["batch_slot_busy"] = round(self.seconds["batch"] / (slots * wall), 3)
        return out


class Bench:
    """The peers of one sweep session: sandbox process, Prefect server, temp folder."""

    def __init__(self, max_n: int, workdir: Path, stack: ExitStack) -> None:
        import tasks.checks  # noqa: F401 - imports Prefect now, not inside a measured run

        self.workdir = workdir
        self.stack = stack
        self.sandbox = Sandbox(max_n, workdir)
        stack.callback(self.sandbox.close)
        self.prefect_pids: list[int] = []
        self.harness_s = 0.0
        self._harness = False
        self._apps = 0

    def harness(self) -> None:
        """Enter the Prefect test harness once (a server subprocess, temporary database)."""
        if self._harness:
            return
        from prefect.testing.utilities import prefect_test_harness

        before = set(children())
        started = time.perf_counter()
        self.stack.enter_context(prefect_test_harness(server_startup_timeout=60))
        self.harness_s = time.perf_counter() - started
        self.prefect_pids = [p for p in children() if p not in before]
        self._harness = True

    def processes(self) -> dict[str, int]:
        pids = {"bench": os.getpid(), "sandbox": self.sandbox.peer.pid}
        for i, pid in enumerate(self.prefect_pids):
            pids["prefect_server" if i == 0 else f"prefect_{i}"] = pid
        return pids

    def app(self, n: int) -> Any:
        """A fresh SQLite app database with n connections (the embedded default)."""
        from relink.app import set_app

        self._apps += 1
        folder = self.workdir / f"app{self._apps}"
        app = make_app(f"sqlite:///{folder / 'relink.db'}", folder)
        self.stack.callback(app.close)
        seed(app, self.sandbox, n)
        set_app(app)
        return app

    def measure(
        self,
        variant: str,
        n: int,
        fn: Callable[[], int],
        *,
        app: Any | None = None,
        slots: int = 1,
    ) -> Run:
        """Run fn (returns how many checks were ok) with every clock around it."""
        db = DbClock(app.engine) if app is not None else None
        phases = PhaseClock()
        clock = ProcessClock(self.processes())
        before = self.sandbox.stats()
        clock.start()
        with phases.installed():
            started = time.perf_counter()
            ok = fn()
            seconds = time.perf_counter() - started
        processes = clock.stop()
        after = self.sandbox.stats()
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        intros = delta.pop("/oauth/introspect", 0)
        delta.pop("/_sandbox/stats", None)
        run = Run(
            variant=variant,
            n=n,
            seconds=seconds,
            ok=ok,
            introspections=intros,
            other_requests=sum(delta.values()),
            processes=processes,
            db=db.reading() if db is not None else {},
            phases=phases.reading(seconds, slots) if app is not None else {},
        )
        if db is not None:
            db.close()
        print(
            f"sweep: {variant} n={n:,}: {seconds:.1f} s, {run.rate:,.0f}/s, ok {ok:,}, "
            f"introspections {intros:,}, other requests {run.other_requests}",
            flush=True,
        )
        if ok != n or intros != n:
            raise AssertionError(f"{variant}: {ok} ok and {intros} introspections for {n}")
        return run


# --- the variants ----------------------------------------------------------------------


async def _raw(
    url: str, tokens: Sequence[str], secret: str, concurrency: int, *, shared: bool
) -> int:
    """The connector's call, bare: POST token + hint, client_secret_basic, read `active`."""
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    auth = httpx.BasicAuth(CLIENT_ID, secret)
    tls = tls_context()

    async def one(client: httpx.AsyncClient, token: str) -> bool:
        response = await client.post(
            url, data={"token": token, "token_type_hint": "access_token"}, auth=auth
        )
        return response.status_code == 200 and response.json().get("active") is True

    async def each(client: httpx.AsyncClient | None, token: str) -> bool:
        async with gate:
            if client is not None:
                return await one(client, token)
            # one SSL context for every client, as the connector shares (connectors.http)
            async with httpx.AsyncClient(timeout=10, verify=tls) as own:
                return await one(own, token)

    if shared:
        async with httpx.AsyncClient(limits=limits, timeout=10) as client:
            results = await asyncio.gather(*(each(client, t) for t in tokens))
    else:
        results = await asyncio.gather(*(each(None, t) for t in tokens))
    return sum(results)


def raw(bench: Bench, n: int, *, shared: bool = True) -> Run:
    tokens = [access for access, _ in bench.sandbox.tokens[:n]]
    name = "raw httpx, shared client" if shared else "raw httpx, a client per check"
    return bench.measure(
        name,
        n,
        lambda: asyncio.run(
            _raw(
                bench.sandbox.introspect_url,
                tokens,
                bench.sandbox.client_secret,
                CONCURRENCY,
                shared=shared,
            )
        ),
    )


def connector(bench: Bench, app: Any, n: int) -> Run:
    """`validate_all` over the connections, decrypted beforehand: no database, no Prefect."""
    from connectors.base import ConnectionSpec
    from relink.domain.words import Outcome
    from relink.sweep.load import load_batch
    from relink.sweep.validate import CheckPolicy, make_context_factory, validate_all
    from relink.tokens import DbTokenStore

    specs = [s for s in load_batch(app, 0, None) if isinstance(s, ConnectionSpec)]
    policy = CheckPolicy(concurrency=CONCURRENCY, per_provider=CONCURRENCY)

    def go() -> int:
        make_ctx = make_context_factory(
            app, policy, now=datetime.now(UTC), token_store=DbTokenStore(app)
        )
        checked = asyncio.run(validate_all(specs, make_ctx, policy))
        return sum(c.result.outcome is Outcome.OK for c in checked)

    return bench.measure("connector (validate_all, no DB, no Prefect)", n, go)


def core(bench: Bench, app: Any, n: int) -> Run:
    """`relink.sweep.run.sweep`: the flow's work in this process, batches one after another."""
    from relink.sweep.run import sweep
    from relink.sweep.validate import CheckPolicy

    policy = CheckPolicy(batch_size=BATCH_SIZE, concurrency=CONCURRENCY, per_provider=CONCURRENCY)

    def go() -> int:
        summary = asyncio.run(sweep(app, now=datetime.now(UTC), policy=policy))
        return int(summary.outcomes.get("ok", 0))

    return bench.measure("core sweep (no Prefect)", n, go, app=app, slots=1)


def flow(bench: Bench, app: Any, n: int, variant: str = "flow") -> Run:
    """The check-connections flow under the harness; task runs read back from the API."""
    from flows.check_connections import check_connections

    bench.harness()
    holder: dict[str, Any] = {}

    def go() -> int:
        state = asyncio.run(
            check_connections(
                batch_size=BATCH_SIZE,
                concurrency=CONCURRENCY,
                per_provider=CONCURRENCY,
                return_state=True,
            )
        )
        summary = state.result()
        holder["flow_run_id"] = state.state_details.flow_run_id
        holder["inside_flow_s"] = summary["duration_s"]
        holder["batches"] = summary["batches"]
        return int(summary["outcomes"]["ok"])

    run = bench.measure(variant, n, go, app=app, slots=2)
    run.extra["task_runs"] = asyncio.run(_count_task_runs(holder["flow_run_id"], holder["batches"]))
    run.extra["batches"] = holder["batches"]
    run.extra["inside_flow_s"] = holder["inside_flow_s"]
    return run


async def _count_task_runs(flow_run_id: Any, expected: int, wait: float = 20.0) -> int:
    """Task runs of the flow run on the server (they arrive as events: wait a little)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flt = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    deadline = time.monotonic() + wait
    count = 0
    async with get_client() as client:
        while True:
            count, offset = 0, 0
            while page := await client.read_task_runs(
                flow_run_filter=flt, limit=200, offset=offset
            ):
                count += len(page)
                offset += len(page)
            if count >= expected or time.monotonic() > deadline:
                return count
            await asyncio.sleep(0.5)


# --- the benchmark ---------------------------------------------------------------------


@dataclass
class Ladder:
    """Flow and raw at each size (growth), plus the headline's other variants.

    At the headline size raw and flow run PAIRS times, interleaved (raw, ..., flow, raw,
    flow, raw, flow): consecutive runs of the same code differ by up to 15 % on this
    machine, so the ratio is taken per pair (each raw run and the flow run after it) and
    the median pair is reported, with the lowest and highest.
    """

    sizes: list[int]
    flow: dict[int, list[Run]] = field(default_factory=dict)
    raw: dict[int, list[Run]] = field(default_factory=dict)
    variants: list[Run] = field(default_factory=list)
    setup: dict[str, float] = field(default_factory=dict)


def measure_ladder(sizes: Sequence[int], *, variants: bool) -> Ladder:
    """One session: sandbox + Prefect harness once, then each size ascending."""
    sizes = sorted(sizes)
    ladder = Ladder(list(sizes))
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="relink-bench-") as tmp:
        bench = Bench(sizes[-1], Path(tmp), stack)
        ladder.setup["sandbox_start_s"] = round(bench.sandbox.startup_s, 2)
        bench.harness()
        ladder.setup["harness_start_s"] = round(bench.harness_s, 2)
        warm = flow(bench, bench.app(20), 20, variant="flow warm-up")
        ladder.setup["first_flow_run_20_s"] = round(warm.seconds, 2)
        for n in sizes:
            headline = n == sizes[-1] and variants
            app = bench.app(n)
            ladder.raw[n] = [raw(bench, n)]
            if headline:
                ladder.variants.append(raw(bench, n, shared=False))
                ladder.variants.append(connector(bench, app, n))
                ladder.variants.append(core(bench, app, n))
            ladder.flow[n] = [flow(bench, app, n)]
            for _ in range(PAIRS - 1 if headline else 0):
                ladder.raw[n].append(raw(bench, n))
                ladder.flow[n].append(flow(bench, app, n))
        from relink.app import set_app

        set_app(None)
    return ladder


def cpu_ms(run: Run, *names: str) -> float:
    """CPU ms per connection of the named processes (default: the bench process)."""
    procs = names or ("bench",)
    return sum(run.processes.get(p, {}).get("cpu_s", 0.0) for p in procs) / run.n * 1000


def mean(values: Sequence[float]) -> float:
    return statistics.mean(values)


def pair_ratios(ladder: Ladder, n: int) -> list[float]:
    """flow / raw throughput of each raw run and the flow run that followed it."""
    return [f.rate / r.rate for r, f in zip(ladder.raw[n], ladder.flow[n], strict=True)]


def run(large: bool, cache: dict[str, Any]) -> Report:
    n = 100_000 if large else 10_000
    sizes = [1_000, 10_000] + ([100_000] if large else [])
    report = Report("sweep", f"Sweep: {n:,} OAuth connections, flow vs raw httpx")
    ladder = measure_ladder(sizes, variants=True)
    cache["sweep_ladder"] = ladder
    flows, raws = ladder.flow[n], ladder.raw[n]
    flow_rate = statistics.median([r.rate for r in flows])
    raw_rate = statistics.median([r.rate for r in raws])
    ratios = pair_ratios(ladder, n)
    ratio = statistics.median(ratios)
    flow_cpu = mean([cpu_ms(r, "bench", "prefect_server") for r in flows])
    raw_cpu = mean([cpu_ms(r) for r in raws])
    last = flows[-1]
    report.figure(
        "flow_rate",
        f"flow: connections checked per second (median of {PAIRS})",
        flow_rate,
        "conn/s",
    )
    report.figure(
        "raw_rate",
        f"raw asyncio+httpx: connections per second (median of {PAIRS})",
        raw_rate,
        "conn/s",
    )
    report.figure(
        "ratio",
        f"flow / raw throughput (median of {PAIRS} interleaved pairs)",
        round(ratio, 3),
        goal=f">= {GOAL_RATIO}",
        met=ratio >= GOAL_RATIO,
    )
    report.figure(
        "ratio_range",
        "flow / raw throughput: lowest and highest pair",
        f"{min(ratios):.2f} to {max(ratios):.2f}",
    )
    report.figure(
        "flow_cpu_ms", "flow: CPU ms per connection (bench + Prefect server)", flow_cpu, "ms"
    )
    report.figure("raw_cpu_ms", "raw: CPU ms per connection (bench process)", raw_cpu, "ms")
    report.figure("cpu_ratio", "raw CPU / flow CPU per connection", round(raw_cpu / flow_cpu, 3))
    report.figure("task_runs", "Prefect task runs created (read back)", last.extra["task_runs"])
    report.figure(
        "peak_rss",
        "peak RSS of the bench process during a flow run",
        max(r.processes["bench"]["peak_rss_mib"] for r in flows),
        "MiB",
    )
    if "prefect_server" in last.processes:
        report.figure(
            "server_peak_rss",
            "peak RSS of the Prefect server process during a flow run",
            max(r.processes["prefect_server"]["peak_rss_mib"] for r in flows),
            "MiB",
        )
    report.figure(
        "db_time",
        "app database time per flow run (cursor execute)",
        mean([r.db["db_s"] for r in flows]),
        "s",
    )
    report.figure("db_statements", "app database statements per flow run", last.db["statements"])
    report.figure(
        "bench_cpu_share",
        "bench process CPU / wall during the flow runs",
        mean([r.processes["bench"]["cpu_share"] for r in flows]),
        "cores",
    )
    report.figure(
        "sandbox_cpu_share",
        "sandbox process CPU / wall during the flow runs",
        mean([r.processes["sandbox"]["cpu_share"] for r in flows]),
        "cores",
    )
    report.details = {
        "concurrency": CONCURRENCY,
        "batch_size": BATCH_SIZE,
        "setup": ladder.setup,
        "runs": [r.as_dict() for r in [*raws, *ladder.variants, *flows]],
        "ladder": {
            str(k): {
                "flow": [r.as_dict() for r in ladder.flow[k]],
                "raw": [r.as_dict() for r in ladder.raw[k]],
            }
            for k in ladder.sizes
        },
    }
    report.markdown = markdown(ladder, n, raw_rate)
    return report


def markdown(ladder: Ladder, n: int, raw_rate: float) -> list[str]:
    flows, raws = ladder.flow[n], ladder.raw[n]
    order = [raws[0], *ladder.variants, flows[0]]
    order += [run for pair in zip(raws[1:], flows[1:], strict=True) for run in pair]
    rows = []
    for r in order:
        procs = r.processes
        rows.append(
            (
                r.variant,
                f"{r.seconds:.1f}",
                f"{r.rate:,.0f}",
                f"{r.rate / raw_rate:.2f}",
                f"{cpu_ms(r):.2f}",
                f"{procs['bench']['cpu_share']:.2f}",
                f"{procs['sandbox']['cpu_share']:.2f}",
                f"{procs.get('prefect_server', {}).get('cpu_s', 0):.1f}",
                f"{r.db['db_s']:.2f} ({r.db['statements']:,})" if r.db else "",
                f"{procs['bench']['peak_rss_mib']:.0f}",
            )
        )
    # what each step adds, in CPU ms per connection of the bench process
    steps = [("raw httpx, shared client", mean([cpu_ms(r) for r in raws]))]
    steps += [(r.variant, cpu_ms(r)) for r in ladder.variants]
    steps += [("flow", mean([cpu_ms(r) for r in flows]))]
    attribution = [
        (name, f"{value:.2f}", "" if i == 0 else f"{value - steps[i - 1][1]:+.2f}")
        for i, (name, value) in enumerate(steps)
    ]
    server = mean([cpu_ms(r, "prefect_server") for r in flows])
    f = flows[-1]
    phases = mean([r.phases.get("batch_slot_busy", 0) for r in flows])
    return [
        f"{n:,} `oauth2` connections with valid tokens: the connector's check is one "
        f"introspection POST each, and the sandbox counted exactly {n:,} per row. "
        f"{CONCURRENCY} checks in flight everywhere (the flow: `concurrency={CONCURRENCY}, "
        f"per_provider={CONCURRENCY}`, i.e. 2 batches of {BATCH_SIZE} in flight with "
        f"{CONCURRENCY // 2} checks each; with the default `per_provider=20` a sweep of one "
        "provider would have only 20 in flight). App database: a SQLite file. The sandbox "
        "(werkzeug, threaded) runs in its own process and answers `Connection: close`: every "
        "request, raw or not, opens a new TCP connection. Ratio = rate / median raw rate; CPU "
        "= CPU ms per connection of the bench process; cores = CPU seconds / wall seconds.",
        "",
        *table(
            [
                "variant",
                "s",
                "conn/s",
                "ratio",
                "CPU ms/conn",
                "bench cores",
                "sandbox cores",
                "Prefect server CPU s",
                "DB s (statements)",
                "bench peak RSS MiB",
            ],
            rows,
        ),
        "",
        "Where the bench process's CPU goes, step by step (each row adds one layer):",
        "",
        *table(["layer", "CPU ms/conn", "step"], attribution),
        "",
        f"The Prefect server process adds {server:.2f} CPU ms per connection during the "
        f"flow runs. Flow: {f.extra['task_runs']} task runs for {f.extra['batches']} batches "
        f"(read back from the API); {f.db['statements']:,} statements, {f.db['db_s']:.2f} s "
        f"in cursor execute; load phase {f.phases.get('load_s', 0):.1f} s and record phase "
        f"{f.phases.get('record_s', 0):.1f} s (wall, summed over batches, ORM and vault "
        f"included); the two batch slots were busy {phases:.0%} of the run. Inside the flow "
        f"function {f.extra['inside_flow_s']:.1f} s of {f.seconds:.1f} s end to end. Setup: "
        f"sandbox with tokens {ladder.setup['sandbox_start_s']} s, Prefect test harness "
        f"{ladder.setup['harness_start_s']} s, first flow run (20 connections) "
        f"{ladder.setup['first_flow_run_20_s']} s.",
    ]
