"""Email run: N due disconnections sent by `send_due` (the real send path: claim, the
SendGrid SDK, mark) to the local SendGrid-compatible endpoint in its own process,
against a raw HTTP POST loop of the same bodies to the same endpoint, same run.

The endpoint process, the sample bodies and the POST loops are `bench/_emaildata.py`'s;
here they are measured with the shared clocks and reported as figures.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench._common import DbClock, ProcessClock, Report, postgres_url, reset_peak_rss, table

GOAL_NOTE = "no goal in the issue: the ratio shows what the exactly-once protocol costs"
GOAL_CPU = 2.0  # issue 20: send_due's CPU per email at most 2x the SDK alone's
GOAL_RATE = 0.5  # issue 20: send_due's throughput at least 0.5x the raw POST loop's
GOAL_LATENCY = 0.9  # issue 20: with a 150 ms endpoint, at least 0.9x the raw loop's
LATENCY = 0.15  # seconds the slow endpoint waits before each answer (the real one: 100-300 ms)
LATENCY_CONCURRENCY = (1, 4, 16)
LATENCY_SECONDS = 7.5  # each latency run's length at the raw loop's rate (n = 50 x threads)


@dataclass
class EmailRun:
    label: str
    n: int
    seconds: float
    api_calls: int
    processes: dict[str, dict[str, float]]
    db: dict[str, float] = field(default_factory=dict)
    batches: int | None = None

    @property
    def rate(self) -> float:
        return self.n / self.seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "n": self.n,
            "seconds": round(self.seconds, 3),
            "emails_per_s": round(self.rate, 1),
            "ms_per_email": round(self.seconds / self.n * 1000, 3),
            "api_calls": self.api_calls,
            "batches": self.batches,
            "processes": self.processes,
            "db": self.db,
        }


@dataclass
class EmailLadder:
    sizes: list[int]
    send_due: dict[int, EmailRun] = field(default_factory=dict)
    others: list[EmailRun] = field(default_factory=list)


def _clocked(
    label: str, n: int, endpoint_pid: int, fn: Callable[[], Any], *, engine: Any = None
) -> tuple[EmailRun, Any]:
    db = DbClock(engine) if engine is not None else None
    clock = ProcessClock({"bench": os.getpid(), "endpoint": endpoint_pid})
    clock.start()
    started = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - started
    processes = clock.stop()
    reading = db.reading() if db is not None else {}
    if db is not None:
        db.close()
    run = EmailRun(label, n, seconds, n, processes, reading)
    print(f"emails: {label} n={n:,}: {seconds:.1f} s, {run.rate:,.0f}/s", flush=True)
    return run, result


def send_due_run(
    label: str, url: str, n: int, endpoint: Any, data_dir: Path, *, concurrency: int | None = None
) -> EmailRun:
    """`send_due` over `n` due disconnections on a fresh database at `url`, with the
    clocks around `send_due` only (not the setup); `concurrency`: RELINK_EMAIL_CONCURRENCY
    (default: the setting's default)."""
    from bench import _emaildata as data
    from bench._common import make_app
    from relink.emailing.mailer import SendGridMailer
    from relink.emailing.policy import NotifyPolicy
    from relink.emailing.run import send_due
    from relink.models import Notification
    from tests.support.emaildata import World

    app = make_app(url, data_dir)
    try:
        World(app).many_broken(n, data.RUN - timedelta(hours=25))
        mailer = SendGridMailer(data.API_KEY, endpoint.url, timeout=30)
        run, summary = _clocked(
            label,
            n,
            endpoint.proc.pid,
            lambda: send_due(
                app,
                now=data.RUN,
                mailer=mailer,
                policy=NotifyPolicy.in_flight(concurrency or NotifyPolicy().concurrency),
            ),
            engine=app.engine,
        )
        with app.sessions() as session:
            calls = session.scalar(sa.select(sa.func.sum(Notification.attempts)))
            sent = session.scalar(sa.select(sa.func.count()).where(Notification.state == "sent"))
    finally:
        app.close()
    if not summary.counts["sent"] == n == sent:
        raise AssertionError(f"{label}: {summary.counts}")
    run.api_calls, run.batches = int(calls or 0), summary.batches
    return run


def measure(
    sizes: Sequence[int], *, headline: int | None, pg: str | None, workdir: Path
) -> EmailLadder:
    """send_due on SQLite at each size; at the headline size also PG, SDK alone, raw."""
    from bench import _emaildata as data
    from relink.emailing.policy import NotifyPolicy
    from tests.support.pg import temporary_schema
    from tests.support.sendgrid_endpoint import EndpointProcess

    ladder = EmailLadder(sorted(sizes))
    threads = NotifyPolicy().concurrency
    bodies: list[bytes] = []
    mails: list[Any] = []
    if headline:
        import json

        mails = data.sample_mails(headline, workdir)
        bodies = [json.dumps(m.get()).encode() for m in mails]
    endpoint = EndpointProcess(data.API_KEY)
    try:
        for n in ladder.sizes:
            ladder.send_due[n] = send_due_run(
                f"send_due on sqlite, {threads} threads",
                f"sqlite:///{workdir / f'send{n}.db'}",
                n,
                endpoint,
                workdir / f"d{n}",
            )
        if headline:
            if pg:
                with temporary_schema(pg, prefix="relink_bench") as schema_url:
                    ladder.others.append(
                        send_due_run(
                            f"send_due on postgresql, {threads} threads",
                            schema_url,
                            headline,
                            endpoint,
                            workdir / "dpg",
                        )
                    )
            for label, fn in (
                (
                    f"SDK alone, {threads} threads, no database",
                    lambda: data.sdk_loop(endpoint.url, mails, threads),
                ),
                (
                    f"raw http.client POST loop, keep-alive, {threads} threads",
                    lambda: data.raw_post_loop(endpoint.url, bodies, threads),
                ),
                (
                    "raw http.client POST loop, keep-alive, 1 thread",
                    lambda: data.raw_post_loop(endpoint.url, bodies, 1),
                ),
            ):
                run, _ = _clocked(label, headline, endpoint.proc.pid, fn)
                ladder.others.append(run)
    finally:
        endpoint.stop()
    return ladder


def latency_runs(workdir: Path, bodies: Sequence[bytes]) -> list[tuple[int, EmailRun, EmailRun]]:
    """With an endpoint that answers after LATENCY: send_due and the raw POST loop at each
    of LATENCY_CONCURRENCY emails in flight, one after the other (same n for both)."""
    from bench import _emaildata as data
    from tests.support.sendgrid_endpoint import EndpointProcess

    out = []
    endpoint = EndpointProcess(data.API_KEY, delay=LATENCY)
    try:
        for c in LATENCY_CONCURRENCY:
            n = int(LATENCY_SECONDS / LATENCY * c)
            send = send_due_run(
                f"send_due on sqlite, 150 ms endpoint, {c} in flight",
                f"sqlite:///{workdir / f'slow{c}.db'}",
                n,
                endpoint,
                workdir / f"slow{c}",
                concurrency=c,
            )
            raw, _ = _clocked(
                f"raw POST loop, 150 ms endpoint, {c} threads",
                n,
                endpoint.proc.pid,
                lambda n=n, c=c: data.raw_post_loop(endpoint.url, bodies[:n], c),
            )
            out.append((c, send, raw))
    finally:
        endpoint.stop()
    return out


def sender_threads() -> int:
    from relink.emailing.policy import NotifyPolicy

    return NotifyPolicy().concurrency


def run(large: bool, cache: dict[str, Any]) -> Report:
    n = 10_000
    sizes = [1_000, 10_000] + ([100_000] if large else [])
    report = Report("emails", f"Email run: {n:,} due disconnections through the SendGrid SDK")
    reset_peak_rss()
    pg = postgres_url()
    with tempfile.TemporaryDirectory(prefix="relink-bench-") as tmp:
        ladder = measure(sizes, headline=n, pg=pg, workdir=Path(tmp))
        import json

        from bench import _emaildata as data

        slow_bodies = [
            json.dumps(m.get()).encode()
            for m in data.sample_mails(int(LATENCY_SECONDS / LATENCY * 16), Path(tmp) / "slow")
        ]
        slow = latency_runs(Path(tmp), slow_bodies)
    cache["email_ladder"] = ladder
    main = ladder.send_due[n]
    raw4 = next(r for r in ladder.others if "raw" in r.label and "1 thread" not in r.label)
    sdk = next(r for r in ladder.others if r.label.startswith("SDK"))
    report.figure("send_due_rate", "send_due (SQLite): emails per second", main.rate, "emails/s")
    report.figure("api_calls", "SendGrid API calls for the run", main.api_calls, "calls")
    report.figure(
        "raw_rate", "raw POST loop, same threads: emails per second", raw4.rate, "emails/s"
    )
    report.figure(
        "ratio",
        "send_due / raw POST loop throughput",
        round(main.rate / raw4.rate, 3),
        goal=f">= {GOAL_RATE}",
        met=main.rate / raw4.rate >= GOAL_RATE,
    )
    report.figure(
        "sdk_ratio", "SDK alone / raw POST loop throughput", round(sdk.rate / raw4.rate, 3)
    )
    report.figure("db_time", "app database time in send_due (cursor execute)", main.db["db_s"], "s")
    report.figure(
        "db_threads",
        "sender threads inside cursor execute, on average (SQLite)",
        round(main.db["db_s"] / main.seconds, 2),
        f"of {sender_threads()}",
    )
    report.figure(
        "send_due_cpu_ms",
        "send_due: CPU ms per email (bench process)",
        main.processes["bench"]["cpu_s"] / main.n * 1000,
        "ms",
    )
    report.figure(
        "sdk_cpu_ms",
        "SDK alone: CPU ms per email (bench process)",
        sdk.processes["bench"]["cpu_s"] / sdk.n * 1000,
        "ms",
    )
    cpu_ratio = (main.processes["bench"]["cpu_s"] / main.n) / (
        sdk.processes["bench"]["cpu_s"] / sdk.n
    )
    report.figure(
        "cpu_ratio",
        "send_due / SDK alone: CPU per email (SQLite)",
        round(cpu_ratio, 2),
        "x",
        goal=f"<= {GOAL_CPU}",
        met=cpu_ratio <= GOAL_CPU,
    )
    report.figure(
        "peak_rss",
        "peak RSS of the bench process (send_due)",
        main.processes["bench"]["peak_rss_mib"],
        "MiB",
    )
    report.figure(
        "endpoint_cpu_share_raw",
        "endpoint process CPU / wall during the raw loop",
        raw4.processes["endpoint"]["cpu_share"],
        "cores",
    )
    for r in ladder.others:
        if r.label.startswith("send_due on postgresql"):
            report.figure(
                "send_due_pg_rate", "send_due (PostgreSQL): emails per second", r.rate, "emails/s"
            )
            report.figure(
                "pg_ratio",
                "send_due (PostgreSQL) / raw POST loop throughput",
                round(r.rate / raw4.rate, 3),
                goal=f">= {GOAL_RATE}",
                met=r.rate / raw4.rate >= GOAL_RATE,
            )
            pg_cpu = (r.processes["bench"]["cpu_s"] / r.n) / (
                sdk.processes["bench"]["cpu_s"] / sdk.n
            )
            report.figure(
                "pg_cpu_ratio",
                "send_due (PostgreSQL) / SDK alone: CPU per email",
                round(pg_cpu, 2),
                "x",
                goal=f"<= {GOAL_CPU}",
                met=pg_cpu <= GOAL_CPU,
            )
    for c, send, raw in slow:
        report.figure(
            f"latency_ratio_{c}",
            f"150 ms endpoint, {c} in flight: send_due / raw POST loop throughput",
            round(send.rate / raw.rate, 3),
            goal=f">= {GOAL_LATENCY}",
            met=send.rate / raw.rate >= GOAL_LATENCY,
        )
    for c, send, _ in slow:
        report.figure(
            f"latency_rate_{c}",
            f"150 ms endpoint: send_due emails per second, RELINK_EMAIL_CONCURRENCY={c}",
            send.rate,
            "emails/s",
        )
    if pg is None:
        report.note("PostgreSQL not reachable: the send_due run on PostgreSQL was skipped")
    report.details = {
        "runs": [r.as_dict() for r in [main, *ladder.others]],
        "latency": [
            {"concurrency": c, "send_due": s.as_dict(), "raw": r.as_dict()} for c, s, r in slow
        ],
        "ladder": {str(k): v.as_dict() for k, v in ladder.send_due.items()},
    }
    report.markdown = markdown(main, ladder.others, raw4) + latency_markdown(slow)
    return report


def markdown(main: EmailRun, others: Sequence[EmailRun], raw4: EmailRun) -> list[str]:
    rows = [
        (
            r.label,
            f"{r.seconds:.1f}",
            f"{r.rate:,.0f}",
            f"{r.api_calls:,}",
            f"{r.rate / raw4.rate:.2f}",
            f"{r.processes['bench']['cpu_s'] / r.n * 1000:.2f}",
            f"{r.processes['endpoint']['cpu_s']:.1f}",
            f"{r.db['db_s']:.1f} ({r.db['statements']:,})" if r.db else "",
            f"{r.processes['bench']['peak_rss_mib']:.0f}",
        )
        for r in [main, *others]
    ]
    return [
        f"{main.n:,} due disconnections; one email each, one API call each (no retries). "
        "Same run, same endpoint process (`tests.support.sendgrid_endpoint`, validating "
        "every body against SendGrid's contract), same bodies. Ratio = rate / the raw "
        f"{raw4.label.split(', ')[-1]} loop's rate.",
        "",
        *table(
            [
                "path",
                "s",
                "emails/s",
                "API calls",
                "ratio",
                "CPU ms/email",
                "endpoint CPU s",
                "DB s (statements)",
                "bench peak RSS MiB",
            ],
            rows,
        ),
        "",
        f"`send_due`: {main.batches} batches of {main.n // max(1, main.batches or 1):,}. "
        "CPU ms/email: the bench process's. DB s = time inside cursor execute on the app "
        "database summed over the sender threads (waits for SQLite's write lock included, "
        "commits not).",
    ]


def latency_markdown(slow: Sequence[tuple[int, EmailRun, EmailRun]]) -> list[str]:
    rows = []
    for _c, send, raw in slow:
        for r in (send, raw):
            rows.append(
                (
                    r.label,
                    f"{r.n:,}",
                    f"{r.seconds:.1f}",
                    f"{r.rate:,.1f}",
                    f"{r.rate / raw.rate:.2f}",
                    f"{r.processes['bench']['cpu_s'] / r.n * 1000:.2f}",
                )
            )
    return [
        "",
        f"With the endpoint answering every mail/send after {LATENCY * 1000:.0f} ms (like the "
        "real service), at 1, 4 and 16 emails in flight (`RELINK_EMAIL_CONCURRENCY`; the raw "
        "loop with as many threads, one keep-alive connection each). Ratio = rate / the raw "
        "loop's at the same concurrency.",
        "",
        *table(["path", "emails", "s", "emails/s", "ratio", "CPU ms/email"], rows),
    ]
