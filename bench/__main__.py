"""`python -m bench [--large] [--only NAME ...]`: run the benchmarks, print one line per
figure, write `bench/results/<name>.json`, regenerate `docs/benchmarks.md`."""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

# Before anything imports Prefect: no telemetry (no internet), no INFO line per task run.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

# growth last: it reuses the others
NAMES = ("sweep", "emails", "due_selection", "cli_startup", "token_spend", "growth")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--large",
        action="store_true",
        help="100,000 connections in the sweep, and a 100k point in the growth benchmark",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=NAMES,
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(NAMES)}",
    )
    parser.add_argument(
        "--no-docs",
        action="store_true",
        help="do not rewrite docs/benchmarks.md nor docs/bench-growth.png",
    )
    given = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(given)

    from bench import report
    from bench._common import machine

    selected = [n for n in NAMES if not args.only or n in args.only]
    started = time.perf_counter()
    run: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join(["python", "-m", "bench", *given]),
        "large": args.large,
        "selected": selected,
        "machine": machine(),
        "seconds": 0.0,
    }
    cache: dict[str, Any] = {}
    reports = []
    failed = []
    for name in selected:
        print(f"== {name}", flush=True)
        began = time.perf_counter()
        try:
            module = importlib.import_module(f"bench.{name}")
            result = module.run(args.large, cache)
        except Exception:  # noqa: BLE001 - report it, go on with the next benchmark
            traceback.print_exc()
            failed.append(name)
            continue
        result.seconds = round(time.perf_counter() - began, 1)
        reports.append(result)
        print(f"== {name}: {result.seconds:.0f} s", flush=True)
    run["seconds"] = round(time.perf_counter() - started, 1)
    for result in reports:
        path = result.save(run)
        print(f"wrote {path.relative_to(path.parents[2])}", flush=True)
    if reports and not args.no_docs:
        print(f"wrote {report.write().relative_to(report.REPO)}", flush=True)
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
