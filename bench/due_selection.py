"""Due selection: the due-email query with 1,000,000 connections and 100,000 open
disconnections, on SQLite and on PostgreSQL, by its partial index and by a forced scan
of the same table, with both query plans.

The query is the real one: `relink.emailing.due.due_ids` (what the email flow's
`find_due` task runs). The data is `bench/_emaildata.py`'s: one disconnection per
connection, interleaved by id: 90 % closed (half of them emailed), 1 % open and younger
than 24 h, 1 % open and due, 8 % open and already emailed; loaded with INSERT ... SELECT
from a recursive CTE (SQLite) or generate_series (PostgreSQL, in a schema of its own,
dropped afterwards).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench._common import Report, best_of, postgres_url, postgres_version, table, timed

GOAL_MS = 50.0
SCAN_OFF = ("enable_indexscan", "enable_bitmapscan", "enable_indexonlyscan")


def measure(app: Any, connections: int, fill: Callable[[sa.Engine, int], None]) -> dict[str, Any]:
    from bench import _emaildata as data
    from relink.emailing.due import due_ids

    engine = app.engine
    backend = engine.dialect.name
    counts = data.kinds(connections)
    load_s, _ = timed(lambda: fill(engine, connections))
    print(
        f"due_selection: {backend}: {connections:,} rows loaded in {load_s:.1f} s",
        flush=True,
    )

    def query() -> list[int]:
        with app.sessions() as session:
            return due_ids(session, now=data.RUN)

    index_s, ids = best_of(5, query)
    if len(ids) != counts["due"]:
        raise AssertionError(f"{backend}: {len(ids)} due, expected {counts['due']}")
    ((sql, params),) = data.capture_sql(engine, query)

    def run_sql(text: str, *, full_scan: bool) -> list[Any]:
        with engine.connect() as conn:
            if full_scan and backend == "postgresql":
                for setting in SCAN_OFF:
                    conn.exec_driver_sql(f"SET {setting} = off")
            if full_scan and backend == "sqlite":
                text = text.replace("FROM disconnections", "FROM disconnections NOT INDEXED", 1)
            rows = conn.exec_driver_sql(text, params).all()
            conn.rollback()
            return rows

    scan_s, rows = best_of(3, lambda: run_sql(sql, full_scan=True))
    if len(rows) != len(ids):
        raise AssertionError(f"{backend}: the scan found {len(rows)} rows")
    if backend == "sqlite":
        explain = "EXPLAIN QUERY PLAN "

        def plan_text(rows: list[Any]) -> str:
            return "\n".join(str(r[3]) for r in rows)
    else:
        explain = "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF) "

        def plan_text(rows: list[Any]) -> str:
            return "\n".join(str(r[0]) for r in rows)

    result = {
        "backend": backend,
        "connections": connections,
        "kinds": counts,
        "open": counts["recent"] + counts["due"] + counts["emailed"],
        "load_s": round(load_s, 2),
        "index_ms": round(index_s * 1000, 2),
        "scan_ms": round(scan_s * 1000, 2),
        "due": len(ids),
        "sql": sql.strip(),
        "plan_index": plan_text(run_sql(explain + sql, full_scan=False)),
        "plan_scan": plan_text(run_sql(explain + sql, full_scan=True)),
    }
    if backend == "postgresql":
        result["server"] = postgres_version(engine.url.render_as_string(hide_password=False))
    print(
        f"due_selection: {backend}: due query {result['index_ms']} ms by index, "
        f"{result['scan_ms']} ms by scan ({len(ids):,} due)",
        flush=True,
    )
    return result


def run(large: bool, cache: dict[str, Any]) -> Report:
    from bench import _emaildata as data
    from bench._common import make_app
    from tests.support.emaildata import World
    from tests.support.pg import temporary_schema

    connections = 1_000_000
    report = Report("due_selection", f"Due selection: {connections:,} connections")
    results = []
    with tempfile.TemporaryDirectory(prefix="relink-bench-") as tmp:
        folder = Path(tmp)
        app = make_app(f"sqlite:///{folder / 'select.db'}", folder / "data")
        World(app)  # account 1 and its users: the rows' owner
        try:
            results.append(measure(app, connections, data.sqlite_fill))
        finally:
            app.close()
        pg = postgres_url()
        if pg is None:
            report.note("PostgreSQL not reachable: only SQLite was measured")
        else:
            with temporary_schema(pg, prefix="relink_bench") as url:
                app = make_app(url, folder / "data-pg")
                World(app)
                try:
                    results.append(measure(app, connections, data.postgres_fill))
                finally:
                    app.close()
    for r in results:
        b = r["backend"]
        report.figure(
            f"{b}_index_ms",
            f"{b}: due query ({r['due']:,} due of {r['open']:,} open) by index",
            r["index_ms"],
            "ms",
            goal=f"< {GOAL_MS:.0f} ms",
            met=r["index_ms"] < GOAL_MS,
        )
        report.figure(f"{b}_scan_ms", f"{b}: the same query, table scan", r["scan_ms"], "ms")
        report.figure(
            f"{b}_scan_ratio", f"{b}: scan / index", round(r["scan_ms"] / r["index_ms"], 1), "x"
        )
    report.details = {"backends": results}
    report.markdown = markdown(results)
    return report


def markdown(results: list[dict[str, Any]]) -> list[str]:
    if not results:
        return []
    first = results[0]
    k = first["kinds"]
    rows = [
        (
            r["backend"] + (f" {r['server']}" if r.get("server") else ""),
            f"{r['load_s']:.0f}",
            f"{r['index_ms']:.1f}",
            f"{r['scan_ms']:.1f}",
            f"{r['scan_ms'] / r['index_ms']:.1f}x",
            "yes" if r["index_ms"] < GOAL_MS else "NO",
        )
        for r in results
    ]
    lines = [
        f"{first['connections']:,} connections with one disconnection each: "
        f"{first['open']:,} open ({k['due']:,} due, {k['recent']:,} younger than 24 h, "
        f"{k['emailed']:,} already emailed), {k['closed']:,} closed. The query is "
        "`relink.emailing.due.due_ids` (all due ids, oldest first), best of 5; the scan "
        "is the same SQL with `FROM disconnections NOT INDEXED` (SQLite) or "
        "`enable_indexscan/bitmapscan/indexonlyscan = off` (PostgreSQL), best of 3.",
        "",
        *table(
            ["backend", "load s", "by index ms", "scan ms", "scan / index", f"< {GOAL_MS:.0f} ms"],
            rows,
        ),
        "",
        "The query:",
        "",
        "```sql",
        first["sql"],
        "```",
    ]
    for r in results:
        lines += [
            "",
            f"Plan on {r['backend']}, by index:",
            "",
            "```",
            r["plan_index"],
            "```",
            "",
            f"Plan on {r['backend']}, forced scan:",
            "",
            "```",
            r["plan_scan"],
            "```",
        ]
    return lines
